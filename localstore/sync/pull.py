"""Pull: mirror the server's records into the store — the one listing pipeline that
``pull`` and ``sync`` share.

Pages are written into the mirror as they arrive, a batch at a time in short
transactions (memory stays flat, other processes can edit meanwhile, and the writing
overlaps the next pages' requests): new records and records whose content changed —
compared on every pull, not just by ``updated_at`` (two writes in one millisecond share
it) — with their full-text rows, indexed in bulk. Working copies are never touched by a
pull. Nothing is removed until the whole listing is read.

The API pages by offset, so a record deleted on an early page while later pages are
read shifts the rest: **absence from a listing proves nothing**. A mirrored record the
listing did not show is looked up with a GET; only a 404 (or ``deleted_at``) removes it.
A create whose answer was lost is recognised in a listing (adopted); it is declared
never-landed only when two complete listings in a row agree and neither holds it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localstore.core.ids import parse_uuid
from localstore.core.jsonvalue import json_equal
from localstore.core.timestamps import now_ts
from localstore.errors import ApiError, Interrupted, NotFoundError, ProtocolError, UsageError
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.jsontext import canonical
from localstore.store.mirror import MIRROR_UPSERT, upsert_mirror_rows
from localstore.sync.bounded import bounded

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.core.record import Record

Progress = Callable[[str, int, int | None], None]
OnPage = Callable[[list["Record"]], None]
WRITE_BATCH = 1000  # records per transaction while a listing is written
PAGE_SIZE = 100


@dataclass
class PullResult:
    dataset_id: str
    records: int = 0
    removed: int = 0
    conflicts: int = 0
    adopted: int = 0
    complete: bool = True
    gone: bool = False  # the dataset itself no longer exists on the server
    problems: list[str] = field(default_factory=list)  # how the listing did not add up
    errors: list[str] = field(default_factory=list)  # what could not be confirmed


@dataclass
class Listed:
    """What a whole listing of one dataset did to the mirror (its ids stay in
    ``temp.seen`` until the next listing): the mirrored records it did not show, to be
    looked up, and the creates it recognised (provisional id -> the server's record)."""

    dataset_id: str
    count: int
    complete: bool
    problems: list[str]
    records: int = 0
    removed: int = 0
    conflicts: int = 0
    missing: list[str] = field(default_factory=list)
    adopted: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------ writing a listing


class MirrorWriter:
    """Writes one dataset's listing into the mirror, batch by batch. Records in
    ``exclude`` (a live collection: sync adds the records it writes to) keep their row."""

    def __init__(
        self, store: Store, dataset_id: str, *, dataset: Any = None,
        exclude: Collection[str] = (), write: bool = True,
    ) -> None:
        self.store = store
        self.conn = store.conn
        self.dataset_id = dataset_id
        self.dataset = dataset
        self.exclude = exclude
        self.write = write
        self.started = False
        self.batch: list[Record] = []
        self.seen = 0
        self.removed = self.conflicts = 0
        self.adopted: dict[str, Any] = {}
        self.unmatched_new = False
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.seen")
        self.creating = write and bool(ledger.creates_in_flight(conn, dataset_id))

    def add(self, records: Iterable[Record]) -> None:
        self.batch.extend(records)
        if len(self.batch) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        self.seen += len(batch)
        if not batch or not self.write:
            return
        with self.store.transaction() as conn:
            if not self.started:
                self.started = True
                if self.dataset is not None:
                    self.store.upsert_dataset(self.dataset, tracked=True)
                self.store.ensure_dataset(self.dataset_id)
            conn.executemany("INSERT OR IGNORE INTO temp.seen (id) VALUES (?)", [(r.id,) for r in batch])
            if self.creating:
                self._adopt(conn, batch)
            rows, text_changed, gone = self._changed(conn, batch)
            # the full-text index catches up on these when it is next read, in bulk
            conn.execute("UPDATE search_state SET deferred = 1")
            conn.executemany(MIRROR_UPSERT, rows)
            conn.execute("UPDATE search_state SET deferred = 0")
            conn.executemany("INSERT OR IGNORE INTO search_dirty (record_id) VALUES (?)",
                             [(r.id,) for r in text_changed])
            for rid in gone:
                outcome = ledger.remote_gone(conn, rid)
                self.removed += outcome == "removed"
                self.conflicts += outcome == "conflict"

    def _changed(
        self, conn: sqlite3.Connection, batch: list[Record]
    ) -> tuple[list[tuple[Any, ...]], list[Record], list[str]]:
        """Rows to write (new, or differing from the mirror), the records among them whose
        text may have changed, and the ids listed as deleted."""
        known = {
            row[0]: row[1:]
            for row in conn.execute(
                f"""SELECT id, updated_at, deleted_at, payload, properties FROM mirror
                    WHERE id IN ({','.join('?' * len(batch))})""",
                [r.id for r in batch],
            )
        }
        rows, text_changed, gone = [], [], []
        for r in batch:
            if r.id in self.exclude:
                continue
            if r.deleted_at is not None:
                gone.append(r.id)
                continue
            payload, properties = canonical(r.payload), canonical(r.properties)
            mirrored = known.get(r.id)
            changed_text = mirrored is None or mirrored[1] is not None or mirrored[2] != payload
            if changed_text or mirrored[0] != r.updated_at or mirrored[3] != properties:  # type: ignore[index]
                rows.append((r.id, r.dataset_id, r.created_at, r.updated_at, None, r.source,
                             payload, properties))
                if changed_text:
                    text_changed.append(r)
        return rows, text_changed, gone

    def _adopt(self, conn: sqlite3.Connection, batch: list[Record]) -> None:
        """Creates left in flight (their answer lost): a listed record this store has
        never seen, with exactly the body that was POSTed, is that create."""
        ids = [r.id for r in batch]
        marks = ",".join("?" * len(ids))
        seen_before = {
            row[0] for row in conn.execute(
                f"""SELECT id FROM mirror WHERE id IN ({marks})
                    UNION SELECT server_id FROM id_map WHERE server_id IN ({marks})""",
                ids + ids,
            )
        }
        new = sorted((r for r in batch if r.id not in seen_before and r.deleted_at is None),
                     key=lambda r: (r.created_at, r.id))
        for record in new:
            for rid, body in ledger.creates_in_flight(conn, self.dataset_id):
                if json_equal(record.payload, body["payload"]) and json_equal(
                    record.properties, body.get("properties") or {}
                ):
                    ledger.create_landed(conn, rid, record)
                    self.adopted[rid] = record
                    break
            else:
                self.unmatched_new = True

    def finish(self, listing: Any) -> Listed:
        """After the last page: which mirrored records the listing did not show."""
        self.flush()
        listed = Listed(self.dataset_id, listing.count, listing.complete, list(listing.problems),
                        records=self.seen, removed=self.removed, conflicts=self.conflicts,
                        adopted=self.adopted)
        if not self.write:
            return listed
        with self.store.transaction() as conn:
            if not self.started and self.dataset is not None:
                self.store.upsert_dataset(self.dataset, tracked=True)
            self.store.ensure_dataset(self.dataset_id)
            distinct = conn.execute("SELECT count(*) FROM temp.seen").fetchone()[0]
            if distinct != listing.count:
                listed.complete = False
                listed.problems.append(f"saw {distinct} distinct records, count is {listing.count}")
            if self.creating and self.unmatched_new:
                # new records, none exactly what was POSTed: one may be a create of ours
                # that someone changed since; once mirrored it is never a candidate again
                for rid, _ in ledger.creates_in_flight(conn, self.dataset_id, undecided_only=True):
                    ledger.create_unconfirmed(conn, rid)
            listed.missing = [
                r[0]
                for r in conn.execute(
                    """SELECT id FROM mirror AS m WHERE m.dataset_id = ? AND m.deleted_at IS NULL
                       AND NOT EXISTS (SELECT 1 FROM temp.seen AS s WHERE s.id = m.id)""",
                    (self.dataset_id,),
                )
                if r[0] not in self.exclude
            ]
            conn.execute("UPDATE datasets SET last_pulled_at = ? WHERE id = ?", (now_ts(), self.dataset_id))
        return listed


def list_dataset(
    store: Store,
    client: Client,
    dataset_id: str,
    *,
    concurrency: int = 16,
    progress: Progress | None = None,
    on_page: OnPage | None = None,
    label: str = "pull",
    dataset: Any = None,
    exclude: Collection[str] = (),
    write: bool = True,
) -> Listed:
    """List every page of a dataset into the mirror; ``on_page`` sees each page's records
    as it arrives, before they are written (sync plans pending records from it). A 404
    here means the dataset is gone (NotFoundError). ``dataset`` (metadata from the
    server) is recorded and tracked with the first batch written."""
    writer = MirrorWriter(store, dataset_id, dataset=dataset, exclude=exclude, write=write)
    pages = client.iter_record_pages(dataset_id, page_size=PAGE_SIZE, concurrency=concurrency, track_ids=False)
    seen = 0
    try:
        for page in pages:
            if on_page is not None:
                on_page(page.records)
            writer.add(page.records)
            seen += len(page.records)
            if progress:
                progress(f"{label} {dataset_id[:8]}", seen, page.count)
    finally:
        pages.close()
    listing = pages.listing
    assert listing is not None
    return writer.finish(listing)


# ------------------------------------------------------------------ confirmation


def get_many(
    client: Client, record_ids: Sequence[str], concurrency: int
) -> tuple[dict[str, Record | None], dict[str, ApiError]]:
    """GET records concurrently: (id -> record, or None on a 404; id -> the error of
    each GET that failed otherwise)."""
    found: dict[str, Record | None] = {}
    failed: dict[str, ApiError] = {}

    def get(rid: str) -> tuple[str, Record | None, ApiError | None]:
        try:
            return rid, get_record_checked(client, rid), None
        except NotFoundError:
            return rid, None, None
        except ApiError as exc:
            return rid, None, exc

    with closing(bounded(get, record_ids, concurrency)) as results:  # Ctrl-C: none started after
        for rid, record, error in results:
            if error is None:
                found[rid] = record
            else:
                failed[rid] = error
    return found, failed


def lookup_errors(failed: dict[str, ApiError]) -> list[str]:
    if not failed:
        return []
    rid, error = next(iter(failed.items()))
    more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
    return [f"could not look up record {rid}{more}, so it stays as it was: {error}"]


def confirm_missing(
    store: Store, client: Client, record_ids: Sequence[str], *, concurrency: int = 16
) -> tuple[int, int, list[str]]:
    """Mirrored records a listing did not show: a GET tells. Returns (removed,
    conflicts, problems); a record that could not be looked up stays as it is."""
    if not record_ids:
        return 0, 0, []
    found, failed = get_many(client, record_ids, concurrency)
    removed = conflicts = 0
    with store.transaction() as conn:
        live = [r for r in found.values() if r is not None]
        for record in live:
            store.ensure_dataset(record.dataset_id)
        upsert_mirror_rows(conn, live)
        for rid, looked_up in found.items():
            if looked_up is None or looked_up.deleted_at is not None:
                outcome = ledger.remote_gone(conn, rid)
                removed += outcome == "removed"
                conflicts += outcome == "conflict"
    return removed, conflicts, lookup_errors(failed)


def dataset_gone(store: Store, client: Client, dataset_id: str) -> bool:
    """After a 404 listing a dataset: confirm with a GET of the dataset, then let the
    ledger settle its records. Returns False when the dataset is there after all."""
    try:
        client.get_dataset(dataset_id)
    except NotFoundError:
        with store.transaction() as conn:
            ledger.dataset_gone(conn, dataset_id)
        return True
    return False


def confirm_creates(
    store: Store,
    client: Client,
    dataset_id: str,
    first: Listed,
    *,
    concurrency: int = 16,
    exclude: Collection[str] = (),
    deleted_meanwhile: Iterable[str] = (),
) -> tuple[int, list[str]]:
    """Creates of this dataset still in flight after a listing (its ids are in
    temp.seen): list again; when both listings are complete and hold the same records
    (but those the caller deleted in between), and neither holds the create, it never
    landed and becomes a pending create again. Returns (adopted, problems)."""
    conn = store.conn
    if not ledger.creates_in_flight(conn, dataset_id, undecided_only=True):
        return 0, []
    if not first.complete:
        return 0, [_unconfirmed(store, dataset_id, "its listing did not add up")]
    conn.execute("DROP TABLE IF EXISTS temp.seen_first")
    conn.execute("CREATE TEMP TABLE seen_first AS SELECT id FROM temp.seen")
    conn.execute("DELETE FROM temp.seen_first WHERE id IN (SELECT value FROM json_each(?))",
                 (canonical(list(deleted_meanwhile)),))
    second = list_dataset(store, client, dataset_id, concurrency=concurrency, label="check", exclude=exclude)
    if not ledger.creates_in_flight(conn, dataset_id, undecided_only=True):
        return len(second.adopted), []
    differ = conn.execute(
        """SELECT EXISTS (SELECT id FROM temp.seen EXCEPT SELECT id FROM temp.seen_first)
               OR EXISTS (SELECT id FROM temp.seen_first EXCEPT SELECT id FROM temp.seen)"""
    ).fetchone()[0]
    if not second.complete or differ:
        return len(second.adopted), [_unconfirmed(store, dataset_id, "records moved while it was listed")]
    with store.transaction() as conn:
        for rid, _ in ledger.creates_in_flight(conn, dataset_id, undecided_only=True):
            ledger.create_not_landed(conn, rid)
    return len(second.adopted), []


def _unconfirmed(store: Store, dataset_id: str, why: str) -> str:
    n = len(ledger.creates_in_flight(store.conn, dataset_id, undecided_only=True))
    return (
        f"{n} create(s) in dataset {dataset_id} whose answer was lost could not be confirmed "
        f"({why}); they were not sent again: run sync again"
    )


# ------------------------------------------------------------------ commands


def pull_dataset(
    store: Store,
    client: Client,
    dataset_id: str,
    *,
    concurrency: int = 16,
    progress: Progress | None = None,
    dataset: Any = None,
) -> PullResult:
    """List into the mirror, confirm what the listing did not show, recognise lost creates."""
    try:
        listed = list_dataset(store, client, dataset_id, concurrency=concurrency, progress=progress,
                              dataset=dataset)
    except NotFoundError:
        if dataset is None and dataset_gone(store, client, dataset_id):
            return PullResult(dataset_id, complete=False, gone=True)
        raise
    result = PullResult(dataset_id, records=listed.records, removed=listed.removed,
                        conflicts=listed.conflicts, adopted=len(listed.adopted),
                        complete=listed.complete, problems=list(listed.problems))
    removed, conflicts, errors = confirm_missing(store, client, listed.missing, concurrency=concurrency)
    result.removed += removed
    result.conflicts += conflicts
    result.errors += errors
    adopted, errors = confirm_creates(store, client, dataset_id, listed, concurrency=concurrency)
    result.adopted += adopted
    result.errors += errors
    return result


def pull(
    store: Store,
    client: Client,
    dataset_ids: Sequence[str] = (),
    *,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> list[PullResult]:
    """Mirror the given datasets (and track them); none given: every tracked dataset.
    What a failed pull wrote stays (each record as the server sent it); nothing is
    removed unless the whole listing was read. A tracked dataset deleted on the server
    does not stop the others. Ctrl-C raises :class:`Interrupted` with the results of the datasets
    pulled by then (what was applied stays; the dataset being pulled is as it was, or
    applied but not yet confirmed)."""
    metadata: dict[str, Any] = {}
    results: list[PullResult] = []
    try:
        if dataset_ids:
            wanted = [parse_uuid(d, what="dataset id") for d in dataset_ids]
            for dataset_id in wanted:
                try:
                    metadata[dataset_id] = client.get_dataset(dataset_id)
                except NotFoundError:
                    raise UsageError(f"dataset {dataset_id} does not exist on the server") from None
        else:
            wanted = store.tracked_dataset_ids()
            if not wanted:
                raise UsageError("no tracked datasets yet: `localstore pull DATASET_ID` mirrors one")
        for d in wanted:
            results.append(pull_dataset(
                store, client, d, concurrency=concurrency, progress=progress, dataset=metadata.get(d)
            ))
    except KeyboardInterrupt:
        if store.conn.in_transaction:  # interrupted just before a COMMIT: dropped, as by a crash
            store.conn.execute("ROLLBACK")
        raise Interrupted(results) from None
    return results


def get_record_checked(client: Client, rid: str) -> Record:
    """GET one record (``rid`` canonical); an answer holding another record is refused."""
    record = client.get_record(rid)
    if record.id != rid:
        raise ProtocolError(f"the server answered a GET of record {rid} with record {record.id}")
    return record


def fetch(store: Store, client: Client, record_ids: Sequence[str]) -> list[Record]:
    """Mirror single records by id. An unknown id is an error and nothing is written."""
    ids = [parse_uuid(r) for r in record_ids]
    if not ids:
        raise UsageError("give at least one RECORD_ID to fetch")
    fetched = []
    for rid in ids:
        try:
            fetched.append(get_record_checked(client, rid))
        except NotFoundError:
            raise UsageError(f"record {rid} does not exist on the server") from None
    with store.transaction() as conn:
        for record in fetched:
            store.ensure_dataset(record.dataset_id)
        upsert_mirror_rows(conn, fetched)
    return fetched
