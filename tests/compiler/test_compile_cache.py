"""Tests for compiler/compile_cache.py: the cache keyed before the pass pipeline.

A hit must run the caller's weights (two models of one architecture share an entry and
each matches its own eager output), equal a miss bit for bit, and any change that could
change the code (shape, dtype, options, pass sources, tuned configs) must miss.
"""

from __future__ import annotations

import warnings

import torch
from models_for_tests import cumsum_between_linears
from torch import nn

from compiler import compile_cache, compile_model


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 32), nn.Linear(32, 8)
        self.norm = nn.LayerNorm(32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.nn.functional.gelu(self.norm(self.a(x))))


def _tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return Tiny().eval()


def _eager(model: nn.Module, *inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(*inputs)


def _cc(compiled) -> dict:
    return compiled.report["compile_cache"]


def test_same_architecture_other_weights_hit_and_run_their_own_weights(tmp_path) -> None:
    x = torch.randn(4, 16)
    first, second = _tiny(0), _tiny(1)
    a = compile_model(first, (x,), cache_dir=tmp_path)
    b = compile_model(second, (x,), cache_dir=tmp_path)
    assert (_cc(a)["misses"], _cc(b)["hits"]) == (1, 1)
    assert b.report["passes"] == []  # the pipeline did not run
    torch.testing.assert_close(a(x), _eager(first, x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b(x), _eager(second, x), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a(x), b(x))
    # a hit equals a miss of the same model bit for bit
    cold = compile_model(second, (x,), cache_dir=tmp_path / "other")
    assert _cc(cold)["misses"] == 1
    assert torch.equal(cold(x), b(x))
    # and reports the same decisions (solver wall times aside)
    for key in ("num_kernels", "num_ops", "dense_paths"):
        assert cold.report[key] == b.report[key]
    assert cold.report["decisions"]["fusion"]["chosen"] == b.report["decisions"]["fusion"]["chosen"]


def test_shape_dtype_options_and_pass_sources_change_the_key(tmp_path, monkeypatch) -> None:
    model = _tiny(0)
    x = torch.randn(4, 16)
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path))["misses"] == 1
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path))["hits"] == 1
    assert _cc(compile_model(model, (torch.randn(5, 16),), cache_dir=tmp_path))["misses"] == 1  # shape
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path, extra={"dense": "library"}))["misses"] == 1
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path, pipeline="kiln-canonicalize"))["misses"] == 1
    monkeypatch.setattr(compile_cache, "source_digest", lambda: "a pass changed")
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path))["misses"] == 1


def test_dtype_changes_the_key(tmp_path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU()).eval()  # TVM's layer_norm is fp32/fp16 only
    x = torch.randn(4, 16)
    compile_model(model, (x,), cache_dir=tmp_path)
    double = compile_model(model.double(), (x.double(),), cache_dir=tmp_path)
    assert _cc(double)["misses"] == 1
    torch.testing.assert_close(double(x.double()), _eager(model, x.double()))


def test_changed_tuning_answer_misses(tmp_path) -> None:
    class Record:
        def __init__(self) -> None:
            self.config = {"vector_lanes": 4}

        def measured_for(self, target: str) -> bool:
            return True

    class Client:
        def __init__(self) -> None:
            self.records: dict[str, Record] = {}
            self.asked: list[str] = []

        def get(self, key: str):
            self.asked.append(key)
            return self.records.get(key)

        def close(self) -> None:
            pass

    client = Client()
    model, x = _tiny(0), torch.randn(4, 16)
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path, tuning_cache=client))["misses"] == 1
    assert client.asked, "the model has TIR kernels whose tuned configs are looked up"
    assert _cc(compile_model(model, (x,), cache_dir=tmp_path, tuning_cache=client))["hits"] == 1
    client.records[client.asked[0]] = Record()  # `kiln tune` found a config since
    with warnings.catch_warnings():  # the build may refuse that config: a warning, not our business
        warnings.simplefilter("ignore")
        again = compile_model(model, (x,), cache_dir=tmp_path, tuning_cache=client)
    assert _cc(again)["misses"] == 1


def test_bypassed_where_stages_are_asked_for_or_weights_decide(tmp_path) -> None:
    model, x = _tiny(0), torch.randn(4, 16)
    out = compile_model(model, (x,), cache_dir=tmp_path, out_dir=tmp_path / "out")
    assert not _cc(out)["enabled"] and "out_dir" in _cc(out)["reason"]
    off = compile_model(model, (x,), use_cache=False)
    assert not _cc(off)["enabled"]
    eager = compile_model(model, (x,), target="eager", cache_dir=tmp_path)
    assert "target eager" in _cc(eager)["reason"]


def test_partitions_around_an_eager_node_hit_each(tmp_path) -> None:
    model, inputs = cumsum_between_linears()
    compile_model(model, inputs, cache_dir=tmp_path)
    warm = compile_model(model, inputs, cache_dir=tmp_path)
    assert (_cc(warm)["hits"], _cc(warm)["misses"]) == (2, 0)
    torch.testing.assert_close(warm(*inputs), _eager(model, *inputs), atol=1e-4, rtol=1e-4)


def test_missing_artifact_is_a_miss_not_an_error(tmp_path) -> None:
    model, x = _tiny(0), torch.randn(4, 16)
    compile_model(model, (x,), cache_dir=tmp_path)
    for so in tmp_path.glob("*.so"):
        so.unlink()
    again = compile_model(model, (x,), cache_dir=tmp_path)
    assert _cc(again)["misses"] == 1
    torch.testing.assert_close(again(x), _eager(model, x), atol=1e-5, rtol=1e-5)


def test_an_entry_that_cannot_be_stored_is_said_not_swallowed(tmp_path, monkeypatch, caplog) -> None:
    """A load-time recipe cloudpickle refuses made every warm compile cold, silently."""
    from backends.tvm import reload

    def refuse(_binding):
        raise TypeError("cannot pickle 'xdsl op' object")

    monkeypatch.setattr(reload, "dump_binding", refuse)
    x = torch.randn(4, 16)
    with caplog.at_level("WARNING", logger="kiln"):
        compiled = compile_model(_tiny(0), (x,), cache_dir=tmp_path)
    assert "entry not stored: TypeError: cannot pickle" in _cc(compiled)["reason"]
    assert any("entry not stored" in r.getMessage() for r in caplog.records)
    again = compile_model(_tiny(0), (x,), cache_dir=tmp_path)
    assert _cc(again)["hits"] == 0
