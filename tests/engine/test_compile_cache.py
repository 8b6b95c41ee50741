"""rnnlab's engine digest in torch's compile-cache keys (rnnlab.engine.compile_cache)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.engine import compile_cache, fast as fast_mod

ENGINE = Path(compile_cache.__file__).parent


def test_the_digest_follows_every_source_of_the_engine_and_nothing_else(tmp_path):
    for name in ("ops.py", "fast_kernels.cpp", "workspace.h"):
        shutil.copy(ENGINE / name, tmp_path / name)
    before = compile_cache.engine_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("not a source")
    assert compile_cache.engine_digest(tmp_path) == before
    for name in ("ops.py", "fast_kernels.cpp", "workspace.h"):
        path = tmp_path / name
        text = path.read_text()
        path.write_text(text + "\n")
        assert compile_cache.engine_digest(tmp_path) != before, name
        path.write_text(text)
    assert compile_cache.engine_digest(tmp_path) == before
    assert compile_cache.engine_digest() == compile_cache.engine_digest(ENGINE) != before


@pytest.mark.skipif(not fast_mod.available(), reason=f"fast engine unavailable: {fast_mod.unavailable_reason()}")
def test_compiling_a_layer_adds_the_digest_to_the_cache_key_tag_and_keeps_the_users():
    # torch's own patch(), not pytest's monkeypatch: undoing a monkeypatch deletes the setting from
    # torch's config module, and every later compile in the process fails
    with torch.compiler.config.patch(cache_key_tag="users-own"):
        torch._dynamo.reset()
        m = rnnlab.LSTM(3, 4)
        torch.compile(m, fullgraph=True, backend="aot_eager")(torch.randn(2, 1, 3))
        torch._dynamo.reset()
        tag = f"rnnlab-{compile_cache.engine_digest()}"
        assert torch.compiler.config.cache_key_tag == f"users-own+{tag}"
        assert compile_cache.tag_compile_caches() == tag              # once: not appended twice
        assert torch.compiler.config.cache_key_tag == f"users-own+{tag}"
