"""The arrays an HLS design stores, read off the IR: what `tiers=fpga` places.

An HLS design is not an arena. The backend (`backends/hls/lower.py`) makes one static
array per layer output for the whole call (no reuse across layers, no in-place writes),
folds every value computed from parameters alone at build time (a quantized weight's
`kiln.dequantize` becomes the weight array, stored in the format it names), and stores an
activation that a fixed-point `kiln.quantize` / `kiln.dequantize` pair reads in that pair's
type (the codes array never exists). So the FPGA tier plan places these arrays, each for
the whole call:

- a weight: a constant value (a parameter, or an op whose operands are all constant) read
  by a compute op; the parameters behind a folded weight are not stored. Only the weight
  operand of a linear, conv2d, matmul or embedding may go to DDR (the backend streams it through an
  `m_axi` port); biases and other constants stay on chip;
- an activation (per sample: the design keeps the batch dim first and runs one sample per
  call): every other result of a compute op that is not returned (returned values are the
  top function's output ports), except the results of an activation's
  `kiln.quantize` and `kiln.dequantize`, and reshapes (a flat C++ array is its own view).

Sizes are the stored element's bytes (`sizes.py`); the traffic a value moves per call is
its bytes written once (activations) and read once per reader.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xdsl.dialects import func
from xdsl.dialects.builtin import IntegerAttr
from xdsl.ir import Operation, SSAValue

from ir import dtypes
from passes.memory.lifetimes import SOURCE_OPS, VIEW_OPS
from passes.memory.sizes import fixed_bits, fpga_bits

# The HLS layers' partitioning of activation arrays (backends/hls/cpp_layers.py
# `_partition`): completely partitioned (registers) up to this many elements, else cyclic.
COMPLETE_PARTITION_MAX = 4096
CYCLIC_FACTOR = 8
# op -> the operand that is its weight: what may be streamed from DDR. (The HLS backend
# emits no embedding; a design that gathers rows of a table would read it from DDR too.)
STREAMED_WEIGHT = {"kiln.linear": 1, "kiln.conv2d": 1, "kiln.matmul": 1, "kiln.embedding": 0}
ON_CHIP = ("bram", "uram")


@dataclass(frozen=True)
class Array:
    value: SSAValue
    name: str
    nbytes: int
    traffic: int
    weight: bool
    banks: int = 1  # partitions the HLS layers read in parallel (`cpp_layers._partition`)
    movable: tuple[str, ...] = ()  # tiers allowed; empty: all


def _weight_banks(value: SSAValue, readers: list[Operation]) -> int:
    """A dense or conv weight is block partitioned into `numel / R` banks (R: the reuse
    factor `hls-reuse` wrote on its reader; without one the lowering uses R = 1)."""
    numel = math.prod(dtypes.shape_of(value.type))
    for reader in readers:
        attr = reader.attributes.get("reuse_factor")
        if isinstance(attr, IntegerAttr) and attr.value.data > 0:
            return max(1, numel // attr.value.data)
    return max(1, numel)


def _constant_values(fn: func.FuncOp) -> set[SSAValue]:
    const: set[SSAValue] = set()
    for op in fn.body.block.ops:
        if op.name in SOURCE_OPS or (op.operands and all(v in const for v in op.operands)):
            const.update(op.results)
    return const


def _is_act_quant(op: Operation, const: set[SSAValue]) -> bool:
    return op.name in ("kiln.quantize", "kiln.dequantize") and op.operands[0] not in const


def _name(op: Operation, value: SSAValue) -> str:
    name = op.properties.get("name")
    base = getattr(name, "data", None) or op.name.removeprefix("kiln.")
    return f"{base}#{value.index}" if len(op.results) > 1 else str(base)


def hls_arrays(fn: func.FuncOp) -> list[Array]:
    const = _constant_values(fn)
    returned = set(fn.body.block.last_op.operands) if fn.body.block.last_op else set()
    out: list[Array] = []
    for op in fn.body.block.ops:
        if not op.name.startswith("kiln."):
            continue
        for r in op.results:
            readers = [u.operation for u in r.uses]
            if r in const:
                if not any(u.name.startswith("kiln.") and not all(v in const for v in u.operands) for u in readers):
                    continue  # only folded into another constant, or unused
                bits = None
                if op.name == "kiln.dequantize":
                    bits = fixed_bits(op.properties["format"].data)  # type: ignore[attr-defined]
                bits = bits or fpga_bits(r, is_weight=True)
                nbytes = -(-math.prod(dtypes.shape_of(r.type)) * bits // 8)
                # Only a contraction's weight operand can become an m_axi port; biases, norm
                # affines and tables stay constant arrays in the firmware.
                streamed = any(u.name in STREAMED_WEIGHT and len(u.operands) > STREAMED_WEIGHT[u.name]
                               and u.operands[STREAMED_WEIGHT[u.name]] == r for u in readers)
                out.append(Array(r, _name(op, r), nbytes, nbytes * len(readers), True, _weight_banks(r, readers),
                                 () if streamed else ON_CHIP))
                continue
            if r in returned or _is_act_quant(op, const) or op.name in VIEW_OPS:
                continue
            shape = dtypes.shape_of(r.type)
            numel = math.prod(shape[1:])  # per sample: the design runs one sample per call
            nbytes = -(-numel * fpga_bits(r, is_weight=False) // 8)
            banks = numel if numel <= COMPLETE_PARTITION_MAX else CYCLIC_FACTOR
            out.append(Array(r, _name(op, r), nbytes, nbytes * (1 + len(readers)), False, banks))
    return out


def table_bram(fn: func.FuncOp, part: str, table_size: int = 1024) -> int:
    """BRAM18 blocks the design's lookup tables take (activations, softmax, layer norm), as
    `hls-reuse` counts them (`passes/reuse_factor.layer_models`, its default table size).
    They are no arrays of the tier plan, so the plan must leave them their blocks: without
    this a plan could fill the BRAM and the design still not fit (the zoo mlp's GELU)."""
    from cost_models.fpga import DEFAULT_PART, PARTS
    from passes.reuse_factor import layer_models

    _, fixed, _ = layer_models(fn, PARTS[part or DEFAULT_PART], 16, table_size)
    return sum(layer.resources.bram_18k for layer in fixed)

