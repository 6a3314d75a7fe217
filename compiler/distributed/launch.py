"""Start N torch.distributed processes (gloo on loopback) and collect what each returns.

Kiln writes no transport of its own: `spawn` starts `nproc` processes with
`torch.multiprocessing`, each joins a gloo process group on `tcp://127.0.0.1:<free port>`
with one intra-op thread (2 cores are shared by every rank here) and a short process-group
timeout, runs `target(ctx, *args)` and pickles its return value to a scratch folder. Under
`torchrun` (RANK/WORLD_SIZE in the environment) `init_from_env` joins the group torchrun
made instead.

When a rank raises or dies, torch.multiprocessing terminates the others and the parent
raises `DistributedRunError` naming the rank and its last error line; a rank blocked in a
collective whose peer vanished gives up after `timeout_s` (gloo's own timeout), so nothing
hangs.
"""

from __future__ import annotations

import importlib
import os
import pickle
import socket
import tempfile
import traceback
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

DEFAULT_TIMEOUT_S = 30.0


class DistributedRunError(RuntimeError):
    """A rank failed or the group could not start; the message is one line."""


@dataclass(frozen=True)
class RankContext:
    """What a rank knows about itself; handed to every per-rank entry point."""

    rank: int
    world_size: int
    mesh: tuple[int, ...]
    timeout_s: float


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_rank(rank: int, world_size: int, port: int, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the gloo group on loopback with one thread per rank."""
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def init_from_env(timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[int, int]:
    """Under torchrun: join the group torchrun describes in the environment."""
    torch.set_num_threads(1)
    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
    return dist.get_rank(), dist.get_world_size()


def under_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ


def resolve(target: str) -> Any:
    """`package.module:function` -> the function (picklable across spawn by name)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _rank_main(
    rank: int, world_size: int, port: int, timeout_s: float, mesh: tuple[int, ...],
    target: str, args: tuple[Any, ...], out_dir: str,
) -> None:
    out = Path(out_dir) / f"rank{rank}.pkl"
    try:
        init_rank(rank, world_size, port, timeout_s)
        result = resolve(target)(RankContext(rank, world_size, mesh, timeout_s), *args)
        out.write_bytes(pickle.dumps(("ok", result)))
    except BaseException as err:
        line = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        out.write_bytes(pickle.dumps(("error", line, traceback.format_exc())))
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(
    target: str, nproc: int, args: tuple[Any, ...] = (), mesh: tuple[int, ...] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Any]:
    """Run `target(ctx, *args)` on `nproc` gloo ranks; returns each rank's result, by rank."""
    if nproc < 1:
        raise DistributedRunError(f"--nproc must be at least 1, got {nproc}")
    mesh = tuple(mesh or (nproc,))
    with tempfile.TemporaryDirectory(prefix="kiln-run-") as out_dir:
        try:
            mp.start_processes(
                _rank_main, args=(nproc, free_port(), timeout_s, mesh, target, args, out_dir),
                nprocs=nproc, join=True, start_method="spawn",
            )
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
            raise DistributedRunError(_first_failure(out_dir, nproc, err)) from None
        results = []
        for rank in range(nproc):
            _, *rest = pickle.loads((Path(out_dir) / f"rank{rank}.pkl").read_bytes())
            results.append(rest[0])
        return results


def _first_failure(out_dir: str, nproc: int, err: Exception) -> str:
    """The rank that failed first (its own error, not a peer's broken-pipe echo of it)."""
    failures = []
    for rank in range(nproc):
        path = Path(out_dir) / f"rank{rank}.pkl"
        if path.exists():
            status, *rest = pickle.loads(path.read_bytes())
            if status == "error":
                failures.append((rank, rest[0]))
    rank = getattr(err, "error_index", None)
    if not failures:
        # A rank that exited without writing (killed, os._exit): torch names its exit code.
        return f"rank {rank} died ({str(err).strip().splitlines()[0]}); the other ranks were stopped"
    own = [f for f in failures if not _is_echo(f[1])]
    if own:
        first = own[0]
        return f"rank {first[0]} failed: {first[1]}; the other ranks were stopped"
    dead = sorted(set(range(nproc)) - {f[0] for f in failures})
    who = f"rank {dead[0]} died" if dead else f"rank {failures[0][0]} lost a peer"
    return f"{who}; rank {failures[0][0]} saw: {_short(failures[0][1])}; the other ranks were stopped"


ECHOES = ("Connection closed by peer", "Connection reset", "Broken pipe", "Timed out", "timed out")


def _is_echo(line: str) -> bool:
    """A peer's view of another rank's failure (gloo's lost connection or timeout)."""
    return any(e in line for e in ECHOES)


def _short(line: str) -> str:
    return line if len(line) < 160 else line[:157] + "..."
