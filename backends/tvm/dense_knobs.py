"""The packed dense kernel's knobs: its register tile, so that `kiln tune` covers it.

`dense_packed.choose_tiles` picks the tile by rule (two vectors of outputs, the row count in
4..8 that pads the rows least, k unrolled by 8). The best tile depends on the shape and the
CPU (how many rows amortize a weight vector load, whether a third vector of outputs still
fits the registers), which is what the tuner is for. The knobs:

- `dense_mt`: rows per register tile (1..8);
- `dense_nb`: vectors of outputs per weight block (1..3: 16 to 48 floats with AVX-512);
- `dense_ku`: how far the k loop is unrolled (1, 2, 4, 8; the kernel takes the largest
  of it, 4, 2, 1 that divides K).

The accumulators, `mt * nb` vectors, must leave registers for the broadcast activations
and the weight vectors: at most 24 of AVX-512's 32, 12 of AVX2's 16. `DenseKnobs` is this
kernel's search space with the interface the tuner's search uses (`values`, `default`,
`canonical`, `code_id`), like `knob_space.KernelKnobs` for the scheduled kernels.

A dense kernel is named `kiln_dense_g<group>` in tuned configurations (`dense_kernels`),
and its key is the functional key of the extracted linear, as for every kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backends.tvm.dense_packed import DenseTiles, choose_tiles, tiled_length
from backends.tvm.knobs import KernelSite, Knob, KnobError, config_id

DENSE_KNOBS: tuple[Knob, ...] = (
    Knob("dense_mt", (1, 2, 3, 4, 5, 6, 7, 8), 0, "rows per register tile (default: the rule's)"),
    Knob("dense_nb", (1, 2, 3), 0, "vectors of outputs per weight block (default: the rule's)"),
    Knob("dense_ku", (1, 2, 4, 8), 8, "k unroll (the largest of it, 4, 2, 1 dividing K)"),
)
PREFIX = "kiln_dense_g"


def is_dense(config: Mapping[str, Any]) -> bool:
    return bool(config) and all(name.startswith("dense_") for name in config)


def accumulator_budget(lanes: int) -> int:
    """Vector registers a tile may hold as accumulators: 24 of 32 zmm, 12 of 16 ymm."""
    return 24 if lanes >= 16 else 12


@dataclass(frozen=True)
class DenseKnobs:
    """One packed linear's search space: rows `length` (the tiled lead dim), `k`, `n`."""

    length: int
    k: int
    n: int
    lanes: int

    @property
    def default(self) -> dict[str, int]:
        tiles = choose_tiles(self.length, self.n, self.lanes)
        return self.canonical({"dense_mt": tiles.mt, "dense_nb": tiles.nb // self.lanes, "dense_ku": tiles.ku})

    @property
    def values(self) -> dict[str, tuple[int, ...]]:
        """Each knob's values that change this kernel's code."""
        vectors = -(-self.n // self.lanes)
        return {
            "dense_mt": tuple(v for v in DENSE_KNOBS[0].values if v <= max(self.length, 1)),
            "dense_nb": tuple(v for v in DENSE_KNOBS[1].values if v <= max(vectors, 1)),
            "dense_ku": tuple(sorted({self._ku(v) for v in DENSE_KNOBS[2].values})),
        }

    def canonical(self, config: Mapping[str, Any]) -> dict[str, int]:
        """`config` checked against the table (KnobError), values that do the same as
        another mapped to it, and a tile that would spill the registers shrunk in rows."""
        unknown = sorted(set(config) - {k.name for k in DENSE_KNOBS})
        if unknown:
            raise KnobError(f"unknown dense knob(s) {unknown}; known: {[k.name for k in DENSE_KNOBS]}")
        out = {}
        for knob in DENSE_KNOBS:
            value = config.get(knob.name, knob.default)
            if isinstance(value, bool) or not isinstance(value, int) or (value not in knob.values and value != 0):
                raise KnobError(f"dense knob {knob.name}={value!r} is not one of {list(knob.values)}")
            out[knob.name] = value
        tiles = choose_tiles(self.length, self.n, self.lanes)
        nb = min(out["dense_nb"] or tiles.nb // self.lanes, max(-(-self.n // self.lanes), 1))
        mt = min(out["dense_mt"] or tiles.mt, max(self.length, 1), accumulator_budget(self.lanes) // nb)
        return {"dense_mt": mt, "dense_nb": nb, "dense_ku": self._ku(out["dense_ku"])}

    def code_id(self, config: dict[str, int]) -> str:
        return config_id(self.canonical(config))

    def tiles(self, config: Mapping[str, Any]) -> DenseTiles:
        c = self.canonical(config)
        return DenseTiles(c["dense_nb"] * self.lanes, c["dense_mt"], c["dense_ku"])

    def _ku(self, ku: int) -> int:
        return next(u for u in (ku, 4, 2, 1) if self.k % u == 0)


def dense_kernels(program: Any) -> list[tuple[KernelSite, DenseKnobs]]:
    """The program's linears that the rule runs on the packed kernel (default options),
    each with its search space. Kernels of stacked weights (experts) are left out."""
    from backends.tvm.dense_packed import DensePlan
    from backends.tvm.target import host_lanes

    block = program.forward.body.block
    lanes = host_lanes()
    out = []
    for op, site in DensePlan.of(block).sites.items():
        group = op.attributes.get("group")
        if group is None or site.batch:
            continue
        gid = group.value.data
        out.append((KernelSite(f"{PREFIX}{gid}", gid, (op,)), DenseKnobs(tiled_length(site.lead), site.k, site.n, lanes)))
    return out
