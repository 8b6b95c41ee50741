"""Building the C++ kernels of the fast paths (``fast_kernels.cpp``, ``variants_kernels.cpp``).

Each source is compiled on first use by ``torch.utils.cpp_extension`` (a C++ compiler and the
``ninja`` package, ``pip install rnnlab[fast]``) and cached by torch, so only the first process on
a machine pays the build (tens of seconds; a one-line notice says so on a terminal). When a build
is impossible the caller falls back to the Python reference, with the same numbers: the failure
is logged once (logger "rnnlab"), never raised or warned, so a machine without a compiler still
runs everything. ``RNNLAB_NO_FAST=1`` turns the kernels off.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
STALE_LOCK_SECONDS = 300


def _clear_stale_lock(cpp_extension, name: str) -> None:
    try:
        lock = Path(cpp_extension._get_build_directory(name, False)) / "lock"
        age = time.time() - lock.stat().st_mtime
    except (AttributeError, OSError):  # no lock (the usual case), or a torch without the helper
        return
    if age > STALE_LOCK_SECONDS:
        logging.getLogger("rnnlab").warning("removing a stale build lock %s (%.0f s old)", lock, age)
        lock.unlink(missing_ok=True)


_ALL: list["Kernels"] = []
# Switches every kernel module takes, built now or later: name of its setter -> value.
_SWITCHES = {"set_onednn": True, "set_reuse": True}


def _switch(setter: str, enabled: bool) -> None:
    _SWITCHES[setter] = bool(enabled)
    for k in _ALL:
        if k.module is not None:
            getattr(k.module, setter)(_SWITCHES[setter])


def _apply_switches(module: ModuleType) -> None:
    for setter, value in _SWITCHES.items():
        getattr(module, setter)(value)


def set_onednn(enabled: bool) -> None:
    """Whether the kernels' large single-precision matmuls may use oneDNN (``gemm.h``; default on)
    or stay on torch's BLAS."""
    _switch("set_onednn", enabled)


def set_reuse(enabled: bool) -> None:
    """Whether the kernels reuse their large buffers between calls (``workspace.h``; default on)
    or allocate afresh each call, as before (for measuring what the reuse buys)."""
    _switch("set_reuse", enabled)


def empty_cache() -> None:
    """Release the buffers the kernels keep for reuse between calls (``workspace.h``: large
    activation and gradient buffers, reused when nothing else holds them; the calling thread's)."""
    for k in _ALL:
        if k.module is not None:
            k.module.release_workspace()


def _import_built(so_path: Path, module_name: str) -> ModuleType:
    """Import an already-built extension module file directly (no builder, no lock)."""
    spec = importlib.util.spec_from_file_location(module_name, so_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {so_path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Kernels:
    """One C++ source, built lazily: ``get()`` returns the module or None (``error`` says why).

    torch's ``cpp_extension.load`` takes its build lock on every call, even when nothing needs
    building, so a process killed at that moment (kill -9 during a worker's first step) would
    leave a lock that blocks every later process. So the builder runs only when needed: after a
    build, a stamp beside the library records the fingerprint of what was built (source text,
    flags, torch and Python versions) and the module file; a later process whose fingerprint
    matches imports that file directly.
    """

    name: str
    source: Path
    # -fopenmp: at::parallel_for is a header template that splits work across threads only when
    # the including file is compiled with OpenMP (torch's own libgomp is reused at load time).
    cflags: list[str] = field(default_factory=lambda: ["-O3", "-fopenmp"])
    module: ModuleType | None = None
    error: str | None = None

    @property
    def ext_name(self) -> str:
        return f"rnnlab_{self.name}_kernels"

    def _fingerprint(self) -> str:
        import torch

        h = hashlib.sha256(self.source.read_bytes())
        for header in sorted(self.source.parent.glob("*.h")):   # what the sources include (gemm.h)
            h.update(header.read_bytes())
        h.update(json.dumps([self.cflags, torch.__version__, sys.version, sys.platform]).encode())
        return h.hexdigest()

    def _load_cached(self, cpp_extension) -> ModuleType | None:
        try:
            stamp_path = Path(cpp_extension._get_build_directory(self.ext_name, False)) / "rnnlab-stamp.json"
            stamp = json.loads(stamp_path.read_text())
            if stamp.get("fingerprint") != self._fingerprint():
                return None
            return _import_built(Path(stamp["file"]), stamp["module"])
        except Exception:  # no stamp yet, an older torch, a half-written file: build the usual way
            return None

    def _write_stamp(self, cpp_extension, module: ModuleType) -> None:
        try:
            build_dir = Path(cpp_extension._get_build_directory(self.ext_name, False))
            stamp = {"fingerprint": self._fingerprint(), "file": str(Path(module.__file__).resolve()),
                     "module": module.__name__}
            tmp = build_dir / f".rnnlab-stamp-{os.getpid()}.tmp"
            tmp.write_text(json.dumps(stamp))
            os.replace(tmp, build_dir / "rnnlab-stamp.json")   # atomic: readers see old or new
        except Exception:  # the stamp is only a shortcut; without it the builder runs next time
            pass

    def __post_init__(self) -> None:
        _ALL.append(self)

    def get(self) -> ModuleType | None:
        if self.module is not None or self.error is not None:
            return self.module
        if os.environ.get("RNNLAB_NO_FAST"):
            self.error = "disabled by RNNLAB_NO_FAST"
            return None
        try:
            from torch.utils import cpp_extension

            self.module = self._load_cached(cpp_extension)
            if self.module is not None:
                _apply_switches(self.module)
                return self.module
            if sys.stderr.isatty():
                print(f"rnnlab: compiling the {self.name} kernels (once per machine, then cached)...",
                      file=sys.stderr, flush=True)
            _clear_stale_lock(cpp_extension, self.ext_name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # compiler-version chatter from torch's builder
                self.module = cpp_extension.load(name=self.ext_name, sources=[str(self.source)],
                                                 extra_cflags=self.cflags, extra_ldflags=["-fopenmp"],
                                                 verbose=False)
            self._write_stamp(cpp_extension, self.module)
            _apply_switches(self.module)
        except Exception as exc:  # no compiler, no ninja, a broken toolchain: fall back, say so once
            lines = str(exc).strip().splitlines()
            self.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
            logging.getLogger("rnnlab").warning(
                "the %s kernels could not be built (%s); using the Python reference instead (same numbers, "
                "slower). Install a C++ compiler and `pip install rnnlab[fast]` (ninja) to enable them.",
                self.name, self.error,
            )
        return self.module
