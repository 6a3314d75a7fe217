"""Capture: PyTorch models and Dynamo graphs into kiln IR, partitioned by what converts."""

from __future__ import annotations

from compiler.capture.convert import Conversion, convert_nodes
from compiler.capture.errors import StrictCaptureError, Unsupported
from compiler.capture.frontends import AtenGraph, CaptureError, from_dynamo, from_model
from compiler.capture.partition import PartitionPlan, plan_partitions

__all__ = [
    "AtenGraph",
    "CaptureError",
    "Conversion",
    "PartitionPlan",
    "StrictCaptureError",
    "Unsupported",
    "convert_nodes",
    "from_dynamo",
    "from_model",
    "plan_partitions",
]
