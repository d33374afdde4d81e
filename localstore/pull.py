"""Pull: mirror the server's records into the store — the one listing pipeline that
``pull`` and ``sync`` share.

Pages stream into per-connection temp tables (memory stays flat, the store file is not
locked); one transaction then applies the listing to the mirror. A record's content is
compared on every pull, not just its ``updated_at`` (two writes in one millisecond share
it). Working copies are never touched by a pull.

The API pages by offset, so a record deleted on an early page while later pages are
read shifts the rest: **absence from a listing proves nothing**. A mirrored record the
listing did not show is looked up with a GET; only a 404 (or ``deleted_at``) removes it.
A create whose answer was lost is recognised in a listing (adopted); it is declared
never-landed only when two complete listings in a row agree and neither holds it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import ledger
from .bounded import bounded
from .errors import ApiError, Interrupted, NotFoundError, ProtocolError, UsageError
from .ids import parse_uuid
from .jsonutil import canonical, json_equal
from .store import MIRROR_COLUMNS, Store, upsert_mirror_rows
from .timeutil import now_ts

if TYPE_CHECKING:
    from .api import Client, Record

Progress = Callable[[str, int, int | None], None]
OnPage = Callable[[list["Record"]], None]
STAGING_BATCH = 2000
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
    """A whole listing of one dataset held in the staging tables, not yet applied."""

    dataset_id: str
    count: int
    complete: bool
    problems: list[str]
    ids: frozenset[str]


# ------------------------------------------------------------------ staging


class Stager:
    """Collects one dataset's listing into two temp tables, in batched transactions:
    ``seen`` holds every id listed and ``staging`` the records that are new or differ
    from the mirror — in ``updated_at`` or in content. Re-pulling an unchanged dataset
    writes almost nothing."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS staging (
                    {MIRROR_COLUMNS.replace("id,", "id PRIMARY KEY,", 1)})"""
        )
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.staging")
        conn.execute("DELETE FROM temp.seen")
        self.seen: list[tuple[str]] = []
        self.rows: list[tuple[Any, ...]] = []

    def add(self, records: Iterable[Record]) -> None:
        records = list(records)
        if not records:
            return
        known = {
            row[0]: row[1:]
            for row in self.conn.execute(
                f"""SELECT id, updated_at, deleted_at, payload, properties FROM mirror
                    WHERE id IN ({','.join('?' * len(records))})""",
                [r.id for r in records],
            )
        }
        for r in records:
            self.seen.append((r.id,))
            payload, properties = canonical(r.payload), canonical(r.properties)
            mirrored = known.get(r.id)
            if (
                mirrored is None
                or r.deleted_at is not None
                or mirrored[1] is not None
                or mirrored[0] != r.updated_at
                or mirrored[2] != payload
                or mirrored[3] != properties
            ):
                self.rows.append(
                    (r.id, r.dataset_id, r.created_at, r.updated_at, r.deleted_at, r.source,
                     payload, properties)
                )
        if len(self.seen) >= STAGING_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.seen:
            return
        conn = self.conn
        conn.execute("BEGIN")  # deferred, and only temp tables are written
        try:
            conn.executemany("INSERT OR IGNORE INTO temp.seen (id) VALUES (?)", self.seen)
            conn.executemany(
                f"INSERT OR REPLACE INTO temp.staging ({MIRROR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self.rows,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        self.seen, self.rows = [], []


def list_dataset(
    store: Store,
    client: Client,
    dataset_id: str,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
    on_page: OnPage | None = None,
    label: str = "pull",
) -> Listed:
    """List every page of a dataset into the staging tables; ``on_page`` sees each
    page's records as it arrives (sync plans pending records from it). A 404 here means
    the dataset is gone (NotFoundError)."""
    stager = Stager(store.conn)
    pages = client.iter_record_pages(dataset_id, page_size=PAGE_SIZE, concurrency=concurrency)
    seen = 0
    try:
        for page in pages:
            if on_page is not None:
                on_page(page.records)
            stager.add(page.records)
            seen += len(page.records)
            if progress:
                progress(f"{label} {dataset_id[:8]}", seen, page.count)
    finally:
        pages.close()
    stager.flush()
    listing = pages.listing
    assert listing is not None
    return Listed(dataset_id, listing.count, listing.complete, list(listing.problems), listing.record_ids)


class _StagedRecord:
    __slots__ = ("created_at", "dataset_id", "deleted_at", "id", "payload", "properties", "source", "updated_at")

    def __init__(self, row: tuple[Any, ...]) -> None:
        (self.id, self.dataset_id, self.created_at, self.updated_at, self.deleted_at,
         self.source, payload, properties) = row
        self.payload = json.loads(payload)
        self.properties = json.loads(properties)


@dataclass
class Applied:
    """What applying a listing found: records to look up (mirrored, live, not listed)
    and creates it recognised (provisional id -> the server's record)."""

    records: int
    removed: int
    conflicts: int
    missing: list[str]
    adopted: dict[str, Any]


def apply_listing(
    store: Store, listed: Listed, *, dataset: Any = None, exclude: Iterable[str] = ()
) -> Applied:
    """Apply a staged listing to the mirror in one transaction; ``dataset`` (metadata
    from the server) is recorded and tracked in that same transaction. Records in
    ``exclude`` keep their mirror row: a sync pushed them after they were listed."""
    ds = listed.dataset_id
    conn = store.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS pushed_meanwhile (id TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM temp.pushed_meanwhile")
    conn.executemany("INSERT OR IGNORE INTO temp.pushed_meanwhile (id) VALUES (?)", [(i,) for i in exclude])
    with store.transaction() as conn:
        if dataset is not None:
            store.upsert_dataset(dataset, tracked=True)
        store.ensure_dataset(ds)
        adopted = _adopt(conn, ds)
        conn.execute(
            f"""INSERT INTO mirror ({MIRROR_COLUMNS})
                SELECT {MIRROR_COLUMNS} FROM temp.staging
                WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM temp.pushed_meanwhile)
                ON CONFLICT (id) DO UPDATE SET
                    dataset_id = excluded.dataset_id, created_at = excluded.created_at,
                    updated_at = excluded.updated_at, deleted_at = NULL,
                    source = excluded.source, payload = excluded.payload,
                    properties = excluded.properties"""
        )
        listed_live = len(listed.ids) - conn.execute(
            "SELECT count(*) FROM temp.staging WHERE deleted_at IS NOT NULL"
        ).fetchone()[0]
        removed = conflicts = 0
        for (rid,) in conn.execute("SELECT id FROM temp.staging WHERE deleted_at IS NOT NULL").fetchall():
            outcome = ledger.remote_gone(conn, rid)
            removed += outcome == "removed"
            conflicts += outcome == "conflict"
        missing = [
            r[0]
            for r in conn.execute(
                """SELECT id FROM mirror AS m WHERE m.dataset_id = ? AND m.deleted_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM temp.seen AS s WHERE s.id = m.id)
                   AND id NOT IN (SELECT id FROM temp.pushed_meanwhile)""",
                (ds,),
            )
        ]
        conn.execute("UPDATE datasets SET last_pulled_at = ? WHERE id = ?", (now_ts(), ds))
    conn.execute("DELETE FROM temp.staging")
    conn.execute("DELETE FROM temp.seen")
    return Applied(listed_live, removed, conflicts, missing, adopted)


def _adopt(conn: sqlite3.Connection, dataset_id: str) -> dict[str, Any]:
    """Creates left in flight (their answer lost): a listed record this store has never
    seen, with exactly the body that was POSTed, is that create. Matched one to one,
    oldest first."""
    in_flight = ledger.creates_in_flight(conn, dataset_id)
    if not in_flight:
        return {}
    unseen = conn.execute(
        f"""SELECT {MIRROR_COLUMNS} FROM temp.staging AS s
            WHERE s.deleted_at IS NULL
              AND NOT EXISTS (SELECT 1 FROM mirror AS m WHERE m.id = s.id)
              AND NOT EXISTS (SELECT 1 FROM id_map AS i WHERE i.server_id = s.id)"""
    ).fetchall()
    candidates = sorted((_StagedRecord(r) for r in unseen), key=lambda r: (r.created_at, r.id))
    adopted: dict[str, Any] = {}
    for rid, body in in_flight:
        for index, record in enumerate(candidates):
            if json_equal(record.payload, body["payload"]) and json_equal(
                record.properties, body.get("properties") or {}
            ):
                ledger.create_landed(conn, rid, record)
                adopted[rid] = record
                del candidates[index]
                break
    if candidates:
        # new records, none exactly what was POSTed: one may be a create of ours that
        # someone changed since; once mirrored they would never be candidates again
        for rid, _ in ledger.creates_in_flight(conn, dataset_id, undecided_only=True):
            ledger.create_unconfirmed(conn, rid)
    return adopted


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
    store: Store, client: Client, record_ids: Sequence[str], *, concurrency: int = 8
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
        for rid, record in found.items():
            if record is None or record.deleted_at is not None:
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
    concurrency: int = 8,
    exclude: Iterable[str] = (),
    deleted_meanwhile: Iterable[str] = (),
) -> tuple[int, list[str]]:
    """Creates of this dataset still in flight after a listing: list again; when both
    listings are complete and hold the same records (but those the caller deleted in
    between), and neither holds the create, it never landed and becomes a pending create
    again. Returns (adopted, problems)."""
    if not ledger.creates_in_flight(store.conn, dataset_id, undecided_only=True):
        return 0, []
    if not first.complete:
        return 0, [_unconfirmed(store, dataset_id, "its listing did not add up")]
    second = list_dataset(store, client, dataset_id, concurrency=concurrency, label="check")
    applied = apply_listing(store, second, exclude=exclude)
    left = ledger.creates_in_flight(store.conn, dataset_id, undecided_only=True)
    if not left:
        return len(applied.adopted), []
    if not second.complete or second.ids != first.ids - frozenset(deleted_meanwhile):
        return len(applied.adopted), [_unconfirmed(store, dataset_id, "records moved while it was listed")]
    with store.transaction() as conn:
        for rid, _ in ledger.creates_in_flight(conn, dataset_id, undecided_only=True):
            ledger.create_not_landed(conn, rid)
    return len(applied.adopted), []


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
    concurrency: int = 8,
    progress: Progress | None = None,
    dataset: Any = None,
) -> PullResult:
    """List, apply, confirm what the listing did not show, recognise lost creates."""
    try:
        listed = list_dataset(store, client, dataset_id, concurrency=concurrency, progress=progress)
    except NotFoundError:
        if dataset is None and dataset_gone(store, client, dataset_id):
            return PullResult(dataset_id, complete=False, gone=True)
        raise
    applied = apply_listing(store, listed, dataset=dataset)
    result = PullResult(dataset_id, records=applied.records, removed=applied.removed,
                        conflicts=applied.conflicts, adopted=len(applied.adopted),
                        complete=listed.complete, problems=list(listed.problems))
    removed, conflicts, errors = confirm_missing(store, client, applied.missing, concurrency=concurrency)
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
    concurrency: int = 8,
    progress: Progress | None = None,
) -> list[PullResult]:
    """Mirror the given datasets (and track them); none given: every tracked dataset.
    A dataset is tracked in the transaction that applies its listing: a failed pull
    leaves the store as it was. A tracked dataset deleted on the server does not stop
    the others. Ctrl-C raises :class:`Interrupted` with the results of the datasets
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
