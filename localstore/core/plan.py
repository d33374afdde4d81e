"""Sync planning: a pure function of (local work, remote state) -> actions. No I/O.

The push rule: local work goes out as it is only when the record's remote
``updated_at`` still equals the one the edit was made against (and its content the base). Otherwise the record is
merged 3-way (localstore.core.merge): a clean merge is pushed with no question asked, a
conflicting one becomes a Conflict. Only the parts that differ from the remote are sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from localstore.core.jsonvalue import json_equal
from localstore.core.merge import Content, MergeResult, merge

WorkKind = Literal["create", "edit", "delete"]


@dataclass(frozen=True)
class LocalWork:
    """A record with pending local changes, as read from the store in one snapshot.

    ``payload`` / ``properties`` hold the local value of a part edited locally (None:
    unedited). For creates both are set and ``base`` is None. ``change_ids`` are the
    pending change-log entries this work covers."""

    record_id: str
    dataset_id: str
    kind: WorkKind
    payload: dict[str, Any] | None
    properties: dict[str, Any] | None
    base: Content | None
    base_updated_at: str | None
    change_ids: tuple[int, ...]

    def local_content(self) -> Content | None:
        if self.kind == "delete":
            return None
        if self.base is None:
            assert self.payload is not None and self.properties is not None
            return Content(self.payload, self.properties)
        return Content(
            self.base.payload if self.payload is None else self.payload,
            self.base.properties if self.properties is None else self.properties,
        )


@dataclass(frozen=True)
class Remote:
    """A record as the server holds it now."""

    updated_at: str
    content: Content


@dataclass(frozen=True)
class Create:
    work: LocalWork


@dataclass(frozen=True)
class Push:
    """PUT the parts that are not None. ``merged`` tells whether a 3-way merge made them;
    ``remote`` is the state they were planned against."""

    work: LocalWork
    payload: dict[str, Any] | None
    properties: dict[str, Any] | None
    merged: bool
    remote: Remote | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Delete:
    work: LocalWork


@dataclass(frozen=True)
class Settle:
    """The server already holds what the local work wants: nothing to send."""

    work: LocalWork
    remote_gone: bool


@dataclass(frozen=True)
class Conflict:
    work: LocalWork
    parts: tuple[str, ...]


Action = Create | Push | Delete | Settle | Conflict


def plan_record(work: LocalWork, remote: Remote | None) -> Action:
    """Decide what to do with one record. ``remote`` None: gone from the server."""
    if work.kind == "create":
        return Create(work)
    assert work.base is not None, "an edit or delete always has a base"
    local = work.local_content()
    merged_by_merge = False
    if (
        remote is not None
        and remote.updated_at == work.base_updated_at
        and remote.content.same_as(work.base)
    ):
        # The push rule. Content is compared too: a server whose clock is coarser than
        # its writes could show an equal updated_at for a changed record.
        result = MergeResult(local)
    else:
        result = merge(work.base, local, None if remote is None else remote.content)
        merged_by_merge = True
        if not result.clean:
            return Conflict(work, result.conflicts)
    if result.content is None:
        return Settle(work, remote_gone=True) if remote is None else Delete(work)
    assert remote is not None, "a clean merge with the remote gone is a delete"
    payload = None if json_equal(result.content.payload, remote.content.payload) else result.content.payload
    properties = (
        None
        if json_equal(result.content.properties, remote.content.properties)
        else result.content.properties
    )
    if payload is None and properties is None:
        return Settle(work, remote_gone=False)
    return Push(work, payload, properties, merged=merged_by_merge, remote=remote)


def plan(works: Iterable[LocalWork], remotes: Mapping[str, Remote | None]) -> list[Action]:
    """Plan every record. ``remotes`` must hold an entry (possibly None) for every
    non-create record: the caller fetched or listed them just before."""
    return [
        plan_record(work, None if work.kind == "create" else remotes[work.record_id])
        for work in works
    ]
