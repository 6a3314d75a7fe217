"""Capture errors: what the table cannot convert, named by op and node."""

from __future__ import annotations


class Unsupported(Exception):
    """A node the aten->kiln table cannot convert; the partitioner leaves it to eager."""

    def __init__(self, op: str, node: str, reason: str) -> None:
        super().__init__(f"{op} (node {node}): {reason}")
        self.op, self.node, self.reason = op, node, reason


class StrictCaptureError(RuntimeError):
    """Raised with --strict when any node would fall back to eager."""


def first_line(err: BaseException) -> str:
    """The first line of an error's message (torch.export's run to pages), or its type."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
