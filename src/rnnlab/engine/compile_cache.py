"""rnnlab's engine in the keys of torch's compile caches.

torch's on-disk caches (AOTAutograd's and Inductor's FX graph cache) key a compiled graph by its
operators' names and arguments, not by the Python autograd formulas and fake implementations
registered for them (pytorch/pytorch#144344). A formula of rnnlab's operators that changed (an
upgrade, a local edit) would then be served from a warm cache in its old form: wrong gradients,
or a backward that calls an operator with another signature. So before the first graph with one
of rnnlab's operators is compiled, :func:`tag_compile_caches` appends a digest of the engine's
sources to ``torch.compiler.config.cache_key_tag``, which both caches put in their keys; any other
tag already there is kept.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

_SUFFIXES = (".py", ".cpp", ".h")


def engine_digest(folder: Path | None = None) -> str:
    """A digest of the engine's sources (the .py, .cpp and .h files of ``folder``, by default
    this package's), which hold every formula a compiled graph bakes in."""
    folder = folder or Path(__file__).parent
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.suffix in _SUFFIXES):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


_TAG: str | None = None


def tag_compile_caches() -> str:
    """Add ``rnnlab-<engine digest>`` to ``torch.compiler.config.cache_key_tag`` (once) and return it."""
    global _TAG
    if _TAG is None:
        _TAG = f"rnnlab-{engine_digest()}"
    current = torch.compiler.config.cache_key_tag
    if _TAG not in current:
        torch.compiler.config.cache_key_tag = f"{current}+{_TAG}" if current else _TAG
    return _TAG
