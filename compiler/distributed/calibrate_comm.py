"""`kiln calibrate --comm`: measure all_reduce on gloo ranks here and fit the alpha-beta link.

Each rank times ring-sized all_reduces (median of repeats, after a barrier) over a range
of sizes; rank 0's samples are fitted by least squares to `t = 2 (p - 1) alpha +
2 (p - 1) / p * n / bandwidth` (`cost_models.comm.fit_alpha_beta`) and stored in the
calibration file, where `get_cluster("gloo")` reads them.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.distributed as dist

from compiler.distributed.launch import RankContext, spawn
from cost_models.comm import Link, fit_alpha_beta, save_calibrated_gloo

SIZES = (1 << 10, 1 << 14, 1 << 17, 1 << 20, 1 << 22)


def time_all_reduce(ctx: RankContext, sizes: tuple[int, ...] = SIZES, repeats: int = 7) -> list[tuple[float, float]]:
    samples = []
    for n in sizes:
        x = torch.ones(n // 4)
        dist.all_reduce(x)  # warm the connection
        times = []
        for _ in range(repeats):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(x)
            times.append(time.perf_counter() - start)
        samples.append((float(n), statistics.median(times)))
    return samples


def calibrate_comm(nproc: int = 2, save: bool = True) -> tuple[Link, list[tuple[float, float]]]:
    samples = spawn("compiler.distributed.calibrate_comm:time_all_reduce", nproc, timeout_s=60)[0]
    link = fit_alpha_beta(samples, nproc)
    if save:
        save_calibrated_gloo(link, samples)
    return link, samples
