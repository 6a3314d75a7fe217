"""One rank's part of a sharded plan, cut into local programs built by a Kiln backend.

The planned IR is global: every value has its whole shape and a placement. A rank runs
only its shards, so this file rewrites the function into what one rank computes:

- maximal runs of ops that need no collective become one local `Program` (kiln ops
  rebuilt with `make` on local operand types, so every shape is this rank's shard:
  a reshape gets its local target shape, parameters become `kiln.param`s bound to
  this rank's slices, a free reshard (a local slice of a replicated value) becomes a
  `kiln.slice` at this rank's offset);
- between them stay the collectives the plan names, issued by `shard_runtime.Collectives`
  exactly as before: a reshard that gathers or exchanges, the all-reduce of a
  contraction split along its reduced dim (its bias add opens the next local program).

Each local program goes through the backend's own pass pipeline and `build`, the same
path `compile_model` takes for one partition: `tvm` compiles TVM kernels for the local
shapes, `eager` runs Kiln's reference interpreter on the same local programs. Every
rebuilt op's local type is checked against the plan's `local_shape` of its placement,
so a plan the cut cannot express fails here by name instead of computing wrong shards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region, SSAValue

from ir import dtypes
from ir.dialect import OPS_BY_NAME
from ir.ops.sources import ParamOp
from ir.program import ENTRY, Program
from passes.shard.placement import Placement, local_shape, parse, replicated, reshard_steps

Key = Any  # a global SSA value, or (value, placement) for a resharded copy, or ("partial", op)


class LocalProgramError(RuntimeError):
    """The plan cannot be cut into local programs; one line naming the op."""


@dataclass
class Segment:
    """A local program: reads `inputs` (keys) and writes `outputs` (keys) in the rank's env."""

    program: Program
    inputs: list[Key]
    outputs: list[Key]
    kernel: Any = None


@dataclass
class Glue:
    """A collective between local programs: reshard `src` to `dst`, or all-reduce a partial sum."""

    kind: str  # "reshard" | "all_reduce"
    src: Key
    dst: Key
    placement: tuple = ()  # reshard: (from, to, whole shape); all_reduce: the mesh axes


@dataclass
class LocalPlan:
    steps: list[Segment | Glue]
    arg_keys: list[Key]
    arg_placements: list[Placement]
    result_keys: list[Key]
    constants: dict[Key, torch.Tensor] = field(default_factory=dict)
    shapes: dict[Key, tuple[int, ...]] = field(default_factory=dict)  # local shapes of received values

    def value_shape(self, key: Key) -> tuple[int, ...]:
        return self.shapes[key]

    @property
    def segments(self) -> list[Segment]:
        return [s for s in self.steps if isinstance(s, Segment)]


class _Builder:
    """Collects ops into the current local program; `flush` closes it as a Segment."""

    def __init__(self, mesh: tuple[int, ...], coords: tuple[int, ...], params: dict[str, torch.Tensor]) -> None:
        self.mesh, self.coords, self.params = mesh, coords, params
        self.steps: list[Segment | Glue] = []
        self.produced_here: set[Key] = set()
        self._open()

    def _open(self) -> None:
        self.block = Block()
        self.values: dict[Key, SSAValue] = {}  # key -> value in the open block
        self.members: set[Any] = set()  # global ops computed in the open block
        self.forced: list[Key] = []  # keys a glue step reads right after this block
        self.inputs: list[Key] = []
        self.local_params: dict[str, torch.Tensor] = {}

    def value(self, key: Key, tensor_type) -> SSAValue:
        """The open block's value for `key` (a new argument if computed elsewhere)."""
        if key not in self.values:
            self.values[key] = self.block.insert_arg(tensor_type, len(self.block.args))
            self.inputs.append(key)
        return self.values[key]

    def param(self, key: Key, name: str, tensor: torch.Tensor) -> SSAValue:
        if key not in self.values:
            local = f"{name}@{len(self.local_params)}" if name in self.local_params else name
            op = ParamOp.of(local, dtypes.tensor_type(tuple(tensor.shape), tensor.dtype))
            self.block.add_op(op)
            self.local_params[local] = tensor
            self.values[key] = op.results[0]
        return self.values[key]

    def add(self, op_name: str, operands: list[SSAValue | None], options: dict[str, Any], key: Key,
            member: Any) -> SSAValue:
        new = OPS_BY_NAME[op_name].make(*operands, **options)
        self.block.add_op(new)
        self.values[key] = new.results[0]
        for i, r in enumerate(new.results[1:], 1):  # several results (top-k): keyed by the global ones
            self.values[member.results[i]] = r
        self.members.add(member)
        return new.results[0]

    def keep(self, v: SSAValue) -> None:
        """`v` is read right after the open block (by a collective, or returned): make it an output."""
        if v.owner in self.members and v not in self.forced:
            self.forced.append(v)

    def flush(self, returned: set[Any]) -> None:
        outputs = list(self.forced)
        for key in self.values:
            if key in outputs or key in self.inputs or not isinstance(key, SSAValue) or key.owner not in self.members:
                continue
            if key in returned or any(u.operation not in self.members for u in key.uses):
                outputs.append(key)
        ops = [o for o in self.block.ops]
        if ops and outputs:
            results = [self.values[k] for k in outputs]
            self.block.add_op(func.ReturnOp(*results))
            fn = func.FuncOp(ENTRY, ([a.type for a in self.block.args], [r.type for r in results]),
                             Region(self.block))
            self.steps.append(Segment(Program(ModuleOp([fn]), self.local_params), self.inputs, outputs))
        self._open()


