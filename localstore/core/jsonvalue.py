"""JSON values compared and printed with the standard library alone: equality as JSON
sees it, and the readable form of files, diffs and ``show``. (The compact text the
store keeps is ``localstore.store.jsontext.canonical``.)"""

from __future__ import annotations

import json
import math
from typing import Any

_COMPACT = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: numbers compare as numbers (``1`` and ``1.0`` are the
    same value), but ``1``, ``"1"`` and ``true`` all differ; key order does not matter.
    A non-finite float is ``null``, as in the text the store keeps."""
    try:
        if _COMPACT.encode(a) == _COMPACT.encode(b):  # the common case, in C
            return True
    except (TypeError, ValueError):
        pass
    return _same_value(a, b)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _same_value(a: Any, b: Any) -> bool:
    a, b = _finite(a), _finite(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b  # exact: 2**53 + 1 differs from 2.0**53
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def pretty(value: Any) -> str:
    """Stable, readable JSON for files, diffs and ``show``."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
