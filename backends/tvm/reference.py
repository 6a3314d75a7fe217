"""The reference path: a kiln op with no Relax lowering runs its reference implementation.

Each such op becomes a packed function `kiln.ref.<op>.<key>` that calls the op's torch
reference and copies into the VM's destination buffers. The key is a hash of the op's
name, options and operand types, so the same function name always means the same
computation and a cached artifact can re-register it when it is loaded.
"""

from __future__ import annotations

import hashlib

import torch
import tvm_ffi
from tvm import relax

from ir import dtypes
from ir.core import KilnOp

_REGISTERED: set[str] = set()


def reference_key(op: KilnOp) -> str:
    text = repr((op.name, sorted(op.options().items()), [str(o.type) for o in op.operands]))
    return f"kiln.ref.{op.name.removeprefix('kiln.')}.{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def register_reference(op: KilnOp) -> str:
    """Register the packed function for `op` (idempotent) and return its name."""
    name = reference_key(op)
    if name in _REGISTERED:
        return name
    n_in = len(op.operands)

    def kernel(*tensors: torch.Tensor) -> None:
        result = op.reference(*tensors[:n_in])
        outs = result if isinstance(result, tuple) else (result,)
        for dst, value in zip(tensors[n_in:], outs):
            dst.copy_(value)

    tvm_ffi.register_global_func(name, tvm_ffi.convert_func(kernel, tensor_cls=torch.Tensor), override=True)
    _REGISTERED.add(name)
    return name


def emit_reference(bb: relax.BlockBuilder, op: KilnOp, args: list) -> relax.Var:
    name = register_reference(op)
    out_types = [
        relax.TensorType(list(dtypes.shape_of(r.type)), str(dtypes.dtype_of(r.type)).removeprefix("torch."))
        for r in op.results
    ]
    return bb.emit(relax.call_dps_packed(name, args, out_types if len(out_types) > 1 else out_types[0]))
