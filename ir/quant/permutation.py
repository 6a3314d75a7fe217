"""Outlier channel permutation, folded into the weights so the fp32 function is unchanged.

Block formats (MX, BFP, int4 groups) share one scale among neighbouring channels of the
reduction dim, so one outlier channel ruins the precision of the 31 others in its block.
"Accurate Block Quantization in LLMs with Outliers" (Trukhanov and Soloveychik, 2024)
reorders the channels at compile time so that channels of similar magnitude, the
outliers among them, share blocks. Here the order is a stable descending sort of a
per-channel score (the calibrated activation max in weight+activation mode, the weight
column max in weight-only mode).

A permutation P of the channels of a value v is free when it can be folded into the
weights: the consumers of v (linears with parameter weights) take their columns in
P's order, and whatever produced v produces its channels in P's order. `find_sites`
walks back from v through ops that commute with a channel permutation (unary
elementwise ops, binary elementwise ops between permuted values, per-channel parameter
vectors, scalars) to the linears that produce it, whose weight rows and biases are
permuted. A value with any other use (a residual stream, attention heads, a norm's
reduction) is not a site: permuting it would change another consumer. In the zoo the
sites are the hidden layers of an MLP and the down projection of a SwiGLU block (whose
input is silu(gate(x)) * up(x), where LLM outliers live).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from xdsl.dialects import func
from xdsl.ir import Operation, SSAValue

from ir import dtypes
from ir.ops.contraction import LinearOp
from ir.ops.elementwise import BinaryOp, CastOp, CompareOp, UnaryOp
from ir.ops.sources import ParamOp
from ir.program import Program

_COMMUTING_BINARY = ("kiln.add", "kiln.sub", "kiln.mul", "kiln.div", "kiln.maximum", "kiln.minimum")


@dataclass
class Site:
    """One permutable value: its consumers' weights (columns) and its producers' parameters."""

    value: SSAValue
    channels: int
    consumers: list[str] = field(default_factory=list)  # linear weights: permute axis 1
    producers: list[tuple[str, int]] = field(default_factory=list)  # (param, axis) to permute

    @property
    def consumer_ops(self) -> list[Operation]:
        return [u.operation for u in self.value.uses]


def find_sites(fn: func.FuncOp) -> list[Site]:
    """Every value whose channel order can be changed without changing the function."""
    sites = []
    seen: set[SSAValue] = set()
    for op in fn.body.block.ops:
        if not isinstance(op, LinearOp) or op.input in seen:
            continue
        v = op.input
        seen.add(v)
        site = _site(v)
        if site is not None:
            sites.append(site)
    return sites


def _site(v: SSAValue) -> Site | None:
    consumers = []
    for use in v.uses:
        user = use.operation
        if not (isinstance(user, LinearOp) and use.index == 0 and _single_use_param(user.weight)):
            return None
        consumers.append(_param_name(user.weight))
    site = Site(v, dtypes.shape_of(v.type)[-1], consumers)
    return site if _trace(v, site, root=True) else None


def _trace(v: SSAValue, site: Site, root: bool = False) -> bool:
    if not root and len(list(v.uses)) != 1:
        return False
    op = v.owner
    if not isinstance(op, Operation):
        return False  # a function argument: its channel order is the caller's
    if isinstance(op, LinearOp):
        if not _single_use_param(op.weight) or (op.bias is not None and not _single_use_param(op.bias)):
            return False
        site.producers.append((_param_name(op.weight), 0))
        if op.bias is not None:
            site.producers.append((_param_name(op.bias), 0))
        return True
    if isinstance(op, (UnaryOp, CastOp)):
        return _trace(op.operands[0], site)
    if isinstance(op, BinaryOp) and not isinstance(op, CompareOp) and op.name in _COMMUTING_BINARY:
        shape = dtypes.shape_of(v.type)
        for operand in op.operands:
            oshape = dtypes.shape_of(operand.type)
            if dtypes.numel(operand.type) == 1:
                continue
            if oshape == shape:
                if not _trace(operand, site):
                    return False
            elif oshape and oshape[-1] == site.channels and dtypes.numel(operand.type) == site.channels \
                    and _single_use_param(operand):
                site.producers.append((_param_name(operand), len(oshape) - 1))
            else:
                return False
        return True
    return False


def _single_use_param(v: SSAValue) -> bool:
    return isinstance(v.owner, ParamOp) and len(list(v.uses)) == 1


def _param_name(v: SSAValue) -> str:
    assert isinstance(v.owner, ParamOp)
    return v.owner.opt("name")


def channel_scores(site: Site, params: dict[str, torch.Tensor], act_absmax: torch.Tensor | None = None) -> torch.Tensor:
    """Per-channel magnitude: the activation max when calibrated, else the weight column max."""
    if act_absmax is not None:
        return act_absmax.to(torch.float32)
    cols = [params[w].abs().amax(dim=0) for w in site.consumers]
    return torch.stack(cols).amax(dim=0)


def outlier_order(scores: torch.Tensor) -> torch.Tensor:
    """Channels by descending score (stable), so outliers share the first blocks."""
    return torch.sort(scores, descending=True, stable=True).indices


def apply_permutation(program: Program, site: Site, perm: torch.Tensor) -> None:
    """Fold `perm` into the site's weights (new tensors; the caller's tensors are untouched)."""
    for name in site.consumers:
        program.params[name] = program.params[name].index_select(1, perm).contiguous()
    for name, axis in site.producers:
        program.params[name] = program.params[name].index_select(axis, perm).contiguous()


def permute_outliers(
    program: Program, act_absmax: dict[SSAValue, torch.Tensor] | None = None
) -> list[tuple[Site, torch.Tensor]]:
    """Find every site and fold its outlier order into `program.params`; returns what was done."""
    done = []
    for site in find_sites(program.forward):
        scores = channel_scores(site, program.params, (act_absmax or {}).get(site.value))
        perm = outlier_order(scores)
        if torch.equal(perm, torch.arange(len(perm))):
            continue
        apply_permutation(program, site, perm)
        done.append((site, perm))
    return done
