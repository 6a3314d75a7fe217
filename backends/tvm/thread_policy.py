"""Per program, which pool owns the cores: TVM's (parallel TIR) or torch's (library calls).

Why this file exists: Kiln's TIR kernels run on TVM's thread pool and its library calls
(torch/MKL contractions, reference ops) on torch's OpenMP pool. On a 2-core host the two
pools fight whenever one wakes while the other's worker still spins: libgomp's worker
busy-waits after every parallel region unless the environment said otherwise before torch
loaded. Measured on Zen 4 (2026-12-04): with both pools at two threads and a polite
libgomp, the zoo's encoder went from 1.02x to 1.68x eager and gpt from 1.66x to 2.18x,
but moe, whose routing then ran torch ops between Kiln's kernels, fell from 1.31x to 0.65x.

So each program picks one owner:

- **parallel TIR**: kernels are built for TVM's pool (`threads`), and torch is held at one
  thread for the duration of the call (`torch.set_num_threads`, 0.1 us each way), so a
  library call inside the program runs on the calling thread and never wakes torch's
  worker. This wins when the library's share of the work is small.
- **serial TIR**: kernels are built serial (TVM's pool is never woken) and torch keeps its
  threads for the library calls: the old default, right for library-heavy programs and
  for programs of many small kernels, where a fork/join costs more than half a kernel.

The split is read from the lowered Relax module: the FLOPs of every `kiln.*` packed call
(linear, matmul, conv2d, attention, embedding, reference ops) against the program's total,
and the average FLOPs per op (`MIN_FLOPS_PER_OP`).
The threshold is `MAX_LIBRARY_SHARE`; `extra={"threads": "parallel"|"serial"}` forces a
plan, and an explicit `num_threads` from the caller (the tuner's worker, a user who chose)
bypasses the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import relax

# Above this share of the program's FLOPs in library calls, torch keeps the cores. Where the
# share is below, parallel TIR gains ~(1 - 1/1.9) of the TIR time and the library calls lose
# at most ~0.9x their time on one thread: break-even near a third (reasoned, not measured:
# no model of the zoo or the suite has library calls left but the MoE experts in eager).
MAX_LIBRARY_SHARE = 0.35
# Below this many FLOPs per compute op on average, a program's kernels are too small for a
# second core to pay its fork/join: serial TIR. Measured on the zoo and 16 suite models
# (quiet Zen 4, 2026-12-04, parallel over serial latency): 0.52-9.6 MFLOP per op won
# (wav2vec2 0.78x, mlp 0.65x, cnn 0.74x, encoder 0.59x), 0.006-0.10 lost or tied (gpt2
# 1.15x, bert 1.59x, t5 1.39x, llama 1.25x, gemma 0.96x, swin 0.94x).
MIN_FLOPS_PER_OP = 250_000


@dataclass(frozen=True)
class WorkSplit:
    """FLOPs of a program's library calls against all of its FLOPs."""

    library_flops: int
    total_flops: int
    library_calls: int
    ops: int = 0  # compute ops of the program (parameters and constants left out)

    @property
    def flops_per_op(self) -> float:
        return self.total_flops / max(self.ops, 1)

    @property
    def library_share(self) -> float:
        if self.total_flops <= 0:
            return 1.0 if self.library_calls else 0.0
        return min(self.library_flops / self.total_flops, 1.0)


@dataclass(frozen=True)
class ThreadPlan:
    """What one program's kernels are built for and how torch runs during its calls."""

    kernel_threads: int
    torch_threads_in_call: int | None  # None: torch keeps whatever it has
    reason: str

    def pools(self, pool) -> dict[str, int]:
        """Threads in use during a call, {"tvm": n, "torch": m}, for the reports."""
        torch_threads = self.torch_threads_in_call or pool.torch_threads or pool.num_threads
        return {"tvm": self.kernel_threads, "torch": torch_threads}

    def key(self) -> str:
        """The part of the artifact key this plan decides (kernels differ by thread count)."""
        return f"{self.kernel_threads}:{self.torch_threads_in_call}"


