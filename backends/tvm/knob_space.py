"""The knobs of one TIR kernel: which values can change its code, and the code's identity.

`knobs.py` declares what every kernel accepts; many of those values do nothing to a given
kernel. A tile that divides no pair of its loops, a vector wider than all of them, a
parallel threshold above its largest block, a loop order for a kernel whose rule has
one long loop: each leaves the code as another value does. The tuner must not spend a
measurement on them, so `KernelKnobs` reads the PrimFunc's blocks (`KernelShape`) and maps
every value to the one with the same effect on this kernel (the default where it is one
of them); `values` are what is left, the per-kernel search space the tuner proposes from.

That analysis is conservative: it merges two values only when their effect is certain
to be the same, and knobs can still coincide in combination (a parallel depth of one is
the automatic choice when the first loop has enough iterations). So `code_id` names a
configuration by the scheduled PrimFunc it produces (TVM's structural hash), and the
tuner measures each distinct code once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backends.tvm.knobs import (
    PARALLEL_KNOBS,
    THRESHOLDS,
    canonical,
    config_id,
    default_config,
    knob_values,
    schedule_options,
    stays_serial,
)


@dataclass(frozen=True)
class KernelShape:
    """What the knobs' effect on a kernel depends on, read from its unscheduled blocks."""

    rule: str  # the CPU rule that schedules it with the default knobs
    works: tuple[int, ...]  # iterations of each block: where the parallel threshold cuts
    extents: tuple[tuple[int, int], ...]  # (extent, element bits) of every block iterator
    pairs: tuple[tuple[int, int], ...]  # two innermost non-unit extents of each injective block
    loops: tuple[tuple[int, ...], ...]  # each block's iterator extents (parallel prefixes)
    column: bool  # a reduction whose output axis moves innermost (loop order applies)
    native_bits: int  # the target's SIMD width
    body_nodes: int = 1  # expression nodes in the largest block body (after inlining)
    transposed: bool = False  # a block reads along another axis than it writes innermost

    @property
    def max_work(self) -> int:
        return max(self.works, default=1)


# Unrolling copies a block body up to `auto_unroll` times, and a vector access that is not
# contiguous (a transpose, or any kernel under `loop_order=1`) becomes one scalar access per
# lane. Past this many expression nodes in all, LLVM's build time explodes: a GELU (377
# nodes) unrolled 192 times took 16 s to build for a 6k-element kernel, a 2x64x48 transpose
# with 16-lane scatters unrolled 192 times 123 s (the tuner's timeout is 60 s). Larger
# steps map to the largest one within the budget; GELU and softmax get 16, a transpose 16.
UNROLL_BUDGET = 1 << 13


@dataclass
class KernelKnobs:
    """A kernel's search space: its values per knob, canonical configs, code identity."""

    max_threads: int
    max_work: int
    maps: dict[str, dict[int, int]] = field(default_factory=dict)  # value -> its class's
    code: Callable[[dict[str, int]], str] | None = None
    shape: KernelShape | None = None
    _codes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def static(cls, max_threads: int = 2, max_work: int = 1 << 62) -> KernelKnobs:
        """Without the PrimFunc: the table's values, serial configs merged by work alone."""
        return cls(max_threads, max_work)

    @classmethod
    def of(
        cls, shape: KernelShape, max_threads: int = 2,
        code: Callable[[dict[str, int]], str] | None = None,
    ) -> KernelKnobs:
        return cls(max_threads, shape.max_work, _value_maps(shape, max_threads), code, shape)

    @property
    def values(self) -> dict[str, tuple[int, ...]]:
        """Each knob's values that can change this kernel's code (what `canonical` yields)."""
        default = self.default
        can_go_parallel = not stays_serial(self._open(), self.max_work)
        serial_default = stays_serial(default, self.max_work)
        out = {}
        for name, choices in knob_values(self.max_threads).items():
            if name in self.maps:
                choices = tuple(sorted({self.maps[name][v] for v in choices}))
            if name in PARALLEL_KNOBS or name == "num_threads":
                if not can_go_parallel or (serial_default and name == "num_threads"):
                    choices = (default[name],)
                elif name in THRESHOLDS:  # a threshold no block reaches is the serial config
                    choices = tuple(v for v in choices if v == default[name]
                                    or not stays_serial({**default, name: v}, self.max_work))
            out[name] = choices
        return out

    @property
    def default(self) -> dict[str, int]:
        return default_config(self.max_threads)

    def canonical(self, config: Mapping[str, Any]) -> dict[str, int]:
        """`config` checked (KnobError), each value replaced by its class's, and the
        parallel knobs of a configuration that keeps this kernel serial at the values of
        the defaults (when they keep it serial too) or of one thread."""
        out = canonical(config, self.max_threads)
        for name, classes in self.maps.items():
            out[name] = classes.get(out[name], out[name])
        if self.shape is not None and out.get("auto_unroll"):
            out["auto_unroll"] = _unroll_cap(self.shape, out, knob_values(self.max_threads)["auto_unroll"])
        if stays_serial(out, self.max_work):
            default = self.default
            serial = default if stays_serial(default, self.max_work) else {**default, "num_threads": 1}
            out.update({n: serial[n] for n in (*PARALLEL_KNOBS, "num_threads") if n in out})
        return canonical(out, self.max_threads)

    def code_id(self, config: dict[str, int]) -> str:
        """What `config` compiles this kernel to (the configuration itself when unknown)."""
        ident = config_id(config)
        if self.code is None:
            return ident
        if ident not in self._codes:
            self._codes[ident] = self.code(config)
        return self._codes[ident]

    def _open(self) -> dict[str, int]:
        """The configuration most likely to go parallel (the lowest threshold)."""
        values = knob_values(self.max_threads)
        return {**self.default, **{n: min(values[n]) for n in PARALLEL_KNOBS if n in values},
                "num_threads": max(values["num_threads"])}


