"""Commands that queue local edits: `edit`, `set`, `unset`, `rm`, `add`, `revert`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from localstore.cli.ids import DATASET_ID, RECORD_ID
from localstore.cli.output import (
    emit_json,
    json_option,
)
from localstore.errors import UsageError

if TYPE_CHECKING:
    pass


from localstore.cli.context import Context, pass_ctx, read_json_file, read_text_file

# ------------------------------------------------------------------ edits


@click.command()
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
        result = set_payload(ctx.store, record_id, read_json_file(payload_file, "payload file"))
    elif record_file is not None:
        from localstore.cli.editbuffer import apply_buffer

        text = read_text_file(record_file, "record file")
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


@click.command(name="set")
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


@click.command()
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


@click.command()
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


@click.command()
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

    payload = read_json_file(payload_file, "payload file")
    properties = read_json_file(properties_file, "properties file") if properties_file else {}
    rid = add_record(ctx.store, dataset_id, payload, properties)
    if as_json:
        emit_json({"id": rid})
    else:
        click.echo(rid)


@click.command()
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


COMMANDS = [edit, set_, unset, rm, add, revert]
