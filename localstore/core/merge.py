"""The 3-way merge of a record: pure functions of (base, local, remote), no I/O.

The payload is one value; properties merge key by key. A side "changed" a value when
it differs from the base as JSON. A value changed on one side takes that side; changed
on both sides to the same value is no conflict; changed on both to different values is.
A local delete against a remote edit, and a local edit against a remote delete, are
conflicts; delete against delete is done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from localstore.core.jsonvalue import json_equal

# Conflict part names are JSON Pointers (RFC 6901) into {"payload": …, "properties": …},
# so any key names exactly one part: "/properties/a.b", "/properties/a~1b" (key "a/b"),
# "/properties/" (the empty key). A whole-record conflict has a name of its own.
PAYLOAD = "/payload"
PROPERTIES_PREFIX = "/properties/"
DELETE_VS_EDIT = "delete-vs-edit"  # deleted here, edited on the server
EDIT_VS_DELETE = "edit-vs-delete"  # edited here, deleted on the server


def property_part(key: str) -> str:
    """The part name of a property key: ``/properties/<key>`` with ``~`` and ``/`` escaped."""
    return PROPERTIES_PREFIX + key.replace("~", "~0").replace("/", "~1")


def property_key(part: str) -> str | None:
    """The property key a part name points at, or None when it names no property."""
    if not part.startswith(PROPERTIES_PREFIX):
        return None
    token = part[len(PROPERTIES_PREFIX) :]
    if "/" in token or re.search(r"~(?![01])", token):
        return None
    return token.replace("~1", "/").replace("~0", "~")


class _Missing:
    """A property key that is absent on one side."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Content:
    """What a record holds: the parts that sync pushes and merges."""

    payload: dict[str, Any]
    properties: dict[str, Any]

    def same_as(self, other: Content) -> bool:
        return json_equal(self.payload, other.payload) and json_equal(
            self.properties, other.properties
        )


@dataclass(frozen=True)
class MergeResult:
    """``content`` is the merged record (None: deleted); ``conflicts`` names the parts
    that changed on both sides to different values. Content is None when conflicting."""

    content: Content | None
    conflicts: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not self.conflicts


def _same(a: Any, b: Any) -> bool:
    if a is MISSING or b is MISSING:
        return a is b
    return json_equal(a, b)


def merge_value(base: Any, local: Any, remote: Any) -> tuple[Any, bool]:
    """Merge one value; returns (merged, conflicting). MISSING is a value like any other."""
    if _same(local, remote) or _same(remote, base):
        return local, False
    if _same(local, base):
        return remote, False
    return None, True


def merge_properties(
    base: dict[str, Any],
    local: dict[str, Any],
    remote: dict[str, Any],
    *,
    prefer_local: bool = False,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Per-key merge. Returns the merged map and the conflicting keys (sorted). With
    ``prefer_local`` a conflicting key takes the local value and is still reported."""
    merged: dict[str, Any] = {}
    conflicts: list[str] = []
    for key in sorted(base.keys() | local.keys() | remote.keys()):
        value, conflicting = merge_value(
            base.get(key, MISSING), local.get(key, MISSING), remote.get(key, MISSING)
        )
        if conflicting and prefer_local:
            value = local.get(key, MISSING)
            if value is not MISSING:
                merged[key] = value
        if conflicting:
            conflicts.append(key)
        elif value is not MISSING:
            merged[key] = value
    return merged, tuple(conflicts)


def merge(base: Content, local: Content | None, remote: Content | None) -> MergeResult:
    """Merge a record edited locally (``local``; None = deleted locally) with its
    current remote state (``remote``; None = deleted remotely) against ``base``."""
    if local is None and remote is None:
        return MergeResult(None)
    if local is None:
        assert remote is not None
        if remote.same_as(base):
            return MergeResult(None)
        return MergeResult(None, (DELETE_VS_EDIT,))
    if remote is None:
        if local.same_as(base):
            return MergeResult(None)
        return MergeResult(None, (EDIT_VS_DELETE,))

    payload, payload_conflict = merge_value(base.payload, local.payload, remote.payload)
    properties, key_conflicts = merge_properties(base.properties, local.properties, remote.properties)
    conflicts = ((PAYLOAD,) if payload_conflict else ()) + tuple(
        property_part(key) for key in key_conflicts
    )
    if conflicts:
        return MergeResult(None, conflicts)
    return MergeResult(Content(payload, properties))


def rebase_local(base: Content, local: Content, remote: Content) -> Content:
    """``resolve --ours``: the local side rebased on the remote — everything that merges
    cleanly merges, and every conflicting part takes the local value."""
    payload, payload_conflict = merge_value(base.payload, local.payload, remote.payload)
    properties, _ = merge_properties(
        base.properties, local.properties, remote.properties, prefer_local=True
    )
    return Content(local.payload if payload_conflict else payload, properties)
