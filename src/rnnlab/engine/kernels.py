"""Loading the C++ kernels of the fast paths (``fast_kernels.cpp``, ``variants_kernels.cpp``).

Each source is compiled when the package is installed (``setup.py``: the modules
``rnnlab.engine._fast_kernels`` and ``rnnlab.engine._variant_kernels`` travel in the wheel), so a
machine without a compiler gets them too. A prebuilt module is used when it was built from the
sources beside it (an editable install whose C++ was edited since is rebuilt instead). Without
one, the source is compiled on first use by ``torch.utils.cpp_extension`` (a C++ compiler and the
``ninja`` package, ``pip install rnnlab[fast]``) and cached by torch, so only the first process
on a machine pays that build (tens of seconds; a one-line notice says so on a terminal). When
neither works the caller falls back to the Python reference, with the same numbers: one line is
logged (logger "rnnlab"), nothing is raised or warned, so every machine runs everything.
``rnnlab.set_engine("reference")`` (or ``RNNLAB_ENGINE=reference``) keeps the kernels unloaded.
"""

from __future__ import annotations

import hashlib
import importlib
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


def source_digest(source: Path) -> str:
    """sha256 of a kernel source and the headers beside it (what it includes): setup.py compiles
    it into the prebuilt module, which is used only while the sources still match."""
    h = hashlib.sha256(source.read_bytes())
    for header in sorted(source.parent.glob("*.h")):
        h.update(header.read_bytes())
    return h.hexdigest()


_logged_gemm_check = False


def _report_gemm_check(module: ModuleType) -> None:
    """One log line per process when oneDNN's matmul failed its load-time check (gemm.h)."""
    global _logged_gemm_check
    uses, reason, failed = module.onednn_state()       # runs the check on first call
    if failed and not _logged_gemm_check:
        _logged_gemm_check = True
        logging.getLogger("rnnlab").warning("the kernels use torch's BLAS for every matmul: %s", reason)


def built_from(module_file: Path, digest: str) -> bool:
    """Whether a compiled module file carries this source digest (setup.py compiles it in as the
    string ``source_digest``), read from its bytes without loading it."""
    try:
        return digest.encode() in module_file.read_bytes()
    except OSError:
        return False


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
    """One C++ source: ``get()`` returns its module (the prebuilt one, else built here on first
    use) or None (``error`` says why).

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
    origin: str = ""    # "prebuilt" (installed with the package) or "built here" (on first use)

    @property
    def ext_name(self) -> str:
        return f"rnnlab_{self.name}_kernels"

    @property
    def prebuilt_name(self) -> str:
        return f"rnnlab.engine._{self.name}_kernels"

    def _fingerprint(self) -> str:
        import torch   # lazy: setup.py loads this file where torch may be missing

        h = hashlib.sha256(source_digest(self.source).encode())
        h.update(json.dumps([self.cflags, torch.__version__, sys.version, sys.platform]).encode())
        return h.hexdigest()

    def _load_prebuilt(self) -> ModuleType | None:
        """The module setup.py built, when present, importable with this torch and built from
        these sources; else None (then the JIT build runs).

        The sources' digest is looked for in the module file before it is imported: importing
        runs the module's ``TORCH_LIBRARY`` registration, and a stale module registered first
        would make the rebuilt one abort the process when it registers the same operators."""
        digest = source_digest(self.source)
        try:
            spec = importlib.util.find_spec(self.prebuilt_name)
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.origin:
            logging.getLogger("rnnlab").debug("no prebuilt %s", self.prebuilt_name)
            return None
        if not built_from(Path(spec.origin), digest):
            logging.getLogger("rnnlab").info("%s was built from other sources than %s; rebuilding",
                                             self.prebuilt_name, self.source.name)
            return None
        try:
            module = importlib.import_module(self.prebuilt_name)
        except ImportError as exc:   # built against another torch
            logging.getLogger("rnnlab").debug("no usable prebuilt %s (%s)", self.prebuilt_name, exc)
            return None
        if getattr(module, "source_digest", "") != digest:   # pragma: no cover - the bytes said it was
            return None
        return module

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
        try:
            self.module = self._load_prebuilt()
            if self.module is not None:
                self.origin = "prebuilt"
            else:
                self.module = self._build()
                self.origin = "built here"
            _apply_switches(self.module)
            _report_gemm_check(self.module)
        except Exception as exc:  # no compiler, no ninja, a broken toolchain: fall back, say so once
            self.module = None
            lines = str(exc).strip().splitlines()
            self.error = f"{type(exc).__name__}: {lines[-1] if lines else ''}"
            logging.getLogger("rnnlab").warning(
                "the %s kernels are not installed and could not be built (%s); using the Python reference "
                "instead (same numbers, slower). Reinstall rnnlab with a C++ compiler (pip install "
                "--no-build-isolation rnnlab), or install ninja (pip install rnnlab[fast]) to build them on "
                "first use.", self.name, self.error,
            )
        return self.module

    def _build(self) -> ModuleType:
        """Compile the source with torch's builder (or reuse this fingerprint's earlier build)."""
        from torch.utils import cpp_extension   # lazy: imports setuptools; only a build needs it

        module = self._load_cached(cpp_extension)
        if module is not None:
            return module
        if sys.stderr.isatty():
            print(f"rnnlab: compiling the {self.name} kernels (once per machine, then cached)...",
                  file=sys.stderr, flush=True)
        _clear_stale_lock(cpp_extension, self.ext_name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # compiler-version chatter from torch's builder
            module = cpp_extension.load(name=self.ext_name, sources=[str(self.source)],
                                        extra_cflags=self.cflags, extra_ldflags=["-fopenmp"], verbose=False)
        self._write_stamp(cpp_extension, module)
        return module


# The two sources; the engines that run them and the dispatch (dispatch.py) share these.
FAST_KERNELS = Kernels("fast", Path(__file__).with_name("fast_kernels.cpp"))
VARIANT_KERNELS = Kernels("variant", Path(__file__).with_name("variants_kernels.cpp"))