POLICIES = ("auto", "parallel", "serial")


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"threads: unknown policy {policy!r}; use one of {', '.join(POLICIES)}")
    return policy


def plan_threads(split: WorkSplit, threads: int, max_share: float = MAX_LIBRARY_SHARE,
                 policy: str = "auto") -> ThreadPlan:
    """The rule: serial TIR when the program's ops average under `MIN_FLOPS_PER_OP`;
    otherwise parallel TIR with torch held at one thread while the library's share of the
    work is at most `max_share`, else serial TIR beside torch's pool. `policy`
    (`extra={"threads": ...}`) forces either plan (`serial` is how Kiln ran before)."""
    share = split.library_share
    if threads <= 1:
        return ThreadPlan(1, None, "one core")
    if check_policy(policy) == "parallel":
        return ThreadPlan(threads, 1, f"parallel TIR (asked; library calls are {share:.0%} of the work)")
    if policy == "serial":
        return ThreadPlan(1, None, "serial TIR (asked)")
    if split.ops and split.flops_per_op < MIN_FLOPS_PER_OP:
        return ThreadPlan(1, None, f"serial TIR: {split.flops_per_op / 1e3:.0f} kFLOP per op on average, "
                                   f"too little for a second core (< {MIN_FLOPS_PER_OP // 1000} k)")
    if share <= max_share:
        return ThreadPlan(threads, 1, f"parallel TIR: library calls are {share:.0%} of the work "
                                      f"(<= {max_share:.0%}); torch runs on one thread inside the call")
    return ThreadPlan(1, None, f"serial TIR: library calls are {share:.0%} of the work "
                               f"(> {max_share:.0%}); torch keeps the cores")


def work_split(module, total_flops: int, ops: int = 0) -> WorkSplit:
    """The library calls of `module["main"]` (a lowered Relax module) and their FLOPs,
    against the program's `total_flops` over `ops` compute ops."""
    flops = calls = 0
    for block in module["main"].body.blocks:
        for binding in block.bindings:
            call = binding.value
            if not isinstance(call, relax.Call) or getattr(call.op, "name", "") != "relax.call_dps_packed":
                continue
            calls += 1
            flops += _call_flops(str(call.args[0].global_symbol), list(call.args[1].fields), binding.var.ty)
    return WorkSplit(flops, max(total_flops, flops), calls, ops)


def _shape(expr) -> list[int]:
    ty = expr.ty
    return [int(d) for d in ty.shape.values] if isinstance(ty, relax.TensorType) and ty.shape is not None else []


def _numel(ty) -> int:
    """Elements of a call's result (a tensor or a tuple of them)."""
    types = ty.fields if isinstance(ty, relax.TupleType) else [ty]
    return sum(math.prod(int(d) for d in t.shape.values) for t in types
               if isinstance(t, relax.TensorType) and t.shape is not None)


def _call_flops(name: str, args: list, result) -> int:
    """FLOPs of one packed call, from its operand and result shapes."""
    out = _numel(result)
    if name in ("kiln.linear", "kiln.linear_nobias", "kiln.matmul"):
        return 2 * out * (_shape(args[0]) or [1])[-1]
    if name in ("kiln.conv2d", "kiln.conv2d_nobias"):
        w = _shape(args[1])
        return 2 * out * math.prod(w[1:]) if len(w) == 4 else out
    if name in ("kiln.sdpa", "kiln.sdpa_mask"):
        k = _shape(args[1])
        bshd = int(getattr(args[-1], "value", 0))  # relax.prim_value(0 | 1)
        keys = k[-3] if bshd and len(k) >= 3 else (k[-2] if len(k) >= 2 else 1)
        return 4 * out * keys  # q k^T and p v, each 2 * L * S * E per head
    if name == "kiln.sdpa_packed":
        return 4 * out * _shape(args[0])[1]
    return out  # gathers and reference ops: about one operation per element written
