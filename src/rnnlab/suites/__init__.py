"""Suites: runs of many tasks or layers whose results become one report or one table
(``rnnlab demo``: :mod:`rnnlab.suites.demo`; ``rnnlab bench``: :mod:`rnnlab.suites.bench`)."""
