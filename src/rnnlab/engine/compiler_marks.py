"""``torch.compiler.assume_constant_result`` without loading the compiler at import time.

The public decorator imports ``torch._dynamo`` (over a second on a laptop CPU) only to set one
attribute on the function, which dynamo reads when it traces a call. Importing rnnlab, and so
every ``rnnlab`` command, would pay for the compiler even when nothing is compiled. So while the
compiler is not loaded, :func:`assume_constant_result` sets that attribute itself; once it is
loaded (dynamo must be, before anything is traced), it calls torch's decorator.
tests/engine/test_compiler_marks.py checks that the attribute is the one torch's decorator sets,
so a torch that changes it fails there rather than in a compiled model.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

import torch

F = TypeVar("F", bound=Callable)

MARK = "_dynamo_marked_constant"     # what torch.compiler.assume_constant_result sets (torch/_dynamo/decorators.py)


def assume_constant_result(fn: F) -> F:
    """Mark ``fn``'s result a constant to torch.compile and torch.export, as torch's decorator does."""
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    setattr(fn, MARK, True)
    return fn
