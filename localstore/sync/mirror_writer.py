"""Writing one dataset's listing into the mirror (``MirrorWriter``), and what it did
(``Listed``).

Pages are written into the mirror as they arrive, a batch at a time in short
transactions (memory stays flat, other processes can edit meanwhile, and the writing
overlaps the next pages' requests): new records and records whose content changed —
compared on every pull, not just by ``updated_at`` (two writes in one millisecond share
it) — with their full-text rows, indexed in bulk. Working copies are never touched by a
pull. Nothing is removed until the whole listing is read; the mirrored records it did
not show are left to localstore.sync.listing to look up.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from localstore.core.jsonvalue import json_equal
from localstore.core.timestamps import now_ts
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.mirror import (
    MIRROR_INSERT,
    MIRROR_UPSERT,
    BatchRow,
    batch_row_text,
    batch_text,
    changed_in_batch,
    insert_batch,
    upsert_batch,
)

if TYPE_CHECKING:
    from localstore.core.record import Record

WRITE_BATCH = 2500  # records per statement while a listing is written (see the commit for why 2500)
IDLE_BATCH = 500  # records worth writing while the listing waits for pages anyway
# A pull (the mirror's sole writer meanwhile) commits up to this many records at a time,
# or what it wrote in this many seconds: each commit writes every index page it touched,
# and a record's random id touches another page of each index (committing every batch of
# 2,500, a pull of a million records took 2.2x the time per record of 100,000). A smaller dataset commits a
# quarter of itself at a time (at least PULL_COMMIT_MIN): its indexes are small, and
# the WAL is copied into the store (checkpointed) while pages are still arriving, not
# all of it after the last one (20,000 records at 30 ms: 0.73 s against 0.81 s).
PULL_COMMIT_RECORDS = 25_000
PULL_COMMIT_MIN = 5_000
PULL_COMMIT_SECONDS = 2.0
IN_ID_ORDER_FROM = 250_000  # a listing this large writes each batch in id order (see UPSERT_BATCH_IN_ID_ORDER)
# A first pull of at least this many records, into a mirror holding no more rows than
# that, drops the mirror's id index, appends its records and builds the index once at
# the end: inserted one by one, random ids touch a page of the index each, and every
# commit writes each page touched again (a million records: the index cost more than
# every other write together). It is then one transaction: nobody else ever sees the
# mirror without its index, and a pull that is killed leaves nothing behind.
REBUILD_ID_INDEX_FROM = 50_000


@dataclass
class PreparedPage:
    """A page's records in the form a batch is written in, made by :func:`prepare_page`
    in the thread that fetched the page: ``text`` is the live rows as JSON array items
    (a batch's text is these joined), None when they cannot travel as JSON text."""

    ids: list[str]
    gone: list[str]
    rows: list[BatchRow]
    text: str | None


def prepare_page(records: Sequence[Record]) -> PreparedPage:
    rows: list[BatchRow] = [
        (r.id, r.dataset_id, r.created_at, r.updated_at, r.source, r.payload, r.properties)
        for r in records if r.deleted_at is None
    ]
    text = batch_text(rows)
    return PreparedPage([r.id for r in records], [r.id for r in records if r.deleted_at is not None],
                        rows, None if text is None else text[1:-1])


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


class MirrorWriter:
    """Writes one dataset's listing into the mirror, batch by batch. Records in
    ``exclude`` (a live collection: sync adds the records it writes to) keep their row.

    ``sole_writer`` (a pull, which writes nothing else meanwhile): batches are committed
    many at a time, and a dataset's first listing (nothing mirrored yet) writes its
    records without per-record bookkeeping — no ids kept to find what was not listed
    (nothing can be), the whole dataset marked for the full-text index. A large first
    listing is one transaction that builds the id index at its end
    (:data:`REBUILD_ID_INDEX_FROM`)."""

    def __init__(
        self, store: Store, dataset_id: str, *, dataset: Any = None,
        exclude: Collection[str] = (), write: bool = True, sole_writer: bool = False,
    ) -> None:
        self.store = store
        self.conn = store.conn
        self.dataset_id = dataset_id
        self.dataset = dataset
        self.exclude = exclude
        self.write = write
        self.started = False
        # the batch being gathered, already in the form it is written in (a page's
        # records are not kept alive until the batch is written: memory stays flat)
        self.batch_ids: list[str] = []
        self.batch_rows: list[BatchRow] = []
        self.batch_gone: list[str] = []
        self.batch_records: list[Record] = []  # only while creates are in flight (_adopt)
        self.batch_texts: list[str | None] = []  # the pages' PreparedPage.text
        self.seen = 0
        self.removed = self.conflicts = 0
        self.adopted: dict[str, Any] = {}
        self.unmatched_new = False
        conn = self.conn
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS seen (id TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM temp.seen")
        self.creating = write and bool(ledger.creates_in_flight(conn, dataset_id))
        # a dataset with nothing mirrored yet (a first pull): every row is new, there is
        # nothing to compare (a record listed twice is written twice, the same way)
        self.fresh = write and conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM mirror WHERE dataset_id = ?)", (dataset_id,)
        ).fetchone()[0] == 1
        self.first_pull = self.fresh and sole_writer and not self.creating and not exclude
        self.gone_listed: set[str] = set()  # first_pull: the tombstones listed (rare)
        self.commit_records = PULL_COMMIT_RECORDS if sole_writer else 0
        self.in_transaction = False
        self.transaction_records = 0
        self.transaction_started = 0.0
        self.bulk = False
        self.in_id_order = False
        self.rebuild_id_index = False  # (expect) this pull drops the id index and builds it at the end
        self.id_index_dropped = False
        self.gone_later: list[str] = []  # tombstones listed while the id index is dropped

    def expect(self, count: int) -> None:
        """The listing's ``count`` (its first page's): how much a pull commits at a time,
        and whether batches are written in id order."""
        if self.commit_records:
            self.commit_records = min(PULL_COMMIT_RECORDS, max(PULL_COMMIT_MIN, count // 4))
        self.in_id_order = count >= IN_ID_ORDER_FROM
        if self.first_pull and count >= REBUILD_ID_INDEX_FROM and not self.started:
            (others,) = self.conn.execute(
                "SELECT count(*) FROM (SELECT 1 FROM mirror LIMIT ?)", (count + 1,)
            ).fetchone()
            self.rebuild_id_index = others <= count

    def add(self, records: Sequence[Record], prepared: PreparedPage | None = None) -> None:
        """A page's records (``prepared``: :func:`prepare_page` of them, made already)."""
        page = prepare_page(records) if prepared is None else prepared
        self.batch_ids += page.ids
        self.batch_gone += page.gone
        if self.write:
            self.batch_rows += page.rows
            self.batch_texts.append(page.text)
        if self.creating:
            self.batch_records += records
        if len(self.batch_ids) >= WRITE_BATCH:
            self.flush()

    def _batch_text(self, texts: list[str | None]) -> str | None:
        """The batch's rows as one JSON text, from the pages' (None: one cannot travel)."""
        if any(text is None for text in texts):
            return None
        return "[" + ",".join(text for text in texts if text) + "]"

    def _resolve_dataset(self) -> None:
        """The dataset's metadata, when it was asked for with the first page (a callable
        awaiting that answer); called inside the first write's transaction, so an error
        there leaves nothing written."""
        if callable(self.dataset):
            self.dataset = self.dataset()

    def flush_some(self) -> None:
        """While the next pages are on the wire: write what is gathered, if that is
        worth a transaction (the last batch, written after the last page, is then small)."""
        if len(self.batch_ids) >= IDLE_BATCH:
            self.flush()

    @contextlib.contextmanager
    def _transaction(self, records: int) -> Iterator[sqlite3.Connection]:
        """The open transaction, or a new one; committed after the block unless this
        writer commits many batches at a time and this one is not yet due. Rolled back
        (all of it) on an error."""
        if not self.in_transaction:
            self.store.begin()
            self.in_transaction = True
            self.transaction_records = 0
            self.transaction_started = time.monotonic()
            if self.first_pull:
                # in the transaction of the rows it covers; reset by each one, so that a
                # reader who indexed the dataset meanwhile starts over and misses none
                self.conn.execute(
                    "INSERT OR REPLACE INTO search_stale (dataset_id) VALUES (?)", (self.dataset_id,)
                )
            if self.rebuild_id_index and not self.id_index_dropped:
                self.conn.execute("DROP INDEX mirror_id")
                self.id_index_dropped = True
        try:
            yield self.conn
        except BaseException:
            self.in_transaction = False
            self.conn.execute("ROLLBACK")  # (the id index too, when it was dropped)
            self.id_index_dropped = False
            self._bulk_writes(False)
            raise
        self.transaction_records += records
        if self.rebuild_id_index and self.commit_records:
            return  # one transaction, committed at the end (finish, or commit)
        if (
            self.transaction_records >= self.commit_records
            or time.monotonic() - self.transaction_started >= PULL_COMMIT_SECONDS
        ):
            self.commit()

    def commit(self) -> None:
        """Commit what was written (a listing that fails keeps what it wrote)."""
        if self.in_transaction:
            self._restore_id_index()
            self._bulk_writes(False)
            self.in_transaction = False
            self.conn.execute("COMMIT")

    def _restore_id_index(self) -> None:
        """The id index built again, after the records written without it; a record
        listed twice (pages shifted under the listing) keeps the row written last, as an
        upsert would have. Then the tombstones listed meanwhile (they look rows up by id)."""
        if not self.id_index_dropped:
            return
        conn = self.conn
        try:
            conn.execute("CREATE UNIQUE INDEX mirror_id ON mirror (id)")
        except sqlite3.IntegrityError:
            # the mirror's delete trigger looks the record up by id: an index first
            conn.execute("CREATE INDEX mirror_id ON mirror (id)")
            conn.execute(
                """DELETE FROM mirror WHERE rowid IN (
                       SELECT m.rowid FROM mirror AS m
                       WHERE EXISTS (SELECT 1 FROM mirror AS later WHERE later.id = m.id
                                     AND later.rowid > m.rowid))"""
            )
            conn.execute("DROP INDEX mirror_id")
            conn.execute("CREATE UNIQUE INDEX mirror_id ON mirror (id)")
        self.id_index_dropped = False
        gone, self.gone_later = self.gone_later, []
        for rid in gone:
            self._remote_gone(conn, rid)

    def _remote_gone(self, conn: sqlite3.Connection, rid: str) -> None:
        outcome = ledger.remote_gone(conn, rid)
        self.removed += outcome == "removed"
        self.conflicts += outcome == "conflict"

    def _bulk_writes(self, on: bool) -> None:
        """While batches are written: the mirror's search triggers stand aside (the rows
        written are listed for the index instead, or their dataset marked) and so do its
        CHECKs, which parse every payload and properties again (a fifth of a batch's
        time; a Record's are objects, checked when read). A first pull keeps this on for
        its whole transaction: two statements fewer per batch."""
        if on != self.bulk:
            self.bulk = on
            self.conn.execute("UPDATE search_state SET deferred = ?", (int(on),))
            self.conn.execute(f"PRAGMA ignore_check_constraints = {'ON' if on else 'OFF'}")

    def flush(self) -> None:
        ids, rows, gone, records = self.batch_ids, self.batch_rows, self.batch_gone, self.batch_records
        texts = self.batch_texts
        self.batch_ids, self.batch_rows, self.batch_gone, self.batch_records = [], [], [], []
        self.batch_texts = []
        self.seen += len(ids)
        if not ids or not self.write:
            return
        with self._transaction(len(ids)) as conn:
            if not self.started:
                self.started = True
                self._resolve_dataset()
                if self.dataset is not None:
                    self.store.upsert_dataset(self.dataset, tracked=True)
                self.store.ensure_dataset(self.dataset_id)
            if self.first_pull:
                self.gone_listed.update(gone)
            else:
                conn.execute("INSERT OR IGNORE INTO temp.seen (id) SELECT value FROM json_each(?)",
                             (orjson.dumps(ids).decode(),))
            if self.creating:
                self._adopt(conn, records)
            # records sync is writing itself keep their row (checked now: the set grows)
            kept = [row for row in rows if row[0] not in self.exclude] if self.exclude else rows
            text = self._batch_text(texts) if len(kept) == len(rows) and rows else None
            changed, text, text_changed = self._changed(conn, kept, text)
            if changed:
                # the full-text index catches up on these when it is next read, in bulk
                self._bulk_writes(True)
                if text is None:  # (without the id index, nothing to upsert against)
                    conn.executemany(MIRROR_INSERT if self.id_index_dropped else MIRROR_UPSERT,
                                     [(*row[:4], None, *row[4:]) for row in map(batch_row_text, changed)])
                elif self.id_index_dropped:
                    insert_batch(conn, text)
                else:
                    upsert_batch(conn, text, in_id_order=self.in_id_order)
                if not self.first_pull:  # (a first pull marked the whole dataset)
                    self._bulk_writes(False)
                    conn.execute("INSERT OR IGNORE INTO search_dirty (record_id) SELECT value FROM json_each(?)",
                                 (orjson.dumps(text_changed).decode(),))
            for rid in gone:
                if rid in self.exclude:
                    continue
                if self.id_index_dropped:
                    self.gone_later.append(rid)
                else:
                    self._remote_gone(conn, rid)

    def _changed(
        self, conn: sqlite3.Connection, candidates: list[BatchRow], text: str | None
    ) -> tuple[list[BatchRow], str | None, list[str]]:
        """The rows that are new or differ from the mirror, the same as one JSON text
        (None: write them row by row), and the ids among them whose text may have changed
        (``text``: the candidates' JSON text, when the pages made it)."""
        if not candidates:
            return [], None, []
        if text is None:
            text = batch_text(candidates)
        if self.fresh:
            return candidates, text, [row[0] for row in candidates]
        if text is None:
            changed = self._changed_row_by_row(conn, candidates)
        else:
            changed = changed_in_batch(conn, text)
        rows = [candidates[i] for i, _ in changed]
        text_changed = [candidates[i][0] for i, payload_may_differ in changed if payload_may_differ]
        if text is not None and len(rows) != len(candidates):
            text = batch_text(rows) if rows else None
        return rows, text, text_changed

    @staticmethod
    def _changed_row_by_row(conn: sqlite3.Connection, candidates: list[BatchRow]) -> list[tuple[int, bool]]:
        """``changed_in_batch`` for a batch that cannot travel as JSON text."""
        known = {
            row[0]: row[1:]
            for row in conn.execute(
                f"""SELECT id, updated_at, deleted_at, payload, properties FROM mirror
                    WHERE id IN ({','.join('?' * len(candidates))})""",
                [c[0] for c in candidates],
            )
        }
        changed = []
        for index, (rid, _, _, updated_at, _, payload, properties) in enumerate(map(batch_row_text, candidates)):
            mirrored = known.get(rid)
            payload_may_differ = mirrored is None or mirrored[1] is not None or mirrored[2] != payload
            if payload_may_differ or mirrored[0] != updated_at or mirrored[3] != properties:  # type: ignore[index]
                changed.append((index, payload_may_differ))
        return changed

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
        if self.id_index_dropped:
            with self._transaction(0):
                self._restore_id_index()
        listed = Listed(self.dataset_id, listing.count, listing.complete, list(listing.problems),
                        records=self.seen, removed=self.removed, conflicts=self.conflicts,
                        adopted=self.adopted)
        if not self.write:
            return listed
        self.commit_records = 0  # what is left is committed with the rest
        with self._transaction(0) as conn:
            self._resolve_dataset()
            if not self.started and self.dataset is not None:
                self.store.upsert_dataset(self.dataset, tracked=True)
            self.store.ensure_dataset(self.dataset_id)
            if self.first_pull:
                distinct = self._first_pull_distinct(conn)
            else:
                distinct = conn.execute("SELECT count(*) FROM temp.seen").fetchone()[0]
            if distinct != listing.count:
                listed.complete = False
                listed.problems.append(f"saw {distinct} distinct records, count is {listing.count}")
            if self.creating and self.unmatched_new:
                # new records, none exactly what was POSTed: one may be a create of ours
                # that someone changed since; once mirrored it is never a candidate again
                for rid, _ in ledger.creates_in_flight(conn, self.dataset_id, undecided_only=True):
                    ledger.create_unconfirmed(conn, rid)
            if not self.first_pull:  # (a first pull wrote every record mirrored: none is missing)
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

    def _first_pull_distinct(self, conn: sqlite3.Connection) -> int:
        """The distinct records a first listing showed: every row of the dataset in the
        mirror is one it wrote, and the tombstones it listed are not there."""
        (distinct,) = conn.execute(
            """SELECT (SELECT count(*) FROM mirror WHERE dataset_id = :ds)
                    + (SELECT count(*) FROM json_each(:gone) AS g
                       WHERE NOT EXISTS (SELECT 1 FROM mirror WHERE id = g.value))""",
            {"ds": self.dataset_id, "gone": orjson.dumps(sorted(self.gone_listed)).decode()},
        ).fetchone()
        return int(distinct)
