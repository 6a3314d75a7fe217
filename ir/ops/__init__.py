"""All kiln ops, one file per family; `ALL_OPS` is what the dialect registers."""

from __future__ import annotations

from ir.ops.attention import ATTENTION_OPS
from ir.ops.contraction import CONTRACTION_OPS
from ir.ops.elementwise import ELEMENTWISE_OPS
from ir.ops.moe import MOE_OPS
from ir.ops.movement import MOVEMENT_OPS
from ir.ops.normalization import NORMALIZATION_OPS
from ir.ops.pooling import POOLING_OPS
from ir.ops.quant import QUANT_OPS
from ir.ops.reduction import REDUCTION_OPS
from ir.ops.sources import SOURCE_OPS

ALL_OPS = (
    SOURCE_OPS
    + ELEMENTWISE_OPS
    + CONTRACTION_OPS
    + NORMALIZATION_OPS
    + ATTENTION_OPS
    + MOVEMENT_OPS
    + REDUCTION_OPS
    + POOLING_OPS
    + MOE_OPS
    + QUANT_OPS
)
