"""Rendering for the terminal: tables, JSON, CSV and progress bars. No logic of the
product lives here; rich is imported only when something is drawn."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

MAX_CELL = 60

# the --json flag every command that prints data takes
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def emit_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def emit_json_rows(rows: list[dict[str, Any]]) -> None:
    """A JSON array with one row object per line, as sqlite-utils prints query results:
    ``[{"n": 10000}]`` for one row."""
    if not rows:
        click.echo("[]")
        return
    lines = [json.dumps(row, ensure_ascii=False, default=str) for row in rows]
    click.echo("[" + ",\n ".join(lines) + "]")


def emit_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])


def _csv_cell(value: Any) -> Any:
    return "" if value is None else value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def emit_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, box=box.SIMPLE_HEAD, title=title, title_justify="left")
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    Console(soft_wrap=False).print(table)


def emit_rows(rows: list[dict[str, Any]], columns: Sequence[str], *, as_json: bool, title: str | None = None) -> None:
    if as_json:
        emit_json(rows)
    else:
        emit_table(columns, [[r.get(c) for c in columns] for r in rows], title=title)


ProgressFn = Callable[[str, int, "int | None"], None]


@contextmanager
def progress_bar(enabled: bool | None = None) -> Iterator[ProgressFn | None]:
    """A rich progress bar on stderr when it is a terminal; otherwise no callback."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int | None) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield update
