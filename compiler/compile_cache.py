"""The compile cache keyed before the pass pipeline: captured IR in, built kernel out.

The backend's artifact cache (`backends/tvm/backend.py`) is keyed by the *optimized* IR,
so a warm compile still ran every pass and the whole lowering just to find its key (gpt:
~0.6 s of passes, ~0.7 s of lowering and tuned-config lookups on this loaded host). This
cache is consulted right after capture and conversion, keyed by everything a partition's
build depends on:

- the captured kiln IR of the partition, printed (ops, shapes, dtypes, attributes, every
  literal constant; parameters appear by name and type, never by value);
- the options that change code: target, resolved pipeline, `extra`, thread count, whether
  tuned configs are used; the backend's build context (host CPU target, thread pools in
  force, codegen version, TVM version);
- versions: Kiln, torch, Python, and a digest of the source of `passes/`, `ir/`,
  `cost_models/` and `backends/` (a changed pass or lowering is a miss, no manual bump to
  forget), the calibrated hardware file, and any file named in the pipeline's options.

Weights are not in the key and not in the entry: on a hit the stored executable is bound to
*this* model's parameters through the stored recipe (`backends/tvm/reload.py`), so two
models of one architecture share an entry and each runs its own weights. Tuned configs
change without the IR changing, so an entry lists the tuning-cache lookups its build made
and their answers; a hit asks again and is a miss when any answer differs.

Bypassed (a normal compile, said in the report): targets other than tvm; pipelines with
`quantize` (its decisions and parameters come from the weights and example inputs);
`out_dir`, `dump_ir` and `verify_each_pass`, which ask for the stages themselves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch

from backends.source_digest import source_digest

FORMAT = "2"  # 2: entries hold the thread plan (backends/tvm/thread_policy.py)


class _Recorder:
    """Wraps the build's tuned-config source and remembers every lookup and its answer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[list[Any]] = []

    def config_for(self, key: str, target: str) -> dict[str, Any] | None:
        config = self.inner.config_for(key, target)
        self.seen.append([key, target, _plain(config)])
        return config

    def close(self) -> None:
        self.inner.close()


