"""Alpha-beta cost of collectives over a device mesh, for the parallelism passes.

time = alpha * messages + bytes_on_the_wire / bandwidth, per collective and per mesh axis,
with the classic step counts (Thakur, Rabenseifner and Gropp; NCCL's ring and tree):

| collective | steps | bytes each device sends |
|---|---|---|
| all_reduce, ring | 2 (p - 1) | 2 (p - 1) / p * n |
| all_reduce, tree (reduce then broadcast over a binary tree) | 2 ceil(log2 p) | 2 ceil(log2 p) * n |
| all_gather / reduce_scatter (ring) | p - 1 | (p - 1) / p * n   (n = the full tensor) |
| all_to_all (pairwise) | p - 1 | (p - 1) / p * n   (n = what one device holds) |
| send / recv | 1 | n |

all_reduce takes the cheaper of ring and tree (NCCL picks by size in the same way: tree
for latency-bound small messages, ring for bandwidth-bound large ones).

A mesh axis's link is the slowest one it crosses: the mesh is laid out row-major over the
devices, so the last axis is the innermost; an axis whose groups stay inside one node uses
the intra-node link (NVLink), any other axis the inter-node one (InfiniBand). The gloo
entry is this machine (processes on loopback), measured by `kiln calibrate --comm`; the
GPU entries are datasheet numbers with NCCL-typical latencies.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from cost_models.hardware import A100, CPU_DEFAULT, H100, Hardware, calibration_path


@dataclass(frozen=True)
class Link:
    alpha_s: float  # latency of one message step
    bandwidth: float  # bytes/s one device can send on this link (one direction)


@dataclass(frozen=True)
class Cluster:
    """Devices, how many share a node, and the links inside and between nodes."""

    name: str
    device: Hardware
    devices_per_node: int
    intra: Link
    inter: Link
    memory_bytes: float  # per device

    def axis_link(self, mesh: tuple[int, ...], axis: int) -> Link:
        stride = math.prod(mesh[axis + 1:])
        return self.intra if stride * mesh[axis] <= self.devices_per_node else self.inter


# gloo on loopback, 2 shared cores: ~1.5 ms for a 1 MiB all_reduce on 2 ranks
# (ENVIRONMENT.md); `kiln calibrate --comm` replaces these with this host's numbers.
GLOO_LOOPBACK = Cluster("gloo", CPU_DEFAULT, 1 << 16, Link(60e-6, 0.7e9), Link(60e-6, 0.7e9), 24e9)
# NVLink 3 (A100): 600 GB/s bidirectional per GPU; HDR InfiniBand 200 Gb/s per GPU.
A100_NODE = Cluster("a100-node", A100, 8, Link(8e-6, 300e9), Link(15e-6, 25e9), 80e9)
# NVLink 4 (H100 SXM): 900 GB/s bidirectional per GPU; NDR InfiniBand 400 Gb/s per GPU.
H100_NODE = Cluster("h100-node", H100, 8, Link(6e-6, 450e9), Link(12e-6, 50e9), 80e9)
H100_CLUSTER = Cluster("h100-4node", H100, 8, Link(6e-6, 450e9), Link(12e-6, 50e9), 80e9)

CLUSTERS: dict[str, Cluster] = {c.name: c for c in (GLOO_LOOPBACK, A100_NODE, H100_NODE, H100_CLUSTER)}


def get_cluster(name: str) -> Cluster:
    if name not in CLUSTERS:
        raise ValueError(f"unknown cluster {name!r}; known: {', '.join(sorted(CLUSTERS))}")
    if name == "gloo":
        return load_calibrated_gloo() or GLOO_LOOPBACK
    return CLUSTERS[name]


def all_reduce_ring(n: float, p: int, link: Link) -> float:
    if p <= 1 or n <= 0:
        return 0.0
    return 2 * (p - 1) * link.alpha_s + 2 * (p - 1) / p * n / link.bandwidth


def all_reduce_tree(n: float, p: int, link: Link) -> float:
    if p <= 1 or n <= 0:
        return 0.0
    steps = 2 * math.ceil(math.log2(p))
    return steps * link.alpha_s + steps * n / link.bandwidth


def all_reduce(n: float, p: int, link: Link) -> float:
    return min(all_reduce_ring(n, p, link), all_reduce_tree(n, p, link))


def all_gather(n: float, p: int, link: Link) -> float:
    """`n` is the gathered (full) tensor's bytes."""
    if p <= 1 or n <= 0:
        return 0.0
    return (p - 1) * link.alpha_s + (p - 1) / p * n / link.bandwidth


def reduce_scatter(n: float, p: int, link: Link) -> float:
    """`n` is the bytes each device starts with (the unreduced full tensor)."""
    return all_gather(n, p, link)


def all_to_all(n: float, p: int, link: Link) -> float:
    """`n` is the bytes one device holds before the exchange."""
    if p <= 1 or n <= 0:
        return 0.0
    return (p - 1) * link.alpha_s + (p - 1) / p * n / link.bandwidth


def send_recv(n: float, link: Link) -> float:
    return 0.0 if n <= 0 else link.alpha_s + n / link.bandwidth


COLLECTIVES = {
    "all_reduce": all_reduce,
    "all_gather": all_gather,
    "reduce_scatter": reduce_scatter,
    "all_to_all": all_to_all,
}


def wire_bytes(kind: str, n: float, p: int) -> float:
    """Bytes one device sends for a collective (what the plan reports as communication)."""
    if p <= 1:
        return 0.0
    if kind == "all_reduce":
        return 2 * (p - 1) / p * n
    return (p - 1) / p * n


def fit_alpha_beta(samples: list[tuple[float, float]], p: int) -> Link:
    """Least squares of ring all_reduce times [(bytes, seconds)] -> a Link."""
    xs = [2 * (p - 1) / p * n for n, _ in samples]
    ys = [t for _, t in samples]
    k = 2 * (p - 1)
    # t = k alpha + x / bw: linear in (alpha, 1/bw)
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var if var else 1e-9
    slope = max(slope, 1e-12)
    alpha = max((mean_y - slope * mean_x) / k, 1e-7)
    return Link(alpha, 1.0 / slope)


def load_calibrated_gloo() -> Cluster | None:
    path = calibration_path()
    if not path.exists():
        return None
    try:
        comm = json.loads(path.read_text())["comm"]
        link = Link(float(comm["alpha_s"]), float(comm["bandwidth"]))
    except (ValueError, KeyError, TypeError):
        return None
    return Cluster("gloo", CPU_DEFAULT, 1 << 16, link, link, GLOO_LOOPBACK.memory_bytes)


def save_calibrated_gloo(link: Link, samples: list[tuple[float, float]]) -> None:
    """Adds a `comm` entry to the calibration file, keeping the roofline numbers there."""
    path = calibration_path()
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            data = {}
    data["comm"] = {**asdict(link), "samples": samples}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
