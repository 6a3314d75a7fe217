"""Flash-attention kernels (backends/triton/attention.py) against the reference interpreter:
prefill (causal, boolean and additive masks, broadcast batch dims) and split-KV decode."""

from __future__ import annotations

import pytest
import torch
from triton_builders import build, check, source

from ir.ops.attention import AttentionOp
from ir.ops.elementwise import BINARY_OPS
from ir.ops.movement import PermuteOp, ReshapeOp

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# 16-wide blocks: L=19 and S=23 leave ragged query and key blocks, several of each.
SMALL = {"attention": {"BLOCK_M": 16, "BLOCK_N": 16}}


def _qkv(L: int, S: int, E: int = 16, Ev: int = 8, kv_heads: int = 3):
    torch.manual_seed(0)
    return torch.randn(2, 3, L, E), torch.randn(2, kv_heads, S, E), torch.randn(2, kv_heads, S, Ev)


@pytest.mark.parametrize("overrides", [None, SMALL], ids=["default", "small-blocks"])
def test_causal_prefill(overrides):
    q, k, v = _qkv(19, 23)

    def body(b):
        return [b.op(AttentionOp, *b.args, causal=True, group=0)]

    kernel = check(build([q, k, v], body), [q, k, v], overrides)
    text = source(kernel)
    assert text.count("@triton.jit") == 1
    assert (
        "hi = tl.minimum(23, (pid_m + 1) * BLOCK_M)" in text
    )  # stops at the last visible key block
    assert "rn[None, :] <= rm[:, None]" in text


def test_boolean_mask_broadcast_over_heads_and_rows():
    q, k, v = _qkv(19, 23)
    mask = torch.rand(2, 1, 1, 23) > 0.4
    mask[..., 0] = True

    def body(b):
        return [b.op(AttentionOp, *b.args, causal=False, group=0)]

    check(build([q, k, v, mask], body), [q, k, v, mask], SMALL)


def test_additive_mask_custom_scale_and_shared_kv_heads():
    q, k, v = _qkv(19, 23, kv_heads=1)  # k and v broadcast over the 3 query heads
    mask = torch.randn(19, 23)
    mask[3, :] = float("-inf")  # a query row with every key masked gives zeros, as torch does

    def body(b):
        return [b.op(AttentionOp, *b.args, causal=False, scale=0.3, group=0)]

    check(build([q, k, v, mask], body), [q, k, v, mask], SMALL)


def test_attention_with_prologue_and_head_merge_epilogue():
    """q * 2 before, permute + reshape after (the head merge): one kernel."""
    q, k, v = _qkv(19, 23, Ev=16)

    def body(b):
        q2 = b.op(BINARY_OPS["mul"], b.args[0], b.const(torch.tensor(2.0)), group=0)
        a = b.op(AttentionOp, q2, b.args[1], b.args[2], causal=True, group=0)
        p = b.op(PermuteOp, a, dims=(0, 2, 1, 3), group=0)
        return [b.op(ReshapeOp, p, shape=(2, 19, 48), group=0)]

    kernel = check(build([q, k, v], body), [q, k, v], SMALL)
    assert source(kernel).count("@triton.jit") == 1 and not kernel.notes


@pytest.mark.parametrize("splits", [1, 4])
def test_decode_splits_keys_and_merges_partials(splits):
    """Query length 1: split-KV kernel plus merge kernel; with 4 splits of 16 keys over
    S=23, two splits are empty and must merge as nothing."""
    q, k, v = _qkv(1, 23)
    mask = torch.rand(2, 1, 1, 23) > 0.3
    mask[..., 7] = True

    def body(b):
        q_, k_, v_, m_ = b.args
        return [
            b.op(AttentionOp, q_, k_, v_, causal=False, group=0),
            b.op(AttentionOp, q_, k_, v_, m_, causal=False, group=1),
            b.op(AttentionOp, q_, k_, v_, causal=True, group=2),
        ]

    overrides = {"attention": {"BLOCK_N": 16, "NUM_SPLITS": splits}}
    kernel = check(build([q, k, v, mask], body), [q, k, v, mask], overrides)
    text = source(kernel)
    assert text.count("_attention_split(") == 3 and text.count("_attention_merge(") == 3
    assert f"g0_attention_split[({splits}, 6)]" in text
