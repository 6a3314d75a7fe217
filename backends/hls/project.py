"""The Vitis HLS project as files: firmware, the C bridge Kiln calls, testbench, Tcl script.

Layout (what `kiln compile --target hls --out DIR` writes under DIR/hls):

    firmware/kiln_top.cpp     the top function (INTERFACE pragmas) calling one function per layer
    firmware/kiln_top.h       its declaration and the port types
    firmware/kiln_layers.h    the layer functions (`cpp_layers.py`)
    firmware/kiln_weights.h   weights, biases and tables as ap_fixed<W,I> arrays
    firmware/kiln_types.h     every typedef (one per tensor, accumulator, constant)
    firmware/kiln_hls.h       raw-integer helpers the layers use
    kiln_bridge.cpp           extern "C" kiln_run(): float in, double out, a loop over the batch
    tb/kiln_tb.cpp            C++ testbench: runs tb_data inputs, expects the emulation's outputs
    tb_data/                  inputs and expected outputs (bit exact) for the testbench
    host/kiln_ddr.h           only with DDR tiers (map-memory): the host's copy of the arrays
                              the top function reads through m_axi ports (`tiers.py`)
    run_hls.tcl               csim, csynth and IP export for users who have Vitis HLS
    build_csim.sh             the g++ command that builds and runs the testbench without Vitis
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from backends.hls import cpp_layers
from backends.hls import layers as L
from backends.hls import tiers as T
from backends.hls.config import HLSConfig

REGISTER_PORT_MAX = 1024  # ports up to this many elements are registers, larger ones memories

HELPERS = r"""// Raw-integer helpers for the layers: Kiln's HLS backend, generated file.
#ifndef KILN_HLS_H
#define KILN_HLS_H
#include "ap_fixed.h"
#include "ap_int.h"

