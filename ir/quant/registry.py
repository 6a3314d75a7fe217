"""`FORMATS`: every quantization format Kiln knows, by name, and how to look one up.

Names are what pipelines and IR attributes use (`quantize{formats=int8,int4_g64,mxfp4}`,
`kiln.dequantize <{format = "mxfp6_e2m3"}>`), so they avoid commas and brackets, except
concrete fixed-point types, which `get_format` parses (`fixed<8,2,AP_RND_CONV,AP_SAT>`).

`ACT_FORMAT` says which activation format pairs with a weight format in
weight+activation mode (W8A8 for int8, W4A8 for int4 and MXFP4, MX pairs with the same
MX element type, fixed point with 16-bit fixed point), following what the hardware that
runs each format multiplies. `DYNAMIC_ACT` names the formats that quantize activations in
weight-only mode too (`int8_dyn`: W8A8 with per-row dynamic activation scales, the
VNNI kernel's numerics, `backends/tvm/quant_vnni.py`).
"""

from __future__ import annotations

from ir.quant import elements as el
from ir.quant.fixed import FixedPoint
from ir.quant.formats import PER_ROW, PER_TENSOR, AutoFixedFormat, QuantFormat


def _formats() -> list[QuantFormat]:
    out = [
        QuantFormat("int8", el.INT8, PER_ROW, "f32", "int", "int8 symmetric, one float32 scale per output channel"),
        QuantFormat("int8_tensor", el.INT8, PER_TENSOR, "f32", "int", "int8 symmetric, one float32 scale per tensor"),
        QuantFormat("int8_dyn", el.INT8, PER_ROW, "f32", "int",
                    "W8A8 dynamic: int8 weights with one float32 scale per output channel, activations "
                    "quantized per row (int8, absmax scale) at run time, int32 sums (see DYNAMIC_ACT)"),
    ]
    for g in (32, 64, 128):
        out.append(QuantFormat(f"int4_g{g}", el.INT4, g, "f16", "int", f"int4 symmetric, one float16 scale per {g} weights along K"))
    for e in (el.FP8_E4M3, el.FP8_E5M2):
        out.append(QuantFormat(f"fp8_{e.name}", e, PER_ROW, "f32", "fp8", f"FP8 {e.name.upper()}, one float32 scale per output channel"))
        out.append(QuantFormat(f"fp8_{e.name}_tensor", e, PER_TENSOR, "f32", "fp8", f"FP8 {e.name.upper()}, one float32 scale per tensor"))
    for name, e in (("mxfp8_e4m3", el.FP8_E4M3), ("mxfp8_e5m2", el.FP8_E5M2), ("mxfp6_e2m3", el.FP6_E2M3),
                    ("mxfp6_e3m2", el.FP6_E3M2), ("mxfp4", el.FP4_E2M1), ("mxint8", el.MXINT8)):
        out.append(QuantFormat(name, e, 32, "e8m0", "mx", f"OCP MX: {e.name.upper()} elements, blocks of 32 share an E8M0 scale"))
    for bits in (4, 6):
        e = el.IntElement(f"int{bits}", bits, frac=bits - 2)
        out.append(QuantFormat(f"bfp{bits}", e, 32, "e8m0", "bfp",
                               f"block floating point: int{bits} mantissas, blocks of 32 share a power-of-two exponent (not OCP)"))
    out.append(QuantFormat("bf16", el.BF16, PER_TENSOR, "none", "float", "bfloat16, round to nearest even"))
    out.append(QuantFormat("fp16", el.FP16, PER_TENSOR, "none", "float", "IEEE half, round to nearest even"))
    for w in (4, 6, 8, 12, 16):
        fp = FixedPoint(w, 1, True, "AP_RND_CONV", "AP_SAT")
        out.append(AutoFixedFormat(f"fixed{w}", fp, PER_TENSOR, "none", "fixed",
                                   f"ap_fixed<{w},I,AP_RND_CONV,AP_SAT>, I from the tensor's range"))
    return out


FORMATS: dict[str, QuantFormat] = {f.name: f for f in _formats()}

ACT_FORMAT: dict[str, str] = {
    "int8": "int8_tensor", "int8_dyn": "int8", "int8_tensor": "int8_tensor",
    "int4_g32": "int8_tensor", "int4_g64": "int8_tensor", "int4_g128": "int8_tensor",
    "fp8_e4m3": "fp8_e4m3_tensor", "fp8_e4m3_tensor": "fp8_e4m3_tensor",
    "fp8_e5m2": "fp8_e5m2_tensor", "fp8_e5m2_tensor": "fp8_e5m2_tensor",
    "mxfp8_e4m3": "mxfp8_e4m3", "mxfp8_e5m2": "mxfp8_e5m2", "mxfp6_e2m3": "mxfp6_e2m3",
    "mxfp6_e3m2": "mxfp6_e3m2", "mxfp4": "mxfp8_e4m3", "mxint8": "mxint8",
    "bfp4": "mxint8", "bfp6": "mxint8", "bf16": "bf16", "fp16": "fp16",
    "fixed4": "fixed16", "fixed6": "fixed16", "fixed8": "fixed16", "fixed12": "fixed16", "fixed16": "fixed16",
}


# Weight formats whose activations are quantized at run time in every mode (the format
# itself is W8A8): weight format -> the activation's format, applied per row of the
# activation (one dynamic absmax scale per row along K, which is `int8`'s grouping).
DYNAMIC_ACT: dict[str, str] = {"int8_dyn": "int8"}


def get_format(name: str) -> QuantFormat:
    """A registered format, or a concrete fixed-point type such as `fixed<8,2,AP_RND_CONV,AP_SAT>`."""
    if name in FORMATS:
        return FORMATS[name]
    if name.startswith(("fixed<", "ufixed<")):
        fp = FixedPoint.parse(name)
        return QuantFormat(fp.name, fp, PER_TENSOR, "none", "fixed", fp.cpp_type)
    raise ValueError(f"unknown quantization format {name!r}; known: {', '.join(FORMATS)}, fixed<W,I[,Q,O]>")


def act_format_for(weight_format: str) -> str:
    """The activation format paired with a weight format (weight+activation mode)."""
    if weight_format in ACT_FORMAT:
        return ACT_FORMAT[weight_format]
    if weight_format.startswith(("fixed<", "ufixed<")):
        return "fixed16"
    raise ValueError(f"no activation format pairs with {weight_format!r}")
