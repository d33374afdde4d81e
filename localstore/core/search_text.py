"""What the full-text index holds of a payload, computed in Python: the same rows as the
``search_source`` view of schema.sql, for the payloads a pull brings in, so that a pull
indexes thousands of records in a few set-based statements instead of a trigger per
record (tests/test_search.py checks the two agree).

Only the common shape is handled here — ``messages`` a list whose entries are objects
with a string (or absent) ``role`` and a string, or a list of strings and ``{"text": …}``
parts, as ``content``. Anything else returns None, and the caller lets SQLite compute
that record's rows from the view.
"""

from __future__ import annotations

from typing import Any

Doc = tuple[int, "str | None", str]  # (idx, role, content)


def message_docs(payload: dict[str, Any]) -> list[Doc] | None:
    """The index rows of a chat payload, or None when the view must decide."""
    messages = payload.get("messages")
    if not isinstance(messages, list):
        return None
    docs: list[Doc] = []
    for idx, message in enumerate(messages):
        if not isinstance(message, dict):
            return None
        role = message.get("role")
        if role is not None and not isinstance(role, str):
            return None
        content = message.get("content")
        if isinstance(content, str):
            text: str | None = content
        elif isinstance(content, list):
            texts = []
            for part in content:
                if isinstance(part, str):
                    texts.append(part)
                elif isinstance(part, dict):
                    value = part.get("text")
                    if isinstance(value, str):
                        texts.append(value)
                    elif value is not None and not isinstance(value, int | float | bool | dict | list):
                        return None
                else:
                    return None
            text = "\n".join(texts) if texts else None
        elif content is None or isinstance(content, int | float | bool | dict):
            text = None
        else:
            return None
        if text:
            docs.append((idx, role, text))
    return docs
