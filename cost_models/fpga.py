"""Latency and resource model of the layers the HLS backend emits, and the FPGA parts.

What the numbers mean. Every layer processes one sample at a time as `rows` positions
(tokens of a linear, output pixels of a conv, rows of a softmax), one after another; the
top function runs layers in sequence, so the end-to-end latency of a sample is the sum of
the layer latencies, and the initiation interval of a dataflow version of the same design
is the largest layer interval. Cycle counts follow the structure of the generated C++
(`backends/hls/cpp_layers.py`), which is hls4ml's `io_parallel` resource strategy:

- A multiply-accumulate layer (dense, conv, matmul, attention) with reuse factor R does
  `mults / R` multiplications per cycle for R cycles per row (a pipelined loop with II=1
  over R iterations, the multiplications unrolled), so a row costs R cycles and the layer
  `rows * R + depth`, where depth is the multiplier latency plus the adder tree over the
  contributions one output receives per cycle.
- Each of the `mults / R` multipliers is one DSP48 slice when both operands are wider
  than 4 bits and fit the slice (27x18 on UltraScale+, 25x18 on 7-series; wider operands
  take several), else it is built from LUTs; each multiplier feeds one adder of the
  accumulator's width.
- Constant weights sit in `mults / R` banks of depth R (the weight array is block
  partitioned by `mults / R`, as hls4ml does): R = 1 folds the constants into the
  multiplier logic, a bank shallower than 64 words is a LUTRAM ROM (one LUT per bit per
  64 words), a deeper one a BRAM18 ROM per 18 bits of width and 1024 words of depth.
- Lookup-table activations (gelu, softmax, layer norm) process a row per cycle; each pair
  of parallel reads needs its own copy of the table (a BRAM18 has two ports).
- Activation buffers of more than 1024 elements live in BRAM, smaller ones in registers.

The constants are first-order, datasheet-level figures (hls4ml's own resource estimates
have the same shape); they rank choices, they do not replace a synthesis report. What the
reuse-factor pass needs is their monotone structure: a larger R trades latency for DSPs,
LUTs and, past the LUTRAM depth, BRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from cost_models.hardware import U280

LUTRAM_MAX_DEPTH = 64  # a bank shallower than this is a distributed (LUT) ROM
BRAM18_BITS = 18 * 1024
REGISTER_BUFFER_MAX = 1024  # activation buffers up to this many elements are registers
LUT_MULT_MAX_BITS = 4  # a product with an operand this narrow is built from LUTs


@dataclass(frozen=True)
class Part:
    """One FPGA device: the resources a design may use and its DSP slice geometry."""

    name: str
    family: str  # "ultrascale+" | "7series"
    dsp: int
    bram_18k: int
    lut: int
    ff: int
    dsp_a: int = 27  # multiplier operand widths of one DSP slice
    dsp_b: int = 18


# Datasheet numbers. The U280 entry is the one in `cost_models.hardware`; the others let a
# user target a smaller board (the Zynq 7020 is hls4ml's usual PYNQ-Z2 example).
PARTS: dict[str, Part] = {
    p.name: p
    for p in (
        Part("xcu280-fsvh2892-2L-e", "ultrascale+", int(U280.extra["dsp"]), int(U280.extra["bram_18k"]),
             int(U280.extra["lut"]), int(U280.extra["ff"])),
        Part("xcu250-figd2104-2L-e", "ultrascale+", 12288, 5376, 1_728_000, 3_456_000),
        Part("xcvu9p-flga2104-2L-e", "ultrascale+", 6840, 4320, 1_182_240, 2_364_480),
        Part("xczu9eg-ffvb1156-2-e", "ultrascale+", 2520, 1824, 274_080, 548_160),
        Part("xc7z020clg400-1", "7series", 220, 280, 53_200, 106_400, dsp_a=25, dsp_b=18),
    )
}
DEFAULT_PART = "xcu280-fsvh2892-2L-e"
# URAM blocks (288 Kb each) per part (datasheets); the 7-series and Zynq-7000 parts have none.
URAM_BLOCKS = {"xcu280-fsvh2892-2L-e": 960, "xcu250-figd2104-2L-e": 1280, "xcvu9p-flga2104-2L-e": 960,
               "xczu9eg-ffvb1156-2-e": 0, "xc7z020clg400-1": 0}
URAM_BITS = 288 * 1024
# Off-chip DDR behind an m_axi port: one 64-bit DDR4-2400 channel, and the cycles an AXI
# read burst waits before its first beat (a first-order figure; the kernel's clock).
DDR_BANDWIDTH = 19.2e9
AXI_LATENCY_CYCLES = 64


def get_part(name: str) -> Part:
    if name not in PARTS:
        raise ValueError(f"unknown FPGA part {name!r}; known parts: {', '.join(sorted(PARTS))}")
    return PARTS[name]


@dataclass(frozen=True)
class Resources:
    dsp: int = 0
    bram_18k: int = 0
    lut: int = 0
    ff: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.dsp + other.dsp, self.bram_18k + other.bram_18k,
                         self.lut + other.lut, self.ff + other.ff)

    def fits(self, budget: Resources) -> bool:
        return self.dsp <= budget.dsp and self.bram_18k <= budget.bram_18k and self.lut <= budget.lut

    def as_dict(self) -> dict[str, int]:
        return {"dsp": self.dsp, "bram_18k": self.bram_18k, "lut": self.lut, "ff": self.ff}


def budget_of(part: Part, fraction: float = 1.0) -> Resources:
    """The resources a design may use: `fraction` of the part's DSP, BRAM18, LUT and FF."""
    return Resources(int(part.dsp * fraction), int(part.bram_18k * fraction),
                     int(part.lut * fraction), int(part.ff * fraction))


