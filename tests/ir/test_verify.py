"""Shape errors: `make` refuses bad operands naming the op; `verify` catches edited types."""

from __future__ import annotations

import pytest
import torch
from ir_builders import one_op_module
from xdsl.utils.exceptions import VerifyException

import ir
from ir.ops.attention import AttentionOp
from ir.ops.contraction import Conv2dOp, LinearOp, MatmulOp
from ir.ops.elementwise import BINARY_OPS, CastOp, WhereOp
from ir.ops.moe import MoeCombineOp, MoeDispatchOp, TopkOp
from ir.ops.movement import ConcatOp, EmbeddingOp, ExpandOp, PermuteOp, ReshapeOp, SliceOp
from ir.ops.normalization import BatchNormOp, LayerNormOp, RmsNormOp, SoftmaxOp
from ir.ops.pooling import Pool2dOp
from ir.ops.reduction import ReduceOp

r = torch.randn
i64 = torch.int64
CONV = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
POOL = {"kind": "max", "kernel": (2, 2), "stride": (2, 2), "padding": (0, 0)}

# (label, op class, inputs, options, a phrase the message must contain besides the op name)
BAD = [
    ("linear-weight-mismatch", LinearOp, [r(4, 8), r(16, 7), None], {}, "(16, 7)"),
    ("linear-bias-mismatch", LinearOp, [r(4, 8), r(16, 8), r(15)], {}, "bias"),
    ("linear-weight-rank", LinearOp, [r(4, 8), r(16, 8, 1), None], {}, "2-D"),
    ("matmul-contracting", MatmulOp, [r(4, 8), r(7, 5)], {}, "contracting"),
    ("matmul-rank1", MatmulOp, [r(8), r(8, 5)], {}, "rank"),
    ("matmul-batch", MatmulOp, [r(2, 4, 8), r(3, 8, 5)], {}, "broadcast"),
    ("add-broadcast", BINARY_OPS["add"], [r(2, 3), r(4)], {}, "broadcast"),
    ("where-cond-not-bool", WhereOp, [r(2, 3), r(2, 3), r(2, 3)], {}, "i1"),
    ("cast-unknown-dtype", CastOp, [r(2, 3)], {"dtype": "floot32"}, "floot32"),
    ("cast-unsupported-dtype", CastOp, [r(2, 3)], {"dtype": "complex64"}, "complex64"),
    ("reshape-numel", ReshapeOp, [r(2, 3)], {"shape": (4, 2)}, "elements"),
    ("reshape-dynamic", ReshapeOp, [r(2, 3)], {"shape": (-1,)}, "static"),
    ("permute-repeated", PermuteOp, [r(2, 3)], {"dims": (0, 0)}, "permutation"),
    ("permute-rank", PermuteOp, [r(2, 3)], {"dims": (0, 1, 2)}, "permutation"),
    ("slice-past-end", SliceOp, [r(2, 3)], {"dim": 1, "start": 2, "end": 5, "step": 1}, "[2:5:1]"),
    ("slice-step0", SliceOp, [r(2, 3)], {"dim": 1, "start": 0, "end": 3, "step": 0}, "invalid"),
    ("concat-mismatch", ConcatOp, [r(2, 3), r(3, 3)], {"dim": 1}, "differ"),
    ("expand-incompatible", ExpandOp, [r(2, 3)], {"shape": (4, 3)}, "expand"),
    ("embedding-float-indices", EmbeddingOp, [r(4, 3), r(2)], {}, "integers"),
    ("softmax-dim", SoftmaxOp, [r(2, 3)], {"dim": 2}, "out of range"),
    ("softmax-missing-dim", SoftmaxOp, [r(2, 3)], {}, "dim"),
    ("layer_norm-affine", LayerNormOp, [r(2, 8), r(7), None], {"eps": 1e-5, "ndims": 1}, "(7,)"),
    ("layer_norm-ndims", LayerNormOp, [r(2, 8), None, None], {"eps": 1e-5, "ndims": 3}, "ndims"),
    ("rms_norm-affine", RmsNormOp, [r(2, 8), r(7)], {"eps": 1e-5, "ndims": 1}, "(7,)"),
    ("batch_norm-stats", BatchNormOp, [r(2, 3), r(4), r(3), r(3), r(3)], {"eps": 1e-5}, "(4,)"),
    ("conv2d-channels", Conv2dOp, [r(1, 3, 8, 8), r(4, 2, 3, 3), None], CONV, "channels"),
    ("conv2d-empty", Conv2dOp, [r(1, 3, 2, 2), r(4, 3, 3, 3), None], CONV, "empty"),
    ("pool2d-kind", Pool2dOp, [r(1, 3, 8, 8)], {**POOL, "kind": "sum"}, "'sum'"),
    ("pool2d-kernel-rank", Pool2dOp, [r(1, 3, 8, 8)], {**POOL, "kernel": (2,)}, ""),
    (
        "attention-qk-dim",
        AttentionOp,
        [r(2, 4, 8), r(2, 6, 7), r(2, 6, 8), None],
        {"causal": False},
        "key dim",
    ),
    (
        "attention-kv-len",
        AttentionOp,
        [r(2, 4, 8), r(2, 6, 8), r(2, 5, 8), None],
        {"causal": False},
        "length",
    ),
    (
        "attention-mask",
        AttentionOp,
        [r(2, 4, 8), r(2, 6, 8), r(2, 6, 8), r(4, 4)],
        {"causal": False},
        "broadcast",
    ),
    (
        "attention-mask-and-causal",
        AttentionOp,
        [r(2, 4, 8), r(2, 6, 8), r(2, 6, 8), r(4, 6)],
        {"causal": True},
        "causal",
    ),
    (
        "reduce-kind",
        ReduceOp,
        [r(2, 3)],
        {"kind": "median", "dims": (0,), "keepdim": False},
        "median",
    ),
    (
        "reduce-dim",
        ReduceOp,
        [r(2, 3)],
        {"kind": "sum", "dims": (3,), "keepdim": False},
        "out of range",
    ),
    ("topk-k", TopkOp, [r(2, 3)], {"k": 4, "dim": 1, "largest": True}, "k=4"),
    (
        "moe_dispatch-tokens",
        MoeDispatchOp,
        [r(4, 3), torch.zeros(5, 1, dtype=i64)],
        {"num_experts": 2, "capacity": 2},
        "indices",
    ),
    (
        "moe_dispatch-float-indices",
        MoeDispatchOp,
        [r(4, 3), torch.zeros(4, 1)],
        {"num_experts": 2, "capacity": 2},
        "integers",
    ),
    (
        "moe_dispatch-capacity",
        MoeDispatchOp,
        [r(4, 3), torch.zeros(4, 1, dtype=i64)],
        {"num_experts": 2, "capacity": 0},
        "capacity",
    ),
    (
        "moe_combine-shapes",
        MoeCombineOp,
        [r(2, 2, 3), torch.zeros(4, 1, dtype=i64), torch.zeros(4, 2, dtype=i64), r(4, 1)],
        {},
        "slots",
    ),
]


