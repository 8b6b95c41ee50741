"""Builds the fast engine's C++ kernels when rnnlab is installed (everything else is in pyproject.toml).

    pip install --no-build-isolation .        # or -e . ; a wheel: pip wheel --no-build-isolation --no-deps .

The build needs the torch it will run with (the extensions are compiled against its headers and
libraries), hence --no-build-isolation: an isolated build would fetch a separate torch. The flags
are portable (-O3, no -march=native): the kernels pick AVX-512 / AVX2 code at run time, so one
build runs on every x86-64 CPU. Without torch or a compiler the package installs without the
prebuilt modules, and rnnlab builds them on first use or runs its reference engine.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from setuptools import setup

ENGINE = Path(__file__).resolve().parent / "src" / "rnnlab" / "engine"
SOURCES = {"_fast_kernels": "fast_kernels.cpp", "_variant_kernels": "variants_kernels.cpp"}


def _source_digest(source: Path) -> str:
    """kernels.source_digest, loaded from its file (importing rnnlab here would import torch twice)."""
    spec = importlib.util.spec_from_file_location("_rnnlab_kernels_for_setup", ENGINE / "kernels.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod.source_digest(source)


def _extensions() -> dict:
    if os.environ.get("RNNLAB_SKIP_KERNELS"):
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:
        print("rnnlab: torch is not importable in the build environment; installing without prebuilt "
              "kernels (use pip's --no-build-isolation)", file=sys.stderr)
        return {}
    exts = [
        CppExtension(
            f"rnnlab.engine.{name}",
            [f"src/rnnlab/engine/{src}"],
            # -fopenmp: at::parallel_for splits work across threads only in files compiled with OpenMP
            extra_compile_args=["-O3", "-g0", "-fopenmp", f"-DRNNLAB_SOURCE_DIGEST={_source_digest(ENGINE / src)}"],
            extra_link_args=["-fopenmp"],
        )
        for name, src in SOURCES.items()
    ]

    class OptionalBuild(BuildExtension):
        """A kernel that does not compile leaves the package without it (rnnlab then builds it on
        first use, or runs its reference engine) instead of failing the install."""

        def build_extension(self, ext) -> None:
            try:
                super().build_extension(ext)
            except Exception as exc:  # the compiler's own output went to the build log above
                print(f"rnnlab: {ext.name} was not built ({type(exc).__name__}); rnnlab will build it on "
                      "first use or run its reference engine", file=sys.stderr)

    return {"ext_modules": exts, "cmdclass": {"build_ext": OptionalBuild}}


setup(**_extensions())