class CompileCache:
    """One compile's view of the cache: `lookup` before the passes, `store` after the build."""

    def __init__(self, opts: Any, pipeline: str, build_opts: Any) -> None:
        names = {p.strip().split("{")[0] for p in pipeline.split(",")}
        self.reason = ("disabled (use_cache=False)" if build_opts.cache_dir is None
                       else f"bypassed: target {opts.target}" if opts.target != "tvm"
                       else "bypassed: quantize reads the weights" if "quantize" in names
                       else "bypassed: out_dir/dump_ir/verify_each_pass ask for every stage"
                       if (opts.out_dir or opts.dump_ir or opts.verify_each_pass) else "")
        self.enabled = not self.reason
        self.hits = self.misses = 0
        self.lookup_s = 0.0
        self._recorder = _Recorder(build_opts.kernel_configs) if build_opts.kernel_configs is not None else None
        self.build_opts = replace(build_opts, kernel_configs=self._recorder) if self._recorder else build_opts
        self._folder = Path(build_opts.cache_dir) / "compile" if self.enabled else None
        self._prefix = _key_prefix(opts, pipeline, self.build_opts) if self.enabled else ""
        self._key: str | None = None

    def lookup(self, captured_ir: str, params: dict[str, torch.Tensor]) -> tuple[Any, dict[str, Any]] | None:
        """The kernel bound to `params` and its partition report, or None (then build and `store`)."""
        self._key = None
        if not self.enabled:
            return None
        start = time.perf_counter()
        self._key = hashlib.sha256((self._prefix + "\0" + captured_ir).encode()).hexdigest()[:32]
        if self._recorder is not None:
            self._recorder.seen = []
        found = self._load(self._key, params)
        self.lookup_s += time.perf_counter() - start
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def _load(self, key: str, params: dict[str, torch.Tensor]) -> tuple[Any, dict[str, Any]] | None:
        from backends.tvm.reload import reload_kernel

        meta, binding = self._folder / f"{key}.json", self._folder / f"{key}.bin"
        try:
            entry = json.loads(meta.read_text())
            recipe = binding.read_bytes()
        except (OSError, ValueError):
            return None
        if not self._same_tuning(entry["lookups"]):
            return None
        start = time.perf_counter()
        kernel = reload_kernel(entry, recipe, params, self.build_opts, entry["report"]["optimized_ir"])
        if kernel is None:
            return None
        report = {**entry["report"], "build_s": time.perf_counter() - start, "cache_hit": True,
                  "compile_cache": "hit"}
        return kernel, report

    def _same_tuning(self, lookups: list[list[Any]]) -> bool:
        if self._recorder is None:
            return not lookups
        inner = self._recorder.inner
        return all(_plain(inner.config_for(key, target)) == config for key, target, config in lookups)

    def store(self, kernel: Any, report: dict[str, Any]) -> None:
        """Write the entry for the key of the last `lookup` (a miss); best effort."""
        if self._key is None or getattr(kernel, "artifact_path", None) is None or kernel.binding is None:
            return
        from backends.tvm.reload import dump_binding

        report["compile_cache"] = "miss"
        entry = {
            "artifact": str(kernel.artifact_path), "num_kernels": kernel.num_kernels,
            "reference_ops": list(kernel.reference_ops), "tuned": kernel.tuned,
            "tuning_hits": kernel.tuning_hits, "quant_paths": kernel.quant_paths,
            "dense_paths": kernel.dense_paths, "shared_outputs": list(kernel.shared_outputs),
            "pool_threads": kernel.pool_threads, "torch_threads_in_call": kernel.torch_threads_in_call,
            "thread_plan": kernel.thread_reason,
            "lookups": self._recorder.seen if self._recorder is not None else [],
            "report": {k: v for k, v in report.items() if k not in ("build_s", "cache_hit", "compile_cache")},
        }
        try:
            recipe = dump_binding(kernel.binding)
            text = json.dumps(entry, default=str)
        except Exception as err:  # noqa: BLE001 - a recipe that cannot be stored costs the next compile time, no more
            # Said, not swallowed: a lowering whose load-time recipe drags unpicklable objects
            # along turns every warm compile into a cold one without this line.
            first = (str(err).splitlines() or [""])[0][:120]
            self.reason = f"entry not stored: {type(err).__name__}: {first}"
            logging.getLogger("kiln").warning("compile cache: %s", self.reason)
            return
        self._folder.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".bin", recipe), (".json", text.encode())):  # json last: marks it whole
            tmp = self._folder / f"{self._key}.{os.getpid()}.tmp{suffix}"
            tmp.write_bytes(data)
            os.replace(tmp, self._folder / f"{self._key}{suffix}")

    def summary(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "hits": self.hits, "misses": self.misses,
                "lookup_s": round(self.lookup_s, 6), "reason": self.reason}


def _key_prefix(opts: Any, pipeline: str, build_opts: Any) -> str:
    from backends.tvm.reload import build_context
    from cost_models.hardware import calibration_path

    parts = [
        FORMAT, opts.target, pipeline, json.dumps(sorted(opts.extra.items())), str(opts.num_threads),
        str(opts.use_tuned), version("kiln"), torch.__version__, sys.version, source_digest(),
        build_context(build_opts), _file_digest(calibration_path()),
        *(_file_digest(Path(v)) for v in _option_values(pipeline)),
    ]
    return "\0".join(parts)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
    except OSError:
        return "-"


def _option_values(pipeline: str) -> list[str]:
    """Values of `key=value` pass options that name a file (a learned model, a trace)."""
    values = []
    for chunk in pipeline.replace("{", " ").replace("}", " ").replace(",", " ").split():
        if "=" in chunk:
            value = chunk.split("=", 1)[1]
            if ("/" in value or "." in value) and Path(value).is_file():
                values.append(value)
    return values


def _plain(config: Any) -> Any:
    return json.loads(json.dumps(config, sort_keys=True, default=str))
