"""The TIR attention kernel (`backends/tvm/attention_tir.py`): numbers against torch's SDPA
on odd shapes and masks, and the compiled program: small attention runs the kernel, the
policy knob and the size rule send it back to the library."""

from __future__ import annotations

import pytest
import torch
import tvm  # a required dependency: a broken TVM fails these tests instead of skipping them
from torch import nn

from backends.tvm.attention_tir import AttentionOptions, AttentionShape, attention_func, query_tile
from backends.tvm.target import cpu_target
from compiler import compile_model

TOL = {"atol": 1e-5, "rtol": 1e-4}

# (q, k, v, mask shape or None, mask dtype, causal): ragged tiles (L = 7, 9: mt 1 and 3),
# Ev != E, keys shared by every head (k, v with H = 1), a rank-2 float mask, a per-head bool
# mask, a single query row, causal with L != S.
CASES = [
    ((2, 4, 16, 16), (2, 4, 16, 16), (2, 4, 16, 16), (2, 1, 16, 16), "bool", False),
    ((2, 4, 16, 16), (2, 4, 16, 16), (2, 4, 16, 16), None, "bool", True),
    ((1, 2, 7, 8), (1, 2, 9, 8), (1, 2, 9, 12), (7, 9), "float32", False),
    ((2, 3, 9, 20), (2, 1, 5, 20), (2, 1, 5, 20), (2, 3, 9, 5), "bool", False),
    ((1, 2, 1, 16), (1, 2, 33, 16), (1, 2, 33, 16), None, "bool", False),
    ((1, 2, 12, 16), (1, 2, 12, 16), (1, 2, 12, 16), None, "bool", True),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_kernel_matches_torch_sdpa(case):
    qs, ks, vs, ms, mdtype, causal = case
    torch.manual_seed(0)
    q, k, v = torch.randn(qs), torch.randn(ks), torch.randn(vs)
    mask = None
    if ms is not None:
        mask = torch.rand(ms) > 0.3 if mdtype == "bool" else torch.randn(ms)
        if mdtype == "bool":
            mask[..., 0] = True  # no fully masked row (torch gives NaN there, by design)
    shape = AttentionShape(qs, ks, vs, ms, mdtype, causal, qs[-1] ** -0.5)
    kernel = tvm.tirx.build(attention_func(shape, threads=2), target=cpu_target())["main"]
    out = torch.full((*qs[:-1], vs[-1]), float("nan"))
    kernel(q, k, v, *([mask] if mask is not None else []), out)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.expand(*qs[:2], *ks[2:]), v.expand(*qs[:2], *vs[2:]), attn_mask=mask, is_causal=causal)
    torch.testing.assert_close(out, ref, **TOL)


def test_query_tiles_divide_the_rows():
    assert [query_tile(n) for n in (16, 9, 7, 1, 6)] == [4, 3, 1, 1, 3]


class _Attend(nn.Module):
    def __init__(self, causal: bool) -> None:
        super().__init__()
        self.qkv, self.causal = nn.Linear(32, 96), causal

    def forward(self, x, mask):
        b, s, _ = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, 4, 8).permute(2, 0, 3, 1, 4)
        if self.causal:
            return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize("causal", [False, True])
def test_compiled_attention_takes_the_kernel_and_the_policy_sends_it_back(causal):
    torch.manual_seed(0)
    model = _Attend(causal).eval()
    x, mask = torch.randn(2, 10, 32), torch.rand(2, 1, 10, 10) > 0.2
    mask[..., 0] = True
    with torch.no_grad():
        ref = model(x, mask)
    tir = compile_model(model, (x, mask), target="tvm", use_cache=False)
    library = compile_model(model, (x, mask), target="tvm", use_cache=False, extra={"attention": "library"})
    torch.testing.assert_close(tir(x, mask), ref, **TOL)
    torch.testing.assert_close(library(x, mask), ref, **TOL)
    paths = {k: p for k, p in tir.report["dense_paths"].items() if k.startswith("attention")}
    assert next(iter(paths.values())).startswith("tir attention"), paths
    assert all(p.startswith("library") for k, p in library.report["dense_paths"].items() if k.startswith("attention"))


def test_large_attention_stays_on_the_library_and_bad_policy_is_named():
    big = AttentionShape((8, 8, 256, 64), (8, 8, 256, 64), (8, 8, 256, 64), None, "bool", True, 0.125)
    assert big.macs > AttentionOptions().max_macs_parallel
    with pytest.raises(ValueError, match="attention: unknown policy 'fast'"):
        AttentionOptions(policy="fast")
