"""What the conversation page shows of a record, read from the store in one go.

Message contents are Markdown (CommonMark with tables, strikethrough and hard line
breaks) rendered by markdown-it-py with raw HTML off: a message can format text but
never inject markup or script into the page.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

import markupsafe
from markdown_it import MarkdownIt

RECORD_SQL = """SELECT r.id, r.dataset_id, d.name, r.created_at, r.updated_at, r.deleted_at,
                       r.source, r.payload, r.properties, r.sync_state
                FROM records AS r LEFT JOIN datasets AS d ON d.id = r.dataset_id
                WHERE r.id = ?"""


@functools.cache
def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable(["table", "strikethrough"])


def markdown(text: str) -> markupsafe.Markup:
    return markupsafe.Markup(_markdown().render(text))


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def _json_block(value: Any) -> markupsafe.Markup:
    return markupsafe.Markup('<pre class="ls-json">{}</pre>').format(pretty_json(value))


def render_content(content: Any) -> markupsafe.Markup:
    """A message's content: text as Markdown; a list of parts part by part (text parts
    as Markdown, others as JSON); anything else as JSON."""
    if content is None:
        return markupsafe.Markup("")
    if isinstance(content, str):
        return markdown(content)
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(markdown(part))
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(markdown(part["text"]))
            else:
                parts.append(_json_block(part))
        return markupsafe.Markup("").join(parts)
    return _json_block(content)


def payload_summary(payload_text: str, width: int = 100) -> str:
    """One line for a table cell: how many messages, and the start of the first user turn."""
    try:
        payload = json.loads(payload_text)
    except ValueError:
        return payload_text[:width]
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list):
        text = json.dumps(payload, ensure_ascii=False)
        return text if len(text) <= width else text[: width - 1] + "…"
    first = next(
        (m for m in messages if isinstance(m, dict) and m.get("role") == "user"),
        messages[0] if messages else None,
    )
    head = f"{len(messages)} message{'s' if len(messages) != 1 else ''}"
    if not isinstance(first, dict):
        return head
    content = first.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return f"{head} · {first.get('role')}: {text}"


def render_message(idx: int, message: Any) -> dict[str, Any]:
    if not isinstance(message, dict):
        return {"idx": idx, "role": None, "html": _json_block(message), "extra": None}
    role = message.get("role")
    extra = {k: v for k, v in message.items() if k not in ("role", "content")}
    return {
        "idx": idx,
        "role": role if isinstance(role, str) else None,
        "html": render_content(message.get("content")),
        "extra": pretty_json(extra) if extra else None,
    }


def conversation_context(conn: sqlite3.Connection, record_id: str) -> dict[str, Any] | None:
    """The template context of a record's page, or None when `records` has no such id."""
    row = conn.execute(RECORD_SQL, (record_id,)).fetchone()
    if row is None:
        return None
    (rid, dataset_id, dataset_name, created_at, updated_at, deleted_at, source, payload_text,
     properties_text, sync_state) = row
    payload = json.loads(payload_text)
    properties = json.loads(properties_text)
    messages = payload.get("messages")
    is_chat = isinstance(messages, list)
    rest = {k: v for k, v in payload.items() if k != "messages"} if is_chat else payload
    changes = conn.execute(
        """SELECT id, kind, state, created_at, error FROM changes
           WHERE record_id = ? AND state IN ('pending', 'in_flight', 'rejected') ORDER BY id""",
        (rid,),
    ).fetchall()
    conflict = conn.execute(
        "SELECT parts, detected_at FROM conflicts WHERE record_id = ?", (rid,)
    ).fetchone()
    judgements = conn.execute(
        """SELECT judge_name, model_name, answer, analysis, judged_at FROM judgements
           WHERE record_id = ? ORDER BY judge_name""",
        (rid,),
    ).fetchall()
    return {
        "record_id": rid,
        "record": [
            ("dataset", f"{dataset_name} ({dataset_id})" if dataset_name else dataset_id),
            ("sync_state", sync_state),
            ("source", source),
            ("created_at", created_at),
            ("updated_at", updated_at or ""),
            *([("deleted_at", deleted_at)] if deleted_at else []),
        ],
        "sync_state": sync_state,
        "properties": [
            (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
            for key, value in sorted(properties.items())
        ],
        "messages": [render_message(i, m) for i, m in enumerate(messages)] if is_chat else None,
        "payload_rest": pretty_json(rest) if rest else None,
        "changes": [dict(zip(("id", "kind", "state", "created_at", "error"), c, strict=True)) for c in changes],
        "conflict": (
            {"parts": ", ".join(json.loads(conflict[0]) or []), "detected_at": conflict[1]}
            if conflict else None
        ),
        "judgements": [
            dict(zip(("judge_name", "model_name", "answer", "analysis", "judged_at"), j, strict=True))
            for j in judgements
        ],
    }
