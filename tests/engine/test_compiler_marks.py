"""rnnlab marks its trace-time constants without importing torch's compiler (rnnlab.engine.compiler_marks)."""

from __future__ import annotations

import subprocess
import sys

import torch

from rnnlab.engine.compiler_marks import MARK


def test_the_mark_is_what_torchs_decorator_sets():
    def fn() -> bool:
        return True

    before = dict(fn.__dict__)
    assert torch.compiler.assume_constant_result(fn) is fn
    added = {k: v for k, v in fn.__dict__.items() if k not in before}
    assert added == {MARK: True}


IMPORT_THEN_COMPILE = """
import sys
import torch
import rnnlab, rnnlab.nn, rnnlab.engine.fast as fast, rnnlab.engine.variants as variants, rnnlab.engine.eager_op as eager_op
assert "torch._dynamo" not in sys.modules, "importing rnnlab loaded the compiler"
marked = [fast._ops_ready, fast._tiled_op_ready, fast._rows_op_ready, fast._infer_op_ready,
          variants._variant_ops_ready, eager_op.eager_op_ready]
assert all(getattr(f, "_dynamo_marked_constant", False) for f in marked)
torch.manual_seed(0)
for layer in (rnnlab.nn.LSTM(3, 5), rnnlab.nn.LSTM(3, 5, engine="reference"), rnnlab.nn.LSTM(3, 5, layer_norm=True)):
    x = torch.randn(4, 2, 3)
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x)[0], layer(x)[0])
print("ok")
"""


def test_importing_rnnlab_leaves_the_compiler_unloaded_and_marked_functions_compile():
    proc = subprocess.run([sys.executable, "-c", IMPORT_THEN_COMPILE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