def dsp_per_mult(a_bits: int, b_bits: int, part: Part) -> int:
    """DSP slices for one a x b multiplier; 0 when it is built from LUTs."""
    if min(a_bits, b_bits) <= LUT_MULT_MAX_BITS:
        return 0
    return min(math.ceil(a_bits / part.dsp_a) * math.ceil(b_bits / part.dsp_b),
               math.ceil(b_bits / part.dsp_a) * math.ceil(a_bits / part.dsp_b))


def lut_mult_cost(a_bits: int, b_bits: int) -> int:
    """LUTs of an a x b multiplier built from fabric (a shift-add array)."""
    return (a_bits * b_bits + 1) // 2 + max(a_bits, b_bits)


def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@dataclass(frozen=True)
class MacLayer:
    """A multiply-accumulate layer whose reuse factor is a decision."""

    name: str
    rows: int  # positions per sample, processed one after another
    n_in: int  # reduction length (contributions to one output)
    n_out: int  # outputs per row
    mults: int  # multiplications per row
    weight_bits: int
    act_bits: int
    acc_bits: int
    const_weights: bool = True  # weights are constants (a ROM) rather than activations
    max_reuse: int = 0  # 0: up to `mults`

    def candidates(self) -> list[int]:
        """Valid reuse factors: divisors of `mults`, so every multiplier does the same work."""
        limit = self.max_reuse or self.mults
        return [r for r in divisors(self.mults) if r <= limit]

    def multipliers(self, reuse: int) -> int:
        return self.mults // reuse

    def depth(self, reuse: int, part: Part) -> int:
        mult = 3 if dsp_per_mult(self.act_bits, self.weight_bits, part) else 1
        per_cycle = max(1, self.n_in // reuse)  # contributions one output receives per cycle
        return mult + math.ceil(math.log2(per_cycle)) + 2 if per_cycle > 1 else mult + 2

    def latency(self, reuse: int, part: Part) -> int:
        return self.rows * reuse + self.depth(reuse, part)

    def interval(self, reuse: int) -> int:
        return self.rows * reuse

    def resources(self, reuse: int, part: Part) -> Resources:
        m = self.multipliers(reuse)
        dsp = m * dsp_per_mult(self.act_bits, self.weight_bits, part)
        lut = m * self.acc_bits + 64  # one adder per multiplier, plus control
        if dsp == 0:
            lut += m * lut_mult_cost(self.act_bits, self.weight_bits)
        bram = 0
        if self.const_weights and reuse > 1:
            if reuse < LUTRAM_MAX_DEPTH:
                lut += m * self.weight_bits * math.ceil(reuse / 64)
            else:
                bram = m * math.ceil(self.weight_bits / 18) * math.ceil(reuse / 1024)
        ff = m * (self.act_bits + self.weight_bits) + self.n_out * self.acc_bits
        return Resources(dsp, bram, lut, ff)


@dataclass(frozen=True)
class FixedLayer:
    """A layer whose implementation is fixed (one row per cycle): its cost is a constant."""

    name: str
    kind: str
    latency: int
    interval: int
    resources: Resources = field(default_factory=Resources)


def table_copies(parallel_reads: int) -> int:
    return max(1, math.ceil(parallel_reads / 2))


def table_cost(entries: int, bits: int, parallel_reads: int) -> Resources:
    """ROM copies for `parallel_reads` lookups per cycle into a table of `entries` words."""
    copies = table_copies(parallel_reads)
    if entries < LUTRAM_MAX_DEPTH:
        return Resources(lut=copies * bits * math.ceil(entries / 64))
    return Resources(bram_18k=copies * math.ceil(bits / 18) * math.ceil(entries / 1024))


def elementwise_layer(name: str, kind: str, rows: int, width: int, bits: int, mults: int = 0,
                      part: Part | None = None) -> FixedLayer:
    """relu, add, casts, scale-shift, data movement: a row of `width` elements per cycle."""
    part = part or PARTS[DEFAULT_PART]
    dsp = mults * dsp_per_mult(bits, bits, part) if mults else 0
    res = Resources(dsp=dsp, lut=width * bits // 2 + 32, ff=width * bits)
    return FixedLayer(name, kind, rows + 2, rows, res)


def lut_activation_layer(name: str, rows: int, width: int, bits: int, table_entries: int,
                         table_bits: int, gated: bool, part: Part | None = None) -> FixedLayer:
    """gelu / silu (x * T(x)) and sigmoid / tanh (T(x)): a table read per element."""
    part = part or PARTS[DEFAULT_PART]
    res = table_cost(table_entries, table_bits, width) + Resources(lut=width * 24, ff=width * bits)
    if gated:
        res = res + Resources(dsp=width * dsp_per_mult(bits, table_bits, part))
    return FixedLayer(name, "lut", rows + 4, rows, res)


def softmax_layer(name: str, rows: int, width: int, bits: int, exp_entries: int, inv_entries: int,
                  table_bits: int, part: Part | None = None) -> FixedLayer:
    """max, exp table, sum, reciprocal table, scale: one row per cycle once the pipeline fills."""
    part = part or PARTS[DEFAULT_PART]
    log = math.ceil(math.log2(max(width, 2)))
    res = (table_cost(exp_entries, table_bits, width) + table_cost(inv_entries, table_bits, 1)
           + Resources(dsp=width * dsp_per_mult(table_bits, table_bits, part),
                       lut=width * (bits + 40), ff=width * (bits + table_bits)))
    return FixedLayer(name, "softmax", rows + 3 * log + 8, rows, res)


def layernorm_layer(name: str, rows: int, width: int, bits: int, table_entries: int,
                    table_bits: int, part: Part | None = None) -> FixedLayer:
    """sum, mean, squares, variance, rsqrt table, scale: one row per cycle."""
    part = part or PARTS[DEFAULT_PART]
    log = math.ceil(math.log2(max(width, 2)))
    per = dsp_per_mult(bits + 2, bits + 2, part) + 2 * dsp_per_mult(bits + 2, table_bits, part)
    res = table_cost(table_entries, table_bits, 1) + Resources(
        dsp=width * per, lut=width * (2 * bits + 40), ff=width * 3 * bits)
    return FixedLayer(name, "layer_norm", rows + 2 * log + 12, rows, res)


def pool_layer(name: str, rows: int, channels: int, window: int, bits: int) -> FixedLayer:
    """max / average pooling (and global average): `channels` outputs per position per cycle."""
    log = math.ceil(math.log2(max(window, 2)))
    res = Resources(lut=channels * window * bits // 2 + 32, ff=channels * bits)
    return FixedLayer(name, "pool", rows + log + 2, rows, res)


def buffer_cost(elements: int, bits: int) -> Resources:
    """An activation buffer between layers: registers when small, BRAM when large."""
    if elements <= REGISTER_BUFFER_MAX:
        return Resources(ff=elements * bits)
    return Resources(bram_18k=math.ceil(elements * bits / BRAM18_BITS))
