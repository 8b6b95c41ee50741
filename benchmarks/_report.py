"""What every benchmark script shares: the process CPU clock and the way figures leave the script."""

from __future__ import annotations

import json
import resource
from pathlib import Path


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    """User + system CPU seconds so far of this process (all its threads), or of its waited-for
    children with ``resource.RUSAGE_CHILDREN``."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def emit(figures: dict, json_path: str | Path | None) -> dict:
    """Print the figures as indented JSON, and write the same text to ``json_path`` when given."""
    text = json.dumps(figures, indent=2)
    print(text)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(text + "\n")
    return figures
