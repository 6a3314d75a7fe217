"""Rank entry points that check the launcher itself: a group that works, and ranks that fail.

`kiln run` and the tests use these to show that a failing or vanished rank stops the
others with a one-line error inside the process-group timeout instead of hanging.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from compiler.distributed.launch import RankContext


def sum_ranks(ctx: RankContext) -> float:
    x = torch.tensor([float(ctx.rank)])
    dist.all_reduce(x)
    return float(x.item())


def raise_on_last(ctx: RankContext) -> float:
    """The last rank raises; the others block in an all_reduce it never joins."""
    if ctx.rank == ctx.world_size - 1:
        raise ValueError("shard 3 of weight w1 is missing")
    x = torch.ones(1)
    dist.all_reduce(x)
    return float(x.item())


def exit_on_last(ctx: RankContext) -> float:
    """The last rank vanishes without a word (as a killed process would)."""
    if ctx.rank == ctx.world_size - 1:
        os._exit(3)
    x = torch.ones(1)
    dist.all_reduce(x)
    return float(x.item())
