"""Recurrent layers (`aten.lstm.input`, `aten.gru.input`, `aten.rnn_tanh/relu.input`), unrolled.

These ops are one opaque call each, so without a converter the whole layer ran in eager.
At capture the sequence length is static, so the layer unrolls into ops every backend
already has: one `kiln.linear` per layer and direction for the input projection of all
time steps at once, then per step a `kiln.linear` for the hidden projection, gate slices,
sigmoid/tanh and elementwise updates, as torch's own `torch._decomp` reference does. The
steps' hidden states are concatenated back into the output sequence.

Declined (the node falls back): LSTM projections (`proj_size`), unbatched input,
dropout between layers in training mode, and sequences longer than `MAX_STEPS` (the
unrolled graph grows with the length).
"""

from __future__ import annotations

import torch
from xdsl.ir import SSAValue

from compiler.capture.lowering import Lowering
from compiler.capture.table import _slice_value, converts
from compiler.capture.table_extra import binary, const, permute, reshape, shape
from ir import dtypes
from ir.ops.contraction import LinearOp
from ir.ops.elementwise import UNARY_OPS
from ir.ops.movement import ConcatOp

aten = torch.ops.aten
MAX_STEPS = 256
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _unary(lw: Lowering, name: str, x: SSAValue) -> SSAValue:
    return lw.emit(UNARY_OPS[name].make(x))


def _linear(lw: Lowering, x: SSAValue, w: SSAValue, b: SSAValue | None) -> SSAValue:
    return lw.emit(LinearOp.make(x, w, b))


def _gates(lw: Lowering, g: SSAValue, n: int, hidden: int) -> list[SSAValue]:
    return [_slice_value(lw, g, 1, k * hidden, (k + 1) * hidden, 1) for k in range(n)]


def _step(lw: Lowering, kind: str, xt: SSAValue, h: SSAValue, c: SSAValue | None, w_hh: SSAValue,
          b_hh: SSAValue | None) -> tuple[SSAValue, SSAValue | None]:
    """One time step: `xt` is the input projection (bias included) of this step."""
    hidden = shape(h)[1]
    gh = _linear(lw, h, w_hh, b_hh)
    if kind == "lstm":
        i, f, g, o = _gates(lw, binary(lw, "add", xt, gh), 4, hidden)
        i, f, o, g = (_unary(lw, "sigmoid", i), _unary(lw, "sigmoid", f), _unary(lw, "sigmoid", o),
                      _unary(lw, "tanh", g))
        c = binary(lw, "add", binary(lw, "mul", f, c), binary(lw, "mul", i, g))
        return binary(lw, "mul", o, _unary(lw, "tanh", c)), c
    if kind == "gru":
        xr, xz, xn = _gates(lw, xt, 3, hidden)
        hr, hz, hn = _gates(lw, gh, 3, hidden)
        r = _unary(lw, "sigmoid", binary(lw, "add", xr, hr))
        z = _unary(lw, "sigmoid", binary(lw, "add", xz, hz))
        n = _unary(lw, "tanh", binary(lw, "add", xn, binary(lw, "mul", r, hn)))
        one = const(lw, torch.tensor(1.0, dtype=dtypes.dtype_of(h.type)))
        return binary(lw, "add", binary(lw, "mul", binary(lw, "sub", one, z), n), binary(lw, "mul", z, h)), None
    act = "tanh" if kind == "rnn_tanh" else "relu"
    return _unary(lw, act, binary(lw, "add", xt, gh)), None


def _unroll(lw: Lowering, kind: str, x, hx: list, params, has_biases, num_layers, dropout, train,
            bidirectional, batch_first):
    vx = lw.value(x)
    if len(shape(vx)) != 3:
        raise lw.unsupported("unbatched recurrent input")
    if train and dropout and num_layers > 1:
        raise lw.unsupported("dropout between recurrent layers in training mode")
    dirs, per = (2 if bidirectional else 1), (4 if has_biases else 2)
    if len(params) != num_layers * dirs * per:
        raise lw.unsupported("LSTM projections (proj_size)")
    seq = vx if batch_first else permute(lw, vx, (1, 0, 2))  # [B, T, I]
    batch, steps, _ = shape(seq)
    if steps > MAX_STEPS:
        raise lw.unsupported(f"sequence of {steps} > {MAX_STEPS} steps (unrolled at capture)")
    states = [lw.value(s) for s in hx]  # h0 (and c0): [layers * dirs, B, H]
    finals: list[list[SSAValue]] = [[] for _ in states]
    layer_in = seq
    for layer in range(num_layers):
        outs = []
        for d in range(dirs):
            index = layer * dirs + d
            group = [lw.value(p) for p in params[index * per:(index + 1) * per]]
            w_ih, w_hh = group[0], group[1]
            b_ih, b_hh = (group[2], group[3]) if has_biases else (None, None)
            hidden = shape(w_hh)[1]
            projected = _linear(lw, layer_in, w_ih, b_ih)  # [B, T, gates * H], all steps at once
            h0, c0 = (_slice_value(lw, s, 0, index, index + 1, 1) for s in (states * 2)[:2])
            h = reshape(lw, h0, (batch, hidden))
            c = reshape(lw, c0, (batch, hidden)) if kind == "lstm" else None
            per_step: list[SSAValue | None] = [None] * steps
            for t in (range(steps) if d == 0 else reversed(range(steps))):
                xt = reshape(lw, _slice_value(lw, projected, 1, t, t + 1, 1), (batch, GATES[kind] * hidden))
                h, c = _step(lw, kind, xt, h, c, w_hh, b_hh)
                per_step[t] = reshape(lw, h, (batch, 1, hidden))
            outs.append(_concat(lw, per_step, 1))
            finals[0].append(reshape(lw, h, (1, batch, hidden)))
            if c is not None:
                finals[1].append(reshape(lw, c, (1, batch, hidden)))
        layer_in = _concat(lw, outs, 2)
    output = layer_in if batch_first else permute(lw, layer_in, (1, 0, 2))
    return (output, *(_concat(lw, f, 0) for f in finals))


def _concat(lw: Lowering, values: list, dim: int) -> SSAValue:
    return values[0] if len(values) == 1 else lw.emit(ConcatOp.make(*values, dim=dim))


@converts(aten.lstm.input)
def _lstm(lw: Lowering, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
    if len(hx) != 2:
        raise lw.unsupported("LSTM state is not (h0, c0)")
    return _unroll(lw, "lstm", x, list(hx), params, has_biases, num_layers, dropout, train, bidirectional,
                   batch_first)


def _single_state(kind: str):
    def convert(lw: Lowering, x, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first):
        return _unroll(lw, kind, x, [hx], params, has_biases, num_layers, dropout, train, bidirectional,
                       batch_first)

    return convert


converts(aten.gru.input)(_single_state("gru"))
converts(aten.rnn_tanh.input)(_single_state("rnn_tanh"))
converts(aten.rnn_relu.input)(_single_state("rnn_relu"))
