"""passes/fold_constants.py: what folds, what does not, and that values are preserved."""

from __future__ import annotations

import torch
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Region

import ir
from ir.ops.moe import TopkOp
from ir.ops.movement import ExpandOp
from ir.ops.sources import ConstantOp, ParamOp
from passes import run_pipeline
from passes.fold_constants import DEFAULT_MAX_ELEMENTS, evaluate


def module_of(ops: list, results: list) -> ModuleOp:
    block = Block()
    block.add_ops([*ops, func.ReturnOp(*results)])
    fn = func.FuncOp("forward", ([], [r.type for r in results]), Region(block))
    module = ModuleOp([fn])
    module.verify()
    return module


def op_names(module: ModuleOp) -> list[str]:
    return [op.name for op in ir.kiln_ops(ir.entry_function(module))]


def test_multi_result_op_folds_to_one_constant_per_result() -> None:
    x = ConstantOp.of(torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]))
    top = TopkOp.make(x, k=2, dim=1, largest=True)
    module = module_of([x, top], list(top.results))
    expected = ir.run(module)
    run_pipeline(module, "fold-constants", verify=True)
    assert op_names(module) == ["kiln.constant", "kiln.constant"]
    for got, want in zip(ir.run(module), expected):
        assert torch.equal(got, want) and got.dtype == want.dtype


def test_size_limit_is_on_the_result() -> None:
    one = ConstantOp.of(torch.tensor(1.0))
    at_limit = ExpandOp.make(one, shape=(64, 64))
    over = ExpandOp.make(one, shape=(65, 64))
    assert 64 * 64 == DEFAULT_MAX_ELEMENTS
    assert evaluate(at_limit) is not None
    assert evaluate(over) is None
    assert evaluate(over, max_elements=65 * 64) is not None


def test_params_and_arguments_block_folding() -> None:
    w = ParamOp.of("w", ir.dtypes.tensor_type((2,), torch.float32))
    expand = ExpandOp.make(w, shape=(3, 2))
    module = module_of([w, expand], [expand.result])
    run_pipeline(module, "fold-constants")
    assert op_names(module) == ["kiln.param", "kiln.expand"]


def test_shared_input_constant_survives_while_used() -> None:
    module = ir.parse_module("""
builtin.module {
  func.func @forward(%x: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
    %c = "kiln.constant"() <{value = dense<[1.0, -2.0]> : tensor<2xf32>}> : () -> tensor<2xf32>
    %r = "kiln.relu"(%c) : (tensor<2xf32>) -> tensor<2xf32>
    %y = "kiln.mul"(%x, %c) : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
    func.return %r, %y : tensor<2xf32>, tensor<2xf32>
  }
}""")
    x = torch.tensor([5.0, 7.0])
    expected = ir.run(module, x)
    run_pipeline(module, "fold-constants", verify=True)
    assert op_names(module) == ["kiln.constant", "kiln.constant", "kiln.mul"]
    for got, want in zip(ir.run(module, x), expected):
        assert torch.equal(got, want)
