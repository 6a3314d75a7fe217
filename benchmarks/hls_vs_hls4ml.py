"""The zoo's mlp on an FPGA, side by side: hls4ml (uniform ap_fixed<16,6>) and Kiln.

    python -m benchmarks.hls_vs_hls4ml [--eval 256] [--out benchmarks/results]

The model is the zoo's `mlp` (256-512-512-256-10, its trained-at-init weights) with ReLU
after every hidden layer: hls4ml 1.3.0's PyTorch frontend has no GELU, so both tools get
the same ReLU network. hls4ml converts it with `config_from_pytorch_model(granularity=
"model", default_precision="ap_fixed<16,6>")` (its documented uniform setup) and runs its
own C simulation (`hls_model.compile()` builds the project with g++, no Vivado needed);
with `granularity="name"` its precision inference picks per-layer result and accumulator
types, shown for reference. Kiln runs its own generated C++ (bit-exact with its emulation,
checked on every input here) with:

- the uniform default `fixed<16,6>` (hls4ml's types, exact accumulators);
- the `quantize` pass's ILP over fixed4/6/8/12/16 weights (integer bits from each tensor's
  range) with a byte budget equal to the uniform 16-bit size, and at 12, 10, 8, 7 and 6 bits per
  weight; in weight-only mode activations stay `fixed<16,6>`, in weight-activation mode
  each layer's input gets 16 bits with integer bits from calibration;
- every fixed format applied uniformly (what the ILP must beat at equal size).

Sensitivities and activation ranges come from the zoo's example inputs (8 samples); the
error is measured on `--eval` fresh normal samples: relative RMS error ||y - y_fp32|| /
||y_fp32|| over all logits, and max |y - y_fp32|. Weight bits count every weight once
(biases are 16-bit in both tools and not counted). Writes `hls_vs_hls4ml.md` and `.json`.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from backends import BuildOptions, get_backend
from backends.hls import layers as L
from compiler.calibration import run_pipeline_quantized
from compiler.capture import convert_nodes, from_model, plan_partitions
from compiler.capture.convert import users_outside
from examples import zoo
from ir.program import Program
from passes import DEFAULT_PIPELINE, run_pipeline

FIXED = ("fixed4", "fixed6", "fixed8", "fixed12", "fixed16")


class MLPReLU(zoo.MLP):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def mlp_relu() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    """The zoo's mlp weights and inputs, ReLU activations."""
    model, inputs = zoo.mlp()
    relu = MLPReLU()
    relu.load_state_dict(model.state_dict())
    return relu.eval(), inputs


def errors(y: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    y, ref = y.double(), ref.double()
    return {"rel_rms_err": float((y - ref).norm() / ref.norm()), "max_abs_err": float((y - ref).abs().max())}


def run_hls4ml(model, x_eval: torch.Tensor, granularity: str, workdir: Path) -> dict[str, Any]:
    import hls4ml

    cfg = hls4ml.utils.config_from_pytorch_model(model, input_shape=(256,), granularity=granularity,
                                                 backend="Vivado", default_precision="ap_fixed<16,6>")
    out_dir = workdir / f"hls4ml_{granularity}"
    start = time.perf_counter()
    hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=str(out_dir),
                                                      backend="Vivado", io_type="io_parallel",
                                                      part="xcu280-fsvh2892-2L-e")
    hm.compile()
    build_s = time.perf_counter() - start
    y = torch.from_numpy(hm.predict(x_eval.numpy().astype("float32"))).reshape(x_eval.shape[0], -1)
    precision = []
    for layer in hm.get_layers():
        if layer.class_name == "Dense":
            w = layer.get_weights_precision() if hasattr(layer, "get_weights_precision") else None
            w = w or layer.get_attr("weight_t").precision
            precision.append(f"{layer.name}:{_h4_type(w)}")
    return {"tool": "hls4ml", "config": f"uniform ap_fixed<16,6>, granularity={granularity}", "y": y,
            "precision": ", ".join(precision), "weight_bits": _h4_weight_bits(hm), "build_s": build_s}


def _h4_type(p) -> str:
    return f"ap_fixed<{p.width},{p.integer}>"


def _h4_weight_bits(hm) -> int:
    total = 0
    for layer in hm.get_layers():
        if layer.class_name == "Dense":
            w = layer.get_attr("weight_t").precision
            total += int(layer.get_weights("weight").data.size) * int(w.width)
    return total


def capture(model, inputs) -> Program:
    plan = plan_partitions(from_model(model, inputs))
    [part] = plan.partitions()
    return convert_nodes(part, plan.consts, users_outside(part)).program


