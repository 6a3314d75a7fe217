"""Textual IR: MLIR syntax printed and parsed by xDSL; print(parse(print(m))) == print(m)."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from ir.dialect import make_context
from ir.string_literals import find_bad_string_literal


class IRSyntaxError(ValueError):
    """Bad IR text; the message starts with `file:line:col`."""


def parse_module(text: str, filename: str = "<input>", verify: bool = True) -> ModuleOp:
    """Parse a module; syntax and verification errors become `IRSyntaxError` with a location."""
    bad = find_bad_string_literal(text)  # before xDSL's lexer, which backtracks exponentially on these
    if bad is not None:
        raise IRSyntaxError(f"{filename}:{bad[0]}:{bad[1]}: {bad[2]}")
    try:
        module = Parser(make_context(), text, filename).parse_module()
    except ParseError as err:
        raise IRSyntaxError(_located(str(err))) from None
    except Exception as err:  # xDSL raises plain exceptions for unknown ops and types
        raise IRSyntaxError(f"{filename}: {err}") from None
    if verify:
        try:
            module.verify()
        except VerifyException as err:
            raise IRSyntaxError(f"{filename}: invalid IR: {_verify_reason(str(err))}") from None
    return module


def print_module(module: ModuleOp) -> str:
    return str(module)


def _located(message: str) -> str:
    """xDSL's `file:L:C / source line / caret / reason` as one line `file:L:C: reason`."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    reason = next((ln for ln in reversed(lines) if set(ln) - {"^"}), "")
    return f"{lines[0]}: {reason}" if len(lines) > 1 else lines[0] if lines else message


def _verify_reason(message: str) -> str:
    """The verifier's reason, out of the annotated module dump xDSL puts in the message."""
    for line in message.splitlines():
        if "Operation does not verify:" in line:
            return line.strip(" |").split("Operation does not verify:", 1)[1].strip()
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    return lines[0] if lines else message
