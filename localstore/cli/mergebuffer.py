"""`localstore resolve ID --edit`: the conflict opens in $EDITOR as one merged record,
``{"payload": …, "properties": …}``, where everything that merged cleanly is merged and
each conflicting part shows all three versions between git's diff3 markers:

    <<<<<<< ours: your version
        "label": "reviewed",
    ||||||| base: the server's when you edited
        "label": "draft",
    =======
        "label": "spam",
    >>>>>>> theirs: the server's now

Keep one version of each (or write another), delete the marker lines, save: that is
``resolve --file``. Lines starting with ``#`` are comments, and a comma before a
closing ``}`` or ``]`` is forgiven (a kept section may end in one). A buffer that cannot
be used is never lost: it is kept in a file whose path the error names, and
``localstore resolve ID --file PATH`` takes it once fixed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from localstore.cli.editbuffer import keep_buffer
from localstore.core.jsonvalue import pretty
from localstore.core.merge import MISSING, PAYLOAD, property_key, property_part
from localstore.errors import LocalstoreError, UsageError
from localstore.ops.edits import parse_json_object_text
from localstore.ops.queries import conflict_list
from localstore.ops.resolve import Resolution, resolve_conflict
from localstore.store.db import Store

MARKERS = ("<<<<<<<", "|||||||", "=======", ">>>>>>>")
_TRAILING_COMMA = re.compile(r'"(?:[^"\\]|\\.)*"|,(?=\s*[}\]])')


def parse_merged(text: str, what: str) -> dict[str, Any]:
    """The merged ``{"payload", "properties"}`` from an edited buffer or a file: comment
    lines dropped, no conflict marker left, trailing commas forgiven."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for number, line in enumerate(lines, 1):
        if line.startswith(MARKERS):
            raise UsageError(
                f"{what} still has conflict markers ({line.split()[0]} on line {number} without comments): "
                "keep one version of each conflicting part and delete the marker lines"
            )
    cleaned = _TRAILING_COMMA.sub(lambda m: "" if m.group(0) == "," else m.group(0), "\n".join(lines))
    return parse_json_object_text(cleaned, what)


def merged_buffer(conflict: dict[str, Any]) -> str:
    """The text `resolve --edit` opens for one row of views.conflict_list."""
    rid, parts = conflict["record_id"], conflict["parts"]
    base, local, remote = conflict["base"], conflict["local"], conflict["remote"]
    head = [
        f"# Resolving record {rid}: conflicting {', '.join(parts)}.",
        "# Lines starting with # are ignored. Save and quit to resolve; quit without saving to cancel.",
    ]
    if local is None or remote is None or parts == ["create-unconfirmed"]:
        survivor = local if remote is None or parts == ["create-unconfirmed"] else remote
        assert survivor is not None
        why = {
            "create-unconfirmed": "this record was created here and its answer was lost: saving sends this "
                                  "version again (a copy may already be on the server)",
            "edit-vs-delete": "the server deleted this record: saving re-creates it with this content",
            "delete-vs-edit": "you deleted this record and the server changed it: saving keeps it with this content",
        }.get(parts[0], "saving keeps this content")
        body = pretty({"payload": survivor["payload"], "properties": survivor["properties"]})
        return "\n".join([*head, f"# {why}.", ""]) + body
    head.append("# Each conflicting part shows ours, base and theirs between markers: keep one, delete the markers.")
    labels = ("ours: your version", f"base: the server's when you edited ({base.get('updated_at')})",
              f"theirs: the server's now ({remote.get('updated_at')})")
    sides = (local, base, remote)
    merged = _merged(base, local, remote, parts)
    out = ["{"]
    members = [("payload", merged["payload"]), ("properties", merged["properties"])]
    for index, (name, value) in enumerate(members):
        last = index == len(members) - 1
        if name == "payload" and PAYLOAD in parts:
            out.extend(_block(labels, [_member("payload", s["payload"], 1) for s in sides]))
        elif name == "properties":
            out.append('  "properties": {')
            keys = sorted(set(value) | {k for p in parts if (k := property_key(p)) is not None})
            for n, key in enumerate(keys):
                if property_part(key) in parts:
                    out.extend(_block(labels, [_member(key, s["properties"].get(key, MISSING), 2) for s in sides]))
                else:
                    out.append(_member(key, value[key], 2) + ("" if n == len(keys) - 1 else ","))
            out.append("  }" + ("" if last else ","))
        else:
            out.append(_member(name, value, 1) + ("" if last else ","))
    return "\n".join([*head, "", *out, "}"]) + "\n"


def _merged(base: dict[str, Any], local: dict[str, Any], remote: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """Ours rebased on theirs: what merged cleanly merged, conflicting parts ours."""
    from localstore.core.merge import Content, rebase_local

    content = rebase_local(Content(base["payload"], base["properties"]), Content(local["payload"], local["properties"]),
                           Content(remote["payload"], remote["properties"]))
    return {"payload": content.payload, "properties": content.properties}


def _member(key: str, value: Any, depth: int) -> str:
    """``"key": value,`` as pretty JSON at ``depth`` (empty when the value is absent):
    inside a conflict block every member ends in a comma, forgiven where it is last."""
    if value is MISSING:
        return ""
    indent = "  " * depth
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True).replace("\n", "\n" + indent)
    return f"{indent}{json.dumps(key, ensure_ascii=False)}: {text}"


def _block(labels: tuple[str, str, str], versions: list[str]) -> list[str]:
    ours, base, theirs = (v + "," if v else "" for v in versions)
    lines = [f"{MARKERS[0]} {labels[0]}", ours, f"{MARKERS[1]} {labels[1]}", base, MARKERS[2], theirs,
             f"{MARKERS[3]} {labels[2]}"]
    return [line for line in lines if line]


def resolve_in_editor(store: Store, record_id: str, *, editor: str | None = None) -> Resolution | None:
    """Open the conflict of ``record_id`` in $EDITOR and resolve it with what is saved.
    None when the buffer was not saved (nothing changes); a buffer that cannot be used
    raises UsageError naming the file that keeps it."""
    import click

    from localstore.ops.edits import resolve_record_id

    rid = resolve_record_id(store.conn, record_id)
    conflict = next((c for c in conflict_list(store) if c["record_id"] == rid), None)
    if conflict is None:
        raise UsageError(f"record {rid} has no open conflict; `localstore conflicts` lists them")
    text = merged_buffer(conflict)
    after = click.edit(text, editor=editor, extension=".json", require_save=True)
    if after is None:
        return None
    try:
        return resolve_conflict(store, rid, "file", parse_merged(after, "the merged record"))
    except LocalstoreError as exc:
        try:
            kept = keep_buffer(after, rid)
        except OSError as keep_error:
            raise UsageError(f"{exc}; nothing was resolved, and your merge could not be kept "
                             f"({keep_error.strerror or keep_error}): check TMPDIR") from None
        raise UsageError(f"{exc}; nothing was resolved. Your merge is kept in {kept}: fix it, then "
                         f"`localstore resolve {rid} --file {kept}`") from None