@pytest.mark.parametrize("label, op_class, inputs, options, phrase", BAD, ids=[b[0] for b in BAD])
def test_make_rejects_bad_shapes_naming_the_op(label, op_class, inputs, options, phrase):
    with pytest.raises(ValueError) as info:
        one_op_module(op_class, inputs, **options)
    message = str(info.value)
    # "kiln.linear: ..." or the op's own "linear: ..." both name it, up front.
    assert message.startswith((op_class.name, op_class.name.removeprefix("kiln."))), message
    assert phrase in message, message


LINEAR_MODULE = """\
builtin.module {
  func.func @forward(%x: tensor<4x8xf32>, %w: tensor<16x8xf32>) -> tensor<4xf32> {
    %y = "kiln.linear"(%x, %w) : (tensor<4x8xf32>, tensor<16x8xf32>) -> tensor<4x16xf32>
    %s = "kiln.reduce"(%y) <{kind = "sum", dims = array<i64: 1>, keepdim = false}> : (tensor<4x16xf32>) -> tensor<4xf32>
    func.return %s : tensor<4xf32>
  }
}
"""


def test_text_module_verifies():
    ir.parse_module(LINEAR_MODULE).verify()


def test_edited_result_shape_fails_verify():
    # The linear's result claims 17 columns: consistent for its user, wrong for the linear.
    edited = LINEAR_MODULE.replace("tensor<4x16xf32>", "tensor<4x17xf32>")
    module = ir.parse_module(edited, verify=False)
    with pytest.raises(VerifyException, match=r"kiln\.linear.*4x17xf32.*4x16xf32"):
        module.verify()


def test_edited_result_dtype_fails_verify():
    edited = (
        LINEAR_MODULE.replace("-> tensor<4xf32>\n    func", "-> tensor<4xf64>\n    func")
        .replace("func.return %s : tensor<4xf32>", "func.return %s : tensor<4xf64>")
        .replace("-> tensor<4xf32> {", "-> tensor<4xf64> {")
    )
    module = ir.parse_module(edited, verify=False)
    with pytest.raises(VerifyException, match=r"kiln\.reduce"):
        module.verify()


def test_programmatic_wrong_result_type_fails_verify():
    _module, op = one_op_module(LinearOp, [r(4, 8), r(16, 8), None])
    wrong = LinearOp.create(
        operands=list(op.operands), result_types=[ir.dtypes.tensor_type((4, 15), torch.float32)]
    )
    with pytest.raises(VerifyException, match=r"kiln\.linear"):
        wrong.verify()


def test_bad_option_in_text_fails_verify_naming_the_op():
    text = """\
builtin.module {
  func.func @forward(%x: tensor<2xf32>) -> tensor<2xf32> {
    %y = "kiln.cast"(%x) <{dtype = "floot32"}> : (tensor<2xf32>) -> tensor<2xf32>
    func.return %y : tensor<2xf32>
  }
}
"""
    module = ir.parse_module(text, verify=False)
    with pytest.raises(VerifyException, match=r"kiln\.cast.*floot32"):
        module.verify()


def test_integer_clamp_bounds_are_stored_as_floats():
    # `min=0` from capture must not store an i64 attribute the f64 property rejects.
    from ir.ops.elementwise import ClampOp

    module, op = one_op_module(ClampOp, [r(3)], min=0, max=1)
    module.verify()
    assert op.opt("min") == 0.0 and isinstance(op.opt("min"), float)
