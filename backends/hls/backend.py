"""The FPGA HLS backend: kiln IR -> a Vitis HLS C++ project, run here by C simulation.

`build` lowers the program to an HLS graph (`lower.py`: one layer per op, fixed-point
types from the quantization decisions, the default `fixed<16,6>` otherwise), prints the
project (`project.py`, `cpp_layers.py`), compiles its firmware with g++ against hls4ml's
ap_types headers into a shared library (`csim.py`, cached by content hash) and returns a
kernel that calls it through ctypes. Every build runs the project's testbench inputs
through the library and the bit-accurate emulation (`emulate.py`) and refuses a library
that differs by one bit; with `extra["verify"] = "exact"` every call is checked too.

Reuse factors are the `hls-reuse` pass's decisions (the target's pipeline runs it). The
driver fixes the pipeline before it sees the build options, so when `--part`,
`--clock-ns`, `precision` or `table-size` name something other than what the pass
assumed, `build` reruns that one decision pass for the device it builds for, and the
report says so.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from backends.base import BackendError, BuildOptions, Capabilities
from backends.hls import csim, emulate
from backends.hls import layers as L
from backends.hls.config import HLSConfig
from ir.program import Program

TB_SAMPLES = 4


@dataclass
class HLSKernel:
    library: csim.Library
    graph: L.HLSGraph
    config: HLSConfig
    num_kernels: int
    cache_hit: bool
    artifacts: dict[str, Path] = field(default_factory=dict)
    report: dict[str, float | int | str] = field(default_factory=dict)
    verified_calls: int = 0

    def __call__(self, *args: torch.Tensor) -> list[torch.Tensor]:
        outs = self.library.run(list(args))
        batch = int(args[0].shape[0])
        values = [y.reshape(batch, *t.shape) for y, t in zip(outs, self.graph.outputs)]
        if self.config.verify:
            self.check(args, values)
        return [v.to(torch.float32) for v in values]

    def emulate(self, *args: torch.Tensor) -> list[torch.Tensor]:
        """The bit-accurate emulation's outputs (float64) for the same inputs."""
        return emulate.run(self.graph, list(args))

    def check(self, args, values: list[torch.Tensor]) -> None:
        want = self.emulate(*args)
        for i, (got, exp) in enumerate(zip(values, want)):
            if not torch.equal(got, exp.reshape(got.shape)):
                diff = float((got - exp.reshape(got.shape)).abs().max())
                raise BackendError(f"hls: C simulation output {i} differs from the bit-accurate emulation "
                                   f"(max |diff| {diff:.3g}); this is a Kiln bug, please report it")
        self.verified_calls += 1


class HLSBackend:
    name = "hls"

    def capabilities(self) -> Capabilities:
        from backends.hls.lower_rules import SUPPORTED

        return Capabilities(ops=frozenset(SUPPORTED), eager_fallback=False)

    def pipeline(self) -> str:
        from passes import DEFAULT_PIPELINE

        # Calibrated 16-bit fixed point for weights and activations (integer bits from each
        # tensor's range): hls4ml's uniform ap_fixed<16,6> loses ~20% of the mlp's logits,
        # this keeps ~1.4% at the same bits (benchmarks/results/hls_vs_hls4ml.md).
        return f"{DEFAULT_PIPELINE},quantize{{formats=fixed16 avg-bits=16 mode=weight-activation}},hls-reuse"

    def build(self, program: Program, options: BuildOptions) -> HLSKernel:
        from backends.hls import project as project_files
        from backends.hls.lower import lower

        config = HLSConfig.from_extra(options.extra)
        notes = _ensure_reuse_decisions(program, config)
        graph = lower(program, config)
        graph.notes += notes
        ap_types = csim.ap_types_dir()
        tb_inputs = _tb_inputs(graph)
        tb_outputs = emulate.run(graph, tb_inputs)
        proj = project_files.generate(graph, config, ap_types, tb_inputs, tb_outputs)
        path, hit = csim.build_library(proj, ap_types, options.cache_dir)
        library = csim.Library(path, [t.numel for t in graph.inputs], [t.numel for t in graph.outputs])
        kernel = HLSKernel(library, graph, config, len(graph.layers), hit, {"library": path})
        kernel.check(tb_inputs, [y.reshape(-1, *t.shape) for y, t in zip(library.run(tb_inputs), graph.outputs)])
        kernel.report = _summary(program, graph, config, tb_inputs, tb_outputs, hit)
        if options.out_dir is not None:
            root = options.out_dir / "hls"  # one design per compile: a rebuild replaces it whole
            shutil.rmtree(root, ignore_errors=True)
            proj.write(root)
            (root / "build_csim.sh").chmod(0o755)
            (root / "estimates.json").write_text(json.dumps(kernel.report, indent=2))
            kernel.artifacts.update({"hls_project": root, "run_hls.tcl": root / "run_hls.tcl",
                                     "kiln_top.cpp": root / "firmware" / "kiln_top.cpp"})
        program.module.attributes["kiln.hls"] = _attr(kernel.report)
        return kernel


