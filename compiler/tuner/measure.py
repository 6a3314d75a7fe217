"""Measuring candidate configurations in an isolated worker process, with a timeout.

A candidate schedule can crash the process (a codegen bug, a bad pointer in generated
code) or never finish. So nothing is built or run in the tuner's process: a worker
(`python -m compiler.tuner.worker`) builds the kernel with the candidate's knobs and times
it, and the tuner waits for its answer at most `timeout_s`. A worker that dies or does
not answer in time is killed and the candidate recorded as failed; the next job starts a
fresh worker. The worker stays alive between good candidates, so importing torch and TVM
(seconds) is paid once per run, not once per trial, the way TVM's own PopenPool works.

Messages are length-prefixed pickles over the worker's stdin and stdout; the worker
moves anything the toolchain prints to its stderr, which goes to a log file whose tail is
quoted when a worker dies.
"""

from __future__ import annotations

import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Self

import torch

# Importing torch and TVM in a fresh process takes 5-15 s on a loaded 2-core machine.
STARTUP_TIMEOUT_S = 180.0
_HEADER = struct.Struct("<Q")


@dataclass(frozen=True)
class MeasureJob:
    """Build the one-kernel program `ir_text` with each config and time it.

    Several configs in one job are timed interleaved (round-robin), so a comparison of
    them is not skewed by load that comes and goes; a job of one config is a trial.
    `fault` is a test hook: "crash", "hang" or "raise" makes the worker misbehave so the
    tuner's isolation can be tested; nothing else sets it.
    """

    ir_text: str
    params: dict[str, torch.Tensor]
    configs: list[dict[str, int]]
    threads: int = 2
    rounds: int = 7
    min_round_s: float = 0.002
    check: bool = True  # compare outputs with the reference interpreter
    # "library-call": each timed call follows a torch contraction, as in a model (see
    # `worker.library_call`); "isolated": a tight loop of the kernel alone
    context: str = "library-call"
    fault: str | None = None


@dataclass(frozen=True)
class MeasureResult:
    """Per config: seconds per call (fastest round), or None with the reason in `error`."""

    latencies: list[float | None]
    error: str | None = None
    build_s: float = 0.0
    wall_s: float = 0.0
    rounds: list[list[float]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and all(v is not None for v in self.latencies)


def send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def recv(stream: BinaryIO) -> Any:
    """The next message, or None at end of stream."""
    header = _read_exactly(stream, _HEADER.size)
    if header is None:
        return None
    data = _read_exactly(stream, _HEADER.unpack(header)[0])
    return None if data is None else pickle.loads(data)


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class MeasureWorker:
    """One worker process at a time; `measure` never raises for a bad candidate."""

    def __init__(self, log_dir: Path | None = None, startup_timeout_s: float = STARTUP_TIMEOUT_S) -> None:
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.gettempdir())
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self.starts = 0  # worker processes started: 1 + restarts after failures
        self.jobs = 0

    def measure(self, job: MeasureJob, timeout_s: float) -> MeasureResult:
        """Run `job` in the worker; a crash or a timeout is a failed result, not an error."""
        self.jobs += 1
        start = time.perf_counter()
        try:
            self._ensure_started()
        except WorkerError as err:
            return self._failed(job, f"worker did not start: {err}", start)
        try:
            send(self.proc.stdin, job)  # type: ignore[union-attr]
        except (BrokenPipeError, OSError):
            return self._failed(job, self._died("before the job was sent"), start)
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)  # type: ignore[union-attr]
        if not ready:
            self.stop()
            return self._failed(job, f"timed out after {timeout_s:.0f} s (worker killed)", start)
        reply = recv(self.proc.stdout)  # type: ignore[union-attr]
        if reply is None:
            return self._failed(job, self._died("while measuring"), start)
        return reply

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            if proc.poll() is None:
                send(proc.stdin, None)  # type: ignore[arg-type]
                proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        if self.log_path is not None:  # its tail was quoted already if the worker died
            self.log_path.unlink(missing_ok=True)
            self.log_path = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- plumbing -------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self.stop()
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        fd, log = tempfile.mkstemp(prefix="kiln-tune-worker-", suffix=".log", dir=self.log_dir)
        self.log_path = Path(log)
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "compiler.tuner.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=fd,
            env=env,
            start_new_session=True,  # a Ctrl-C in the terminal stops the tuner, which stops us
        )
        os.close(fd)
        ready, _, _ = select.select([self.proc.stdout], [], [], self.startup_timeout_s)
        hello = recv(self.proc.stdout) if ready else None  # type: ignore[arg-type]
        if hello != "ready":
            reason = self._died("at startup") if ready else f"no answer in {self.startup_timeout_s:.0f} s"
            self.stop()
            raise WorkerError(reason)

    def _died(self, when: str) -> str:
        proc = self.proc
        code = proc.wait() if proc is not None else None
        tail = ""
        if self.log_path is not None and self.log_path.exists():
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines()
                     if ln.strip() and not ln.startswith((" ", "\t"))]  # not source quotes
            tail = f"; last log line: {lines[-1][:200]}" if lines else ""
        self.stop()
        signal = f", signal {-code}" if code is not None and code < 0 else ""
        return f"worker died {when} (exit code {code}{signal}){tail}"

    def _failed(self, job: MeasureJob, reason: str, start: float) -> MeasureResult:
        return MeasureResult([None] * len(job.configs), reason, wall_s=time.perf_counter() - start)


class WorkerError(RuntimeError):
    pass
