"""Features of a kernel and of one configuration of it, for the learned cost model.

A kernel's features are computed once from its kiln ops (a fused group) and stored with
every measurement of it, so training needs no IR: op mix (how many elementwise, movement,
reduction, transcendental, normalization and layout ops), sizes (the largest iteration
space, outputs, innermost extent and whether vector lanes divide it), FLOPs, bytes moved
and the roofline estimate. A configuration adds its knob values and what they mean for
this kernel under the CPU rules' logic: does the kernel go parallel (`work` at least
`min_parallel_elems`), into how many chunks, and how much work each chunk gets; how wide
its vector loop is and whether that divides the innermost extent (else a scalar tail);
whether a tile divides it; loop order, parallel depth and unrolling as they are. Trees
could learn those interactions from the raw values too, but with tens of kernels of
training data, stating them is what lets a ranking carry over to kernels it never saw.

Sizes are log2-scaled: irrelevant to trees, but it keeps the feature table readable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from xdsl.ir import Operation

# Bump when a feature's definition changes: a saved model then refuses to load.
# 2: the loop-structure knobs (vector lanes, tile, loop order, parallel depth, unroll).
FEATURES_VERSION = "2"

# The SIMD width of this machine class in 32-bit lanes (AVX-512), what `vector_lanes=0`
# means; the TVM target reads it from LLVM (`target.vector_bits`).
NATIVE_LANES = 16

TRANSCENDENTAL = frozenset(
    f"kiln.{n}"
    for n in ("exp", "log", "tanh", "erf", "gelu", "silu", "sigmoid", "pow", "rsqrt", "sqrt",
              "sin", "cos", "softmax", "log_softmax")
)
NORMALIZATION = frozenset(
    f"kiln.{n}" for n in ("layer_norm", "rms_norm", "softmax", "log_softmax", "batch_norm")
)
LAYOUT = frozenset(f"kiln.{n}" for n in ("permute", "concat", "slice", "expand"))

KERNEL_FEATURES: tuple[str, ...] = (
    "n_ops",
    "n_elementwise",
    "n_movement",
    "n_reduction",
    "n_transcendental",
    "n_normalization",
    "n_layout",
    "n_inputs",
    "n_outputs",
    "log2_work",
    "log2_out_elems",
    "log2_reduce_extent",
    "inner_extent",
    "inner_divisible_16",
    "out_rank",
    "bytes_per_elem",
    "log2_flops",
    "log2_bytes",
    "roofline_us",
)
CONFIG_FEATURES: tuple[str, ...] = (
    "num_threads",
    "log2_parallel_threshold",
    "threshold_in_work_units",
    "chunks_per_thread",
    "goes_parallel",
    "parallel_margin",
    "out_parallel_margin",
    "chunks",
    "log2_work_per_chunk",
    "parallel_depth",
    "vector_lanes",
    "vector_native",
    "lanes_divide_inner",
    "lanes_cover_inner",
    "tile",
    "tile_divides_inner",
    "loop_order",
    "log2_auto_unroll",
)
FEATURE_NAMES: tuple[str, ...] = KERNEL_FEATURES + CONFIG_FEATURES


def kernel_features(ops: Sequence[Operation], hw: Any = None) -> dict[str, float]:
    """Features of the kernel that runs `ops` as one fused group."""
    from cost_models.hardware import get_hardware
    from cost_models.roofline import group_cost
    from ir import dtypes
    from ir.core import DataMovement, Elementwise, Reduction

    hw = hw if hw is not None else get_hardware("cpu")
    members = set(ops)
    outputs = [
        r for op in ops for r in op.results
        if not r.uses or any(u.operation not in members for u in r.uses)
    ]
    inputs = {
        v for op in ops for v in op.operands
        if not (isinstance(v.owner, Operation) and v.owner in members)
    }
    sizes = [_numel(v.type) for op in ops for v in (*op.operands, *op.results)]
    work = max(sizes, default=1)
    out_elems = sum(_numel(r.type) for r in outputs) or 1
    largest = max(outputs, key=lambda r: _numel(r.type), default=None)
    shape = list(dtypes.shape_of(largest.type)) if largest is not None else [1]
    inner = shape[-1] if shape else 1
    elem_bytes = dtypes.nbytes(largest.type) / max(1, _numel(largest.type)) if largest else 4
    cost = group_cost(ops, hw)
    return {
        "n_ops": len(ops),
        "n_elementwise": sum(op.has_trait(Elementwise) or op.name == "kiln.batch_norm" for op in ops),
        "n_movement": sum(op.has_trait(DataMovement) for op in ops),
        "n_reduction": sum(op.has_trait(Reduction) for op in ops),
        "n_transcendental": sum(op.name in TRANSCENDENTAL for op in ops),
        "n_normalization": sum(op.name in NORMALIZATION for op in ops),
        "n_layout": sum(op.name in LAYOUT for op in ops),
        "n_inputs": len(inputs),
        "n_outputs": len(outputs),
        "log2_work": math.log2(work),
        "log2_out_elems": math.log2(out_elems),
        "log2_reduce_extent": math.log2(max(1.0, work / max(1, _numel(largest.type) if largest else 1))),
        "inner_extent": inner,
        "inner_divisible_16": float(inner % 16 == 0),
        "out_rank": len(shape),
        "bytes_per_elem": elem_bytes,
        "log2_flops": math.log2(1 + cost.flops),
        "log2_bytes": math.log2(1 + cost.bytes_moved),
        "roofline_us": cost.seconds * 1e6,
    }


def config_features(kernel: Mapping[str, float], config: Mapping[str, Any]) -> dict[str, float]:
    """What a configuration of the TVM backend's TIR knobs means for this kernel.

    The parallel threshold is `min_parallel_work` (iterations times expression nodes of a
    block body, as `backends/tvm/loop_steps.py` counts it now) or `min_parallel_elems`
    (iterations, as it did before); a body's node count is estimated from the op count.
    """
    threads = int(config.get("num_threads", 2))
    lanes = int(config.get("vector_lanes", 0)) or NATIVE_LANES
    bits = 8 * kernel.get("bytes_per_elem", 4) or 32
    lanes = max(lanes * 32 // int(bits), 2)
    inner = int(kernel.get("inner_extent", 1))
    tile = int(config.get("tile", 0))
    chunks_per_thread = int(config.get("chunks_per_thread", 4))
    in_work_units = "min_parallel_work" in config
    if in_work_units:
        threshold = float(config["min_parallel_work"])
        scale = math.log2(min(64, 1 + 3 * kernel.get("n_ops", 1)))
    else:
        threshold = float(config.get("min_parallel_elems", 16384))
        scale = 0.0
    margin = kernel["log2_work"] + scale - math.log2(threshold)
    parallel = threads > 1 and margin >= 0
    chunks = threads * chunks_per_thread if parallel else 1
    return {
        "num_threads": threads,
        "log2_parallel_threshold": math.log2(threshold),
        "threshold_in_work_units": float(in_work_units),
        "chunks_per_thread": chunks_per_thread,
        "goes_parallel": float(parallel),
        # log2(work / threshold) of the largest block and of the output: which blocks of
        # a multi-block kernel reach the threshold (0 and up: parallel)
        "parallel_margin": margin if threads > 1 else -64.0,
        "out_parallel_margin": kernel["log2_out_elems"] + scale - math.log2(threshold) if threads > 1 else -64.0,
        "chunks": chunks,
        "log2_work_per_chunk": kernel["log2_work"] - math.log2(chunks),
        "parallel_depth": int(config.get("parallel_depth", 0)),
        "vector_lanes": lanes,
        "vector_native": float(not config.get("vector_lanes", 0)),
        "lanes_divide_inner": float(inner % lanes == 0),
        "lanes_cover_inner": float(inner <= lanes),
        "tile": tile,
        "tile_divides_inner": float(tile > 0 and inner % tile == 0 and inner > tile),
        "loop_order": int(config.get("loop_order", 0)),
        "log2_auto_unroll": math.log2(1 + int(config.get("auto_unroll", 0))),
    }


def feature_row(kernel: Mapping[str, float], config: Mapping[str, Any]) -> list[float]:
    both = {**kernel, **config_features(kernel, config)}
    return [float(both.get(name, 0.0)) for name in FEATURE_NAMES]


def feature_rows(kernel: Mapping[str, float], configs: Iterable[Mapping[str, Any]]) -> list[list[float]]:
    return [feature_row(kernel, c) for c in configs]


def _numel(tensor_type: Any) -> int:
    from ir import dtypes

    try:
        return max(1, math.prod(dtypes.shape_of(tensor_type)))
    except (TypeError, ValueError, AttributeError):
        return 1