def run_kiln(model, inputs, x_eval, label: str, quantize: str | None, cache: Path) -> dict[str, Any]:
    program = capture(model, inputs)
    start = time.perf_counter()
    if quantize:
        _, report = run_pipeline_quantized(program, f"{DEFAULT_PIPELINE},{quantize},hls-reuse", inputs)
    else:
        run_pipeline(program.module, f"{DEFAULT_PIPELINE},hls-reuse")
    kernel = get_backend("hls").build(program, BuildOptions(cache_dir=cache))
    build_s = time.perf_counter() - start
    [y] = kernel(x_eval)
    [want] = kernel.emulate(x_eval)
    dense = [layer for layer in kernel.graph.layers if isinstance(layer, L.Dense)]
    precision = ", ".join(f"{layer.name}:{layer.weight.type.name.replace(',AP_RND_CONV,AP_SAT', '')}"
                          f"(in {layer.inputs[0].type.name.replace(',AP_RND_CONV,AP_SAT', '')})" for layer in dense)
    return {"tool": "kiln", "config": label, "y": y, "bit_exact": bool(torch.equal(y.double(), want)),
            "precision": precision, "weight_bits": sum(layer.weight.numel * layer.weight.type.width for layer in dense),
            "build_s": build_s, "latency_cycles": kernel.report.get("latency_cycles"),
            "dsp": kernel.report.get("dsp"), "bram_18k": kernel.report.get("bram_18k"),
            "reuse": kernel.report.get("reuse")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=256, help="held-out samples the error is measured on")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, inputs = mlp_relu()
    numel = sum(layer.weight.numel() for layer in model.layers)
    x_eval = torch.randn(args.eval, 256, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        ref = model(x_eval)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kiln-hls-bench-") as tmp:
        work = Path(tmp)
        for granularity in ("model", "name"):
            rows.append(run_hls4ml(model, x_eval, granularity, work))
        runs = [("uniform fixed<16,6> (hls4ml's types, no calibration)", None)]
        for mode in ("weight-only", "weight-activation"):
            for bits in (16, 12, 10, 8, 7, 6):
                budget = numel * bits // 8
                runs.append((f"ILP {mode}, budget {bits} bits/weight",
                             f"quantize{{formats={','.join(FIXED)} budget-bytes={budget} mode={mode}}}"))
            for fmt in FIXED[1:]:
                runs.append((f"uniform {fmt} (auto I), {mode}", f"quantize{{formats={fmt} mode={mode} "
                                                                f"budget-bytes={numel * 2}}}"))
        for label, quantize in runs:
            rows.append(run_kiln(model, inputs, x_eval, label, quantize, work / "cache"))
    for r in rows:
        r.update(errors(r.pop("y"), ref))
        r["bits_per_weight"] = r["weight_bits"] / numel
        print(f"{r['tool']:7s} {r['config']:55s} bits/w {r['bits_per_weight']:5.2f} "
              f"rel {r['rel_rms_err']:.4g} max {r['max_abs_err']:.4g}")
    write(rows, numel, args.out)
    return 0


def write(rows: list[dict[str, Any]], numel: int, out: Path) -> None:
    h4 = next(r for r in rows if r["tool"] == "hls4ml" and "model" in r["config"])
    lines = [
        f"The zoo's mlp with ReLU ({numel} weights), relative RMS error of the logits against fp32 on held-out "
        "inputs. Kiln rows run Kiln's generated C++ (bit-exact with its emulation on every input).", "",
        "| tool | configuration | bits / weight | weight bits vs hls4ml | rel RMS error | max abs error | "
        "vs hls4ml uniform | est. latency (cycles) | DSP | BRAM18 | precision per layer (weights, input) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        gain = h4["rel_rms_err"] / r["rel_rms_err"] if r["rel_rms_err"] else math.inf
        lines.append(
            f"| {r['tool']} | {r['config']} | {r['bits_per_weight']:.2f} | {r['weight_bits'] / h4['weight_bits']:.2f}x "
            f"| {r['rel_rms_err']:.4g} | {r['max_abs_err']:.4g} | {gain:.1f}x lower | {r.get('latency_cycles') or '-'} "
            f"| {r.get('dsp') or '-'} | {r.get('bram_18k') or '-'} | {r['precision']} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "hls_vs_hls4ml.md").write_text("\n".join(lines) + "\n")
    (out / "hls_vs_hls4ml.json").write_text(json.dumps(rows, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
