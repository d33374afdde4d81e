"""Sync: check each record with pending changes against its current remote state, push
what the pure plan (localstore.core.plan) allows, then pull.

The API has no conditional write, so a record is planned against remote state read
just before its push — one listing per dataset where that is cheaper than a GET per
record, otherwise GETs — and the two are pipelined: a record is planned and its push
sent as soon as its page (or GET) arrives. A listing made for the checks is also that
dataset's pull (through the same pipeline as ``pull``); tracked datasets not listed that
way are pulled at the end.

Planning and marking in flight happen in one transaction (an edit cannot slip between
them); the entries sent are captured then, and each outcome settles exactly those, as it
arrives, through the ledger's transitions. An interrupted sync loses nothing: the next
one finds the entries in flight and settles them by a 3-way merge against their base.

Ctrl-C (KeyboardInterrupt on the main thread) stops at once: no request is started any
more, outcomes that have arrived are committed, what was planned but never started is
pending again, and the requests in flight are abandoned — their entries stay in flight
and the next sync settles them as above. ``sync`` then raises :class:`Interrupted`
carrying the report of what was done.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any

from localstore.core.plan import Conflict, Delete, LocalWork, Push, Remote, Settle, plan_record
from localstore.core.timestamps import now_ts
from localstore.errors import (
    ApiError,
    Interrupted,
    NotFoundError,
    TransportError,
)
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.ledger import InFlight
from localstore.store.mirror import set_mirror_contents, upsert_mirror_rows
from localstore.sync import listing
from localstore.sync.listing import (
    Progress,
    confirm_creates,
    dataset_gone,
    get_many,
    list_dataset,
    lookup_errors,
)
from localstore.sync.mirror_writer import Listed
from localstore.sync.pull import pull_dataset
from localstore.sync.report import SyncReport
from localstore.sync.requests import Commit, Request, Sends, remote_of

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.core.record import Record

BULK_DELETE_MAX = 500
PLAN_BATCH = 200  # records planned per read of their local work
COMMIT_EVERY = 0.05  # seconds: outcomes that arrive meanwhile share a commit

__all__ = ["SyncReport", "sync"]


def sync(
    store: Store,
    client: Client,
    *,
    dry_run: bool = False,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> SyncReport:
    """Push queued edits, then pull. One sync at a time per store (SyncInProgressError).
    With ``dry_run`` nothing is sent and the store is not changed. Ctrl-C raises
    :class:`Interrupted` with the report of what was done (the run counts as failed)."""
    report = SyncReport(dry_run=dry_run)
    with store.sync_lock():
        run_id = None
        try:
            if not dry_run:
                with store.transaction() as conn:
                    ledger.recover(conn)
                run_id = _start_run(store)
            run = _Run(store, client, report, concurrency, progress, dry_run)
            listed = run.push()
            if not dry_run and not report.errors:
                for dataset_id in store.tracked_dataset_ids():
                    if dataset_id not in listed:
                        run.pull(dataset_id)
        except ApiError as exc:
            report.errors.append(str(exc))
        except KeyboardInterrupt:
            report.interrupted = True
            _rollback_open(store)
        finally:
            report.open_conflicts = ledger.conflict_count(store.conn)
            if dry_run:
                report.new_conflicts = report.planned.get("conflict", 0)
                report.open_conflicts += report.new_conflicts
            report.pending = ledger.pending_count(store.conn)
            if not dry_run:
                _finish_run(store, run_id, report)
    if report.interrupted:
        raise Interrupted(report)
    return report


def _rollback_open(store: Store) -> None:
    """A KeyboardInterrupt can land between a transaction's last statement and its
    COMMIT: what it held is dropped, as a crash would."""
    if store.conn.in_transaction:
        store.conn.execute("ROLLBACK")


class _Run(Sends):
    """Reads remote state, plans each record as it arrives, sends writes on a bounded
    pool and commits outcomes on the calling thread (the store's connection is used
    from this thread only)."""

    def __init__(
        self,
        store: Store,
        client: Client,
        report: SyncReport,
        concurrency: int,
        progress: Progress | None,
        dry_run: bool,
    ) -> None:
        self.store = store
        self.client = client
        self.report = report
        self.concurrency = concurrency
        self.progress = progress
        self.dry_run = dry_run
        self.pool: ThreadPoolExecutor | None = None
        self.running: dict[Future[Commit], Request] = {}
        self.to_plan: list[tuple[str, Remote | None]] = []
        self.ready: list[Commit] = []  # outcomes and mirror refreshes for the next commit
        self.to_send: list[Request] = []  # requests to start once their plan is committed
        self.deletes: list[InFlight] = []
        self.sent: set[str] = set()  # records written this sync: listings keep off them
        self.deleted: set[str] = set()  # records this sync deleted on the server
        self.failures_in_a_row = 0
        self.abort_reason: str | None = None
        self.done = 0
        self.planned_requests = True  # whether the last plans sent requests (not deletes)

    # ------------------------------------------------------------ phases

    def push(self) -> set[str]:
        """Check, plan and send every pending change. Returns the datasets listed
        completely (their pull is done)."""
        listed: set[str] = set()
        self.pool = pool = ThreadPoolExecutor(max_workers=max(1, self.concurrency),
                                              thread_name_prefix="localstore-push")
        try:
            try:
                self._check_and_send(listed)
            except KeyboardInterrupt:
                raise
            except BaseException:
                self._drain(wait_all=True)  # what is in flight finishes and is committed
                raise
            self._drain(wait_all=True)
        except KeyboardInterrupt:
            self._abandon()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        if self.abort_reason is not None:
            self.report.errors.append(self.abort_reason)
        return listed

    def _check_and_send(self, listed: set[str]) -> None:
        to_check = ledger.records_to_check(self.store.conn)
        for dataset_id in sorted(to_check.keys() | ledger.datasets_creating(self.store.conn)):
            edits = set(to_check.get(dataset_id, ()))
            if self._should_list(dataset_id, edits):
                if self._list(dataset_id, edits):
                    listed.add(dataset_id)
            elif edits:
                self._lookup(edits)
            if self.abort_reason is not None:
                break
        if self.abort_reason is None:
            self._creates()
        self._flush_deletes()

    def _abandon(self) -> None:
        """Ctrl-C: start nothing more; commit the outcomes that have arrived, and put
        back to pending what was marked in flight but never started. Requests in flight
        are abandoned: their entries stay in flight for the next sync to settle."""
        _rollback_open(self.store)
        commits = list(self.ready)
        for future, request in self.running.items():
            if future.done():
                commits.append(future.result())
            elif future.cancel():
                commits.append(request.unsent)
            else:
                self.report.abandoned += 1
        commits.extend(request.unsent for request in self.to_send)
        if self.deletes:
            commits.append(partial(self._deletes_unsent, chunk=self.deletes))
        self.ready, self.to_send, self.deletes, self.to_plan, self.running = [], [], [], [], {}
        if commits:
            with self.store.transaction() as conn:
                for commit in commits:
                    commit(conn)

    def pull(self, dataset_id: str) -> None:
        result = pull_dataset(self.store, self.client, dataset_id, concurrency=self.concurrency,
                              progress=self.progress)
        self.report.pulled += result.records
        self.report.new_conflicts += result.conflicts
        self.report.adopted += result.adopted
        self.report.errors.extend(result.errors)
        if result.gone:
            self._dataset_gone(dataset_id)

    def _dataset_gone(self, dataset_id: str) -> None:
        self.report.gone_datasets.append(dataset_id)
        self.report.warnings.append(
            f"dataset {dataset_id} was deleted on the server: its records were removed here "
            "(those with local edits are kept as conflicts) and it is no longer tracked"
        )

    def _plan_now(self) -> bool:
        """While a listing runs, a commit costs its threads the GIL: plan a batch at a
        time, or at once while plans turn into requests and the pool has room for them."""
        if len(self.to_plan) >= PLAN_BATCH:
            return True
        if not self.to_plan or not self.planned_requests:
            return False
        # the oldest requests finish first: one of them done means the pool has room
        oldest = islice(self.running, self.concurrency)
        return len(self.running) < self.concurrency or any(f.done() for f in oldest)

    def _should_list(self, dataset_id: str, edits: set[str]) -> bool:
        """A listing costs one request per page of records, a GET one per record; creates
        whose answer was lost need the listing to be recognised."""
        if ledger.creates_in_flight(self.store.conn, dataset_id):
            return True
        if not edits:
            return False
        mirrored = self.store.scalar("SELECT count(*) FROM mirror WHERE dataset_id = ?", (dataset_id,))
        return -(-mirrored // listing.PAGE_SIZE) <= len(edits)

    # ------------------------------------------------------------ remote state

    def _list(self, dataset_id: str, edits: set[str]) -> bool:
        """List the dataset, planning each pending record as its page arrives, then
        apply the listing as that dataset's pull. Returns whether it was pulled."""

        def on_page(records: list[Record]) -> None:
            for record in records:
                if record.id in edits:
                    edits.discard(record.id)
                    self.to_plan.append((record.id, remote_of(record)))
            if self._plan_now():
                self._drain()

        try:
            listed = list_dataset(self.store, self.client, dataset_id, concurrency=self.concurrency,
                                  progress=self.progress, on_page=on_page, label="check",
                                  exclude=self.sent, write=not self.dry_run)
        except NotFoundError:
            self._drain()
            if self.dry_run:
                self.report.warnings.append(f"dataset {dataset_id} answers 404: it seems deleted")
                return False
            if dataset_gone(self.store, self.client, dataset_id):
                self._dataset_gone(dataset_id)
                return True
            raise
        except TransportError as exc:
            self.abort_reason = str(exc)
            return False
        self._drain()
        if self.dry_run:
            self._lookup(edits)
            return False
        self.report.pulled += listed.records
        self.report.new_conflicts += listed.conflicts
        self.report.adopted += len(listed.adopted)
        for record in listed.adopted.values():
            self.to_plan.append((record.id, remote_of(record)))
        self._lookup(edits | set(listed.missing) - self.sent)
        self._confirm_creates(dataset_id, listed)
        return True

    def _confirm_creates(self, dataset_id: str, listed: Listed) -> None:
        if not ledger.creates_in_flight(self.store.conn, dataset_id, undecided_only=True):
            return
        # our own deletes must not make the second listing differ from the first
        self._drain(wait_all=True)
        adopted, errors = confirm_creates(self.store, self.client, dataset_id, listed,
                                          concurrency=self.concurrency, exclude=self.sent,
                                          deleted_meanwhile=self.deleted)
        self.report.adopted += adopted
        self.report.errors.extend(errors)

    def _lookup(self, record_ids: set[str]) -> None:
        """GET records the listing did not show (or that were not listed at all): a
        404 is proof the record is gone; a record that cannot be looked up stays."""
        if not record_ids:
            return
        found, failed = get_many(self.client, sorted(record_ids), self.concurrency)
        transport = [e for e in failed.values() if isinstance(e, TransportError)]
        if transport:
            self.abort_reason = self.abort_reason or str(transport[0])
        else:
            self.report.errors.extend(lookup_errors(failed))
        live = [r for r in found.values() if r is not None and r.id not in self.sent]
        if live and not self.dry_run:
            self.ready.append(lambda conn: self._refresh_mirror(conn, live))
        for rid, record in found.items():
            self.to_plan.append((rid, None if record is None else remote_of(record)))
        self._drain()

    def _refresh_mirror(self, conn: sqlite3.Connection, records: list[Record]) -> None:
        for record in records:
            self.store.ensure_dataset(record.dataset_id)
        upsert_mirror_rows(conn, [r for r in records if r.id not in self.sent])

    # ------------------------------------------------------------ planning

    def _plan_all(self, conn: sqlite3.Connection, plans: list[tuple[str, Remote | None]]) -> None:
        """Plan records against fresh local state, in the transaction that marks what
        they send in flight — a batch at a time (a record given twice is planned again
        in the next batch, against what the first plan left)."""
        batch: dict[str, Remote | None] = {}
        for rid, remote in plans:
            if rid in batch or len(batch) >= PLAN_BATCH:
                self._plan_batch(conn, batch)
                batch = {}
            batch[rid] = remote
        self._plan_batch(conn, batch)

    def _plan_batch(self, conn: sqlite3.Connection, batch: dict[str, Remote | None]) -> None:
        if not batch:
            return
        works = {w.record_id: w for w in ledger.load_work(conn, batch)}
        mirror_rows: list[tuple[str, str, Any, Any]] = []
        deletes: list[LocalWork] = []
        for rid, remote in batch.items():
            work = works.get(rid)
            if work is None or work.kind == "create":
                if remote is None and not self.dry_run:
                    self._count_gone(ledger.remote_gone(conn, rid))
                continue
            action = plan_record(work, remote)
            self._count(type(action).__name__.lower(), rid, getattr(action, "parts", None))
            if self.dry_run:
                continue
            if remote is None:
                self._count_gone(ledger.remote_gone(conn, rid))
            elif isinstance(action, Conflict):
                ledger.conflict(conn, work, action.parts)
                self.report.new_conflicts += 1
            elif isinstance(action, Settle):
                ledger.settle(conn, work, remote_gone=False)
                self.report.settled += 1
            elif isinstance(action, Push | Delete):
                # the listing that read this record will not overwrite its mirror row (it
                # is written to now): the mirror takes the state the write is planned against
                mirror_rows.append((rid, remote.updated_at, remote.content.payload, remote.content.properties))
                self.sent.add(rid)
                if isinstance(action, Delete):
                    deletes.append(work)
                    continue
                send = {p: v for p, v in (("payload", action.payload), ("properties", action.properties))
                        if v is not None}
                flight = ledger.begin_push(conn, work, send)
                if flight is None:
                    self.sent.discard(rid)
                else:
                    self.to_send.append(Request(partial(self._put, flight),
                                                 partial(ledger.push_done, flight=flight, outcomes={})))
        set_mirror_contents(conn, mirror_rows)
        self.deletes.extend(ledger.begin_deletes(conn, deletes))
        self.planned_requests = len(deletes) < len(mirror_rows)

    def _count(self, name: str, record_id: str, parts: tuple[str, ...] | None = None) -> None:
        self.report.planned[name] = self.report.planned.get(name, 0) + 1
        if self.dry_run:
            entry: dict[str, Any] = {"record_id": record_id, "action": name}
            if parts is not None:
                entry["parts"] = list(parts)
            self.report.planned_records.append(entry)

    # ------------------------------------------------------------ sending

    def _flush_deletes(self) -> None:
        while self.deletes and self.abort_reason is None:
            chunk, self.deletes = self.deletes[:BULK_DELETE_MAX], self.deletes[BULK_DELETE_MAX:]
            self.to_send.append(Request(partial(self._delete, chunk),
                                         partial(self._deletes_unsent, chunk=chunk)))
        if self.deletes:  # aborted: what was marked in flight goes back to pending
            chunk, self.deletes = self.deletes, []
            self.ready.append(lambda conn: self._deletes_unsent(conn, chunk))
        self._drain()

    def _creates(self) -> None:
        """Creates go last: by now every listing has recognised creates an interrupted
        sync left in flight."""
        self._drain()
        if self.dry_run:
            for work in ledger.load_work(self.store.conn):
                if work.kind == "create":
                    self._count("create", work.record_id)
            return
        with self.store.transaction() as conn:
            flights = [ledger.begin_create(conn, w) for w in ledger.load_work(conn) if w.kind == "create"]
        for flight in flights:
            self._count("create", flight.record_id)
            self.to_send.append(Request(partial(self._post, flight),
                                         partial(ledger.create_not_landed, rid=flight.record_id)))
        self._drain()

    def _drain(self, *, wait_all: bool = False) -> None:
        """Commit what is ready — plans (marking what they send in flight), finished
        requests' outcomes, mirror refreshes — in one transaction, then start the
        requests it planned. With ``wait_all``, keep going until nothing is left."""
        while True:
            finished = [f for f in self.running if f.done()]
            for future in finished:
                del self.running[future]
            outcomes = self.ready + [f.result() for f in finished]
            plans, self.to_plan, self.ready = self.to_plan, [], []
            if outcomes or plans:
                queued = len(self.to_send), len(self.deletes), set(self.sent)
                counts = {k: v for k, v in vars(self.report).items() if isinstance(v, int)}
                try:
                    with self.store.transaction() as conn:
                        for outcome in outcomes:
                            outcome(conn)
                        self._plan_all(conn, plans)
                except BaseException:
                    # rolled back (Ctrl-C, an error): nothing it planned is in flight, so
                    # nothing may be sent or put back; its outcomes wait for the next commit
                    del self.to_send[queued[0]:]
                    del self.deletes[queued[1]:]
                    self.sent &= queued[2]  # in place: listings hold this set
                    vars(self.report).update(counts)  # the outcomes count when committed
                    self.ready = outcomes + self.ready
                    raise
            self.done += len(finished)
            if self.progress and finished:
                self.progress("push", self.done, None)
            self._start()
            if not wait_all:
                return
            if not self.running and not self.to_plan and not self.ready:
                if self.deletes:
                    self._flush_deletes()
                    continue
                return
            if self.running:
                # every request planned is queued on the pool already: outcomes are
                # committed a batch at a time (each commit costs the pool's threads the GIL)
                wait(self.running, timeout=0.25, return_when=FIRST_COMPLETED)
                wait(self.running, timeout=COMMIT_EVERY, return_when=ALL_COMPLETED)

    def _start(self) -> None:
        """Start the requests planned; once the push phase stopped, what was planned
        but not started goes back to pending (a create to a pending create)."""
        assert self.pool is not None
        requests, self.to_send = self.to_send, []
        for request in requests:
            if self.abort_reason is not None:
                self.ready.append(request.unsent)
            else:
                self.running[self.pool.submit(request.send)] = request


# ------------------------------------------------------------------ sync_runs


def _start_run(store: Store) -> int:
    with store.transaction() as conn:
        cursor = conn.execute("INSERT INTO sync_runs (started_at) VALUES (?)", (now_ts(),))
        return int(cursor.lastrowid or 0)


def _finish_run(store: Store, run_id: int | None, report: SyncReport) -> None:
    if run_id is None:
        return
    failed = report.errors or report.interrupted
    status = "failed" if failed else "conflicts" if report.open_conflicts else "ok"
    notes = ["interrupted (Ctrl-C)"] if report.interrupted else []
    with store.transaction() as conn:
        conn.execute(
            """UPDATE sync_runs SET finished_at = ?, pushed = ?, pulled = ?, conflicts = ?,
                      errors = ?, status = ?, message = ? WHERE id = ?""",
            (now_ts(), report.pushed, report.pulled, report.open_conflicts, len(report.errors),
             status, "; ".join(notes + report.errors + report.warnings)[:1000] or None, run_id),
        )
