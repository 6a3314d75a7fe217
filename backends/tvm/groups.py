"""Fused groups in Relax: the TVM backend honours the fusion pass's `group` attributes.

Each multi-op group becomes a private Relax function marked `Primitive`, called once from
`main`; after legalization, FuseTIR merges it into a single PrimFunc, which Kiln's CPU
schedules then tile and vectorize. Relax's own FuseOps is not run when groups are present:
the fusion decision is Kiln's, made once, visible in the IR.

Steps (single ops and groups) are emitted in a topological order of the condensed graph;
groups are convex, so that graph is acyclic.
"""

from __future__ import annotations

from typing import Any

from tvm import relax
from xdsl.dialects import func
from xdsl.ir import Block, Operation, SSAValue

from ir.core import KilnOp
from ir.ops.sources import ConstantOp, ParamOp
from ir.steps import run_order


def plan_steps(block: Block) -> list[list[KilnOp]]:
    """Compute ops grouped by their `group` attribute, ordered so producers come first."""
    steps: dict[object, list[KilnOp]] = {}
    for op in block.ops:
        if isinstance(op, (ParamOp, ConstantOp, func.ReturnOp)) or not isinstance(op, KilnOp):
            continue
        group = op.attributes.get("group")
        key = ("g", group.value.data) if group is not None else ("op", id(op))
        steps.setdefault(key, []).append(op)
    groups = list(steps.values())  # program order of each step's first op: the tie-breaker
    return [groups[k] for k in run_order(groups)]


def emit_group(bb: relax.BlockBuilder, ops: list[KilnOp], env: dict[SSAValue, Any], derived, reference_ops) -> None:
    from backends.tvm.lower import bind_results, emit_op, tensor_const, tensor_type

    members = set(ops)
    external: list[SSAValue] = []
    for op in ops:
        for operand in op.operands:
            owner = operand.owner
            if not (isinstance(owner, Operation) and owner in members) and operand not in external:
                if _inline_const(owner):
                    continue  # scalar constants are rebuilt inside the function
                external.append(operand)
    outputs = [r for op in ops for r in op.results if any(u.operation not in members for u in r.uses)]
    name = f"kiln_group_{ops[0].attributes['group'].value.data}"
    gbb = relax.BlockBuilder()
    local_params = [relax.Var(f"a{i}", tensor_type(v)) for i, v in enumerate(external)]
    local: dict[SSAValue, Any] = dict(zip(external, local_params))
    derived.captured = []
    try:
        with gbb.function(name, attrs={"Primitive": True}, private=True):
            with gbb.dataflow():
                for op in ops:
                    for operand in op.operands:
                        if _inline_const(operand.owner) and operand not in local:
                            local[operand] = tensor_const(operand.owner.to_tensor().numpy())
                    out = emit_op(gbb, op, [local[v] for v in op.operands], derived, reference_ops)
                    bind_results(gbb, op, out, local)
                values = [local[r] for r in outputs]
                result = gbb.emit_output(values[0] if len(values) == 1 else relax.Tuple(values))
            captured = derived.captured
            gbb.emit_func_output(result, params=local_params + [loc for loc, _ in captured])
    finally:
        derived.captured = None
    gvar = bb.add_func(gbb.get()[name], name)
    call = bb.emit(relax.Call(gvar, [env[v] for v in external] + [main for _, main in captured]))
    if len(outputs) == 1:
        env[outputs[0]] = call
    else:
        for i, r in enumerate(outputs):
            env[r] = bb.emit(relax.TupleGetItem(call, i))


def _inline_const(owner) -> bool:
    """Scalars are inlined into a fused function; a tensor constant is passed in, since
    Relax does not allow tensor constants inside primitive functions (FuseTIR rejects them)."""
    return isinstance(owner, ConstantOp) and len(owner.results[0].type.get_shape()) == 0


def group_sizes(block: Block) -> dict[int, int]:
    """Ops per fusion group (`group` attribute) of a block."""
    sizes: dict[int, int] = {}
    for op in block.ops:
        group = op.attributes.get("group")
        if group is not None:
            sizes[group.value.data] = sizes.get(group.value.data, 0) + 1
    return sizes


def alone(op: Operation, sizes: dict[int, int]) -> bool:
    """Whether `op` is a kernel of its own: in no fusion group, or alone in its group. Kiln's
    own contraction kernels (packed dense, direct conv, TIR attention, quantized matmul)
    take only such ops; an op fused with others is lowered with its group."""
    group = op.attributes.get("group")
    return group is None or sizes[group.value.data] == 1

