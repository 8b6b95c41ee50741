"""Ready tasks. Importing this package registers each task with the training core."""

import importlib

# Each module calls ``register_task`` on import; a module not written yet is skipped.
for _name in ("probe", "lm", "classify", "forecast", "toy", "speech"):
    try:
        importlib.import_module(f"rnnlab.tasks.{_name}")
    except ModuleNotFoundError as _exc:
        if _exc.name != f"rnnlab.tasks.{_name}":
            raise
