"""The command line: thin click commands over the Python API (localstore.ops.edits, .views,
.pull, .sync, .resolve …). Commands that do not talk to the network import neither httpx
nor FastAPI."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from localstore.errors import Interrupted, LocalstoreError, UsageError
from localstore.version import __version__

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.store.db import Store
    from localstore.sync.run import SyncReport


class Context:
    def __init__(self, db: str | None, server_url: str | None) -> None:
        self.db = db
        self.server_url = server_url
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from localstore.store.db import Store

            if self.db is not None:
                check_db_folder(self.db)
            self._store = Store.open(self.db)
        return self._store

    def client(self, **kw: Any) -> Client:
        from localstore.api import API_KEY_ENV, Client

        if not (os.environ.get(API_KEY_ENV) or "").strip():
            raise UsageError(
                f"{API_KEY_ENV} is not set: this command talks to the API, so export your "
                f"Mistral API key first ({API_KEY_ENV}=...); `localstore demo` needs none"
            )
        return Client.from_env(self.server_url, **kw)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(Context)


def check_db_folder(db: str) -> None:
    """A store given with --db or LOCALSTORE_DB goes in a folder that exists: a typo in
    the path is an error, not a new folder (the default location is created)."""
    folder = Path(db).expanduser().parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise UsageError(f"cannot open the store {db}: the folder {folder} {what} (create it, or fix --db / LOCALSTORE_DB)")


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
    epilog="Ids can be shortened to a unique prefix of 4+ characters. "
    "`localstore COMMAND --help` shows a command's options and an example.",
)
@click.option("--db", envvar="LOCALSTORE_DB", type=click.Path(dir_okay=False), help="Store file [env LOCALSTORE_DB; default: in the user data dir].")
@click.option("--server-url", envvar="LOCALSTORE_SERVER_URL", help="API server [env LOCALSTORE_SERVER_URL; default https://api.mistral.ai].")
@click.version_option(__version__, prog_name="localstore")
@click.pass_context
def cli(ctx: click.Context, db: str | None, server_url: str | None) -> None:
    """Keep Mistral observability dataset records in a local SQLite file: read, query
    and edit them offline, then sync. The API key comes from MISTRAL_API_KEY.

    \b
    Start with:
      localstore demo               the whole loop on a built-in emulator, no key
      localstore pull DATASET_ID    mirror a dataset (`datasets --remote` lists them)
      localstore records            the records you hold; then show ID, set, sync
    """
    ctx.obj = Context(db, server_url)
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:  # a bare `localstore`: the help, and success
        click.echo(ctx.get_help())
        ctx.exit(0)


# ------------------------------------------------------------------ mirror


@cli.command()
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
    except Interrupted as exc:
        results, interrupted = exc.done, True
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


@cli.command()
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


# ------------------------------------------------------------------ edits


def _read_json_file(path: str, what: str) -> dict[str, Any]:
    from localstore.ops.edits import parse_json_object_text

    return parse_json_object_text(_read_text_file(path, what), f"{what} {path}")


def _read_text_file(path: str, what: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None


@cli.command()
@click.argument("record_id", type=RECORD_ID)
@click.option("--payload-file", help="A JSON file with the new payload ('-' reads stdin).")
@click.option("--file", "record_file", help='A JSON file {"payload": …, "properties": …} as $EDITOR shows it, e.g. a kept edit.')
@pass_ctx
def edit(ctx: Context, record_id: str, payload_file: str | None, record_file: str | None) -> None:
    """Edit a record in $EDITOR, or replace its payload from a file.

    An edit that cannot be queued (invalid JSON…) is kept in a file whose path the error
    prints; `--file PATH` queues it once fixed.

    \b
    Examples:
      localstore edit 0d6f2b1e                          # opens $EDITOR
      localstore edit 0d6f2b1e --payload-file fixed.json
    """
    from localstore.ops.edits import set_payload

    if payload_file is not None and record_file is not None:
        raise UsageError("give --payload-file or --file, not both")
    if payload_file is not None:
        result = set_payload(ctx.store, record_id, _read_json_file(payload_file, "payload file"))
    elif record_file is not None:
        from localstore.cli.editbuffer import apply_buffer

        text = _read_text_file(record_file, "record file")
        result = apply_buffer(ctx.store, record_id, text, f"record file {record_file}")
    else:
        from localstore.cli.editbuffer import edit_in_editor

        result = edit_in_editor(ctx.store, record_id)
    _say_edit(result)


def _say_edit(result: Any) -> None:
    if result.kinds:
        click.echo(f"queued {' and '.join(result.kinds)} change for {result.record_id}")
    else:
        click.echo(f"no change to {result.record_id}: nothing queued")


WHERE_HELP = "Every record matching this SQL condition on the records view (as `judge --where` takes)."
DRY_RUN_HELP = "With --where: print how many records match and the first ids; change nothing."


def _complete_leading_id(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """The first word of `set`/`unset` is a record id (unless --where)."""
    if ctx.params.get(param.name or "") or "=" in incomplete:
        return []
    return RECORD_ID.shell_complete(ctx, param, incomplete)


def _leading_id(words: tuple[str, ...], usage: str, after: str) -> tuple[str, tuple[str, ...]]:
    """RECORD_ID (or a unique prefix) and the words after it (at least one)."""
    if "=" in words[0]:
        raise UsageError(f"give the RECORD_ID first, or --where CONDITION: `{usage}`")
    if len(words) < 2:  # as click says of a missing argument (exit 2)
        raise click.UsageError(f"Missing argument '{after}'.", click.get_current_context())
    return RECORD_ID.convert(words[0], None, click.get_current_context()), words[1:]


def _no_id_with_where(word: str, usage: str) -> None:
    from localstore.core.ids import is_uuid

    if is_uuid(word):
        raise UsageError(f"give RECORD_ID or --where, not both: `{usage}`")


@cli.command(name="set")
@click.argument("words", nargs=-1, required=True, metavar="[RECORD_ID] KEY=VALUE...",
                shell_complete=_complete_leading_id)
@click.option("--where", help=WHERE_HELP)
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@pass_ctx
def set_(ctx: Context, words: tuple[str, ...], where: str | None, dry_run: bool) -> None:
    """Set properties: KEY=VALUE (VALUE is parsed as JSON, else kept as a string).

    On one record, or on every record matching --where (in one transaction: a record
    that cannot be edited, e.g. in conflict, refuses them all).

    \b
    Examples:
      localstore set 0d6f2b1e label=reviewed score=0.9 tags='["billing"]'
      localstore set --where "json_extract(properties, '$.label') IS NULL" label=todo
    """
    from localstore.ops.edits import parse_assignments, set_properties

    usage = "localstore set RECORD_ID KEY=VALUE… | set --where CONDITION KEY=VALUE…"
    if where is None:
        if dry_run:
            raise UsageError("--dry-run goes with --where CONDITION")
        record_id, assignments = _leading_id(words, usage, "KEY=VALUE...")
        _say_edit(set_properties(ctx.store, record_id, parse_assignments(assignments)))
        return
    from localstore.cli.bulk import say_bulk
    from localstore.ops.bulk import set_where

    _no_id_with_where(words[0], usage)
    updates = parse_assignments(words)
    result = set_where(ctx.store, where, updates, dry_run=dry_run)
    say_bulk(result, f"set {', '.join(updates)} on", dry_run=dry_run)


@cli.command()
@click.argument("words", nargs=-1, required=True, metavar="[RECORD_ID] KEY...",
                shell_complete=_complete_leading_id)
@click.option("--where", help=WHERE_HELP)
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@pass_ctx
def unset(ctx: Context, words: tuple[str, ...], where: str | None, dry_run: bool) -> None:
    """Remove properties, from one record or from every record matching --where
    (records without the keys are left as they are).

    \b
    Examples:
      localstore unset 0d6f2b1e score
      localstore unset --where "dataset_id = '3fa85f64-5717-4562-b3fc-2c963f66afa6'" score
    """
    from localstore.ops.edits import unset_properties

    usage = "localstore unset RECORD_ID KEY… | unset --where CONDITION KEY…"
    if where is None:
        if dry_run:
            raise UsageError("--dry-run goes with --where CONDITION")
        record_id, keys = _leading_id(words, usage, "KEY...")
        _say_edit(unset_properties(ctx.store, record_id, keys))
        return
    from localstore.cli.bulk import say_bulk
    from localstore.ops.bulk import unset_where

    _no_id_with_where(words[0], usage)
    result = unset_where(ctx.store, where, words, dry_run=dry_run)
    say_bulk(result, f"unset {', '.join(words)} on", dry_run=dry_run)


@cli.command()
@click.argument("record_ids", nargs=-1, type=RECORD_ID)
@click.option("--where", help=WHERE_HELP)
@click.option("--dry-run", is_flag=True, help=DRY_RUN_HELP)
@pass_ctx
def rm(ctx: Context, record_ids: tuple[str, ...], where: str | None, dry_run: bool) -> None:
    """Queue deletes; the next sync sends them (`revert` undoes one before).

    \b
    Examples:
      localstore rm 0d6f2b1e 7c41a9d2
      localstore rm --where "(SELECT count(*) FROM messages AS m WHERE m.record_id = id) < 2" --dry-run
    """
    from localstore.cli.bulk import check_where, say_bulk

    check_where(where, record_ids, "RECORD_IDs")
    if where is not None:
        from localstore.ops.bulk import rm_where

        say_bulk(rm_where(ctx.store, where, dry_run=dry_run), "delete", dry_run=dry_run)
        return
    if dry_run:
        raise UsageError("--dry-run goes with --where CONDITION")
    from localstore.ops.edits import delete_records

    done = delete_records(ctx.store, record_ids)
    for result in done:
        rid = result.record_id
        if result.dropped_unsent_create:
            click.echo(f"{rid}: dropped (created here and never sent; nothing left to revert)")
        elif result.dropped_edits:
            parts = " and ".join(result.dropped_edits)
            click.echo(
                f"{rid}: the delete replaces its pending {parts} edit; `localstore revert {rid}` "
                "would throw away the delete and bring the record back as the server has it, "
                f"without that {parts} edit"
            )
    queued = sum(1 for r in done if not r.dropped_unsent_create)
    click.echo(f"queued {queued} delete(s)")


@cli.command()
@click.argument("dataset_id", type=DATASET_ID)
@click.option("--payload-file", required=True, help="JSON file with the payload ('-' reads stdin).")
@click.option("--properties-file", help="JSON file with the properties.")
@json_option
@pass_ctx
def add(ctx: Context, dataset_id: str, payload_file: str, properties_file: str | None, as_json: bool) -> None:
    """Create a record offline (it gets its server id on sync).

    \b
    Example:
      echo '{"messages": [{"role": "user", "content": "Hi"}]}' | localstore add 3fa8 --payload-file -
    """
    from localstore.ops.edits import add_record

    payload = _read_json_file(payload_file, "payload file")
    properties = _read_json_file(properties_file, "properties file") if properties_file else {}
    rid = add_record(ctx.store, dataset_id, payload, properties)
    if as_json:
        emit_json({"id": rid})
    else:
        click.echo(rid)


@cli.command()
@click.argument("record_id", required=False, type=RECORD_ID)
@click.option("--where", help=WHERE_HELP + " Pending deletes match too.")
@click.option("--all", "everything", is_flag=True, help="Every record with local changes.")
@click.option("--dry-run", is_flag=True, help="With --where or --all: print how many records and the first ids; change nothing.")
@pass_ctx
def revert(ctx: Context, record_id: str | None, where: str | None, everything: bool, dry_run: bool) -> None:
    """Drop local changes and restore what the server has: one record, those matching
    --where, or --all.

    \b
    Examples:
      localstore revert 0d6f2b1e
      localstore revert --where "json_extract(properties, '$.label') = 'apology'"
      localstore revert --all --dry-run
    """
    if (record_id is not None) + (where is not None) + everything != 1:
        raise UsageError("give one of RECORD_ID, --where CONDITION or --all")
    if record_id is None:
        from localstore.cli.bulk import say_bulk
        from localstore.ops.bulk import revert_where

        result = revert_where(ctx.store, where, dry_run=dry_run)
        if not result.matched and not dry_run:
            click.echo("no local changes to revert" + (" in the records matching --where" if where else ""))
            return
        say_bulk(result, "revert", dry_run=dry_run)
        return
    if dry_run:
        raise UsageError("--dry-run goes with --where or --all")
    from localstore.ops.edits import revert as revert_record

    click.echo(f"reverted {revert_record(ctx.store, record_id)}")


# ------------------------------------------------------------------ inspect


@cli.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Records with changes to push, conflicts, rejected changes, the last successful
    sync, and what to run next (--json: every record, not the first 20 of each).

    \b
    Examples:
      localstore status
      localstore status --json | jq '.changes[].record_id'
    """
    from localstore.cli.report import SHOWN, next_steps, say_status
    from localstore.ops.queries import status as store_status

    st = store_status(ctx.store, details=True, limit=None if as_json else SHOWN)
    if as_json:
        emit_json({**st.to_dict(), "next": next_steps(st)})
    else:
        say_status(st)