def cut(fn: func.FuncOp, params: dict[str, torch.Tensor], mesh: tuple[int, ...],
        coords: tuple[int, ...], stage: int | None = None, incoming: SSAValue | None = None,
        outgoing: SSAValue | None = None, microbatches: int = 1) -> LocalPlan:
    """The rank at `coords` of `mesh`: its local programs and the collectives between them.

    In a pipeline, `stage` keeps only that stage's ops (`kiln.stage`), `incoming` is the
    activation received from the stage before (already this rank's shard), `outgoing`
    the one sent on as placed (the last stage returns the function's results, gathered),
    and every value that carries the batch (the batch leads, as the pipeline pass
    requires) is one microbatch: 1 / `microbatches` of its rows.
    """
    b = _Builder(mesh, coords, params)
    arg_pl = [parse(t) for t in fn.attributes["kiln.arg_placements"].data.split(";")]  # type: ignore[union-attr]
    placement: dict[Key, Placement] = dict(zip(fn.body.block.args, arg_pl))
    batched: set[Key] = set(fn.body.block.args)  # values whose leading dim is the batch
    sources: dict[Key, tuple[str, torch.Tensor]] = {}
    constants: dict[Key, torch.Tensor] = {}
    ret = fn.body.block.ops.last
    returned = {outgoing} if outgoing is not None else set(ret.operands)
    if incoming is not None:
        placement[incoming] = parse(incoming.owner.attributes["kiln.placement"].data)  # type: ignore[union-attr]
        batched.add(incoming)

    def whole(v: SSAValue) -> tuple[int, ...]:  # the value's shape for one microbatch, all ranks
        shape = list(dtypes.shape_of(v.type))
        if v in batched and microbatches > 1:
            if shape[0] % microbatches:
                raise LocalProgramError(f"{shape[0]} rows do not split into {microbatches} microbatches")
            shape[0] //= microbatches
        return tuple(shape)

    def local_type(v: SSAValue, p: Placement):
        shape = whole(v)
        if any(shape[d] % mesh[a] for a, d in enumerate(p) if d >= 0):
            raise LocalProgramError(f"a microbatch of shape {shape} does not split as {p} on mesh {mesh}")
        return dtypes.tensor_type(local_shape(p, shape, mesh), dtypes.dtype_of(v.type))

    def operand(v: SSAValue, want: Placement) -> SSAValue:
        src = placement[v]
        steps = reshard_steps(src, want, whole(v), mesh, 0.0) if src != want else []
        if any(s.kind != "slice" for s in steps):
            key = (v, want, len(b.steps))  # one redistribution per use, as the plan priced it
            b.keep(v)
            b.flush(returned)
            b.steps.append(Glue("reshard", v, key, (src, want, whole(v))))
            return b.value(key, local_type(v, want))
        base = _source_value(b, v, src, sources, local_type)
        for s in steps:  # free reshards: this rank's slice, at offsets known now
            size = local_shape(src, whole(v), mesh)[s.dim] // mesh[s.axis]
            start = size * coords[s.axis]
            base = _slice(b, base, s.dim, start, size)
            src = _after_slice(src, s)
        return base

    for op in fn.body.block.ops:
        if isinstance(op, func.ReturnOp):
            break
        if stage is not None and op.name not in ("kiln.param", "kiln.constant") \
                and int(op.attributes["kiln.stage"].value.data) != stage:  # type: ignore[union-attr]
            continue
        out_p = parse(op.attributes["kiln.placement"].data)  # type: ignore[union-attr]
        if op.name == "kiln.param":
            sources[op.results[0]] = (op.opt("name"), shard_of_coords(params[op.opt("name")], out_p, mesh, coords))
            constants[op.results[0]] = sources[op.results[0]][1]  # a collective may read it too
            placement[op.results[0]] = out_p
            continue
        if op.name == "kiln.constant":
            constants[op.results[0]] = shard_of_coords(op.reference(), out_p, mesh, coords)
            placement[op.results[0]] = out_p
            continue
        wants = [parse(t) for t in op.attributes["kiln.operand_placements"].data.split(";")]  # type: ignore[union-attr]
        reduce_axes = [int(a) for a in op.attributes["kiln.all_reduce"].data.split(",")] \
            if "kiln.all_reduce" in op.attributes else []  # type: ignore[union-attr]
        local = [operand(v, q) for v, q in zip(op.operands, wants)]
        options = op.options()
        if any(v in batched for v in op.operands):
            batched.update(op.results)
        if op.name in ("kiln.reshape", "kiln.expand"):
            options["shape"] = list(local_shape(out_p, whole(op.results[0]), mesh))
        placement.update({r: out_p for r in op.results})
        if not reduce_axes:
            made = b.add(op.name, local, options, op.results[0], op)
            _check_shape(op, made, local_shape(out_p, whole(op.results[0]), mesh))
            continue
        if op.name not in ("kiln.linear", "kiln.matmul"):
            raise LocalProgramError(f"{op.name} has a reduced-dim split but no partial-sum rule")
        partial = ("partial", op)
        b.add(op.name, local[:2], options, partial, op)
        b.forced.append(partial)
        b.flush(returned)
        summed = op.results[0] if len(local) == 2 else ("summed", op)
        b.steps.append(Glue("all_reduce", partial, summed, tuple(reduce_axes)))
        if len(local) == 3:  # the bias joins after the sum, in the next local program
            bias = operand(op.operands[2], wants[2])  # first: its own reshard may close a program
            y = b.value(summed, local_type(op.results[0], out_p))
            b.add("kiln.add", [y, bias], {}, op.results[0], op)
    rep = replicated(mesh)
    result_keys = []
    for v in returned if outgoing is not None else ret.operands:
        result_keys.append(v if placement[v] == rep or outgoing is not None else (v, rep))
        b.keep(v)
    b.flush(returned)
    shapes = {incoming: dtypes.shape_of(local_type(incoming, placement[incoming]))} if incoming is not None else {}
    for v in ret.operands if outgoing is None else ():
        if placement[v] != rep:
            b.steps.append(Glue("reshard", v, (v, rep), (placement[v], rep, whole(v))))
    return LocalPlan(b.steps, list(fn.body.block.args), arg_pl, result_keys, constants, shapes)


