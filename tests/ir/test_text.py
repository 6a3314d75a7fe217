"""Textual IR: print(parse(print(m))) == print(m) for every op, and located parse errors."""

from __future__ import annotations

import re

import pytest
import torch
from ir_builders import function_of
from ir_cases import CASES
from xdsl.dialects.builtin import IntegerAttr, StringAttr, i64

import ir
from ir import dtypes
from ir.ops.elementwise import UNARY_OPS
from ir.ops.sources import ConstantOp, ParamOp


def every_op_module() -> tuple[ir.Program, list[torch.Tensor]]:
    """One function applying every case's op to its own arguments, plus params and constants."""
    inputs = [t for c in CASES for t in c.inputs if t is not None]
    weight = torch.randn(3, 4)
    constants = [
        torch.tensor(2.0),
        torch.tensor([[True, False, True]]),
        torch.arange(3, dtype=torch.int32),
    ]

    def body(args):
        it = iter(args)
        ops, results = [], []
        for c in CASES:
            operands = [next(it) if t is not None else None for t in c.inputs]
            op = c.op.make(*operands, **c.options)
            ops.append(op)
            results += op.results
        param = ParamOp.of("block.weight", dtypes.tensor_type((3, 4), torch.float32))
        relu = UNARY_OPS["relu"].make(param)
        # Decisions are discardable attributes: they print, parse and leave semantics alone.
        relu.attributes["group"] = IntegerAttr(7, i64)
        relu.attributes["memory"] = StringAttr("sram")
        const_ops = [ConstantOp.of(c) for c in constants]
        ops += [param, relu, *const_ops]
        results += [relu.result, *(c.result for c in const_ops)]
        return ops, results

    module, _ = function_of([dtypes.tensor_type(t.shape, t.dtype) for t in inputs], body)
    return ir.Program(module, {"block.weight": weight}), inputs


def test_every_op_round_trips_through_text():
    program, inputs = every_op_module()
    text = program.text()
    assert {c.op.name for c in CASES} | {"kiln.param", "kiln.constant"} <= set(
        re.findall(r'"(kiln\.\w+)"', text)
    )
    parsed = ir.parse_module(text, "every_op.mlir")
    assert ir.print_module(parsed) == text
    # The parsed module computes the same thing (options such as eps survive exactly).
    before = ir.run(program, *inputs)
    after = ir.run(ir.Program(parsed, program.params), *inputs)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        torch.testing.assert_close(a, b, equal_nan=True)


def test_decision_attributes_survive_round_trip():
    program, _ = every_op_module()
    parsed = ir.parse_module(program.text())
    relu = next(
        op
        for op in ir.kiln_ops(ir.entry_function(parsed))
        if op.attributes.get("group") is not None
    )
    assert relu.attributes["group"] == IntegerAttr(7, i64)
    assert relu.attributes["memory"] == StringAttr("sram")
    assert "group" not in relu.options()


SMALL = """\
builtin.module {
  func.func @forward(%0: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %1 = "kiln.gelu"(%0) <{approximate = "tanh"}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    %2 = "kiln.softmax"(%1) <{dim = -1 : i64}> : (tensor<4x8xf32>) -> tensor<4x8xf32>
    func.return %2 : tensor<4x8xf32>
  }
}"""


def test_small_text_is_a_fixed_point():
    assert ir.print_module(ir.parse_module(SMALL)) == SMALL


LOCATION = re.compile(r"^model\.mlir:(\d+):(\d+)")


def _syntax_error(text: str) -> str:
    with pytest.raises(ir.IRSyntaxError) as info:
        ir.parse_module(text, "model.mlir")
    return str(info.value)


@pytest.mark.parametrize(
    "label, broken, line",
    [
        ("missing-brace", SMALL.removesuffix("}"), None),
        (
            "missing-result-type",
            SMALL.replace(": (tensor<4x8xf32>) -> tensor<4x8xf32>\n    %2", "\n    %2"),
            None,
        ),
        ("bad-token", SMALL.replace('"kiln.softmax"(%1)', '"kiln.softmax"(%1 ?)'), 4),
        # xDSL reports a value never defined where the block ends, not where it is used.
        ("undefined-value", SMALL.replace('"kiln.softmax"(%1)', '"kiln.softmax"(%9)'), None),
        (
            "type-mismatch",
            SMALL.replace("(%1) <{dim", "(%1) <{dim").replace(
                ": (tensor<4x8xf32>) -> tensor<4x8xf32>\n    %2",
                ": (tensor<4x8xf32>) -> tensor<4x9xf32>\n    %2",
            ),
            4,
        ),
        (
            "unknown-type",
            SMALL.replace(
                "tensor<4x8xf32>) -> tensor<4x8xf32> {", "tensor<4x8xq7>) -> tensor<4x8xf32> {"
            ),
            2,
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 30 else "",
)
def test_malformed_text_gives_located_error(label, broken, line):
    message = _syntax_error(broken)
    match = LOCATION.match(message)
    assert match, f"{label}: no file:line:col at the start of {message!r}"
    if line is not None:
        assert int(match.group(1)) == line, message


def test_unknown_op_names_itself_with_location():
    message = _syntax_error(SMALL.replace("kiln.softmax", "kiln.softmaxx"))
    assert LOCATION.match(message), message
    assert LOCATION.match(message).group(1) == "4"
    assert "kiln.softmaxx" in message


def test_invalid_ir_names_file_and_op():
    # Parses, but gelu's result shape is wrong for its operand: a verification error.
    text = (
        SMALL.replace(
            '-> tensor<4x8xf32>\n    %2 = "kiln.softmax"(%1) <{dim = -1 : i64}> : (tensor<4x8xf32>)',
            '-> tensor<2x16xf32>\n    %2 = "kiln.softmax"(%1) <{dim = -1 : i64}> : (tensor<2x16xf32>)',
        )
        .replace(
            "-> tensor<4x8xf32>\n    func.return %2 : tensor<4x8xf32>",
            "-> tensor<2x16xf32>\n    func.return %2 : tensor<2x16xf32>",
        )
        .replace("-> tensor<4x8xf32> {", "-> tensor<2x16xf32> {")
    )
    message = _syntax_error(text)
    assert message.startswith("model.mlir"), message
    assert "kiln.gelu" in message, message