def _ensure_reuse_decisions(program: Program, config: HLSConfig) -> list[str]:
    """Run `hls-reuse` for the build's device when the pipeline's decisions were for another."""
    from xdsl.dialects.builtin import DictionaryAttr

    from ir import make_context
    from ir.attrs import from_attr
    from passes.reuse_factor import ReuseFactorPass

    attr = program.module.attributes.get("kiln.hls_reuse")
    want = {"part": config.part, "clock_ns": config.clock_ns, "precision": config.precision.name,
            "table_size": config.table_size}
    if isinstance(attr, DictionaryAttr):
        have = {k: from_attr(attr.data[k]) for k in want if k in attr.data}
        if have == want:
            return []
        previous = {k: from_attr(v) for k, v in attr.data.items() if k in ("objective", "solver")}
        why = f"hls-reuse reran for {want} (the pipeline decided for {have})"
    else:
        previous = {}
        why = "hls-reuse ran in build (the pipeline did not include it)"
    ReuseFactorPass(part=config.part, clock_ns=config.clock_ns, precision=config.precision.name,
                    table_size=config.table_size, **previous).apply(make_context(), program.module)
    return [why]


def _tb_inputs(graph: L.HLSGraph) -> list[torch.Tensor]:
    """Testbench inputs: seeded normal samples, as many as the traced batch (at most 4)."""
    g = torch.Generator().manual_seed(0)
    n = max(1, min(graph.batch, TB_SAMPLES))
    return [torch.randn(n, *t.shape, generator=g) for t in graph.inputs]


def _summary(program: Program, graph: L.HLSGraph, config: HLSConfig, tb_inputs, tb_outputs, hit: bool) -> dict:
    from xdsl.dialects.builtin import DictionaryAttr

    from ir.attrs import from_attr
    from ir.interpreter import run

    out: dict[str, float | int | str] = {"part": config.part, "clock_ns": config.clock_ns,
                                         "default_precision": config.precision.name, "layers": len(graph.layers),
                                         "library_cache_hit": int(hit), "tb_samples": int(tb_inputs[0].shape[0]),
                                         "tb_bit_exact": 1}
    out["precision"] = ",".join(
        f"{layer.name}:{layer.weight.type.name}" for layer in graph.layers if isinstance(layer, L.Dense))
    out["outputs"] = ",".join(t.type.name for t in graph.outputs)
    with torch.no_grad():
        ref = run(program, *tb_inputs)
    num = sum(float(((y - r.double()) ** 2).sum()) for y, r in zip(tb_outputs, ref))
    den = sum(float((r.double() ** 2).sum()) for r in ref)
    out["tb_rel_mse_vs_float"] = num / den if den else num
    out["tb_max_abs_err_vs_float"] = max(float((y - r.double()).abs().max()) for y, r in zip(tb_outputs, ref))
    attr = program.module.attributes.get("kiln.hls_reuse")
    if isinstance(attr, DictionaryAttr):
        for k in ("reuse", "latency_cycles", "latency_us", "ii_cycles", "dsp", "bram_18k", "lut", "ff",
                  "budget_dsp", "budget_bram_18k", "budget_lut", "baseline_reuse", "baseline_latency_cycles",
                  "baseline_dsp", "baseline_bram_18k", "baseline_lut", "status"):
            if k in attr.data:
                out[f"reuse_{k}" if k == "status" else k] = from_attr(attr.data[k])  # type: ignore[assignment]
    from backends.hls.tier_estimate import memory_estimate

    bram = out.get("bram_18k")
    estimate = memory_estimate(graph, config, int(bram) if bram is not None else None)
    out.update(estimate)
    if "latency_cycles" in out:  # DDR reads the layers wait for (map-memory's tiers)
        out["latency_cycles_with_ddr"] = int(out["latency_cycles"]) + int(estimate["ddr_latency_cycles"])
    if graph.notes:
        out["notes"] = "; ".join(graph.notes)
    return out


def _attr(summary: dict):
    from xdsl.dialects.builtin import DictionaryAttr, FloatAttr, IntegerAttr, StringAttr, f64, i64

    def one(v):
        if isinstance(v, str):
            return StringAttr(v)
        if isinstance(v, int):
            return IntegerAttr(v, i64)
        return FloatAttr(float(v), f64)

    return DictionaryAttr({k: one(v) for k, v in summary.items()})
