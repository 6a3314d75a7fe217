"""Intermediates of the Relax VM's `main` in one arena at `map-memory`'s offsets.

TVM's own planner (`StaticPlanBlockMemory`) pools storage tokens by size class; it never
places tensors at offsets in one buffer. Here a Relax pass (`KilnArena`), run after
`CallTIRRewrite` has made every output allocation explicit (`R.builtin.alloc_tensor`) and
before `StaticPlanBlockMemory`, allocates one storage of the arena's size at the top of
`main` and turns each planned allocation into `R.memory.alloc_tensor(arena, offset, ...)`
at the byte offset the pass chose. TVM's planner leaves those alone and plans whatever is
left (allocations Kiln did not plan: outputs, internal temporaries of library calls).
The VM's pooled allocator hands the same block back on the next call.

Which allocation holds which Kiln value: the lowering records the Relax name of each
value's variable (`Lowered.var_names`); Relax passes keep name hints, so after
`CallTIRRewrite` a planned value is the binding `lv = alloc` with `alloc` bound to
`R.builtin.alloc_tensor`. A value lowered to a view (a reshape) is not an allocation and
keeps TVM's handling. Views make Relax lifetimes longer than Kiln's (a reshape of a
buffer, used later, reads the buffer's bytes), so the plan is checked against lifetimes
computed here on the Relax bindings, following aliases; an allocation that would overlap
a live one, or that is still reachable at the return, stays with TVM's planner. The
counts are reported (`placed`, `demoted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import tvm
from tvm import relax

ALLOC = "relax.builtin.alloc_tensor"


@dataclass
class ArenaReport:
    arena_bytes: int = 0
    placed: int = 0  # planned values whose allocation now sits in the arena
    planned: int = 0  # values map-memory gave an offset
    demoted: list[str] = field(default_factory=list)  # placed by TVM instead, and why
    tvm_plan_bytes: int = 0  # TVM's own plan (StaticPlanBlockMemory storages), without the arena
    allocated_bytes: int = 0  # what one call allocates with the arena: arena + TVM's remaining storages


def _vars_in(expr) -> list[relax.Var]:
    found: list[relax.Var] = []
    relax.analysis.post_order_visit(expr, lambda e: found.append(e) if isinstance(e, relax.Var) else None)
    return found


def _nbytes(ty) -> int | None:
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        dims = [int(d) for d in ty.shape.values]
    except (TypeError, AttributeError):
        return None
    size = tvm.DataType(ty.dtype).bits // 8
    for d in dims:
        size *= d
    return size


def _allocation(expr, bound: dict, allocs: dict):
    """The `alloc_tensor` variable `expr` is (through `lv = alloc` and `tuple[i]`), or None."""
    for _ in range(8):
        if isinstance(expr, relax.Var):
            if expr in allocs:
                return expr
            expr = bound.get(expr)
        elif isinstance(expr, relax.TupleGetItem):
            tup = expr.tuple_value
            tup = bound.get(tup, tup) if isinstance(tup, relax.Var) else tup
            if not isinstance(tup, relax.Tuple):
                return None
            expr = tup.fields[expr.index]
        else:
            return None
    return None


def _field(expr, bound: dict):
    if isinstance(expr, relax.TupleGetItem):
        tup = expr.tuple_value
        tup = bound.get(tup, tup) if isinstance(tup, relax.Var) else tup
        if isinstance(tup, relax.Tuple):
            return tup.fields[expr.index]
    return None


def place(
    func: relax.Function, offsets: dict[str, int], arena_bytes: int, report: ArenaReport, check: bool = True
) -> relax.Function:
    """`func` with the planned allocations at their offsets in one storage; `check=False`
    skips the lifetime check (tests use it to show a wrong plan really corrupts values)."""
    blocks = list(func.body.blocks)
    bindings = [b for block in blocks for b in block.bindings]
    allocs = {b.var: i for i, b in enumerate(bindings)
              if isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == ALLOC}
    root: dict[relax.Var, set[relax.Var]] = {}
    last_use: dict[relax.Var, int] = {}
    # An allocation is written by the first call that takes it; an elementwise kernel that
    # map-memory runs in place hands the same bytes from its input (last use at that call)
    # to its output (first use there): the one overlap the check allows.
    first_use: dict[relax.Var, int] = {}
    wanted: dict[relax.Var, int] = {}  # alloc var -> offset
    bound: dict[relax.Var, object] = {}
    for i, b in enumerate(bindings):
        used = _vars_in(b.value)
        precise = _field(b.value, bound)  # t[i] aliases field i only, not the whole tuple
        reach = _vars_in(precise) if precise is not None else used
        roots = {b.var} if b.var in allocs else set().union(*(root.get(v, set()) for v in reach))
        root[b.var] = roots
        for v in used:
            for r in root.get(v, ()):
                last_use[r] = i
                first_use.setdefault(r, i)
        source = _allocation(b.value, bound, allocs)
        if b.var.name in offsets and source is not None and _nbytes(source.ty) is not None:
            wanted[source] = offsets[b.var.name]
        bound[b.var] = b.value
    report.planned = len(offsets)
    end = len(bindings)
    for v in _vars_in(func.body.body):  # reachable at the return: must not live in the arena
        for r in root.get(v, ()):
            last_use[r] = end
    placed: list[tuple[int, int, int, int]] = []  # (start, last, lo, hi)
    chosen: dict[relax.Var, int] = {}
    for var, offset in sorted(wanted.items(), key=lambda kv: allocs[kv[0]]):
        start, last = first_use.get(var, allocs[var]), last_use.get(var, allocs[var])
        lo, hi = offset, offset + _nbytes(var.ty)
        if last >= end:
            report.demoted.append(f"{var.name}: reachable at the return")
        elif hi > arena_bytes:
            report.demoted.append(f"{var.name}: past the arena's end")
        elif check and any(s <= last and start <= e and lo < h and l < hi
                           and not (e == start and (l, h) == (lo, hi)) for s, e, l, h in placed):
            report.demoted.append(f"{var.name}: a view keeps an overlapping buffer alive")
        else:
            placed.append((start, last, lo, hi))
            chosen[var] = offset
    report.placed = len(chosen)
    if not chosen:
        return func
    storage = relax.Var("kiln_arena", relax.ObjectType())
    alloc_storage = relax.op.memory.alloc_storage(relax.ShapeExpr([arena_bytes]), 0, "global", "uint8")
    new_blocks = []
    for k, block in enumerate(blocks):
        out = [relax.VarBinding(storage, alloc_storage)] if k == 0 else []
        for b in block.bindings:
            if b.var in chosen:
                ty = b.var.ty
                offset = relax.prim_value(tvm.tirx.IntImm("int64", chosen[b.var]))
                view = relax.Var(f"{b.var.name}_at", ty)
                out.append(relax.VarBinding(view, relax.op.memory.alloc_tensor(storage, offset, ty.shape, str(ty.dtype))))
                # PrimFuncs require byte_offset 0: on the CPU (and CUDA) this moves the data
                # pointer by the offset instead, without a copy (vm.builtin.ensure_zero_offset).
                b = relax.VarBinding(b.var, relax.op.memory.ensure_zero_offset(view))
            out.append(b)
        new_blocks.append(relax.BindingBlock(out))
    body = relax.SeqExpr(new_blocks, func.body.body)
    return relax.Function(func.params, body, func.ret_ty, func.is_pure, func.attrs)


def storage_bytes(func: relax.Function) -> int:
    """Bytes of every constant-size `R.memory.alloc_storage` in `func` (after planning)."""
    total = 0

    def visit(e) -> None:
        nonlocal total
        if isinstance(e, relax.Call) and getattr(e.op, "name", "") == "relax.memory.alloc_storage":
            shape = e.args[0]
            if isinstance(shape, relax.ShapeExpr):
                total += int(shape.values[0])

    relax.analysis.post_order_visit(func.body, visit)
    return total


def arena_pipeline(
    target, offsets: dict[str, int], arena_bytes: int, report: ArenaReport, check: bool = True
) -> tvm.transform.Pass:
    """TVM's default CPU pipeline with `KilnArena` before `StaticPlanBlockMemory`."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="KilnArena")
    def kiln_arena(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        mod = mod.shallow_copy() if hasattr(mod, "shallow_copy") else mod
        planned_tvm = relax.transform.StaticPlanBlockMemory()(mod)
        report.tvm_plan_bytes = storage_bytes(planned_tvm["main"])
        try:
            mod["main"] = place(mod["main"], offsets, arena_bytes, report, check)
        except Exception as err:  # noqa: BLE001 - the arena is an optimization: never fail a build
            report.demoted.append(f"arena pass failed, TVM's planner used instead: {err}".splitlines()[0])
            report.placed = 0
        return mod

    @tvm.transform.module_pass(opt_level=0, name="KilnMeasureStorage")
    def measure(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        report.allocated_bytes = storage_bytes(mod["main"])
        return mod

    finalize = cpu.finalize_passes(target)
    # `compile.fuse` already made the kernels (Kiln's groups); TVM's default pipeline would
    # run FuseOps again and merge some of them, changing the lifetimes the plan is for.
    legalize = [p for p in cpu.legalize_passes(target) if p.info.name not in ("FuseOps", "FuseTIR")]
    passes = (cpu.library_dispatch_passes(target) + legalize
              + cpu.dataflow_lower_passes(target) + [kiln_arena, finalize[0], measure] + finalize[1:])

    @tvm.transform.module_pass(opt_level=0, name="KilnArenaPipeline")
    def pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return pipeline


def planned_offsets(block) -> dict:
    """Byte offset of each value `map-memory` placed in the arena (its `memory` attribute)."""
    from xdsl.dialects.builtin import DictionaryAttr

    out = {}
    for op in block.ops:
        entry = op.attributes.get("memory")
        if isinstance(entry, DictionaryAttr) and "offset" in entry.data:
            for r, offset in zip(op.results, entry.data["offset"].get_values()):
                if offset >= 0:
                    out[r] = int(offset)
    return out


def arena_size(module) -> int:
    """The arena bytes `map-memory` chose (0 when it did not run)."""
    from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr

    summary = module.attributes.get("kiln.memory")
    size = summary.data.get("arena_bytes") if isinstance(summary, DictionaryAttr) else None
    return int(size.value.data) if isinstance(size, IntegerAttr) else 0


def memory_pipeline(module, offsets: dict[str, int], target):
    """(Relax pipeline, report thunk) for a build with `map-memory`'s arena; (None, None)
    when the pass did not run or placed nothing."""
    size = arena_size(module)
    if not size or not offsets:
        return None, None
    report = ArenaReport(arena_bytes=size)

    def summary() -> dict[str, int | str]:
        return {
            "tvm_plan_bytes": report.tvm_plan_bytes,
            "tvm_allocated_bytes": report.allocated_bytes,
            "tvm_arena_placed": report.placed,
            "tvm_arena_planned": report.planned,
            "tvm_arena_demoted": len(report.demoted),
        }

    return arena_pipeline(target, offsets, size, report), summary


def record_memory(module, fields: dict) -> None:
    """Add the TVM build's memory numbers to the module's `kiln.memory` summary."""
    from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, i64

    summary = module.attributes.get("kiln.memory")
    if not fields or not isinstance(summary, DictionaryAttr):
        return
    merged = dict(summary.data)
    merged.update({k: IntegerAttr(int(v), i64) for k, v in fields.items()})
    module.attributes["kiln.memory"] = DictionaryAttr(merged)
