"""`localstore edit` in $EDITOR: the record opens as ``{"payload": …, "properties": …}``;
what changed is queued. A buffer that cannot be queued (invalid JSON, a wrong shape, a
record that changed state meanwhile) is never lost: it is kept in a file whose path the
error names, and ``localstore edit RECORD_ID --file PATH`` queues it once fixed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from localstore.core.jsonvalue import pretty
from localstore.errors import LocalstoreError, UsageError
from localstore.ops.edits import EditResult, edit_record, parse_json_object_text, validate_object
from localstore.ops.queries import get_record
from localstore.store.db import Store


def parse_buffer(text: str, what: str) -> dict[str, Any]:
    """``{"payload": {…}, "properties": {…}}`` from an edited buffer or a file."""
    edited = parse_json_object_text(text, what)
    if set(edited) != {"payload", "properties"}:
        raise UsageError(f'{what} must hold exactly "payload" and "properties"')
    for part in ("payload", "properties"):
        validate_object(edited[part], f'{what}\'s "{part}"')
    return edited


def apply_buffer(store: Store, record_id: str, text: str, what: str) -> EditResult:
    edited = parse_buffer(text, what)
    return edit_record(store, record_id, payload=edited["payload"], properties=edited["properties"])


def keep_buffer(text: str, record_id: str, directory: str | None = None) -> Path:
    """Write ``text`` to a new private file (0600) and return its path."""
    fd, name = tempfile.mkstemp(prefix=f"localstore-edit-{record_id[:8]}-", suffix=".json", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(name)


def edit_in_editor(store: Store, record_id: str, *, editor: str | None = None) -> EditResult:
    """Open the record in $EDITOR (click.edit) and queue what changed. An unchanged
    buffer queues nothing; one that cannot be queued raises UsageError naming the file
    that keeps it."""
    import click

    record = get_record(store, record_id)
    rid = record["id"]
    edit_record(store, rid)  # nothing to change: raises now if the record cannot be edited
    before = pretty({"payload": record["payload"], "properties": record["properties"]})
    after = click.edit(before, editor=editor, extension=".json", require_save=True)
    if after is None or after == before:
        return EditResult(rid, ())
    try:
        return apply_buffer(store, rid, after, "the edited record")
    except LocalstoreError as exc:
        try:
            kept = keep_buffer(after, rid)
        except OSError as keep_error:
            raise UsageError(
                f"{exc}; nothing was queued, and your edit could not be kept "
                f"({keep_error.strerror or keep_error}): check TMPDIR"
            ) from None
        raise UsageError(
            f"{exc}; nothing was queued. Your edit is kept in {kept}: fix it, then "
            f"`localstore edit {rid} --file {kept}`"
        ) from None
