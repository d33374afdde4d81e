"""Commands that read: `pull`, `fetch`, `datasets`, `records`, `show`, `sql`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from localstore.cli.ids import DATASET_ID, RECORD_ID
from localstore.cli.output import (
    emit_json,
    emit_json_lines,
    emit_json_rows,
    emit_listing,
    json_option,
    listing_options,
    progress_bar,
    stdout_is_terminal,
)
from localstore.errors import Interrupted, UsageError

if TYPE_CHECKING:
    pass


from localstore.cli.context import Context, pass_ctx

# ------------------------------------------------------------------ mirror


@click.command()
@click.argument("dataset_ids", nargs=-1, type=DATASET_ID)
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 32))
@json_option
@pass_ctx
def pull(ctx: Context, dataset_ids: tuple[str, ...], concurrency: int, as_json: bool) -> int:
    """Mirror datasets (and track them); no id: every tracked dataset.

    \b
    Examples:
      localstore datasets --remote    # the account's datasets and their ids
      localstore pull 3fa85f64-5717-4562-b3fc-2c963f66afa6
      localstore pull                 # every tracked dataset again
    """
    from localstore.sync.pull import pull as pull_datasets

    interrupted = False
    try:
        with ctx.client() as client, progress_bar() as progress:
            results = pull_datasets(ctx.store, client, dataset_ids, concurrency=concurrency, progress=progress)
            ctx.work_is_done()
    except Interrupted as exc:
        results, interrupted = exc.done, True
        ctx.work_is_done()
    if as_json:
        emit_json([r.__dict__ for r in results])
    for r in [] if as_json else results:
        if r.gone:
            click.echo(
                f"dataset {r.dataset_id} was deleted on the server: its records were removed here "
                f"({r.conflicts} with local edits kept as conflicts) and it is no longer tracked"
            )
            continue
        adopted = f", recognised {r.adopted} create(s) whose answer was lost" if r.adopted else ""
        click.echo(f"pulled {r.records} records of {r.dataset_id}; removed {r.removed}, conflicts {r.conflicts}{adopted}")
        for error in r.errors:
            click.echo(f"localstore: error: {error}", err=True)
    if interrupted:
        click.echo(f"localstore: interrupted with {len(results)} dataset(s) pulled; what was applied stays, "
                   "`localstore pull` again finishes the rest", err=True)
        return 130
    if as_json:
        return 0
    return 1 if any(r.errors for r in results) else 0


@click.command()
@click.argument("record_ids", nargs=-1, required=True, type=RECORD_ID)
@json_option
@pass_ctx
def fetch(ctx: Context, record_ids: tuple[str, ...], as_json: bool) -> None:
    """Mirror single records.

    \b
    Example:
      localstore fetch 0d6f2b1e-4a8c-4f0e-9b7d-2c1e5a3f8d90
    """
    from localstore.sync.pull import fetch as fetch_records

    with ctx.client() as client:
        records = fetch_records(ctx.store, client, record_ids)
    if as_json:
        emit_json([r.id for r in records])
    else:
        click.echo(f"fetched {len(records)} record(s)")


@click.command()
@click.option("--remote", is_flag=True, help="List the account's datasets on the server.")
@click.option("--untrack", "untrack_id", type=DATASET_ID, metavar="ID",
              help="Stop tracking a dataset and drop its records from the store.")
@click.option("--discard", is_flag=True, help="With --untrack: throw away its local changes too.")
@listing_options
@pass_ctx
def datasets(
    ctx: Context, remote: bool, untrack_id: str | None, discard: bool, as_json: bool, as_csv: bool
) -> None:
    """Datasets in the store (or, with --remote, the server's).

    In a terminal a table; piped, tab-separated rows without a header. --untrack ID
    stops tracking a dataset (refused while it has local changes, unless --discard).

    \b
    Examples:
      localstore datasets
      localstore datasets --remote | cut -f1    # the ids only
      localstore datasets --untrack 5f0c --discard
    """
    if discard and not untrack_id:
        raise UsageError("--discard goes with --untrack ID")
    if untrack_id:
        from localstore.ops.tracking import untrack

        done = untrack(ctx.store, untrack_id, discard=discard)
        if as_json:
            emit_json(done.__dict__)
        else:
            dropped = f", {done.discarded} record(s) with local changes discarded" if done.discarded else ""
            click.echo(f"untracked {done.dataset_id}: {done.records} record(s) dropped from the store{dropped}")
        return
    if remote:
        with ctx.client() as client:
            rows = [d.__dict__ for d in client.list_datasets()]
        emit_listing(rows, ["id", "name", "description", "updated_at"], as_json=as_json, as_csv=as_csv,
                     empty="no datasets on the server")
        return
    rows = ctx.store.query(
        """SELECT d.id, d.name, d.tracked, d.last_pulled_at,
                  (SELECT count(*) FROM records AS r WHERE r.dataset_id = d.id) AS records
           FROM datasets AS d ORDER BY d.name, d.id"""
    )
    emit_listing(rows, ["id", "name", "tracked", "records", "last_pulled_at"], as_json=as_json, as_csv=as_csv,
                 empty="no datasets in the store: `localstore pull DATASET_ID` mirrors one")


@click.command()
@click.option("--dataset", "dataset_id", type=DATASET_ID, help="Only this dataset.")
@click.option("--limit", type=click.IntRange(0), default=None)
@listing_options
@pass_ctx
def records(ctx: Context, dataset_id: str | None, limit: int | None, as_json: bool, as_csv: bool) -> None:
    """Records as you see them now (pending edits applied).

    In a terminal a table; piped, tab-separated rows without a header (id, dataset_id,
    sync_state, updated_at, properties); --csv and --json for other programs.

    \b
    Examples:
      localstore records --dataset 3fa8 --limit 20
      localstore records | cut -f1 | head -3 | xargs localstore rm
    """
    from localstore.ops.queries import list_records

    rows = list_records(ctx.store, dataset_id, limit=limit)
    columns = ["id", "dataset_id", "sync_state", "updated_at", "properties"]
    datasets_shown = {r["dataset_id"] for r in rows}
    # one dataset: the table names it once above, leaving its width to the properties
    single = datasets_shown.pop() if len(datasets_shown) == 1 else None
    emit_listing(rows, columns, as_json=as_json, as_csv=as_csv,
                 empty="no records" + (" in this dataset" if dataset_id else " in the store"),
                 title=f"dataset {single}" if single else None,
                 table_columns=[c for c in columns if c != "dataset_id"] if single else None)


@click.command()
@click.argument("record_id", type=RECORD_ID)
@json_option
@pass_ctx
def show(ctx: Context, record_id: str, as_json: bool) -> None:
    """Read one record: its properties and conversation (JSON when piped).

    In a terminal the messages are rendered under their roles, through the pager when
    longer than the screen; piped or with --json, the record is printed as JSON.

    \b
    Examples:
      localstore show 0d6f2b1e
      localstore show 0d6f2b1e --json | jq .properties
    """
    from localstore.ops.queries import get_record

    record = get_record(ctx.store, record_id)
    if as_json or not stdout_is_terminal():
        emit_json(record)
    else:
        from localstore.cli.render import show_record

        show_record(record)


# ------------------------------------------------------------------ sql


@click.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects (JSON columns as JSON values).")
@click.option("--nl", is_flag=True, help="JSON, one row object per line (no enclosing array).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--write", is_flag=True, help="Allow INSERT, UPDATE and DELETE on the records view; they become queued changes.")
@pass_ctx
def sql(ctx: Context, query: str, as_json: bool, nl: bool, as_csv: bool, write: bool) -> None:
    """Run one SQL statement on the store (read-only unless --write).

    In a terminal a table; piped, tab-separated rows without a header. A BLOB prints as
    hex (JSON: {"$base64": "…"}). With --json, JSON columns (payload, properties, body…)
    are JSON values.

    With --write, INSERT/UPDATE/DELETE on the `records` view queue exactly the changes
    `add`/`edit`/`set`/`rm` would, in one transaction per statement; everything else
    (the mirror, the change log, other tables, PRAGMAs that change the file) is refused.

    \b
    Examples:
      localstore sql "select role, count(*) from messages group by role"
      localstore sql --csv "select id, properties from records" > records.csv
      localstore sql --write "update records set properties = json_set(properties, '$.label', 'ok') where …"
      localstore sql --write "delete from records where json_array_length(payload, '$.messages') < 2"
    """
    from localstore.cli.output import decode_json_columns
    from localstore.ops.queries import run_sql

    as_json = as_json or nl
    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    result = run_sql(ctx.store, query, write=write)
    if result.queued is not None and not result.columns:
        from localstore.cli.bulk import queued_text

        emit_json(result.queued.to_dict()) if as_json else click.echo(queued_text(result.queued))
    elif as_json:
        rows = decode_json_columns(result.as_dicts())
        emit_json_lines(rows) if nl else emit_json_rows(rows)
    elif result.columns:
        rows = [dict(zip(result.columns, row, strict=True)) for row in result.rows]
        emit_listing(rows, result.columns, as_csv=as_csv, empty="no rows")


COMMANDS = [pull, fetch, datasets, records, show, sql]
