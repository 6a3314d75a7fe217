"""compiler/tuner end to end: a real worker process, a crash and a hang survived, and a later
compile that reads the winners from the cache without measuring anything."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch
from tuner_models import two_kernels

from backends.tvm.knobs import all_configs, default_config
from compiler import compile_model
from compiler.service.client import CacheClient, Record
from compiler.tuner import measure as measure_module
from compiler.tuner import search as search_module
from compiler.tuner import tuner as tuner_module
from compiler.tuner.kernels import collect_tasks
from compiler.tuner.search import SearchOptions
from compiler.tuner.tuner import TuneOptions, training_set, tune_model


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """Tune the one TIR kernel of a small model; job 1 crashes the worker, job 2 hangs it."""
    tmp = tmp_path_factory.mktemp("tune")
    model, inputs = two_kernels()
    client = CacheClient(None, local_path=tmp / "cache.sqlite")
    options = TuneOptions(
        # isolated timing: a library call before each kernel call can leave a kernel within
        # its noise on a loaded machine (no label), and this test is about crashes and hangs
        search=SearchOptions(trials=4, timeout_s=8.0, seed=0, context="isolated"),
        work_dir=tmp / "work",
        progress=False,
        faults={1: "crash", 2: "hang"},
    )
    report = tune_model(model, inputs, client, options, name="two")
    yield tmp, client, report, options
    client.close()


def test_a_crashing_and_a_hanging_candidate_are_survived(tuned):
    _, client, report, options = tuned
    assert report.failed == 2 and report.worker_starts == 3  # first, after the crash, after the hang
    [row] = report.kernels
    assert row["status"] in ("tuned", "defaults best", "rejected by model check")
    assert row["failed"] == 2
    assert row["trials"] == 4 and row["latency_s"] > 0
    rows = training_set(options.work_dir).rows()
    errors = [r["error"] for r in rows if r["latency_s"] is None]
    assert any("worker died while measuring (exit code 3)" in e for e in errors)
    assert any("timed out after 8 s" in e for e in errors)
    record = client.get(row["key"])
    assert record is not None and record.config == row["config"]
    assert record.meta["failed"] == 2 and record.meta["baseline_latency_s"] > 0


def test_a_compile_after_tuning_reads_the_cache_and_measures_nothing(tuned, monkeypatch, tmp_path):
    _, client, report, _ = tuned

    def no_measuring(*args, **kwargs):
        raise AssertionError("a compile must not measure")

    monkeypatch.setattr(measure_module.MeasureWorker, "measure", no_measuring)
    monkeypatch.setattr(tuner_module, "search_kernel", no_measuring)
    model, inputs = two_kernels()
    compiled = compile_model(model, inputs, target="tvm", tuning_cache=client, cache_dir=tmp_path)
    assert compiled.report["tuning_hits"] == len(report.kernels) == 1
    assert compiled.report["tuned_kernels"] == (report.kernels[0]["status"] == "tuned")
    assert report.model_check.get("accepted", True) == (report.kernels[0]["status"] != "rejected by model check")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=1e-4, rtol=1e-4)


def test_winners_that_slow_the_model_down_are_not_stored(tmp_path, monkeypatch):
    """The model-level check: a winner that loses in the model leaves the defaults stored."""
    from compiler.tuner import model_check

    model, inputs = two_kernels()
    [task] = collect_tasks(model, inputs, "two", _target())
    other = next(c for c in all_configs(2) if c != default_config(2) and c["num_threads"] == 2)
    monkeypatch.setattr(tuner_module, "search_kernel", lambda task, *a, **k: search_module.KernelResult(
        task, 2e-5, other, 1e-5, [search_module.TrialRecord(other, 1e-5, None, "search")],
        default_config=default_config(2)))
    monkeypatch.setattr(model_check, "time_pair", lambda a, b, rounds: (1e-3, 2e-3))  # tuned: slower
    with CacheClient(None, local_path=tmp_path / "cache.sqlite") as client:
        options = TuneOptions(work_dir=tmp_path / "work", progress=False)
        report = tune_model(model, inputs, client, options, name="two")
        stored = client.get(task.key)
    assert report.model_check["accepted"] is False and report.model_check["tuned_kernels"] == 1
    assert report.kernels[0]["status"] == "rejected by model check"
    assert stored.config == default_config(2) and stored.meta["rejected_config"] == other
    assert stored.latency_s == 2e-5  # the defaults' own measurement


def test_tuned_configs_change_the_artifact_key_and_not_the_numbers(tmp_path):
    model, inputs = two_kernels()
    [task] = collect_tasks(model, inputs, "two", _target())
    other = next(c for c in all_configs(2) if c != default_config(2) and c["num_threads"] == 2)
    with CacheClient(None, local_path=tmp_path / "cache.sqlite") as client:
        plain = compile_model(model, inputs, target="tvm", tuning_cache=client, cache_dir=tmp_path / "a")
        client.put(task.key, Record(_target(), other, 1e-5, {"note": "written by the test"}))
        tuned = compile_model(model, inputs, target="tvm", tuning_cache=client, cache_dir=tmp_path / "a")
        untuned = compile_model(model, inputs, target="tvm", use_tuned=False, cache_dir=tmp_path / "a")
    assert plain.report["tuning_hits"] == 0 and tuned.report["tuned_kernels"] == 1
    assert untuned.report["cache_hit"] and not tuned.report["cache_hit"]  # same key as the first
    artifacts = sorted(p.name for p in (tmp_path / "a").glob("*.so"))
    assert len(artifacts) == 2  # untuned and tuned: two keys
    with torch.no_grad():
        torch.testing.assert_close(tuned(*inputs), untuned(*inputs), atol=1e-5, rtol=1e-5)


def test_a_record_for_another_target_or_with_a_bad_config_is_ignored(tmp_path):
    model, inputs = two_kernels()
    [task] = collect_tasks(model, inputs, "two", _target())
    with CacheClient(None, local_path=tmp_path / "cache.sqlite") as client:
        client.put(task.key, Record("some other target", {"num_threads": 1}, 1e-5))
        assert compile_model(model, inputs, tuning_cache=client, use_cache=False).report["tuning_hits"] == 0
        client.put(task.key, Record(_target(), {"tile_rows": 32}, 1e-6))  # a knob this build lacks
        with pytest.warns(RuntimeWarning, match="ignoring the tuned config"):
            report = compile_model(model, inputs, tuning_cache=client, use_cache=False).report
    assert report["tuning_hits"] == 1 and report["tuned_kernels"] == 0
    json.dumps(report, default=str)


def test_a_teammate_compiles_with_configs_tuned_on_another_machine(tmp_path):
    """Winners stored through the service reach a compile whose local cache is empty."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
    from service_harness import TOKEN, ServerProcess

    model, inputs = two_kernels()
    [task] = collect_tasks(model, inputs, "two", _target())
    other = next(c for c in all_configs(2) if c != default_config(2) and c["num_threads"] == 2)
    with ServerProcess(f"sqlite:///{tmp_path / 'server.sqlite'}", token=TOKEN) as server:
        with CacheClient(server.url, token=TOKEN, local_path=tmp_path / "tuner.sqlite") as tuner:
            tuner.put(task.key, Record(_target(), other, 1e-5, {"tuner": "test"}))
            assert tuner.source == "server"
        with CacheClient(server.url, local_path=tmp_path / "teammate.sqlite") as teammate:
            compiled = compile_model(model, inputs, tuning_cache=teammate, use_cache=False)
            assert teammate.source == "server"
    assert compiled.report["tuned_kernels"] == 1


def test_torch_compile_reads_tuned_configs_too(tmp_path, caplog):
    model, inputs = two_kernels()
    [task] = collect_tasks(model, inputs, "two", _target())
    other = next(c for c in all_configs(2) if c != default_config(2) and c["num_threads"] == 2)
    caplog.set_level(logging.INFO, logger="compiler.torch_backend")
    torch._dynamo.reset()
    with CacheClient(None, local_path=tmp_path / "cache.sqlite") as client:
        client.put(task.key, Record(_target(), other, 1e-5))
        compiled = torch.compile(model, backend="kiln", options={"tuning_cache": client, "use_cache": False})
        with torch.no_grad():
            torch.testing.assert_close(compiled(*inputs), model(*inputs), atol=1e-4, rtol=1e-4)
    [report] = [r.kiln_report for r in caplog.records if hasattr(r, "kiln_report")]
    assert report["tuning_hits"] == 1 and report["tuned_kernels"] == 1


def _target() -> str:
    from backends.tvm.target import cpu_target

    return str(cpu_target())
