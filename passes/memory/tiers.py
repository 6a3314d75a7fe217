"""Memory tiers: which memory holds each buffer and weight, under capacity, by an ILP.

FPGA (`tiers=fpga part=<part>`): every weight and every buffer goes to BRAM, URAM or
off-chip DDR (through an `m_axi` port). On-chip memories are counted in blocks (an 18 Kb
BRAM, a 288 Kb URAM) and a buffer takes blocks only while it is live, so the capacity is a
constraint per step: weights (always live) plus the buffers live at that step, per tier,
within the part's block count. GPU (`tiers=gpu part=a100|h100 budget=BYTES`): every weight
sits in device memory or in pinned host memory read over PCIe; the arena of intermediates
is always on the device, so device weights plus the arena must fit the budget.

Cost: the bytes a value moves per call (written once, read once per reader) over its tier's
bandwidth. Modeled bandwidths (`TIERS`): BRAM and URAM give a block's two ports per cycle
per block used (a partitioned array reads its banks in parallel), DDR one 64-bit DDR4-2400
channel (19.2 GB/s), device memory the GPU's HBM bandwidth, pinned host memory PCIe 4.0
x16 (25 GB/s). The baseline is "fastest tier until full, largest first" (tiers in the
order listed); the ILP starts from it, so it is never worse. An on-chip array partitioned
into banks (`Item.banks`: the HLS layers partition small activations completely and a
weight into `mults / R` banks) reads all its banks per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cost_models.fpga import DDR_BANDWIDTH, DEFAULT_PART, PARTS, URAM_BLOCKS
from cost_models.hardware import SPECS
from cost_models.ilp import IntegerProgram, one_of, solve
from passes.registry import PipelineError

BRAM_BYTES = 18 * 1024 // 8
URAM_BYTES = 288 * 1024 // 8
FPGA_CLOCK_HZ = 300e6
PCIE_BANDWIDTH = 25e9
GPU_MEMORY = {"a100": 40 * 2**30, "h100": 80 * 2**30}


class TierError(PipelineError):
    """Bad tier options or a capacity too small for any plan (one-line message; a
    PipelineError, so `kiln opt` and `kiln compile` print it as one line)."""


@dataclass(frozen=True)
class Tier:
    name: str
    block_bytes: int  # capacity unit; 1 for byte-counted tiers
    capacity: float  # in blocks; inf when unbounded
    bandwidth_per_block: float  # bytes/s per block used (0: use `bandwidth`)
    bandwidth: float = 0.0

    def blocks(self, nbytes: int) -> int:
        return -(-nbytes // self.block_bytes) if self.block_bytes > 1 else nbytes

    def seconds(self, nbytes: int, traffic: int, banks: int = 1) -> float:
        """`banks`: memories the array is partitioned into (each read in parallel)."""
        bw = self.bandwidth or self.bandwidth_per_block * max(1, banks, self.blocks(nbytes))
        return traffic / bw


def check_part(kind: str, part: str) -> None:
    """Raise `TierError` for a part the tier kind does not know (checked with the options)."""
    known = PARTS if kind == "fpga" else GPU_MEMORY if kind == "gpu" else None
    if known is not None and part and part not in known:
        what = "FPGA part" if kind == "fpga" else "GPU for tiers=gpu"
        raise TierError(f"map-memory: unknown {what} {part!r}; known: {', '.join(sorted(known))}")


def tiers_for(kind: str, part: str, budget: float, arena_bytes: int) -> list[Tier]:
    """The tiers of a target, fastest first (the baseline fills them in this order)."""
    if kind == "fpga":
        name = part or DEFAULT_PART
        if name not in PARTS:
            raise TierError(f"map-memory: unknown FPGA part {name!r}; known parts: {', '.join(sorted(PARTS))}")
        return [
            Tier("bram", BRAM_BYTES, PARTS[name].bram_18k, 9 * FPGA_CLOCK_HZ),
            Tier("uram", URAM_BYTES, URAM_BLOCKS.get(name, 0), 18 * FPGA_CLOCK_HZ),
            Tier("ddr", 1, float("inf"), 0.0, DDR_BANDWIDTH),
        ]
    if kind == "gpu":
        name = part or "a100"
        if name not in GPU_MEMORY:
            raise TierError(f"map-memory: unknown GPU {name!r} for tiers=gpu; known: {', '.join(sorted(GPU_MEMORY))}")
        device = budget or GPU_MEMORY[name]
        if device < arena_bytes:
            raise TierError(
                f"map-memory: device budget {int(device)} bytes is smaller than the arena of "
                f"intermediates ({arena_bytes} bytes); no tier plan fits"
            )
        return [
            Tier("device", 1, device - arena_bytes, 0.0, SPECS[name].mem_bandwidth),
            Tier("host", 1, float("inf"), 0.0, PCIE_BANDWIDTH),
        ]
    raise TierError(f"map-memory: unknown tiers {kind!r}; use none, fpga or gpu")


@dataclass(frozen=True)
class Item:
    """A weight (live at every step: start=0, end=num_steps-1) or a buffer."""

    name: str
    nbytes: int
    traffic: int
    start: int
    end: int
    movable: tuple[str, ...] = ()  # tiers allowed; empty: all
    banks: int = 1  # on-chip partitions read in parallel (an HLS array's partition factor)


@dataclass
class TierPlan:
    choice: list[str]  # tier name per item
    status: str
    objective_us: float
    greedy_us: float
    slowest_us: float  # everything in the last (largest, slowest) tier
    bound_us: float
    gap: float
    seconds: float
    use: dict[str, int]  # peak blocks used per tier
    capacity: dict[str, float]
    reserved: dict[str, int] = field(default_factory=dict)  # blocks kept for what is no item (tables)


def plan_tiers(items: list[Item], tiers: list[Tier], num_steps: int, solver: str, time_limit: float) -> TierPlan:
    cost = [[t.seconds(it.nbytes, it.traffic, it.banks) * 1e6 if _allowed(it, t) else None for t in tiers] for it in items]
    greedy = _greedy(items, tiers, num_steps)
    greedy_us = sum(cost[i][k] for i, k in enumerate(greedy))
    slowest_us = sum([x for x in c if x is not None][-1] for c in cost)  # each in its last allowed tier
    choice, status, objective, bound, gap, seconds = greedy, "best-fit", greedy_us, greedy_us, 0.0, 0.0
    if solver == "ilp" and items:
        program = IntegerProgram()
        var: dict[tuple[int, int], int] = {}
        for i, row in enumerate(cost):
            for k, c in enumerate(row):
                if c is not None:
                    var[(i, k)] = program.add_var(c, name=f"y{i}_{tiers[k].name}")
            one_of(program, [var[(i, k)] for k in range(len(tiers)) if (i, k) in var])
        for k, tier in enumerate(tiers):
            if tier.capacity == float("inf"):
                continue
            for live in _live_sets(items, num_steps):
                row = {var[(i, k)]: float(tier.blocks(items[i].nbytes)) for i in live if (i, k) in var}
                if row:
                    program.add_constraint(row, upper=float(tier.capacity))
        start = [0.0] * program.num_vars
        for i, k in enumerate(greedy):
            start[var[(i, k)]] = 1.0
        solution = solve(program, time_limit=time_limit, initial=start)
        seconds = solution.seconds
        if solution.has_solution and solution.objective <= greedy_us + 1e-9:
            picked = {v for v in solution.chosen()}
            choice = [next(k for k in range(len(tiers)) if var.get((i, k)) in picked) for i in range(len(items))]
            status, objective = solution.status, float(solution.objective)
            bound, gap = float(solution.bound), float(solution.gap)
        else:
            status = "fallback"
    use = {t.name: _peak_use(items, choice, k, t, num_steps) for k, t in enumerate(tiers)}
    return TierPlan([tiers[k].name for k in choice], status, objective, greedy_us, slowest_us, bound, gap,
                    seconds, use, {t.name: t.capacity for t in tiers})


def _allowed(item: Item, tier: Tier) -> bool:
    return not item.movable or tier.name in item.movable


def _greedy(items: list[Item], tiers: list[Tier], num_steps: int) -> list[int]:
    """Largest first, each into the first tier with room at every step it is live."""
    used = [[0] * max(num_steps, 1) for _ in tiers]
    choice = [len(tiers) - 1] * len(items)
    # Items restricted to some tiers go first (they have nowhere else to go), then largest first.
    for i in sorted(range(len(items)), key=lambda i: (not items[i].movable, -items[i].nbytes)):
        it = items[i]
        for k, tier in enumerate(tiers):
            if not _allowed(it, tier):
                continue
            need = tier.blocks(it.nbytes)
            steps = range(it.start, it.end + 1)
            if all(used[k][t] + need <= tier.capacity for t in steps):
                for t in steps:
                    used[k][t] += need
                choice[i] = k
                break
        else:
            raise TierError(f"map-memory: {it.name} ({it.nbytes} bytes) must be in {' or '.join(it.movable)}, "
                            "which are full; no tier plan fits this part")
    return choice


def _live_sets(items: list[Item], num_steps: int) -> list[frozenset[int]]:
    """The distinct sets of items live at a step, dropping any contained in another."""
    sets = {frozenset(i for i, it in enumerate(items) if it.start <= t <= it.end) for t in range(max(num_steps, 1))}
    return [s for s in sets if not any(s < other for other in sets)]


def _peak_use(items: list[Item], choice: list[int], k: int, tier: Tier, num_steps: int) -> int:
    return max(
        (sum(tier.blocks(it.nbytes) for i, it in enumerate(items) if choice[i] == k and it.start <= t <= it.end)
         for t in range(max(num_steps, 1))),
        default=0,
    )
