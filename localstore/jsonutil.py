"""JSON helpers shared by the store, merge and the CLI."""

from __future__ import annotations

import json
from typing import Any


def canonical(value: Any) -> str:
    """Compact JSON with sorted keys: the form stored in SQLite and compared for equality."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: ``1`` and ``true`` differ, key order does not matter."""
    return canonical(a) == canonical(b)


def pretty(value: Any) -> str:
    """Stable, readable JSON for files, diffs and ``show``."""
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def loads_object(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text)
