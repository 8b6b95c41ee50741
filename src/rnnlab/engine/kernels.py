"""Building the C++ kernels of the fast paths (``fast_kernels.cpp``, ``variants_kernels.cpp``).

Each source is compiled on first use by ``torch.utils.cpp_extension`` (a C++ compiler and the
``ninja`` package, ``pip install rnnlab[fast]``) and cached by torch, so only the first process on
a machine pays the build (tens of seconds; a one-line notice says so on a terminal). When a build
is impossible the caller falls back to the Python reference, with the same numbers: the failure
is logged once (logger "rnnlab"), never raised or warned, so a machine without a compiler still
runs everything. ``RNNLAB_NO_FAST=1`` turns the kernels off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType


# torch's builder serialises builds with a lock file and waits for it forever; a build killed
# half-way (Ctrl-C, kill -9 during the first use) would leave it behind and hang every later run.
# A build takes well under a minute, so a lock older than this is stale.
STALE_LOCK_SECONDS = 600


def _clear_stale_lock(cpp_extension, name: str) -> None:
    try:
        lock = Path(cpp_extension._get_build_directory(name, False)) / "lock"
        age = time.time() - lock.stat().st_mtime
    except (AttributeError, OSError):  # no lock (the usual case), or a torch without the helper
        return
    if age > STALE_LOCK_SECONDS:
        logging.getLogger("rnnlab").warning("removing a stale build lock %s (%.0f s old)", lock, age)
        lock.unlink(missing_ok=True)


@dataclass
class Kernels:
    """One C++ source, built lazily: ``get()`` returns the module or None (``error`` says why)."""

    name: str
    source: Path
    # -fopenmp: at::parallel_for is a header template that splits work across threads only when
    # the including file is compiled with OpenMP (torch's own libgomp is reused at load time).
    cflags: list[str] = field(default_factory=lambda: ["-O3", "-fopenmp"])
    module: ModuleType | None = None
    error: str | None = None

    def get(self) -> ModuleType | None:
        if self.module is not None or self.error is not None:
            return self.module
        if os.environ.get("RNNLAB_NO_FAST"):
            self.error = "disabled by RNNLAB_NO_FAST"
            return None
        if sys.stderr.isatty():
            print(f"rnnlab: loading the {self.name} kernels (compiled once per machine, then cached)...",
                  file=sys.stderr, flush=True)
        try:
            from torch.utils import cpp_extension

            _clear_stale_lock(cpp_extension, f"rnnlab_{self.name}_kernels")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # compiler-version chatter from torch's builder
                self.module = cpp_extension.load(name=f"rnnlab_{self.name}_kernels", sources=[str(self.source)],
                                                 extra_cflags=self.cflags, extra_ldflags=["-fopenmp"],
                                                 verbose=False)
        except Exception as exc:  # no compiler, no ninja, a broken toolchain: fall back, say so once
            lines = str(exc).strip().splitlines()
            self.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
            logging.getLogger("rnnlab").warning(
                "the %s kernels could not be built (%s); using the Python reference instead (same numbers, "
                "slower). Install a C++ compiler and `pip install rnnlab[fast]` (ninja) to enable them.",
                self.name, self.error,
            )
        return self.module