def _value_maps(shape: KernelShape, max_threads: int) -> dict[str, dict[int, int]]:
    values = knob_values(max_threads)
    default = default_config(max_threads)
    threads = [t for t in values.get("num_threads", (1,)) if t > 1]
    tiles = [t for t in values.get("tile", (0,)) if _tile_applies(shape, t)] if shape.rule != "rows" else []
    effects: dict[str, Callable[[int], Hashable]] = {
        "min_parallel_elems": lambda t: tuple(w >= t for w in shape.works),
        "chunks_per_thread": lambda c: tuple(
            _fused(ext, n * c) for n in threads for ext in _prefix_lists(shape, tiles)
        ),
        "parallel_depth": lambda d: min(d, max(map(len, shape.loops), default=0) + 2 * bool(tiles)),
        "vector_lanes": lambda v: _vector_effect(shape, v, tiles),
        "tile": lambda t: t if t in tiles else 0,
        "loop_order": lambda o: o if _order_applies(shape) else 0,
    }
    if shape.rule in ("parallel", "none"):  # no vector loops, tiles or loop order
        for name in ("vector_lanes", "tile", "loop_order"):
            effects[name] = lambda v: 0
    unroll = [v for v in values.get("auto_unroll", (0,)) if v * shape.body_nodes <= UNROLL_BUDGET]
    effects["auto_unroll"] = lambda v: min(v, max(unroll, default=0))
    if shape.rule == "none":
        effects["auto_unroll"] = lambda v: 0
    maps = {}
    for name, effect in effects.items():
        if name in values:
            maps[name] = _classes(values[name], default[name], effect)
    return maps


def _unroll_cap(shape: KernelShape, config: dict[str, int], steps: tuple[int, ...]) -> int:
    """`config`'s unroll step, capped so the unrolled code stays within `UNROLL_BUDGET`."""
    per_copy = shape.body_nodes
    if shape.transposed or config.get("loop_order"):  # gathers or scatters: a node per lane
        per_copy *= (config.get("vector_lanes") * 32 or shape.native_bits) // 32
    allowed = [v for v in steps if v * per_copy <= UNROLL_BUDGET]
    return min(config["auto_unroll"], max(allowed, default=0))


def _classes(values: tuple[int, ...], default: int, effect: Callable[[int], Hashable]) -> dict[int, int]:
    """Each value's class representative: the default where it is in the class, else the
    smallest value with the same effect."""
    first: dict[Hashable, int] = {effect(default): default}
    for v in sorted(values):
        first.setdefault(effect(v), v)
    return {v: first[effect(v)] for v in values}


def _tile_applies(shape: KernelShape, tile: int) -> bool:
    return tile > 0 and any(a % tile == 0 and b % tile == 0 and a > tile and b > tile for a, b in shape.pairs)


def _order_applies(shape: KernelShape) -> bool:
    return shape.column or (shape.rule != "rows" and bool(shape.pairs))


