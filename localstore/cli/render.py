"""`localstore show` in a terminal: a record read as a conversation. Its state and
properties as a small table, then each message under its role, the content rendered as
Markdown (code blocks, lists) with its own line breaks kept; longer than the screen, it
goes through the pager ($PAGER, else less). Piped, `show` prints JSON instead."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import click

from localstore.cli.output import cell_text, to_json

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def hard_breaks(markdown: str) -> str:
    """Markdown joins the lines of a paragraph; a chat message means its line breaks.
    Every line break outside fenced code becomes a hard break (two trailing spaces)."""
    lines = markdown.split("\n")
    out: list[str] = []
    fence: str | None = None
    for i, line in enumerate(lines):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)[0] * 3
        elif fence is not None and line.strip().startswith(fence):
            fence = None
        elif fence is None and line.strip() and i + 1 < len(lines) and lines[i + 1].strip():
            line = line.rstrip() + "  "
        out.append(line)
    return "\n".join(out)


def _content(content: Any) -> list[RenderableType]:
    """Text as Markdown; a list of chunks (``{"type": "text", "text": …}``) chunk by
    chunk; anything else as JSON."""
    from rich.markdown import Markdown
    from rich.text import Text

    if isinstance(content, str):
        return [Markdown(hard_breaks(content))] if content.strip() else [Text("(empty)", style="dim")]
    if content is None:
        return [Text("(no content)", style="dim")]
    if isinstance(content, list):
        parts: list[RenderableType] = []
        for chunk in content:
            if isinstance(chunk, dict) and chunk.get("type") == "text" and isinstance(chunk.get("text"), str):
                parts.extend(_content(chunk["text"]))
            else:
                parts.append(_json(chunk))
        return parts or [Text("(no content)", style="dim")]
    return [_json(content)]


def _json(value: Any) -> RenderableType:
    from rich.json import JSON

    return JSON(to_json(value))


def _facts(record: dict[str, Any]) -> RenderableType:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    facts: list[tuple[str, Any]] = [
        ("id", record.get("id")),
        ("dataset", record.get("dataset_id")),
        ("state", record.get("sync_state")),
        ("created", record.get("created_at")),
        ("updated", record.get("updated_at")),
    ]
    if record.get("pending"):
        facts.append(("pending", ", ".join(record["pending"])))
    if record.get("conflict"):
        facts.append(("conflict", cell_text(record["conflict"])))
    for name, value in facts:
        if value is not None:
            table.add_row(name, Text(cell_text(value)))
    properties = record.get("properties") or {}
    if properties:
        table.add_row("", "")
        for key in sorted(properties):
            table.add_row(Text(key, style="cyan"), Text(cell_text(properties[key])))
    return table


def renderables(record: dict[str, Any]) -> list[RenderableType]:
    """What `show` draws for ``record`` (as views.get_record returns it)."""
    from rich.rule import Rule
    from rich.text import Text

    parts: list[RenderableType] = [_facts(record)]
    payload = record.get("payload")
    messages = payload.get("messages") if isinstance(payload, dict) else None
    if isinstance(messages, list):
        for index, message in enumerate(messages):
            role = message.get("role") if isinstance(message, dict) else None
            title = Text(str(role) if role is not None else f"message {index}", style="bold magenta")
            parts.extend([Text(""), Rule(title, align="left")])
            if not isinstance(message, dict):
                parts.append(_json(message))
                continue
            parts.extend(_content(message.get("content")))
            rest = {k: v for k, v in message.items() if k not in ("role", "content")}
            if rest:
                parts.append(_json(rest))
        others = {k: v for k, v in payload.items() if k != "messages"}  # type: ignore[union-attr]
    else:
        others = payload if isinstance(payload, dict) else {"payload": payload}
    if others:
        parts.extend([Text(""), Rule(Text("other payload fields", style="bold"), align="left")])
        parts.append(_json(others))
    return parts


def render(record: dict[str, Any], console: Console) -> None:
    for part in renderables(record):
        console.print(part)


def show_record(record: dict[str, Any], console: Console | None = None) -> None:
    """Draw ``record`` on the terminal, through the pager when taller than the screen."""
    from rich.console import Console

    console = console or Console()
    with console.capture() as capture:
        render(record, console)
    text = capture.get()
    if text.count("\n") >= console.height:
        click.echo_via_pager(text)
    else:
        click.echo(text, nl=False)
