"""Rendering for the terminal: tables, tab-separated rows, JSON, CSV and progress bars. No logic of the
product lives here; rich is imported only when something is drawn."""

from __future__ import annotations

import base64
import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import click

from localstore.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

MIN_CELL = 8  # a shortened (non-id) table column keeps at least this many characters

# the --json flag every command that prints data takes
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def listing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--json and --csv for the commands that list rows (records, datasets, log, conflicts):
    without them a terminal gets a table, a pipe tab-separated rows."""
    command = click.option("--csv", "as_csv", is_flag=True, help="Print CSV with a header row.")(command)
    return click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects.")(command)


# ------------------------------------------------------------------ values


def _json_default(value: Any) -> Any:
    """JSON has no bytes: a BLOB becomes ``{"$base64": "…"}``; anything else its str()."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    return str(value)


def to_json(value: Any, *, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, default=_json_default)


def cell_text(value: Any) -> str:
    """One value as text for a table, TSV or CSV cell: NULL is empty, a BLOB is its bytes
    in hex (``00ff``), JSON values (objects, lists, numbers) are compact JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return to_json(value)


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")


def is_id_column(name: str) -> bool:
    """Id columns are never shortened: a listed id can be copied or piped."""
    return name == "id" or name.endswith("_id")


# ------------------------------------------------------------------ formats


def emit_json(value: Any) -> None:
    click.echo(to_json(value, indent=2))


def emit_json_rows(rows: list[dict[str, Any]]) -> None:
    """A JSON array with one row object per line, as sqlite-utils prints query results:
    ``[{"n": 10000}]`` for one row."""
    if not rows:
        click.echo("[]")
        return
    lines = [to_json(row) for row in rows]
    click.echo("[" + ",\n ".join(lines) + "]")


def emit_json_lines(rows: list[dict[str, Any]]) -> None:
    """Newline-delimited JSON: one row object per line (``sql --nl``)."""
    for row in rows:
        click.echo(to_json(row))


# columns of the store that hold JSON text: `sql --json` prints them as JSON values
JSON_COLUMNS = frozenset({
    "payload", "properties", "body", "sent", "base", "local", "remote", "parts", "conflict_parts",
    "base_payload", "base_properties",
})


def decode_json_columns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose JSON columns (by name: :data:`JSON_COLUMNS`) hold JSON values, not
    JSON text; a value that is not JSON text stays as it is."""
    for row in rows:
        for key in JSON_COLUMNS.intersection(row):
            value = row[key]
            if isinstance(value, str):
                with suppress(ValueError):
                    row[key] = json.loads(value)
    return rows


def emit_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell_text(v) for v in row])


def emit_tsv(rows: Sequence[Sequence[Any]]) -> None:
    """Tab-separated rows without a header, as gh prints when piped: ``cut -f1`` gives the
    ids. Tabs and newlines inside a value become spaces, so one row is one line."""
    for row in rows:
        click.echo("\t".join(_one_line(cell_text(v)) for v in row))


def _shares(natural: list[int], available: int) -> list[int]:
    """Widths for the columns that may be shortened, left to right: when they do not all
    fit, the rightmost one (free text such as properties or an error) gives way first,
    down to MIN_CELL, then the one before it."""
    widths = list(natural)
    excess = sum(widths) - available
    for i in reversed(range(len(widths))):
        if excess <= 0:
            break
        cut = min(excess, widths[i] - min(natural[i], MIN_CELL))
        widths[i] -= cut
        excess -= cut
    return widths


def _fair_shares(natural: list[int], available: int) -> list[int]:
    """Widths for columns of equal standing (base, ours, theirs): the narrow ones keep
    their width, the wide ones share what is left evenly, none below MIN_CELL."""
    widths = list(natural)
    left = available
    order = sorted(range(len(natural)), key=natural.__getitem__)
    for done, i in enumerate(order):
        share = max(left // (len(order) - done), min(natural[i], MIN_CELL))
        widths[i] = min(natural[i], share)
        left -= widths[i]
    return widths


def emit_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    console: Console | None = None,
    fair: bool = False,
    whole: Sequence[str] = (),
) -> None:
    """A table as wide as the terminal. Id columns are always whole; the other columns
    share the remaining width and end in "…" when cut (the rightmost gives way first,
    or, ``fair``, they share evenly); columns named in ``whole`` are never cut either.
    When those alone do not fit, the table is wider than the terminal rather than cutting
    them."""
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console(soft_wrap=False)
    texts = [[_one_line(cell_text(v)) for v in row] for row in rows]
    natural = [max([cell_len(c), *(cell_len(r[i]) for r in texts)]) for i, c in enumerate(columns)]
    ids = [i for i, c in enumerate(columns) if is_id_column(c) or c in whole]
    others = [i for i in range(len(columns)) if i not in ids]
    chrome = 3 * len(columns) - 3  # padding between cells and the dividers
    available = console.width - chrome - sum(natural[i] for i in ids)
    share = _fair_shares if fair else _shares
    widths = dict(zip(others, share([natural[i] for i in others], available), strict=True))
    needed = chrome + sum(natural[i] for i in ids) + sum(widths.values())
    if needed > console.width:
        console = Console(file=console.file, soft_wrap=False, width=needed, force_terminal=console.is_terminal)

    table = Table(box=box.SIMPLE_HEAD, title=title, title_justify="left", show_edge=False, pad_edge=False)
    for i, name in enumerate(columns):
        if i in widths:
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=max(widths[i], 1))
        else:
            table.add_column(name, no_wrap=True, min_width=natural[i])
    for row in texts:
        table.add_row(*(Text(v) for v in row))
    console.print(table)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def emit_listing(
    rows: list[dict[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool = False,
    as_csv: bool = False,
    empty: str = "nothing to list",
    title: str | None = None,
    table_columns: Sequence[str] | None = None,
    fair: bool = False,
    whole: Sequence[str] = (),
) -> None:
    """A listing in the format asked for: --json (the whole rows), --csv (``columns``
    with a header), a table in a terminal (of ``table_columns`` if given, under
    ``title``), tab-separated ``columns`` in a pipe. An empty
    table or TSV says ``empty`` on stderr, so a pipe still receives nothing."""
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    if as_json:
        emit_json(rows)
        return
    values = [[r.get(c) for c in columns] for r in rows]
    if as_csv:
        emit_csv(columns, values)
    elif not rows:
        click.echo(empty, err=True)
    elif stdout_is_terminal():
        shown = table_columns or columns
        emit_table(shown, [[r.get(c) for c in shown] for r in rows], title=title, fair=fair, whole=whole)
    else:
        emit_tsv(values)


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
