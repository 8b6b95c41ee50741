"""Scores of model outputs: :mod:`rnnlab.metrics.sequence` for sequence-to-sequence outputs."""
