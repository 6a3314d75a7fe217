"""One C++ function per layer of the HLS graph, with its pragmas.

The arithmetic of each function is the one `emulate.py` computes (same types, same
order of rounding, same integer shifts); the loop structure is hls4ml's `io_parallel`
resource strategy, so the pragmas say what the reuse factor asks for:

- dense and conv: the weight array is block partitioned into `mults / R` banks, a
  `Reuse` loop of R iterations is pipelined with II=1 and its `Mult` loop of
  `mults / R` multiplications unrolled; activations and accumulators fully partitioned;
- matmul and attention (activation x activation): each row is pipelined with II=R and
  `ALLOCATION` limits the multipliers to `mults / R`;
- elementwise, table and norm layers: a row per cycle (`PIPELINE II=1` over rows, the row
  unrolled).

Raw-integer steps (table indices, softmax and layer-norm normalization) use the helpers in
`kiln_hls.h`: `kiln::raw`, `kiln::from_raw<F>`, `kiln::shift_floor`, `kiln::msb`,
`kiln::clamp_index`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from backends.hls import layers as L


def ctype(t: L.Tensor) -> str:
    return f"{t.name}_t"


def signature(layer: L.Layer) -> str:
    names = ["x"] if len(layer.inputs) == 1 else [f"x{i}" for i in range(len(layer.inputs))]
    args = [f"const {ctype(t)} {n}[{t.numel}]" for n, t in zip(names, layer.inputs)]
    return f"void {layer.name}({', '.join(args)}, {ctype(layer.output)} y[{layer.output.numel}])"


def _head(layer: L.Layer, summary: str, pragmas: list[str]) -> list[str]:
    lines = [f"// {layer.name}: {layer.origin}: {summary}", signature(layer) + " {", "#pragma HLS INLINE off"]
    return lines + [f"#pragma HLS {p}" for p in pragmas]


def _rows_loop(rows: int, width: int, body: list[str], label: str = "Rows") -> list[str]:
    """for each row (pipelined, II=1), for each element of the row (unrolled): body with i."""
    out = [f"  {label}: for (int p = 0; p < {rows}; p++) {{", "#pragma HLS PIPELINE II=1",
           f"    Elems: for (int j = 0; j < {width}; j++) {{", "#pragma HLS UNROLL",
           f"      const int i = p * {width} + j;"]
    return out + [f"      {b}" for b in body] + ["    }", "  }"]


def _row_width(t: L.Tensor) -> int:
    return t.shape[-1] if t.shape else 1


def _partition(t_name: str, numel: int) -> str:
    # Small activations live in registers (complete partition); large ones (images) in
    # BRAM with a cyclic partition wide enough for a row of reads.
    return f"ARRAY_PARTITION variable={t_name} complete" if numel <= 4096 else \
        f"ARRAY_PARTITION variable={t_name} cyclic factor=8"


def _mac_body(layer: L.Dense, x_expr: str, y_expr: str, indent: str) -> list[str]:
    k, n, r = layer.n_in, layer.n_out, layer.reuse
    mults = layer.mults // r
    w, b = layer.weight.name, layer.bias
    init = f"acc[o] = {b.name}[o];" if b is not None else "acc[o] = 0;"
    lines = [
        f"Init: for (int o = 0; o < {n}; o++) {{", "#pragma HLS UNROLL", f"  {init}", "}",
        f"Reuse: for (int r = 0; r < {r}; r++) {{", "#pragma HLS PIPELINE II=1",
        f"  Mult: for (int m = 0; m < {mults}; m++) {{", "#pragma HLS UNROLL",
        f"    const int i = r + m * {r};  // weight [o][k] at o * {k} + k",
        f"    acc[i / {k}] += {x_expr.format(k=f'i % {k}')} * {w}[i];", "  }", "}",
        f"Out: for (int o = 0; o < {n}; o++) {{", "#pragma HLS UNROLL", f"  {y_expr} = acc[o];", "}",
    ]
    return [ln if ln.startswith("#") else indent + ln for ln in lines]


def dense(layer: L.Dense) -> str:
    k, n, r = layer.n_in, layer.n_out, layer.reuse
    x = layer.inputs[0]
    lines = _head(layer, f"{k} -> {n} on {layer.rows} row(s); reuse factor {r}, "
                  f"{layer.mults // r} multipliers", [
                      _partition("x", x.numel), _partition("y", layer.output.numel),
                      f"ARRAY_PARTITION variable={layer.weight.name} block factor={layer.mults // r}"])
    lines += [f"  {layer.name}_acc_t acc[{n}];", "#pragma HLS ARRAY_PARTITION variable=acc complete",
              f"  Rows: for (int p = 0; p < {layer.rows}; p++) {{"]
    lines += _mac_body(layer, f"x[p * {k} + {{k}}]", f"y[p * {n} + o]", "    ")
    return "\n".join(lines + ["  }", "}"])


def conv2d(layer: L.Conv2d) -> str:
    x = layer.inputs[0]
    c, h, w = x.shape
    _, oh, ow = layer.output.shape
    kh, kw = layer.kernel
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    k, r = layer.n_in, layer.reuse
    lines = _head(layer, f"{c}x{h}x{w} -> {layer.n_out}x{oh}x{ow}, kernel {kh}x{kw}; reuse factor {r}, "
                  f"{layer.mults // r} multipliers", [
                      _partition("x", x.numel), _partition("y", layer.output.numel),
                      f"ARRAY_PARTITION variable={layer.weight.name} block factor={layer.mults // r}"])
    lines += [
        f"  {ctype(x)} patch[{k}];", "#pragma HLS ARRAY_PARTITION variable=patch complete",
        f"  {layer.name}_acc_t acc[{layer.n_out}];", "#pragma HLS ARRAY_PARTITION variable=acc complete",
        f"  Rows: for (int oy = 0; oy < {oh}; oy++) {{",
        f"    Cols: for (int ox = 0; ox < {ow}; ox++) {{",
        f"      Gather: for (int q = 0; q < {k}; q++) {{", "#pragma HLS UNROLL",
        f"        const int ci = q / {kh * kw}, ky = (q / {kw}) % {kh}, kx = q % {kw};",
        f"        const int iy = oy * {sh} - {ph} + ky * {dh}, ix = ox * {sw} - {pw} + kx * {dw};",
        (f"        patch[q] = (iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) ? x[(ci * {h} + iy) * {w} + ix] "
         f": {ctype(x)}(0);"),
        "      }",
    ]
    lines += _mac_body(layer, "patch[{k}]", f"y[(o * {oh} + oy) * {ow} + ox]", "      ")
    return "\n".join(lines + ["    }", "  }", "}"])


def matmul(layer: L.Matmul) -> str:
    batch, length, k, n = layer.dims
    mults = layer.mults // layer.reuse
    shared = len(layer.inputs[1].shape) == 2
    b_off = "0" if shared else f"t * {k * n}"
    lines = _head(layer, f"[{batch} x {length} x {k}] @ [{k} x {n}]; reuse factor {layer.reuse}, "
                  f"{mults} multipliers", [_partition("x0", layer.inputs[0].numel),
                                           _partition("x1", layer.inputs[1].numel),
                                           f"ALLOCATION operation instances=mul limit={mults}"])
    lines += [
        f"  Batch: for (int t = 0; t < {batch}; t++) {{",
        f"    Rows: for (int i = 0; i < {length}; i++) {{", f"#pragma HLS PIPELINE II={layer.reuse}",
        f"      Cols: for (int n = 0; n < {n}; n++) {{", "#pragma HLS UNROLL",
        f"        {layer.name}_acc_t acc = 0;",
        f"        Dot: for (int k = 0; k < {k}; k++) {{", "#pragma HLS UNROLL",
        f"          acc += x0[(t * {length} + i) * {k} + k] * x1[{b_off} + k * {n} + n];", "        }",
        f"        y[(t * {length} + i) * {n} + n] = acc;", "      }", "    }", "  }", "}",
    ]
    return "\n".join(lines)


def softmax_core(t: L.SoftmaxTables, n: int, x_of: Callable[[str], str], y_of: Callable[[str], str],
                 valid: str = "") -> list[str]:
    """Lines computing y_of(j) = softmax over j of x_of(j) (see `emulate.softmax_core`)."""
    ok = f"({valid}) && " if valid else ""
    size, bits, wide = t.exp.numel, t.recip_bits, t.wide_frac
    return [
        "long long mx = -(1LL << 62);",
        f"Max: for (int j = 0; j < {n}; j++) {{", "#pragma HLS UNROLL",
        f"  if ({ok}kiln::raw({x_of('j')}) > mx) mx = kiln::raw({x_of('j')});", "}",
        f"long long e[{n}];", "#pragma HLS ARRAY_PARTITION variable=e complete",
        "long long sum = 0;",
        f"Exp: for (int j = 0; j < {n}; j++) {{", "#pragma HLS UNROLL",
        (f"  e[j] = {'(' + valid + ') ? ' if valid else ''}kiln::raw({t.exp.name}[kiln::clamp_index("
         f"kiln::shift_floor(mx - kiln::raw({x_of('j')}), {t.exp_shift}), {size})]){' : 0LL' if valid else ''};"),
        "  sum += e[j];", "}",
        "const int pm = kiln::msb(sum);",
        f"const long long rc = kiln::raw({t.recip.name}[(int)(kiln::shift_floor(sum, pm - {bits}) - (1LL << {bits}))]);",
        f"Norm: for (int j = 0; j < {n}; j++) {{", "#pragma HLS UNROLL",
        (f"  {y_of('j')} = kiln::from_raw<{wide}>(kiln::shift_floor(e[j] * rc, "
         f"{t.recip.type.frac_bits} + pm - {wide}));"), "}",
    ]


def _indent(lines: list[str], pad: str) -> list[str]:
    return [ln if ln.startswith("#") else pad + ln for ln in lines]


def softmax(layer: L.Softmax) -> str:
    n = layer.n
    lines = _head(layer, f"softmax over rows of {n} (exp and reciprocal tables)",
                  [_partition("x", layer.inputs[0].numel), _partition("y", layer.output.numel)])
    lines += [f"  Rows: for (int p = 0; p < {layer.rows}; p++) {{", "#pragma HLS PIPELINE II=1"]
    lines += _indent(softmax_core(layer.tables, n, lambda j: f"x[p * {n} + {j}]",
                                  lambda j: f"y[p * {n} + {j}]"), "    ")
    return "\n".join(lines + ["  }", "}"])


def attention(layer: L.Attention) -> str:
    batch, length, s, d, dv = layer.dims
    mults = layer.mults // layer.reuse
    nm = layer.name
    valid = "j <= i" if layer.causal else ""
    lines = _head(layer, f"softmax(q k^T * {float(layer.scale.values()[0]):g}) v, {batch} x {length} queries, "
                  f"{s} keys; reuse factor {layer.reuse}, {mults} multipliers",
                  [_partition(v, t.numel) for v, t in zip(("x0", "x1", "x2"), layer.inputs)]
                  + [f"ALLOCATION operation instances=mul limit={mults}"])
    body = [
        f"{nm}_score_t sc[{s}];", "#pragma HLS ARRAY_PARTITION variable=sc complete",
        f"{nm}_prob_t pr[{s}];", "#pragma HLS ARRAY_PARTITION variable=pr complete",
        f"Scores: for (int j = 0; j < {s}; j++) {{", "#pragma HLS UNROLL",
        f"  {nm}_score_acc_t acc = 0;",
        f"  Dot: for (int k = 0; k < {d}; k++) {{", "#pragma HLS UNROLL",
        f"    acc += x0[(t * {length} + i) * {d} + k] * x1[(t * {s} + j) * {d} + k];", "  }",
        f"  sc[j] = acc * {layer.scale.name}[0];", "}",
    ]
    body += softmax_core(layer.tables, s, lambda j: f"sc[{j}]", lambda j: f"pr[{j}]", valid)
    body += [
        f"Out: for (int c = 0; c < {dv}; c++) {{", "#pragma HLS UNROLL",
        f"  {nm}_out_acc_t acc = 0;",
        f"  Sum: for (int j = 0; j < {s}; j++) {{", "#pragma HLS UNROLL",
        f"    acc += pr[j] * x2[(t * {s} + j) * {dv} + c];", "  }",
        f"  y[(t * {length} + i) * {dv} + c] = acc;", "}",
    ]
    lines += [f"  Batch: for (int t = 0; t < {batch}; t++) {{",
              f"    Rows: for (int i = 0; i < {length}; i++) {{", f"#pragma HLS PIPELINE II={layer.reuse}"]
    return "\n".join(lines + _indent(body, "      ") + ["    }", "  }", "}"])


def layer_norm(layer: L.LayerNorm) -> str:
    n = layer.n
    log_n = (n - 1).bit_length()
    c = round(2 ** (layer.inv_n_frac + log_n) / n)
    g, bits, wide = layer.guard, layer.rsqrt_bits, layer.wide_frac
    gamma = f" * kiln::raw({layer.gamma.name}[j])" if layer.gamma is not None else ""
    fg = layer.gamma.type.frac_bits if layer.gamma is not None else 0
    frac = layer.d_frac + layer.rsqrt.type.frac_bits + fg
    lines = _head(layer, f"layer norm over rows of {n} (rsqrt table, eps {layer.eps:g})",
                  [_partition("x", layer.inputs[0].numel), _partition("y", layer.output.numel)])
    body = [
        "long long s = 0;",
        f"Sum: for (int j = 0; j < {n}; j++) {{", "#pragma HLS UNROLL", f"  s += kiln::raw(x[p * {n} + j]);", "}",
        f"const long long mean = kiln::shift_floor(s * {1 << g}LL * {c}LL, {layer.inv_n_frac + log_n});",
        f"long long d[{n}];", "#pragma HLS ARRAY_PARTITION variable=d complete",
        "long long q = 0;",
        f"Dev: for (int j = 0; j < {n}; j++) {{", "#pragma HLS UNROLL",
        f"  d[j] = kiln::raw(x[p * {n} + j]) * {1 << g}LL - mean;", "  q += d[j] * d[j];", "}",
        (f"long long v = kiln::shift_floor(kiln::shift_floor(q, {log_n + layer.var_shift}) * {c}LL, "
         f"{layer.inv_n_frac}) + {layer.eps_raw}LL;"),
        "if (v <= 0) v = 1;",
        "const int pm = kiln::msb(v);",
        f"const int e = pm - {layer.var_frac};",
        "const int h = e & 1;",
        "const int qe = (e - h) >> 1;",
        (f"const long long r = kiln::raw({layer.rsqrt.name}[h * {1 << bits} + "
         f"(int)(kiln::shift_floor(v, pm - {bits}) - {1 << bits}LL)]);"),
        f"Norm: for (int j = 0; j < {n}; j++) {{", "#pragma HLS UNROLL",
        f"  long long a = kiln::shift_floor(d[j] * r{gamma}, {frac} + qe - {wide});",
    ]
    if layer.beta is not None:
        body.append(f"  a += kiln::raw({layer.beta.name}[j]) * {1 << (wide - layer.beta.type.frac_bits)}LL;")
    body += [f"  y[p * {n} + j] = kiln::from_raw<{wide}>(a);", "}"]
    lines += [f"  Rows: for (int p = 0; p < {layer.rows}; p++) {{", "#pragma HLS PIPELINE II=1"]
    return "\n".join(lines + _indent(body, "    ") + ["  }", "}"])


def _elementwise(layer: L.Layer, summary: str, body: list[str], pragmas: list[str] | None = None) -> str:
    t = layer.output
    width = _row_width(t)
    lines = _head(layer, summary, [_partition(n, s.numel) for n, s in _arrays(layer)] + (pragmas or []))
    return "\n".join(lines + _rows_loop(t.numel // width, width, body) + ["}"])


def _arrays(layer: L.Layer) -> list[tuple[str, L.Tensor]]:
    names = ["x"] if len(layer.inputs) == 1 else [f"x{i}" for i in range(len(layer.inputs))]
    return list(zip(names, layer.inputs)) + [("y", layer.output)]


def lut(layer: L.Lut) -> str:
    idx = (f"const int idx = kiln::clamp_index(kiln::shift_floor(kiln::raw(x[i]), {layer.shift}) + "
           f"{layer.size // 2}, {layer.size});")
    value = f"x[i] * {layer.table.name}[idx]" if layer.gated else f"{layer.table.name}[idx]"
    what = "x * T(x)" if layer.gated else "T(x)"
    return _elementwise(layer, f"{layer.function} as {what}, a {layer.size}-entry table", [idx, f"y[i] = {value};"])


def relu(layer: L.Relu) -> str:
    return _elementwise(layer, "relu", [f"y[i] = x[i] > 0 ? x[i] : {ctype(layer.inputs[0])}(0);"])


def cast(layer: L.Cast) -> str:
    return _elementwise(layer, f"cast to {layer.output.type.cpp_type}", ["y[i] = x[i];"])


def binary(layer: L.Binary) -> str:
    sign = {"add": "+", "sub": "-", "mul": "*"}[layer.fn]
    if layer.other is not None:
        return _elementwise(layer, f"x {sign} constant", [f"y[i] = x[i] {sign} {layer.other.name}[i];"])
    return _elementwise(layer, f"a {sign} b", [f"y[i] = x0[i] {sign} x1[i];"])


def scale_shift(layer: L.ScaleShift) -> str:
    shape = layer.inputs[0].shape
    inner = math.prod(shape[layer.axis + 1:])
    ch = f"(i / {inner}) % {shape[layer.axis]}"
    return _elementwise(layer, "per-channel scale and shift (batch norm)",
                        [f"const int c = {ch};", f"y[i] = x[i] * {layer.scale.name}[c] + {layer.shift.name}[c];"])


def _divide_expr(sum_name: str, frac: int, count: int, inv_frac: int) -> str:
    log = L.pow2_log(count)
    if log is not None:
        return f"kiln::from_raw<{frac + log}>({sum_name})"
    return f"kiln::from_raw<{frac + inv_frac}>({sum_name} * {round(2 ** inv_frac / count)}LL)"


def pool2d(layer: L.Pool2d) -> str:
    x = layer.inputs[0]
    c, h, w = x.shape
    _, oh, ow = layer.output.shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    fx = x.type.frac_bits
    lines = _head(layer, f"{layer.mode} pool {kh}x{kw} stride {sh}x{sw}",
                  [_partition("x", x.numel), _partition("y", layer.output.numel)])
    lines += [f"  Rows: for (int oy = 0; oy < {oh}; oy++) {{",
              f"    Cols: for (int ox = 0; ox < {ow}; ox++) {{", "#pragma HLS PIPELINE II=1",
              f"      Chan: for (int ci = 0; ci < {c}; ci++) {{", "#pragma HLS UNROLL"]
    if layer.mode == "max":
        lines += [f"        {ctype(x)} m = 0;", "        bool first = true;"]
    else:
        lines += ["        long long s = 0;"]
    lines += [f"        Win: for (int q = 0; q < {kh * kw}; q++) {{", "#pragma HLS UNROLL",
              f"          const int iy = oy * {sh} - {ph} + q / {kw}, ix = ox * {sw} - {pw} + q % {kw};",
              f"          if (iy >= 0 && iy < {h} && ix >= 0 && ix < {w}) {{",
              f"            const {ctype(x)} v = x[(ci * {h} + iy) * {w} + ix];"]
    if layer.mode == "max":
        lines += ["            if (first || v > m) m = v;", "            first = false;"]
    else:
        lines += ["            s += kiln::raw(v);"]
    lines += ["          }", "        }"]
    out = "m" if layer.mode == "max" else _divide_expr("s", fx, kh * kw, layer.inv_frac)
    lines += [f"        y[(ci * {oh} + oy) * {ow} + ox] = {out};", "      }", "    }", "  }", "}"]
    return "\n".join(lines)


def _strides(shape: tuple[int, ...]) -> list[int]:
    return [math.prod(shape[i + 1:]) for i in range(len(shape))]


def reduce(layer: L.Reduce) -> str:
    x = layer.inputs[0]
    shape, strides = x.shape, _strides(x.shape)
    kept = [d for d in range(len(shape)) if d not in layer.dims]
    out_strides = _strides(tuple(shape[d] for d in kept))
    lines = _head(layer, f"{layer.mode} over dims {list(layer.dims)}",
                  [_partition("x", x.numel), _partition("y", layer.output.numel)])
    pad = "  "
    for d in kept:
        lines.append(f"{pad}Keep{d}: for (int i{d} = 0; i{d} < {shape[d]}; i{d}++) {{")
        pad += "  "
    if kept:
        lines.append("#pragma HLS PIPELINE II=1")
    acc = [f"{ctype(x)} m = 0;", "bool first = true;"] if layer.mode == "max" else ["long long s = 0;"]
    lines += [pad + a for a in acc]
    inner = pad
    for d in layer.dims:
        lines += [f"{inner}Red{d}: for (int i{d} = 0; i{d} < {shape[d]}; i{d}++) {{", "#pragma HLS UNROLL"]
        inner += "  "
    index = " + ".join(f"i{d} * {strides[d]}" for d in range(len(shape)))
    lines.append(f"{inner}const {ctype(x)} v = x[{index}];")
    lines += [f"{inner}if (first || v > m) m = v;", f"{inner}first = false;"] if layer.mode == "max" else \
        [f"{inner}s += kiln::raw(v);"]
    for _ in layer.dims:
        inner = inner[:-2]
        lines.append(f"{inner}}}")
    fx = x.type.frac_bits
    value = {"max": "m", "sum": f"kiln::from_raw<{fx}>(s)",
             "mean": _divide_expr("s", fx, layer.count, layer.inv_frac)}[layer.mode]
    out_index = " + ".join(f"i{d} * {s}" for d, s in zip(kept, out_strides)) or "0"
    lines.append(f"{pad}y[{out_index}] = {value};")
    for _ in kept:
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "\n".join(lines + ["}"])


def transpose(layer: L.Transpose) -> str:
    x, y = layer.inputs[0], layer.output
    in_strides, out_strides = _strides(x.shape), _strides(y.shape)
    lines = _head(layer, f"transpose {list(layer.perm)}", [_partition("x", x.numel), _partition("y", y.numel)])
    pad = "  "
    for k, size in enumerate(y.shape):
        lines.append(f"{pad}D{k}: for (int i{k} = 0; i{k} < {size}; i{k}++) {{")
        if k == len(y.shape) - 1:
            lines.append("#pragma HLS PIPELINE II=1")
        pad += "  "
    src = " + ".join(f"i{k} * {in_strides[p]}" for k, p in enumerate(layer.perm))
    dst = " + ".join(f"i{k} * {s}" for k, s in enumerate(out_strides))
    lines.append(f"{pad}y[{dst}] = x[{src}];")
    for _ in y.shape:
        pad = pad[:-2]
        lines.append(f"{pad}}}")
    return "\n".join(lines + ["}"])


EMIT: dict[type, Callable[..., str]] = {
    L.Conv2d: conv2d, L.Dense: dense, L.Matmul: matmul, L.Softmax: softmax, L.Attention: attention,
    L.LayerNorm: layer_norm, L.Lut: lut, L.Relu: relu, L.Cast: cast, L.Binary: binary,
    L.ScaleShift: scale_shift, L.Pool2d: pool2d, L.Reduce: reduce, L.Transpose: transpose,
}


def layer_types(layer: L.Layer) -> list[tuple[str, str]]:
    """(typedef name, C++ type) of the layer's internal types."""
    out = []
    for field_name in ("acc", "score_acc", "score", "prob", "out_acc"):
        t = getattr(layer, field_name, None)
        if t is not None:
            out.append((f"{layer.name}_{field_name}_t", t.cpp_type))
    return out
