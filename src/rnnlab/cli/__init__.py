"""The command line: ``rnnlab COMMAND ...``. Thin: it parses, builds a config, calls the library."""

from rnnlab.cli.main import app, main

__all__ = ["app", "main"]