namespace kiln {
// The two's-complement integer behind a fixed-point value (value = raw * 2^-F).
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
inline long long raw(const ap_fixed<W, I, Q, O, N>& x) {
    ap_int<W> k = x.range(W - 1, 0);
    return k.to_int64();
}
// The value raw * 2^-F as a wide fixed-point number; assigning it to a narrower type
// rounds and overflows with that type's modes.
template <int F>
inline ap_fixed<64, 64 - F> from_raw(long long k) {
    ap_fixed<64, 64 - F> t;
    t.range(63, 0) = k;
    return t;
}
// floor(k * 2^-s): arithmetic right shift for s >= 0, a multiplication for s < 0.
inline long long shift_floor(long long k, int s) { return s >= 0 ? (k >> s) : k * (1LL << -s); }
// Index of the highest set bit of v > 0 (a priority encoder).
inline int msb(long long v) {
    int p = 0;
    Bits: for (int i = 0; i < 63; i++) {
#pragma HLS UNROLL
        if ((v >> i) & 1) p = i;
    }
    return p;
}
inline int clamp_index(long long i, int n) { return i < 0 ? 0 : (i >= n ? n - 1 : (int)i); }
#ifndef __SYNTHESIS__
// C simulation loads constants from their raw integers: g++ spends minutes on a static
// initializer of many ap_fixed constructors, and none on a plain integer array.
template <class T>
inline bool fill(T* dst, const long long* src, int n) {
    for (int i = 0; i < n; i++) dst[i].range(T::width - 1, 0) = src[i];
    return true;
}
#endif
}  // namespace kiln
#endif
"""


@dataclass
class Project:
    files: dict[str, str] = field(default_factory=dict)

    def write(self, root: Path) -> None:
        for rel, text in self.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def library_sources(self) -> dict[str, str]:
        """What the C simulation library is built from (not the testbench or its data)."""
        return {k: v for k, v in self.files.items()
                if k.startswith(("firmware/", "host/")) or k == "kiln_bridge.cpp"}

    def digest(self) -> str:
        h = hashlib.sha256()
        for rel, text in sorted(self.library_sources().items()):
            h.update(rel.encode() + b"\0" + text.encode() + b"\0")
        return h.hexdigest()


def _values(c: L.Const) -> str:
    vals = [repr(v) for v in c.values().reshape(-1).tolist()]
    rows = [", ".join(vals[i:i + 16]) for i in range(0, len(vals), 16)]
    return ",\n    ".join(rows)


def types_header(graph: L.HLSGraph) -> str:
    lines = ["// Fixed-point types: Kiln's HLS backend, generated file.", "#ifndef KILN_TYPES_H",
             "#define KILN_TYPES_H", '#include "ap_fixed.h"', "", "// activations"]
    lines += [f"typedef {t.type.cpp_type} {t.name}_t;  // {list(t.shape)}" for t in graph.tensors()]
    lines += ["", "// accumulators and internal types"]
    for layer in graph.layers:
        lines += [f"typedef {cpp} {name};" for name, cpp in cpp_layers.layer_types(layer)]
    lines += ["", "// weights, biases, tables"]
    lines += [f"typedef {c.type.cpp_type} {c.name}_t;" for c in graph.consts()]
    return "\n".join(lines + ["", "#endif", ""])


def _raw(c: L.Const) -> str:
    vals = [str(v) for v in c.codes.reshape(-1).tolist()]
    return ",\n    ".join(", ".join(vals[i:i + 32]) for i in range(0, len(vals), 32))


def weights_header(graph: L.HLSGraph) -> str:
    """Each constant twice: decimal ap_fixed literals for synthesis, raw integers for C
    simulation (see `kiln::fill`); the literals are exact (repr of a dyadic rational)."""
    lines = ["// Constants as ap_fixed arrays: Kiln's HLS backend, generated file.", "#ifndef KILN_WEIGHTS_H",
             "#define KILN_WEIGHTS_H", '#include "kiln_types.h"', '#include "kiln_hls.h"', ""]
    ddr = {c.name for c in T.ddr_weights(graph)}  # the host holds these (host/kiln_ddr.h)
    consts = [c for c in graph.consts() if c.name not in ddr]
    lines.append("#ifdef __SYNTHESIS__")
    for c in consts:
        shape = "x".join(str(d) for d in c.codes.shape) or "1"
        lines += [f"// {c.name}: {c.type.name}, [{shape}]",
                  f"static const {c.name}_t {c.name}[{max(c.numel, 1)}] = {{\n    {_values(c)}\n}};"]
    lines += ["#else"]
    for c in consts:
        n = max(c.numel, 1)
        lines += [f"static {c.name}_t {c.name}[{n}];",
                  f"static const long long {c.name}_raw[{n}] = {{\n    {_raw(c)}\n}};",
                  f"static const bool {c.name}_ready = kiln::fill({c.name}, {c.name}_raw, {n});"]
    return "\n".join(lines + ["#endif", "", "#endif", ""])


def layers_header(graph: L.HLSGraph) -> str:
    head = ["// One function per layer: Kiln's HLS backend, generated file.", "#ifndef KILN_LAYERS_H",
            "#define KILN_LAYERS_H", '#include "kiln_hls.h"', '#include "kiln_types.h"',
            '#include "kiln_weights.h"', ""]
    ddr = {c.name for c in T.ddr_weights(graph)}
    body = []
    for layer in graph.layers:
        text = cpp_layers.EMIT[type(layer)](layer)
        weight = getattr(layer, "weight", None)
        if isinstance(weight, L.Const) and weight.name in ddr:
            text = T.with_ddr_weight(text, layer, cpp_layers.signature(layer))
        body.append(text + "\n")
    return "\n".join(head + body + ["#endif", ""])


def _ports(graph: L.HLSGraph) -> list[str]:
    ins = [f"const {t.name}_t in{i}[{t.numel}]" for i, t in enumerate(graph.inputs)]
    outs = [f"{t.name}_t out{i}[{t.numel}]" for i, t in enumerate(graph.outputs)]
    return ins + outs + T.top_ports(graph)


def top_header(graph: L.HLSGraph, config: HLSConfig) -> str:
    return "\n".join([
        "// The top function: Kiln's HLS backend, generated file.", "#ifndef KILN_TOP_H", "#define KILN_TOP_H",
        '#include "kiln_types.h"', "",
        (f"// One sample per call; inputs {[list(t.shape) for t in graph.inputs]}, "
         f"outputs {[list(t.shape) for t in graph.outputs]}."),
        f"void {config.top}({', '.join(_ports(graph))});", "", "#endif", ""])


def top_source(graph: L.HLSGraph, config: HLSConfig) -> str:
    lines = ["// The top function: Kiln's HLS backend, generated file.", '#include "kiln_top.h"',
             '#include "kiln_layers.h"', "", f"void {config.top}({', '.join(_ports(graph))}) {{"]
    ports = [(f"in{i}", t) for i, t in enumerate(graph.inputs)] + [(f"out{i}", t) for i, t in enumerate(graph.outputs)]
    for port, t in ports:
        # Small ports are one wide register with a valid signal (hls4ml's io_parallel);
        # large ones (images) a memory interface.
        if t.numel <= REGISTER_PORT_MAX:
            lines += [f"#pragma HLS ARRAY_RESHAPE variable={port} complete dim=0",
                      f"#pragma HLS INTERFACE ap_vld port={port}"]
        else:
            lines.append(f"#pragma HLS INTERFACE ap_memory port={port}")
    lines += ["#pragma HLS INTERFACE ap_ctrl_hs port=return", ""]
    names = {t.name: f"in{i}" for i, t in enumerate(graph.inputs)}
    in_ddr = {t.name for t in T.ddr_buffers(graph)}  # arguments of the top function
    ddr_weights = {c.name for c in T.ddr_weights(graph)}
    for layer in graph.layers:
        out = layer.output
        if out.name not in in_ddr:
            lines.append(f"  static {out.name}_t {out.name}[{out.numel}];")
        names[out.name] = out.name
    lines += T.pragmas(graph)
    lines.append("")
    for layer in graph.layers:
        args = [names[t.name] for t in layer.inputs] + [layer.output.name]
        weight = getattr(layer, "weight", None)
        if isinstance(weight, L.Const) and weight.name in ddr_weights:
            args.append(weight.name)
        lines.append(f"  {layer.name}({', '.join(args)});  // {layer.origin}")
    for i, t in enumerate(graph.outputs):
        lines += [f"  Out{i}: for (int i = 0; i < {t.numel}; i++) {{", "#pragma HLS UNROLL factor=8",
                  f"    out{i}[i] = {names[t.name]}[i];", "  }"]
    return "\n".join(lines + ["}", ""])


def bridge(graph: L.HLSGraph, config: HLSConfig) -> str:
    lines = ["// The C ABI Kiln calls through ctypes: Kiln's HLS backend, generated file.",
             '#include "firmware/kiln_top.cpp"', *_host_include(graph, "host"), "", 'extern "C" {', "int kiln_abi_version() { return 1; }", "",
             "// inputs[i]: float32 [batch, numel_i]; outputs[j]: float64 [batch, numel_j].",
             "void kiln_run(const float* const* inputs, double* const* outputs, int batch) {"]
    for i, t in enumerate(graph.inputs):
        lines.append(f"  static {t.name}_t x{i}[{t.numel}];")
    for j, t in enumerate(graph.outputs):
        lines.append(f"  static {t.name}_t y{j}[{t.numel}];")
    lines.append("  for (long b = 0; b < batch; b++) {")
    for i, t in enumerate(graph.inputs):
        lines.append(f"    for (long i = 0; i < {t.numel}; i++) x{i}[i] = inputs[{i}][b * {t.numel} + i];")
    args = [f"x{i}" for i in range(len(graph.inputs))] + [f"y{j}" for j in range(len(graph.outputs))]
    lines.append(f"    {config.top}({', '.join(args + T.host_args(graph))});")
    for j, t in enumerate(graph.outputs):
        lines.append(f"    for (long i = 0; i < {t.numel}; i++) outputs[{j}][b * {t.numel} + i] = y{j}[i].to_double();")
    return "\n".join(lines + ["  }", "}", "}", ""])


def testbench(graph: L.HLSGraph, config: HLSConfig) -> str:
    n_in = sum(t.numel for t in graph.inputs)
    n_out = sum(t.numel for t in graph.outputs)
    decl = [f"  static {t.name}_t x{i}[{t.numel}];" for i, t in enumerate(graph.inputs)]
    decl += [f"  static {t.name}_t y{j}[{t.numel}];" for j, t in enumerate(graph.outputs)]
    read, offset = [], 0
    for i, t in enumerate(graph.inputs):
        read.append(f"    for (int i = 0; i < {t.numel}; i++) x{i}[i] = in[{offset} + i];")
        offset += t.numel
    check, offset = [], 0
    for j, t in enumerate(graph.outputs):
        check.append(f"    for (int i = 0; i < {t.numel}; i++) if (y{j}[i].to_double() != want[{offset} + i]) bad++;")
        offset += t.numel
    args = [f"x{i}" for i in range(len(graph.inputs))] + [f"y{j}" for j in range(len(graph.outputs))]
    args += T.host_args(graph)
    return "\n".join([
        "// Testbench: Kiln's HLS backend, generated file. Expects the emulation's outputs bit for bit.",
        "#include <cstdio>", "#include <string>", '#include "../firmware/kiln_top.h"',
        *_host_include(graph, "../host"), "",
        "int main(int argc, char** argv) {",
        '  std::string dir = argc > 1 ? argv[1] : "tb_data";',
        '  FILE* fin = fopen((dir + "/tb_input.txt").c_str(), "r");',
        '  FILE* fout = fopen((dir + "/tb_output.txt").c_str(), "r");',
        '  if (!fin || !fout) { printf("kiln_tb: cannot open %s/tb_*.txt\\n", dir.c_str()); return 2; }',
        *decl,
        f"  static float in[{n_in}];", f"  static double want[{n_out}];",
        "  int samples = 0, bad = 0;", "  while (true) {",
        "    int got = 0;",
        f"    for (int i = 0; i < {n_in}; i++) got += fscanf(fin, \"%f\", &in[i]);",
        f"    if (got != {n_in}) break;",
        f"    for (int i = 0; i < {n_out}; i++) if (fscanf(fout, \"%lf\", &want[i]) != 1) return 2;",
        *read, f"    {config.top}({', '.join(args)});", *check, "    samples++;", "  }",
        '  printf("kiln_tb: %d samples, %d mismatching outputs\\n", samples, bad);',
        "  return bad != 0 || samples == 0;", "}", ""])


def tb_data(inputs: list[torch.Tensor], outputs: list[torch.Tensor]) -> dict[str, str]:
    batch = inputs[0].shape[0]
    ins = [" ".join(" ".join(f"{v:.9g}" for v in x[b].reshape(-1).tolist()) for x in inputs) for b in range(batch)]
    outs = [" ".join(" ".join(f"{v:.17g}" for v in y[b].reshape(-1).tolist()) for y in outputs) for b in range(batch)]
    return {"tb_data/tb_input.txt": "\n".join(ins) + "\n", "tb_data/tb_output.txt": "\n".join(outs) + "\n"}


def tcl(config: HLSConfig) -> str:
    return "\n".join([
        "# Vitis HLS: C simulation, synthesis and IP export. Usage: vitis_hls -f run_hls.tcl",
        "open_project -reset kiln_prj",
        f"set_top {config.top}",
        'add_files firmware/kiln_top.cpp -cflags "-std=c++14"',
        'add_files -tb tb/kiln_tb.cpp -cflags "-std=c++14"',
        "add_files -tb tb_data",
        'open_solution -reset "solution1" -flow_target vivado',
        f"set_part {{{config.part}}}",
        f"create_clock -period {config.clock_ns:g} -name default",
        "csim_design",
        "csynth_design",
        "# cosim_design -trace_level none",
        "export_design -format ip_catalog",
        "exit", ""])


def build_script(ap_types: Path) -> str:
    return "\n".join([
        "#!/bin/sh",
        "# C simulation without Vitis: build the testbench with g++ against the ap_types headers.",
        "set -e",
        'cd "$(dirname "$0")"',
        f'AP_TYPES="${{AP_TYPES:-{ap_types}}}"',
        'g++ -std=c++14 -O2 -Wno-unknown-pragmas -I"$AP_TYPES" -Ifirmware tb/kiln_tb.cpp firmware/kiln_top.cpp -o kiln_tb',
        "./kiln_tb tb_data", ""])


def generate(graph: L.HLSGraph, config: HLSConfig, ap_types: Path,
             tb_inputs: list[torch.Tensor], tb_outputs: list[torch.Tensor]) -> Project:
    files = {
        "firmware/kiln_hls.h": HELPERS,
        "firmware/kiln_types.h": types_header(graph),
        "firmware/kiln_weights.h": weights_header(graph),
        "firmware/kiln_layers.h": layers_header(graph),
        "firmware/kiln_top.h": top_header(graph, config),
        "firmware/kiln_top.cpp": top_source(graph, config),
        "kiln_bridge.cpp": bridge(graph, config),
        "tb/kiln_tb.cpp": testbench(graph, config),
        "run_hls.tcl": tcl(config),
        "build_csim.sh": build_script(ap_types),
    }
    if T.host_args(graph):
        files["host/kiln_ddr.h"] = T.host_header(graph, _raw)
    files.update(tb_data(tb_inputs, tb_outputs))
    return Project(files)


def _host_include(graph: L.HLSGraph, folder: str) -> list[str]:
    return [f'#include "{folder}/kiln_ddr.h"'] if T.host_args(graph) else []
