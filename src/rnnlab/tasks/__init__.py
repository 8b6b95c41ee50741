"""Ready tasks. Importing this package registers each task with the training core."""

import importlib

# Each module calls ``register_task`` on import; a module not written yet is skipped.
for _name in ("probe", "lm", "classify", "forecast", "toy", "speech", "seq2seq"):
    try:
        importlib.import_module(f"rnnlab.tasks.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"rnnlab.tasks.{_name}":
            raise

from rnnlab.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask  # noqa: E402

# The sequence-to-sequence task under its short name: ``rnnlab.tasks.Seq2Seq(Seq2SeqConfig(...))``.
Seq2Seq = Seq2SeqTask

__all__ = ["Seq2Seq", "Seq2SeqConfig", "Seq2SeqTask"]
