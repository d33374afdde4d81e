"""Commands `export` and `import` (see localstore.ops.transfer), and how the bulk edits —
`sql --write`, `set`/`unset`/`rm`/`revert --where`, `import` — say what they queued."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from localstore.cli.context import Context, pass_ctx
from localstore.cli.ids import DATASET_ID
from localstore.cli.output import emit_json, json_option, progress_bar
from localstore.errors import UsageError

if TYPE_CHECKING:
    from localstore.ops.bulk import BulkResult
    from localstore.store.ledger.bulk import Queued



def queued_text(queued: Queued) -> str:
    """``queued changes for 812 record(s): properties 812; 188 unchanged``."""
    said: list[str] = []
    if queued.records - queued.dropped_creates:
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(queued.by_kind.items()))
        said.append(f"queued changes for {queued.records - queued.dropped_creates} record(s): {kinds}")
    if queued.dropped_creates:
        said.append(f"dropped {queued.dropped_creates} create(s) never sent")
    if queued.replaced_edits:
        said.append(f"the deletes replace pending edits of {queued.replaced_edits} record(s)")
    if queued.unchanged:
        said.append(f"{queued.unchanged} unchanged")
    if not queued.records:
        return "nothing queued: " + (f"{queued.unchanged} row(s) unchanged" if queued.unchanged else "no row matched")
    return "; ".join(said)


def say_bulk(result: BulkResult, what: str, *, dry_run: bool, as_json: bool = False) -> None:
    """A --where edit's outcome; a dry run prints the count and the first ids."""
    if as_json:
        emit_json(result.to_dict())
        return
    if dry_run:
        if not result.matched:
            click.echo("no record matches --where: nothing would change")
            return
        shown = result.ids[:10]
        more = f" (the first {len(shown)})" if result.matched > len(shown) else ""
        click.echo(f"would {what} {result.matched} record(s){more}:")
        for rid in shown:
            click.echo(f"  {rid}")
        return
    if not result.matched:
        click.echo("no record matches --where: nothing queued")
    elif result.queued is not None:
        click.echo(queued_text(result.queued))
    else:
        click.echo(f"reverted {result.reverted} record(s)")


@click.command(name="export")
@click.argument("dataset_ids", nargs=-1, type=DATASET_ID)
@click.option("-o", "--output", "output", metavar="FILE", help="Write to FILE (whole or not at all) instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--where", help="Only records matching this SQL condition on the records view.")
@pass_ctx
def export(ctx: Context, dataset_ids: tuple[str, ...], output: str | None, fmt: str, where: str | None) -> None:
    """Write records as JSONL (or CSV): every record, or those of DATASET_IDs.

    One record per line: id, dataset_id, created_at, updated_at, payload, properties,
    with payload and properties as JSON values. Records are exported as you see them
    now (pending edits applied). --format csv writes payload and properties as JSON text.

    \b
    Examples:
      localstore export 3fa8 -o support.jsonl
      localstore export --where "json_extract(properties, '$.label') = 'apology'" | jq .payload
      localstore export 3fa8 --format csv -o support.csv
    """
    from localstore.ops.transfer import export_records, output_file

    with output_file(output) as out:
        count = export_records(ctx.store, out, dataset_ids, where=where, fmt=fmt)  # type: ignore[arg-type]
    if output not in (None, "-"):
        click.echo(f"exported {count} record(s) to {output}", err=True)


@click.command(name="import")
@click.argument("dataset_id", type=DATASET_ID)
@click.argument("file", metavar="FILE")
@click.option("--dedupe", is_flag=True, help="Skip lines whose payload and properties equal a record already in the dataset.")
@json_option
@pass_ctx
def import_(ctx: Context, dataset_id: str, file: str, dedupe: bool, as_json: bool) -> None:
    """Queue a create for each line of a JSONL FILE ('-' reads stdin).

    A line is {"payload": {…}, "properties": {…}} (properties optional; what `export`
    writes, whose id and other columns are ignored) or a chat line {"messages": […]},
    which becomes the payload. The whole file is one transaction: a bad line is
    reported as FILE:LINE and nothing is queued. `sync` sends the creates.

    \b
    Examples:
      localstore import 3fa8 cases.jsonl
      localstore export 3fa8 | localstore import 7c41 - --dedupe
    """
    from localstore.ops.transfer import import_records

    with progress_bar(None if not as_json else False) as progress:
        result = import_records(ctx.store, dataset_id, file, dedupe=dedupe, progress=progress)
    if as_json:
        emit_json(result.to_dict())
        return
    skipped = f"; skipped {result.skipped} line(s) equal to a record already there" if result.skipped else ""
    click.echo(f"queued {result.queued.records} create(s) in dataset {result.dataset_id}{skipped}")
    if not result.lines:
        click.echo(f"localstore: warning: {file} holds no records", err=True)


def check_where(where: str | None, given: Any, what: str) -> None:
    """RECORD_IDs or --where, one of the two."""
    if where is not None and given:
        raise UsageError(f"give {what} or --where, not both")
    if where is None and not given:
        raise UsageError(f"give {what} or --where CONDITION")


COMMANDS = [export, import_]
