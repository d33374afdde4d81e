"""Record-file parsing: the ``{"payload": …, "properties": …}`` of a file's bytes, or a
``FileProblem`` naming the file, line and column of what is wrong with it."""

from __future__ import annotations

import json
import re
from json.decoder import scanstring  # type: ignore[attr-defined]  # public, untyped in typeshed
from typing import Any

from localstore.store.jsontext import canonical

_WS = " \t\n\r"
_CONSTANT = re.compile(r"-?\b(NaN|Infinity)\b")


class FileProblem(Exception):
    """A record file that cannot be used; ``str()`` is ``path:line:col: message``."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        self.path, self.line, self.col, self.message = path, line, col, message
        super().__init__(f"{path}:{line}:{col}: {message}")


def _line_col(text: str, pos: int) -> tuple[int, int]:
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def _members(text: str) -> list[tuple[str, int, int]]:
    """(key, key position, value position) of each member of the top-level object of an
    already valid JSON text."""
    decoder = json.JSONDecoder()
    out: list[tuple[str, int, int]] = []
    pos = _skip(text, 0) + 1
    while True:
        pos = _skip(text, pos)
        if text[pos] == ",":
            pos = _skip(text, pos + 1)
        if text[pos] == "}":
            return out
        key_pos = pos
        key, pos = scanstring(text, pos + 1)
        value_pos = _skip(text, _skip(text, pos) + 1)
        _, pos = decoder.raw_decode(text, value_pos)
        out.append((key, key_pos, value_pos))


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)


def _lone_surrogate(text: str) -> int:
    """The position of the first ``\\uD800``..``\\uDFFF`` escape that is not half of a
    surrogate pair (JSON allows it, UTF-8 cannot hold it)."""
    high: tuple[int, int] | None = None  # (start, end) of a high half waiting for its low half
    for match in _ESCAPE.finditer(text):
        token = match.group(1)
        code = int(token[1:], 16) if len(token) == 5 else None
        if high is not None:
            if match.start() == high[1] and code is not None and 0xDC00 <= code <= 0xDFFF:
                high = None
                continue
            return high[0]
        if code is not None and 0xD800 <= code <= 0xDBFF:
            high = (match.start(), match.end())
        elif code is not None and 0xDC00 <= code <= 0xDFFF:
            return match.start()
    return high[0] if high is not None else 0


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def parse_record(data: bytes, shown: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, properties) of a record file, or FileProblem naming file, line and column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, col = _line_col(data[: exc.start].decode("utf-8", "replace"), exc.start)
        raise FileProblem(shown, line, col, "not UTF-8 text") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise FileProblem(shown, exc.lineno, exc.colno, exc.msg) from None
    except ValueError as exc:
        match = _CONSTANT.search(text)
        raise FileProblem(shown, *_line_col(text, match.start() if match else 0), str(exc)) from None
    start = _skip(text, 0)
    shape = 'a record file holds {"payload": {…}, "properties": {…}}'
    if not isinstance(value, dict):
        raise FileProblem(shown, *_line_col(text, start), f"{shape}, not a JSON {type(value).__name__}")
    seen: dict[str, int] = {}
    for key, key_pos, value_pos in _members(text):
        where = _line_col(text, key_pos)
        if key in seen:
            raise FileProblem(shown, *where, f'duplicate key "{key}"')
        if key not in ("payload", "properties"):
            raise FileProblem(shown, *where, f'unexpected key "{key}": {shape}')
        if not isinstance(value[key], dict):
            raise FileProblem(shown, *_line_col(text, value_pos), f'"{key}" must be a JSON object')
        seen[key] = key_pos
    for key in ("payload", "properties"):
        if key not in seen:
            raise FileProblem(shown, *_line_col(text, start), f'missing "{key}": {shape}')
    try:
        canonical(value).encode("utf-8")
    except UnicodeEncodeError:
        at = _lone_surrogate(text)
        raise FileProblem(
            shown, *_line_col(text, at), f"{text[at:at + 6]} is half of a surrogate pair, not a character"
        ) from None
    return value["payload"], value["properties"]
