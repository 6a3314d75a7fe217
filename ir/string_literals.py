"""A linear pre-scan of IR text for string literals xDSL's lexer would choke on.

xDSL 0.74 lexes a string literal with one regular expression,
`"(?:[^"\\\n\v\f]+|\\(?:["nt\\]|[0-9A-Fa-f]{2}))*"`. Its nested quantifier backtracks
exponentially when no closing quote follows: the time doubles with every character between
the opening quote and the end of the line (22 characters: 0.18 s; a Python docstring line of
60 characters: hours). An unterminated string in a `.mlir` file, or a `.py` file passed by
mistake, hung `kiln opt` at full CPU. This scan walks the text once with the same rules
(strings start at `"` outside `//` comments, end at the next unescaped `"`, may not cross a
newline, vertical tab or form feed, and allow only the escapes \\n \\t \\\\ \\" and two hex
digits), so the parser only ever sees strings the regular expression matches at once.
"""

from __future__ import annotations

_HEX = frozenset("0123456789abcdefABCDEF")
_LINE_BREAKS = "\n\v\f"


def find_bad_string_literal(text: str) -> tuple[int, int, str] | None:
    """(line, column, reason) of the first string literal the lexer cannot close, 1-based;
    None when every string literal is well formed."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "/" and text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif ch == '"':
            start = i
            i, reason = _scan_string(text, i + 1)
            if reason is not None:
                line, col = _position(text, start)
                return line, col, reason
        else:
            i += 1
    return None


def _scan_string(text: str, i: int) -> tuple[int, str | None]:
    """Index after the closing quote of a string whose body starts at i, or the reason it fails."""
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            return i + 1, None
        if ch in _LINE_BREAKS:
            return i, "unterminated string literal (no closing '\"' before the end of the line)"
        if ch == "\\":
            nxt = text[i + 1: i + 3]
            if nxt[:1] in ('"', "n", "t", "\\") and nxt[:1]:
                i += 2
                continue
            if len(nxt) == 2 and nxt[0] in _HEX and nxt[1] in _HEX:
                i += 3
                continue
            shown = nxt[:1] if nxt[:1] and nxt[:1] not in _LINE_BREAKS else ""
            return i, (f"invalid escape '\\{shown}' in string literal "
                       "(allowed: \\n \\t \\\\ \\\" and two hex digits)")
        i += 1
    return i, "unterminated string literal (end of file before the closing '\"')"


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1
