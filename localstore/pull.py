"""Pull: mirror the server's records into the store.

Pages stream into a per-connection staging table in batched transactions (memory stays
flat), then one transaction applies the whole listing to the mirror: a failed or
interrupted pull leaves the mirror exactly as it was. Working copies are never touched;
a record absent from a *complete* listing goes (or becomes a conflict if edited here).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import reconcile
from .errors import NotFoundError, ProtocolError, UsageError
from .ids import parse_uuid
from .jsonutil import canonical
from .store import MIRROR_COLUMNS, Store
from .timeutil import now_ts

if TYPE_CHECKING:
    from .api import Client, Record

Progress = Callable[[str, int, int | None], None]
STAGING_BATCH = 2000


@dataclass
class PullResult:
    dataset_id: str
    records: int = 0
    removed: int = 0
    conflicts: int = 0
    adopted: int = 0
    complete: bool = True
    problems: list[str] = field(default_factory=list)


@dataclass
class StagedListing:
    """A whole listing of one dataset held in the staging table, not yet applied."""

    dataset_id: str
    count: int
    complete: bool
    problems: list[str]


# ------------------------------------------------------------------ staging


class Stager:
    """Collects one dataset's listing into two temp tables, in batched transactions:
    ``seen`` holds every id listed (to find records gone from the server) and
    ``staging`` the records that are new or changed since the mirror last saw them
    (``updated_at`` differs) — re-pulling an unchanged dataset writes almost nothing.
    Temp tables never lock the store file."""

    def __init__(self, conn: sqlite3.Connection, dataset_id: str) -> None:
        self.conn = conn
        conn.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS staging (
                    {MIRROR_COLUMNS.replace("id,", "id PRIMARY KEY,", 1)})"""
        )
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.staging")
        conn.execute("DELETE FROM temp.seen")
        self.known = dict(
            conn.execute(
                "SELECT id, updated_at FROM mirror WHERE dataset_id = ? AND deleted_at IS NULL",
                (dataset_id,),
            ).fetchall()
        )
        self.seen: list[tuple[str]] = []
        self.rows: list[tuple[Any, ...]] = []

    def add(self, records: Iterable[Record]) -> None:
        known = self.known
        for r in records:
            self.seen.append((r.id,))
            if r.deleted_at is not None or known.get(r.id) != r.updated_at:
                self.rows.append(
                    (r.id, r.dataset_id, r.created_at, r.updated_at, r.deleted_at, r.source,
                     canonical(r.payload), canonical(r.properties))
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


def stage_listing(
    store: Store,
    client: Client,
    dataset_id: str,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> StagedListing:
    """List every page of a dataset into the staging tables."""
    stager = Stager(store.conn, dataset_id)
    pages = client.iter_record_pages(dataset_id, page_size=100, concurrency=concurrency)
    seen = 0
    try:
        for page in pages:
            stager.add(page.records)
            seen += len(page.records)
            if progress:
                progress(f"pull {dataset_id[:8]}", seen, page.count)
    finally:
        pages.close()
    stager.flush()
    listing = pages.listing
    assert listing is not None
    return StagedListing(dataset_id, listing.count, listing.complete, list(listing.problems))


class _StagedRecord:
    __slots__ = ("created_at", "dataset_id", "deleted_at", "id", "payload", "properties", "source", "updated_at")

    def __init__(self, row: tuple[Any, ...]) -> None:
        (self.id, self.dataset_id, self.created_at, self.updated_at, self.deleted_at,
         self.source, payload, properties) = row
        self.payload = json.loads(payload)
        self.properties = json.loads(properties)


def apply_staged(
    store: Store, staged: StagedListing, *, dataset: Any = None, exclude: Iterable[str] = ()
) -> PullResult:
    """Apply a staged listing to the mirror in one transaction; ``dataset`` (metadata
    from the server) is recorded and tracked in that same transaction. Records in
    ``exclude`` keep their mirror row: a sync pushed them after they were listed."""
    result = PullResult(staged.dataset_id, complete=staged.complete, problems=staged.problems)
    ds = staged.dataset_id
    conn = store.conn
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS pushed_meanwhile (id TEXT PRIMARY KEY)")
    conn.execute("DELETE FROM temp.pushed_meanwhile")
    conn.executemany("INSERT OR IGNORE INTO temp.pushed_meanwhile (id) VALUES (?)", [(i,) for i in exclude])
    with store.transaction() as conn:
        if dataset is not None:
            store.upsert_dataset(dataset, tracked=True)
        store.ensure_dataset(ds)
        if reconcile.has_in_flight_creates(conn, ds):
            unseen = conn.execute(
                f"""SELECT {MIRROR_COLUMNS} FROM temp.staging AS s
                    WHERE s.deleted_at IS NULL
                      AND NOT EXISTS (SELECT 1 FROM mirror AS m WHERE m.id = s.id)
                      AND NOT EXISTS (SELECT 1 FROM id_map AS i WHERE i.server_id = s.id)"""
            ).fetchall()
            result.adopted = reconcile.adopt_created(conn, ds, [_StagedRecord(r) for r in unseen])
        conn.execute(
            f"""INSERT INTO mirror ({MIRROR_COLUMNS})
                SELECT {MIRROR_COLUMNS} FROM temp.staging
                WHERE deleted_at IS NULL AND id NOT IN (SELECT id FROM temp.pushed_meanwhile)
                ON CONFLICT (id) DO UPDATE SET
                    dataset_id = excluded.dataset_id, created_at = excluded.created_at,
                    updated_at = excluded.updated_at, deleted_at = NULL,
                    source = excluded.source, payload = excluded.payload,
                    properties = excluded.properties
                WHERE mirror.updated_at IS NOT excluded.updated_at
                   OR mirror.deleted_at IS NOT NULL
                   OR mirror.payload IS NOT excluded.payload
                   OR mirror.properties IS NOT excluded.properties"""
        )
        result.records = conn.execute("SELECT count(*) FROM temp.seen").fetchone()[0] - conn.execute(
            "SELECT count(*) FROM temp.staging WHERE deleted_at IS NOT NULL"
        ).fetchone()[0]
        gone = [
            r[0]
            for r in conn.execute("SELECT id FROM temp.staging WHERE deleted_at IS NOT NULL")
        ]
        if staged.complete:
            gone += [
                r[0]
                for r in conn.execute(
                    """SELECT id FROM mirror AS m WHERE m.dataset_id = ? AND m.deleted_at IS NULL
                       AND NOT EXISTS (SELECT 1 FROM temp.seen AS s WHERE s.id = m.id)""",
                    (ds,),
                )
            ]
        result.removed, result.conflicts = reconcile.settle_remote_gone(conn, gone)
        conn.execute("UPDATE datasets SET last_pulled_at = ? WHERE id = ?", (now_ts(), ds))
    conn.execute("DELETE FROM temp.staging")
    conn.execute("DELETE FROM temp.seen")
    return result


def pull_dataset(
    store: Store,
    client: Client,
    dataset_id: str,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
    dataset: Any = None,
) -> PullResult:
    staged = stage_listing(store, client, dataset_id, concurrency=concurrency, progress=progress)
    return apply_staged(store, staged, dataset=dataset)


# ------------------------------------------------------------------ commands


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
    leaves the store as it was."""
    metadata: dict[str, Any] = {}
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
    return [
        pull_dataset(
            store, client, d, concurrency=concurrency, progress=progress, dataset=metadata.get(d)
        )
        for d in wanted
    ]


def refresh_records(store: Store, client: Client, records: Iterable[Record], gone: Iterable[str]) -> int:
    """Write records fetched one by one, and settle the ones the server no longer has."""
    records = list(records)
    with store.transaction() as conn:
        for record in records:
            store.ensure_dataset(record.dataset_id)
        store.upsert_mirror(records)
        reconcile.settle_remote_gone(conn, [g for g in gone if _in_mirror(conn, g)])
    return len(records)


def _in_mirror(conn: sqlite3.Connection, rid: str) -> bool:
    return conn.execute("SELECT 1 FROM mirror WHERE id = ?", (rid,)).fetchone() is not None


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
    refresh_records(store, client, fetched, ())
    return fetched
