"""Textual IR: MLIR syntax printed and parsed by xDSL; print(parse(print(m))) == print(m)."""

from __future__ import annotations

from xdsl.dialects.builtin import ModuleOp
from xdsl.parser import Parser
from xdsl.utils.exceptions import ParseError, VerifyException

from ir.dialect import make_context


class IRSyntaxError(ValueError):
    """Bad IR text; the message starts with `file:line:col`."""


def parse_module(text: str, filename: str = "<input>", verify: bool = True) -> ModuleOp:
    """Parse a module; syntax and verification errors become `IRSyntaxError` with a location."""
    try:
        module = Parser(make_context(), text, filename).parse_module()
    except ParseError as err:
        raise IRSyntaxError(_first_lines(str(err))) from None
    except Exception as err:  # xDSL raises plain exceptions for unknown ops and types
        raise IRSyntaxError(f"{filename}: {err}") from None
    if verify:
        try:
            module.verify()
        except VerifyException as err:
            raise IRSyntaxError(f"{filename}: invalid IR: {_first_lines(str(err))}") from None
    return module


def print_module(module: ModuleOp) -> str:
    return str(module)


def _first_lines(message: str, n: int = 4) -> str:
    return "\n".join(message.strip().splitlines()[:n])
