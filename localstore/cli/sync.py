"""Where the store stands and how it meets the server: `status`, `diff`, `log`, `sync`,
`conflicts`, `resolve`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from localstore.cli.ids import RECORD_ID
from localstore.cli.output import (
    emit_json,
    emit_listing,
    json_option,
    listing_options,
    progress_bar,
    stdout_is_terminal,
)
from localstore.errors import Interrupted, UsageError

if TYPE_CHECKING:
    from localstore.sync.run import SyncReport


from localstore.cli.context import Context, pass_ctx, read_text_file

# ------------------------------------------------------------------ inspect


@click.command()
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


@click.command()
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


@click.command()
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


@click.command()
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
            ctx.work_is_done()
    except Interrupted as exc:
        report = exc.done
        ctx.work_is_done()
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


@click.command()
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


@click.command()
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
        merged = parse_merged(read_text_file(merged_file, "merged file"), f"merged file {merged_file}") \
            if merged_file else None
        done = resolve_conflict(ctx.store, record_id, choice, merged, parts)  # type: ignore[arg-type]
    say_resolution(done)


COMMANDS = [status, diff, log, sync, conflicts, resolve]
