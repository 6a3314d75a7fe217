"""The Triton host function's intermediates as views into one arena (`map-memory`'s plan).

Without a plan `call` allocates each fused group's output with `torch.empty`. With one
(`kiln.memory` on the module, `memory = {offset = ...}` on the producers), the generated
module keeps one byte tensor per device, allocated on the first call and reused by every
call after it, and each planned output is a view of it at its offset: one allocation
instead of one per intermediate. Kernels index their buffers as dense row-major memory,
which a view of a contiguous byte range is (offsets are 64-byte aligned, so any dtype).

A result that a reference fallback returns is copied into its view (the fallback
allocated it elsewhere, and may have returned a view of an input whose bytes later
steps reuse); a returned value that still points into the arena is cloned, since the
arena outlives the call. Scratch tensors of split-K and split-KV kernels stay separate.
"""

from __future__ import annotations

from xdsl.dialects.builtin import DictionaryAttr, IntegerAttr, ModuleOp
from xdsl.ir import SSAValue

from ir import dtypes

ARENA = "arena"


def arena_plan(module: ModuleOp, ops) -> tuple[int, dict[SSAValue, int]]:
    """(arena bytes, byte offset per planned value); (0, {}) when `map-memory` did not run."""
    summary = module.attributes.get("kiln.memory")
    size = summary.data.get("arena_bytes") if isinstance(summary, DictionaryAttr) else None
    if not isinstance(size, IntegerAttr):
        return 0, {}
    offsets: dict[SSAValue, int] = {}
    for op in ops:
        entry = op.attributes.get("memory")
        if isinstance(entry, DictionaryAttr) and "offset" in entry.data:
            for r, offset in zip(op.results, entry.data["offset"].get_values()):
                if offset >= 0:
                    offsets[r] = int(offset)
    return int(size.value.data), offsets


def view_expr(value: SSAValue, offset: int) -> str:
    nbytes = dtypes.nbytes(value.type)
    shape = tuple(dtypes.shape_of(value.type))
    dtype = str(dtypes.dtype_of(value.type))
    return f"{ARENA}[{offset}:{offset + nbytes}].view({dtype}).view({shape})"


def prologue(size: int) -> list[str]:
    """Lines at the top of `call`: the arena of this device, made once."""
    return [
        f"{ARENA} = _ARENAS.get(device)",
        f"if {ARENA} is None:",
        f"    {ARENA} = _ARENAS[device] = torch.empty({max(size, 1)}, dtype=torch.uint8, device=device)",
    ]


def after_fallback(name: str, value: SSAValue, offsets: dict[SSAValue, int], returned: bool) -> str | None:
    """The line that puts a fallback's result where the plan wants it, if any."""
    if value in offsets:
        return f"{name} = {view_expr(value, offsets[value])}.copy_({name})"
    if returned:
        return (
            f"{name} = {name}.clone() if {name}.untyped_storage().data_ptr() == "
            f"{ARENA}.untyped_storage().data_ptr() else {name}"
        )
    return None