@cli.command()
@click.argument("record_id", required=False, type=RECORD_ID)
@pass_ctx
def diff(ctx: Context, record_id: str | None) -> None:
    """Unified diff of the remote base vs your local version; for a record in conflict,
    base → ours and base → theirs.

    \b
    Examples:
      localstore diff              # every record with local changes
      localstore diff 0d6f2b1e
    """
    from localstore.ops.queries import diff as store_diff

    text = store_diff(ctx.store, record_id)
    click.echo(text, nl=False) if text else click.echo("no local changes")


@cli.command()
@click.option("--record", "record_id", type=RECORD_ID, help="Only this record.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@listing_options
@pass_ctx
def log(ctx: Context, record_id: str | None, limit: int, as_json: bool, as_csv: bool) -> None:
    """The change log, newest first.

    In a terminal a table; piped, tab-separated rows without a header (id, created_at,
    record_id, kind, state, error).

    \b
    Examples:
      localstore log --limit 10
      localstore log --record 0d6f2b1e --json
    """
    from localstore.ops.queries import change_log

    rows = change_log(ctx.store, record_id=record_id, limit=limit)
    emit_listing(rows, ["id", "created_at", "record_id", "kind", "state", "error"], as_json=as_json,
                 as_csv=as_csv, empty="the change log is empty")


# ------------------------------------------------------------------ sync


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be pushed and what conflicts, change nothing.")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 32))
@json_option
@pass_ctx
def sync(ctx: Context, dry_run: bool, concurrency: int, as_json: bool) -> int:
    """Push queued edits, then pull. Exit 0 clean, 3 when conflicts remain, 1 on error.

    \b
    Examples:
      localstore sync --dry-run
      localstore sync || localstore conflicts
    """
    from localstore.sync.run import sync as run_sync

    try:
        with ctx.client() as client, progress_bar(None if not as_json else False) as progress:
            report = run_sync(ctx.store, client, dry_run=dry_run, concurrency=concurrency, progress=progress)
    except Interrupted as exc:
        report = exc.done
    if as_json:
        emit_json(report.to_dict())
        _say_sync_interrupted(report)
        return report.exit_code
    if dry_run:
        from localstore.cli.report import say_plan

        say_plan(report.planned_records)
    else:
        click.echo(
            f"pushed {report.pushed} (created {report.created}, updated {report.updated}, "
            f"deleted {report.deleted}), pulled {report.pulled}, rejected {report.rejected}"
        )
    if report.adopted:
        click.echo(f"recognised {report.adopted} create(s) of an earlier sync whose answer was lost")
    already = report.open_conflicts - (report.new_conflicts if dry_run else 0)  # a dry run listed its own
    if already:
        click.echo(f"{already} conflict(s){' already open' if dry_run else ''}: `localstore conflicts` shows "
                   "them, `localstore resolve` settles them")
    for warning in report.warnings:
        click.echo(f"localstore: warning: {warning}", err=True)
    for error in report.errors:
        click.echo(f"localstore: error: {error}", err=True)
    if report.errors and not report.interrupted:
        click.echo(f"{report.pending} change(s) stay pending; run sync again", err=True)
    _say_sync_interrupted(report)
    return report.exit_code


def _say_sync_interrupted(report: SyncReport) -> None:
    if report.interrupted:
        unknown = f"{report.abandoned} request(s) in flight were abandoned, their outcome unknown " \
            "(the next sync settles them); " if report.abandoned else ""
        click.echo(f"localstore: interrupted: {unknown}{report.pending} change(s) stay pending: "
                   "`localstore sync` goes on", err=True)


@cli.command()
@listing_options
@pass_ctx
def conflicts(ctx: Context, as_json: bool, as_csv: bool) -> None:
    """Open conflicts: each conflicting part with its base, ours and theirs values.

    In a terminal a table cut to its width; piped, tab-separated rows without a header
    (record_id, part, base, ours, theirs); --json keeps everything (whole base, local
    and remote snapshots). PART names what `resolve ID PART` settles.

    \b
    Examples:
      localstore conflicts
      localstore resolve 0d6f2b1e /properties/label --theirs
      localstore conflicts --json | jq '.[0].remote'
    """
    from localstore.cli.report import conflict_rows
    from localstore.ops.queries import conflict_list

    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    found = conflict_list(ctx.store)
    if as_json:
        emit_json(found)
        return
    rows = conflict_rows(found)
    emit_listing(rows, ["record_id", "part", "base", "ours", "theirs"], as_csv=as_csv, empty="no conflicts",
                 title=f"{len(found)} record(s) in conflict", fair=True, whole=["part"])
    if rows and stdout_is_terminal():
        click.echo("settle a part: `localstore resolve ID PART --ours|--theirs`")
        click.echo("merge in $EDITOR: `localstore resolve ID --edit`; see it whole: `localstore diff ID`")


@cli.command()
@click.argument("record_id", type=RECORD_ID)
@click.argument("parts", nargs=-1)
@click.option("--ours", is_flag=True, help="Keep the local values, rebased on the remote.")
@click.option("--theirs", is_flag=True, help="Drop the local side, take the remote.")
@click.option("--file", "merged_file", help="Take a merged JSON {\"payload\":…, \"properties\":…}.")
@click.option("--edit", is_flag=True, help="Merge in $EDITOR: ours, base and theirs between conflict markers.")
@pass_ctx
def resolve(ctx: Context, record_id: str, parts: tuple[str, ...], ours: bool, theirs: bool,
            merged_file: str | None, edit: bool) -> None:
    """Settle a conflict, whole or PART by PART (the names `conflicts` prints).

    Nothing is pushed: the result is queued for the next `localstore sync` (--theirs
    queues nothing). A part settled while others still conflict leaves the record in
    conflict on those.

    \b
    Examples:
      localstore resolve 0d6f2b1e --ours
      localstore resolve 0d6f2b1e /properties/label --theirs
      localstore resolve 0d6f2b1e --edit
      localstore resolve 0d6f2b1e --file merged.json
    """
    from localstore.cli.report import say_resolution
    from localstore.ops.resolve import resolve_conflict

    if ours + theirs + (merged_file is not None) + edit != 1:
        raise UsageError("give exactly one of --ours, --theirs, --edit or --file F")
    if parts and not (ours or theirs):
        raise UsageError("PART goes with --ours or --theirs; --edit and --file settle the whole record")
    if edit:
        from localstore.cli.mergebuffer import resolve_in_editor

        done = resolve_in_editor(ctx.store, record_id)
        if done is None:
            click.echo("the merge was not saved: nothing resolved")
            return
    else:
        from localstore.cli.mergebuffer import parse_merged

        choice = "ours" if ours else "theirs" if theirs else "file"
        merged = parse_merged(_read_text_file(merged_file, "merged file"), f"merged file {merged_file}") \
            if merged_file else None
        done = resolve_conflict(ctx.store, record_id, choice, merged, parts)  # type: ignore[arg-type]
    say_resolution(done)


# ------------------------------------------------------------------ sql


@cli.command()
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


# ------------------------------------------------------------------ emulator & demo


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--db", "emulator_db", type=click.Path(dir_okay=False), help="Persist the emulator's data in this SQLite file.")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed-records", default=0, show_default=True, type=click.IntRange(0), help="Create a dataset of N generated records at start.")
@click.option("--timestamp-format", default="ms", show_default=True, type=click.Choice(["ms", "us", "offset"]), help="How stamps are written: 2025-10-07T20:56:01.974Z, ….974123Z or ….974123+00:00.")
def emulator(host: str, port: int, emulator_db: str | None, latency_ms: float, fail_rate: float, seed_records: int, timestamp_format: str) -> None:
    """Run the bundled API emulator (for demos and tests; any bearer key is accepted).

    \b
    Example:
      localstore emulator --seed-records 1000 &
      MISTRAL_API_KEY=any localstore --server-url http://127.0.0.1:8000 datasets --remote
    """
    from localstore_emulator import RefusedHost, serve

    try:
        serve(host, port, emulator_db, latency_ms, fail_rate, seed_records, timestamp_format=timestamp_format)  # type: ignore[arg-type]
    except RefusedHost as exc:
        raise UsageError(str(exc)) from None


@cli.command()
@click.option("--keep", is_flag=True, help="Keep the demo's store afterwards (its path is printed).")
@click.pass_context
def demo(click_ctx: click.Context, keep: bool) -> None:
    """The whole loop on an embedded emulator: no key, no network.

    It works in a fresh store in a temporary folder and never opens yours: --db and
    LOCALSTORE_DB are ignored.

    \b
    Example:
      localstore demo
    """
    from localstore.cli.demo import run_demo

    root = click_ctx.find_root()
    if root.params.get("db"):
        source = root.get_parameter_source("db")
        given = "LOCALSTORE_DB" if source == click.core.ParameterSource.ENVIRONMENT else "--db"
        click.echo(f"localstore: the demo ignores {given} ({root.params['db']}): your store is not touched", err=True)
    run_demo(keep=keep)


# ------------------------------------------------------------------ command modules

from localstore.cli.browse import browse, search  # noqa: E402
from localstore.cli.bulk import export, import_  # noqa: E402
from localstore.cli.files import checkout, watch  # noqa: E402
from localstore.cli.judge import judge  # noqa: E402

cli.add_command(checkout)
cli.add_command(watch)
cli.add_command(judge)
cli.add_command(search)
cli.add_command(browse)
cli.add_command(export)
cli.add_command(import_)


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors print one line and exit non-zero, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="localstore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort as exc:  # click turns Ctrl-C into Abort
        interrupted = isinstance(exc.__cause__, KeyboardInterrupt)
        click.echo(f"localstore: {'interrupted' if interrupted else 'aborted'}", err=True)
        code = 130 if interrupted else 1
    except click.UsageError as exc:  # bad arguments: click's usage text, exit 2
        exc.show()
        code = exc.exit_code
    except click.ClickException as exc:  # e.g. the $EDITOR failed to start
        click.echo(f"localstore: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except LocalstoreError as exc:
        click.echo(f"localstore: error: {exc}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("localstore: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        code = 1
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("LOCALSTORE_DEBUG"):
            raise
        click.echo(
            f"localstore: internal error: {type(exc).__name__}: {exc} (LOCALSTORE_DEBUG=1 shows the traceback)",
            err=True,
        )
        code = 1
    if code == 130:
        _leave_abandoned_requests()
    sys.exit(code if isinstance(code, int) else 0)


def _leave_abandoned_requests() -> None:
    """After Ctrl-C, threads may still be blocked in requests that were abandoned; Python
    would wait for them at exit. The store is closed by now (a kill is safe for SQLite
    at any moment anyway): flush what was printed and exit at once."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(130)