def _vector_effect(shape: KernelShape, lanes: int, tiles: list[int]) -> tuple:
    """How a vector width treats each loop a vector loop could be made of."""
    out = []
    for ext, bits in (*shape.extents, *((t, 32) for t in tiles)):
        n = max((lanes * 32 if lanes else shape.native_bits) // bits, 2)
        if ext < 2:
            continue
        if ext <= n:
            out.append("whole")
        elif ext % n == 0:
            out.append(("split", n))
        else:
            out.append(("tail", n) if lanes else "llvm")
    return tuple(out)


def _prefix_lists(shape: KernelShape, tiles: list[int]) -> list[tuple[int, ...]]:
    """Each block's loop extents as the parallel prefix sees them, untiled and tiled."""
    out = list(shape.loops)
    for t in tiles:
        for ext in shape.loops:
            long = [i for i, e in enumerate(ext) if e != 1]
            if len(long) >= 2 and all(ext[i] % t == 0 and ext[i] > t for i in long[-2:]):
                i, j = long[-2:]
                out.append((*ext[:i], ext[i] // t, *ext[i + 1:j], ext[j] // t, t, t))
    return out


def _fused(extents: tuple[int, ...], want: int) -> int:
    """The iterations of the parallel loop `parallelize` fuses for `want` chunks."""
    total = 1
    for e in extents:
        total *= e
        if total >= want:
            break
    return total


# ---- reading a PrimFunc -----------------------------------------------------------------


def kernel_shape(func: Any, target: Any) -> KernelShape:
    """The shape of an unscheduled (legalized, fused) PrimFunc as the CPU rules see it:
    the blocks left after inlining, and the loops each rule may make parallel."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    from backends.tvm import tir_access
    from backends.tvm.loop_steps import block_domain, column_iter, inline_producers, iteration_count
    from backends.tvm.schedule import schedule_prim_func
    from backends.tvm.target import vector_bits

    rule = schedule_prim_func(func, target, schedule_options(default_config(2)))[1]
    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch) or []
    if rule in ("injective", "rows", "blocks"):
        infos = inline_producers(sch, infos)
    lead = [len(i.dom_kind()) - len(i.dom_kind().lstrip("S")) for i in infos]
    works, extents, pairs, loops, column, nodes, transposed = [], [], [], [], False, 1, False
    for info, n in zip(infos, lead):
        stmt = sch.get(info.block_rv)
        nodes = max(nodes, sum(1 for _ in tir_access.walk(stmt.body)))
        transposed = transposed or _reads_across(stmt)
        domain = [e if e is not None else 1 << 16 for e in block_domain(info)]
        body = sch.get(info.block_rv).body
        bits = int(body.buffer.dtype.bits) if isinstance(body, tirx.BufferStore) else 32
        works.append(iteration_count(block_domain(info)))
        extents += [(e, bits) for e in domain]
        long = [e for e in domain if e != 1]
        if info.is_injective() and len(long) >= 2 and rule != "rows":
            pairs.append((long[-2], long[-1]))
        elif not info.is_injective() and column_iter(sch, info.block_rv) is not None:
            column = True
        # the loops `parallelize` may fuse: the shared rows, a reduction's leading spatial
        # loops, an injective block's loops, the first loop (rule "parallel")
        n = {"rows": min(lead), "parallel": 1}.get(rule, len(domain) if info.is_injective() else n)
        loops.append(tuple(domain[:n]))
    return KernelShape(
        rule, tuple(works), tuple(sorted(set(extents))), tuple(sorted(set(pairs))),
        tuple(loops), column, vector_bits(target), nodes, transposed,
    )


def _reads_across(block: Any) -> bool:
    """Whether the block reads an input whose innermost index is not the axis it writes
    innermost, while another index is (a transpose: one side of its vectors is strided)."""
    from tvm import tirx

    from backends.tvm import tir_access

    out = tir_access.output_innermost_index(block)
    if not isinstance(out, tirx.Var):
        return False
    for indices in tir_access.input_indices(block):
        if not tir_access.uses_var(indices[-1], out) and any(tir_access.uses_var(i, out) for i in indices):
            return True
    return False


def kernel_prim_func(program: Any, target: Any) -> Any:
    """The one TIR kernel of a one-kernel program (`knobs.extract_site`), legalized and
    fused as a build does, before scheduling."""
    from backends.tvm.compile import fuse
    from backends.tvm.lower import lower_program

    lowered = lower_program(program)
    fused = fuse(lowered.module, target, lowered.grouped)
    [gvar] = [g for g in fused.get_global_vars() if g.name_hint.startswith("kiln_group_")]
    return fused[gvar]


def kernel_knobs(program: Any, target: Any, max_threads: int = 2) -> KernelKnobs:
    """The search space of the one TIR kernel of `program`, with code identity."""
    return knob_space_of(program, target)(max_threads)


def knob_space_of(program: Any, target: Any) -> Callable[[int], KernelKnobs]:
    """`kernel_knobs` for any thread count, the PrimFunc lowered and read on first use
    (a tuner skips kernels the cache knows already). `target`: a Target or its string."""
    import tvm_ffi
    from tvm.target import Target

    from backends.tvm.schedule import schedule_prim_func

    found: dict[str, Any] = {}

    def space(max_threads: int) -> KernelKnobs:
        if not found:
            found["target"] = Target(target) if isinstance(target, str) else target
            found["func"] = kernel_prim_func(program, found["target"])
            found["shape"] = kernel_shape(found["func"], found["target"])
        func, tgt = found["func"], found["target"]

        def code(config: dict[str, int]) -> str:
            scheduled = schedule_prim_func(func, tgt, schedule_options(config, max_threads))[0]
            return f"{tvm_ffi.structural_hash(scheduled):016x}"

        return KernelKnobs.of(found["shape"], max_threads, code)

    return space


