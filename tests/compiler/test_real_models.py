"""Real models as a user compiles them: the smoke subset of `benchmarks/models.py` by default,
the whole suite through every front door with `-m slow`.

Each model must match eager through `torch.compile(backend="kiln")` on TVM, and fall back
only for the ops named in `ALLOWED_FALLBACK` (genuinely missing lowerings, kept short on
purpose: a new fallback fails here until it is looked at).
"""

from __future__ import annotations

import pytest

from benchmarks.coverage import DOORS, run_cell
from benchmarks.models import BY_NAME, SUITE

SMOKE = [m.name for m in SUITE if m.smoke]

# model -> aten ops that may still run in eager (no lowering yet); anything else fails
ALLOWED_FALLBACK = {
    "mixtral": None,  # routing bookkeeping (cumsum, index_add, nonzero...): any
    "unlowerable-op": {"aten.grid_sampler"},
}


def test_smoke_subset_is_big_enough():
    assert len(SMOKE) >= 10


@pytest.mark.parametrize("name", SMOKE)
def test_smoke_model_through_torch_compile_tvm(name):
    cell = run_cell(BY_NAME[name], "dynamo-tvm")
    assert cell.status in ("ok", "fallback"), f"{name}: {cell.status}: {cell.message}"
    allowed = ALLOWED_FALLBACK.get(name, set())
    if allowed is not None:
        unexpected = set(cell.fallback_ops) - allowed
        assert not unexpected, f"{name}: new eager fallbacks {sorted(unexpected)}"
    if name != "data-dependent":  # its branch is a graph break, each side is compiled
        assert cell.ops > 0 and cell.kernels > 0, f"{name}: Kiln compiled nothing ({cell})"


def test_in_place_residual_add_is_compiled_not_fallen_back():
    """HF ResNet's `hidden += shortcut` (aten.add_) used to split the model into islands."""
    cell = run_cell(BY_NAME["resnet"], "export-tvm")
    assert cell.status == "ok", cell
    assert not any("add_" in op for op in cell.fallback_ops)


def test_transformer_encoder_fast_path_is_decomposed():
    """nn.TransformerEncoder in eval takes `_transformer_encoder_layer_fwd`: it used to
    compile to 0 ops, bit-identical to eager, while benchmarks credited Kiln with its speed."""
    cell = run_cell(BY_NAME["nn-transformer-encoder"], "dynamo-tvm")
    assert cell.status == "ok", cell
    assert cell.ops > 20 and cell.kiln_flop_share == pytest.approx(1.0)
    assert cell.max_err > 0.0  # Kiln's own kernels ran, not the eager fast path


@pytest.mark.slow
@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("name", [m.name for m in SUITE])
def test_whole_suite(name, door):
    entry = BY_NAME[name]
    if door == "dynamo-triton" and not entry.triton:
        pytest.skip("Triton interpreter runs only the models marked for it")
    cell = run_cell(entry, door)
    if door == "dynamo-tvm":
        assert cell.status in ("ok", "fallback"), f"{name}: {cell.status}: {cell.message}"
    else:  # export can refuse a model (data-dependent control flow); never a crash
        assert cell.status != "mismatch", cell
        assert cell.status != "error", cell


def test_suite_entries_are_cli_factories_and_listed_on_a_typo():
    from compiler.model_loader import ModelSpecError, load_model

    model, inputs, _ = load_model("benchmarks/models.py:distilbert")
    assert model(*inputs).shape == (2, 16, 64)
    with pytest.raises(ModelSpecError, match=r"no factory 'distilbrt'.*\bdistilbert\b.*\bgpt_neox\b"):
        load_model("benchmarks/models.py:distilbrt")