def shard_of_coords(x: torch.Tensor, p: Placement, mesh: tuple[int, ...], coords: tuple[int, ...]) -> torch.Tensor:
    """The piece of a whole tensor the rank at `coords` holds (outer mesh axis first within a dim)."""
    for axis, d in enumerate(p):
        if d >= 0:
            x = x.chunk(mesh[axis], dim=d)[coords[axis]]
    return x.contiguous()


def _source_value(b: _Builder, v: SSAValue, p: Placement, sources: dict, local_type) -> SSAValue:
    if v in sources:
        name, tensor = sources[v]
        return b.param(v, name, tensor)
    return b.value(v, local_type(v, p))


def _slice(b: _Builder, x: SSAValue, dim: int, start: int, size: int) -> SSAValue:
    op = OPS_BY_NAME["kiln.slice"].make(x, dim=dim, start=start, end=start + size, step=1)
    b.block.add_op(op)
    return op.results[0]


def _after_slice(p: Placement, s) -> Placement:
    q = list(p)
    q[s.axis] = s.dim
    return tuple(q)


def _check_shape(op, made: SSAValue, want: tuple[int, ...]) -> None:
    got = dtypes.shape_of(made.type)
    if tuple(got) != tuple(want):
        raise LocalProgramError(f"{op.name}: the local op computes {tuple(got)} but its placement "
                                f"wants {tuple(want)}; this plan cannot be cut per rank")


def build(plan: LocalPlan, backend_name: str, num_threads: int = 1, cache_dir: Path | None = None) -> dict[str, Any]:
    """Each local program through the backend's pipeline and build; returns build facts."""
    import time

    from backends import BuildOptions, get_backend
    from passes import run_pipeline

    backend = get_backend(backend_name)
    opts = BuildOptions(cache_dir=cache_dir, num_threads=num_threads)
    start = time.perf_counter()
    kernels = 0
    for seg in plan.segments:
        run_pipeline(seg.program.module, backend.pipeline())
        seg.kernel = backend.build(seg.program, opts)
        kernels += seg.kernel.num_kernels
    return {"backend": backend_name, "local_programs": len(plan.segments), "kernels": kernels,
            "build_s": time.perf_counter() - start}
