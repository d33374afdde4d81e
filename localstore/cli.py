"""The command line: thin click commands over the Python API (localstore.edits, .views,
.pull, .sync, .resolve …). Commands that do not talk to the network import neither httpx
nor FastAPI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__
from .errors import LocalstoreError, UsageError
from .output import (
    emit_csv,
    emit_json,
    emit_json_rows,
    emit_rows,
    emit_table,
    json_option,
    progress_bar,
)

if TYPE_CHECKING:
    from .api import Client
    from .store import Store


class Context:
    def __init__(self, db: str | None, server_url: str | None) -> None:
        self.db = db
        self.server_url = server_url
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from .store import Store

            self._store = Store.open(self.db)
        return self._store

    def client(self) -> Client:
        from .api import Client

        return Client.from_env(self.server_url)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--db", envvar="LOCALSTORE_DB", type=click.Path(dir_okay=False), help="Store file [env LOCALSTORE_DB; default: in the user data dir].")
@click.option("--server-url", envvar="LOCALSTORE_SERVER_URL", help="API server [env LOCALSTORE_SERVER_URL; default https://api.mistral.ai].")
@click.version_option(__version__, prog_name="localstore")
@click.pass_context
def cli(ctx: click.Context, db: str | None, server_url: str | None) -> None:
    """Keep Mistral observability dataset records in a local SQLite file: read, query
    and edit them offline, then sync. The API key comes from MISTRAL_API_KEY."""
    ctx.obj = Context(db, server_url)
    ctx.call_on_close(ctx.obj.close)


# ------------------------------------------------------------------ mirror


@cli.command()
@click.argument("dataset_ids", nargs=-1)
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 32))
@json_option
@pass_ctx
def pull(ctx: Context, dataset_ids: tuple[str, ...], concurrency: int, as_json: bool) -> None:
    """Mirror datasets (and track them); no id: every tracked dataset."""
    from .pull import pull as pull_datasets

    with ctx.client() as client, progress_bar() as progress:
        results = pull_datasets(ctx.store, client, dataset_ids, concurrency=concurrency, progress=progress)
    if as_json:
        emit_json([r.__dict__ for r in results])
        return
    for r in results:
        extra = "" if r.complete else " (listing incomplete: nothing removed locally)"
        click.echo(f"pulled {r.records} records of {r.dataset_id}; removed {r.removed}, conflicts {r.conflicts}{extra}")


@cli.command()
@click.argument("record_ids", nargs=-1, required=True)
@json_option
@pass_ctx
def fetch(ctx: Context, record_ids: tuple[str, ...], as_json: bool) -> None:
    """Mirror single records."""
    from .pull import fetch as fetch_records

    with ctx.client() as client:
        records = fetch_records(ctx.store, client, record_ids)
    if as_json:
        emit_json([r.id for r in records])
    else:
        click.echo(f"fetched {len(records)} record(s)")


@cli.command()
@click.option("--remote", is_flag=True, help="List the account's datasets on the server.")
@json_option
@pass_ctx
def datasets(ctx: Context, remote: bool, as_json: bool) -> None:
    """Tracked datasets (or, with --remote, the server's)."""
    if remote:
        with ctx.client() as client:
            rows = [d.__dict__ for d in client.list_datasets()]
        emit_rows(rows, ["id", "name", "description", "updated_at"], as_json=as_json)
        return
    rows = ctx.store.query(
        """SELECT d.id, d.name, d.tracked, d.last_pulled_at,
                  (SELECT count(*) FROM records AS r WHERE r.dataset_id = d.id) AS records
           FROM datasets AS d ORDER BY d.name, d.id"""
    )
    emit_rows(rows, ["id", "name", "tracked", "records", "last_pulled_at"], as_json=as_json)


@cli.command()
@click.option("--dataset", "dataset_id", help="Only this dataset.")
@click.option("--limit", type=click.IntRange(0), default=None)
@json_option
@pass_ctx
def records(ctx: Context, dataset_id: str | None, limit: int | None, as_json: bool) -> None:
    """Records as you see them now (pending edits applied)."""
    from .views import list_records

    rows = list_records(ctx.store, dataset_id, limit=limit)
    emit_rows(rows, ["id", "dataset_id", "sync_state", "updated_at", "properties"], as_json=as_json)


@cli.command()
@click.argument("record_id")
@json_option
@pass_ctx
def show(ctx: Context, record_id: str, as_json: bool) -> None:
    """One record, as JSON."""
    from .views import get_record

    emit_json(get_record(ctx.store, record_id))


# ------------------------------------------------------------------ edits


def _read_json_file(path: str, what: str) -> dict[str, Any]:
    from .edits import parse_json_object_text

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    return parse_json_object_text(text, f"{what} {path}")


@cli.command()
@click.argument("record_id")
@click.option("--payload-file", help="A JSON file with the new payload ('-' reads stdin). Without it, $EDITOR opens the record.")
@pass_ctx
def edit(ctx: Context, record_id: str, payload_file: str | None) -> None:
    """Replace a record's payload (or edit the record in $EDITOR)."""
    from .edits import edit_in_editor, set_payload

    if payload_file is None:
        result = edit_in_editor(ctx.store, record_id)
    else:
        result = set_payload(ctx.store, record_id, _read_json_file(payload_file, "payload file"))
    _say_edit(result)


def _say_edit(result: Any) -> None:
    if result.kinds:
        click.echo(f"queued {' and '.join(result.kinds)} change for {result.record_id}")
    else:
        click.echo(f"no change to {result.record_id}: nothing queued")


@cli.command(name="set")
@click.argument("record_id")
@click.argument("assignments", nargs=-1, required=True)
@pass_ctx
def set_(ctx: Context, record_id: str, assignments: tuple[str, ...]) -> None:
    """Set properties: KEY=VALUE (VALUE is parsed as JSON, else kept as a string)."""
    from .edits import parse_assignments, set_properties

    _say_edit(set_properties(ctx.store, record_id, parse_assignments(assignments)))


@cli.command()
@click.argument("record_id")
@click.argument("keys", nargs=-1, required=True)
@pass_ctx
def unset(ctx: Context, record_id: str, keys: tuple[str, ...]) -> None:
    """Remove properties."""
    from .edits import unset_properties

    _say_edit(unset_properties(ctx.store, record_id, keys))


@cli.command()
@click.argument("record_ids", nargs=-1, required=True)
@pass_ctx
def rm(ctx: Context, record_ids: tuple[str, ...]) -> None:
    """Queue deletes."""
    from .edits import delete_records

    done = delete_records(ctx.store, record_ids)
    click.echo(f"queued {len(done)} delete(s)")


@cli.command()
@click.argument("dataset_id")
@click.option("--payload-file", required=True, help="JSON file with the payload ('-' reads stdin).")
@click.option("--properties-file", help="JSON file with the properties.")
@json_option
@pass_ctx
def add(ctx: Context, dataset_id: str, payload_file: str, properties_file: str | None, as_json: bool) -> None:
    """Create a record offline (it gets its server id on sync)."""
    from .edits import add_record

    payload = _read_json_file(payload_file, "payload file")
    properties = _read_json_file(properties_file, "properties file") if properties_file else {}
    rid = add_record(ctx.store, dataset_id, payload, properties)
    if as_json:
        emit_json({"id": rid})
    else:
        click.echo(rid)


@cli.command()
@click.argument("record_id")
@pass_ctx
def revert(ctx: Context, record_id: str) -> None:
    """Drop a record's local changes and restore what the server has."""
    from .edits import revert as revert_record

    click.echo(f"reverted {revert_record(ctx.store, record_id)}")


# ------------------------------------------------------------------ inspect


@cli.command()
@json_option
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Pending changes, conflicts, rejected changes and the last sync."""
    from .views import status as store_status

    st = store_status(ctx.store)
    if as_json:
        emit_json(st.to_dict())
        return
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(st.pending_records.items()))
    click.echo(f"{st.records} records in {st.tracked_datasets} tracked dataset(s)")
    click.echo(f"{st.pending} pending" + (f" ({kinds})" if kinds else ""))
    click.echo(f"{st.conflicts} conflict(s), {st.rejected} rejected change(s)")
    click.echo(f"last sync: {st.last_sync or 'never'}")


@cli.command()
@click.argument("record_id", required=False)
@pass_ctx
def diff(ctx: Context, record_id: str | None) -> None:
    """Unified diff of the remote base vs your local version."""
    from .views import diff as store_diff

    text = store_diff(ctx.store, record_id)
    click.echo(text, nl=False) if text else click.echo("no local changes")


@cli.command()
@click.option("--record", "record_id", help="Only this record.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True)
@json_option
@pass_ctx
def log(ctx: Context, record_id: str | None, limit: int, as_json: bool) -> None:
    """The change log, newest first."""
    from .views import change_log

    rows = change_log(ctx.store, record_id=record_id, limit=limit)
    emit_rows(rows, ["id", "created_at", "record_id", "kind", "state", "error"], as_json=as_json)


# ------------------------------------------------------------------ sync


@cli.command()
@click.option("--dry-run", is_flag=True, help="Show what would be pushed and what conflicts, change nothing.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(1, 32))
@json_option
@pass_ctx
def sync(ctx: Context, dry_run: bool, concurrency: int, as_json: bool) -> int:
    """Push queued edits, then pull. Exit 0 clean, 3 when conflicts remain, 1 on error."""
    from .sync import sync as run_sync

    with ctx.client() as client, progress_bar(None if not as_json else False) as progress:
        report = run_sync(ctx.store, client, dry_run=dry_run, concurrency=concurrency, progress=progress)
    if as_json:
        emit_json(report.to_dict())
        return report.exit_code
    if dry_run:
        planned = ", ".join(f"{n} {k}" for k, n in sorted(report.planned.items())) or "nothing"
        click.echo(f"would do: {planned}")
    else:
        click.echo(
            f"pushed {report.pushed} (created {report.created}, updated {report.updated}, "
            f"deleted {report.deleted}), pulled {report.pulled}, rejected {report.rejected}"
        )
    if report.open_conflicts:
        click.echo(f"{report.open_conflicts} conflict(s): `localstore conflicts` shows them, `localstore resolve` settles them")
    for error in report.errors:
        click.echo(f"localstore: error: {error}", err=True)
    if report.errors:
        click.echo(f"{report.pending} change(s) stay pending; run sync again", err=True)
    return report.exit_code


@cli.command()
@json_option
@pass_ctx
def conflicts(ctx: Context, as_json: bool) -> None:
    """Open conflicts with base, local and remote."""
    from .views import conflict_list

    rows = conflict_list(ctx.store)
    emit_rows(rows, ["record_id", "parts", "detected_at"], as_json=as_json)


@cli.command()
@click.argument("record_id")
@click.option("--ours", is_flag=True, help="Keep the local values, rebased on the remote.")
@click.option("--theirs", is_flag=True, help="Drop the local side, take the remote.")
@click.option("--file", "merged_file", help="Take a merged JSON {\"payload\":…, \"properties\":…}.")
@pass_ctx
def resolve(ctx: Context, record_id: str, ours: bool, theirs: bool, merged_file: str | None) -> None:
    """Settle a conflict."""
    from .resolve import resolve as resolve_conflict

    if ours + theirs + (merged_file is not None) != 1:
        raise UsageError("give exactly one of --ours, --theirs or --file F")
    choice = "ours" if ours else "theirs" if theirs else "file"
    merged = _read_json_file(merged_file, "merged file") if merged_file else None
    rid = resolve_conflict(ctx.store, record_id, choice, merged)  # type: ignore[arg-type]
    click.echo(f"resolved {rid}; `localstore sync` pushes the result")


# ------------------------------------------------------------------ sql


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of row objects.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV.")
@click.option("--write", is_flag=True, help="Allow the query to change the store.")
@pass_ctx
def sql(ctx: Context, query: str, as_json: bool, as_csv: bool, write: bool) -> None:
    """Run one SQL statement on the store (read-only unless --write)."""
    from .views import run_sql

    if as_json and as_csv:
        raise UsageError("give --json or --csv, not both")
    result = run_sql(ctx.store, query, write=write)
    if as_json:
        emit_json_rows(result.as_dicts())
    elif as_csv:
        emit_csv(result.columns, result.rows)
    elif result.columns:
        emit_table(result.columns, result.rows)


# ------------------------------------------------------------------ emulator & demo


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--db", "emulator_db", type=click.Path(dir_okay=False), help="Persist the emulator's data in this SQLite file.")
@click.option("--latency-ms", default=0.0, show_default=True, type=click.FloatRange(0))
@click.option("--fail-rate", default=0.0, show_default=True, type=click.FloatRange(0, 1))
@click.option("--seed-records", default=0, show_default=True, type=click.IntRange(0), help="Create a dataset of N generated records at start.")
def emulator(host: str, port: int, emulator_db: str | None, latency_ms: float, fail_rate: float, seed_records: int) -> None:
    """Run the bundled API emulator (for demos and tests; any bearer key is accepted)."""
    from .emulator import serve

    serve(host, port, emulator_db, latency_ms, fail_rate, seed_records)


@cli.command()
@pass_ctx
def demo(ctx: Context) -> None:
    """The whole loop on an embedded emulator: no key, no network."""
    from .demo import run_demo

    run_demo(ctx.db)


# ------------------------------------------------------------------ command modules

from .cli_browse import browse, search  # noqa: E402
from .cli_files import checkout, watch  # noqa: E402
from .cli_judge import judge  # noqa: E402

cli.add_command(checkout)
cli.add_command(watch)
cli.add_command(judge)
cli.add_command(search)
cli.add_command(browse)


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors print one line and exit non-zero, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="localstore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("localstore: aborted", err=True)
        code = 1
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
    sys.exit(code if isinstance(code, int) else 0)
