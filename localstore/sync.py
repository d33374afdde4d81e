"""Sync: check each pending change against the record's current remote state, push
what the plan (pure, localstore.plan) allows, then pull.

The API has no conditional write, so the push rule is checked against remote state read
just before the push — one listing per dataset where that is cheaper than a GET per
record, otherwise GETs — and the two are pipelined: a record is planned and its push
sent as soon as its page (or GET) arrives. A listing made for the checks is also that
dataset's pull; tracked datasets not listed that way are pulled at the end. Each
outcome is committed as it arrives, so an interrupted sync loses nothing and the next
one converges.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import reconcile
from .errors import ApiError, NotFoundError, RequestRejectedError, TransportError
from .merge import Content
from .plan import Action, Conflict, Create, Delete, LocalWork, Push, Remote, Settle, plan_record
from .pull import Progress, StagedListing, Stager, apply_staged, get_record_checked, pull_dataset
from .store import Store
from .timeutil import now_ts

if TYPE_CHECKING:
    from .api import Client, Record

BULK_DELETE_MAX = 500
ABORT_AFTER_FAILURES = 5  # consecutive failed requests end the push phase


@dataclass
class SyncReport:
    dry_run: bool = False
    created: int = 0
    updated: int = 0
    deleted: int = 0
    settled: int = 0
    new_conflicts: int = 0
    open_conflicts: int = 0
    rejected: int = 0
    pulled: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    planned: dict[str, int] = field(default_factory=dict)

    @property
    def pushed(self) -> int:
        return self.created + self.updated + self.deleted

    @property
    def exit_code(self) -> int:
        if self.errors:
            return 1
        return 3 if self.open_conflicts else 0

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["pushed"] = self.pushed
        data["exit_code"] = self.exit_code
        return data


def sync(
    store: Store,
    client: Client,
    *,
    dry_run: bool = False,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> SyncReport:
    """Push queued edits, then pull. One sync at a time per store (SyncInProgressError).
    With ``dry_run`` nothing is sent and the store is not changed."""
    report = SyncReport(dry_run=dry_run)
    with store.sync_lock():
        run_id = None if dry_run else _start_run(store)
        try:
            listed = _Pipeline(store, client, report, concurrency, progress, dry_run).run()
            if not dry_run and not report.errors:
                for dataset_id in store.tracked_dataset_ids():
                    if dataset_id in listed:
                        continue
                    result = pull_dataset(store, client, dataset_id, concurrency=concurrency, progress=progress)
                    report.pulled += result.records
                    report.new_conflicts += result.conflicts
        except ApiError as exc:
            report.errors.append(str(exc))
        finally:
            if dry_run:
                report.new_conflicts = report.planned.get("conflict", 0)
                report.open_conflicts = reconcile.conflict_count(store.conn) + report.new_conflicts
                report.pending = len(reconcile.load_work(store.conn))
            else:
                report.open_conflicts = reconcile.conflict_count(store.conn)
                report.pending = len(reconcile.load_work(store.conn))
                _finish_run(store, run_id, report)
    return report


Outcome = Callable[[Any], None]  # applied to the connection inside a transaction


class _Pipeline:
    """Reads remote state, plans each record as it arrives, sends pushes on a bounded
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
        self.in_flight: set[Future[Outcome]] = set()
        self.ready: list[Outcome] = []  # commits waiting for the next transaction
        self.deletes: list[LocalWork] = []
        self.sent: set[str] = set()  # records pushed or deleted: listings keep off them
        self.complete: set[str] = set()  # datasets listed completely in this sync
        self.failures_in_a_row = 0
        self.abort_reason: str | None = None
        self.done = 0
        self.total = 0

    # ------------------------------------------------------------ the run

    def run(self) -> set[str]:
        """Returns the datasets fully listed (their pull is done)."""
        works = reconcile.load_work(self.store.conn)
        self.total = len(works)
        by_dataset: dict[str, list[LocalWork]] = {}
        for work in works:
            by_dataset.setdefault(work.dataset_id, []).append(work)
        listed: set[str] = set()
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency), thread_name_prefix="localstore-push") as pool:
            self.pool = pool
            try:
                for dataset_id, group in by_dataset.items():
                    edits = {w.record_id: w for w in group if w.kind != "create"}
                    if self._should_list(dataset_id, group):
                        left = self._list(dataset_id, edits)
                        listed.add(dataset_id)
                    else:
                        left = edits
                    if left and self.abort_reason is None:
                        self._get(left)
                    if self.abort_reason is not None:
                        break
                if self.abort_reason is None:
                    self._creates()
                self._flush_deletes()
            finally:
                self._drain(wait_all=True)
        if self.abort_reason is not None:
            self.report.errors.append(self.abort_reason)
        return listed

    def _should_list(self, dataset_id: str, group: list[LocalWork]) -> bool:
        """A listing costs one request per 100 records, a GET one per record; creates
        left in flight by an interrupted sync need the listing to be recognised."""
        if reconcile.has_in_flight_creates(self.store.conn, dataset_id):
            return True
        edits = sum(1 for w in group if w.kind != "create")
        if edits == 0:
            return False
        mirrored = self.store.scalar("SELECT count(*) FROM mirror WHERE dataset_id = ?", (dataset_id,))
        return -(-mirrored // 100) <= edits

    # ------------------------------------------------------------ remote state

    def _list(self, dataset_id: str, edits: dict[str, LocalWork]) -> dict[str, LocalWork]:
        """List the dataset, planning each pending record as its page arrives. Returns
        the pending records the listing did not settle."""
        stager = Stager(self.store.conn, dataset_id)
        seen = 0
        pages = self.client.iter_record_pages(dataset_id, page_size=100, concurrency=self.concurrency)
        try:
            for page in pages:
                for record in page.records:
                    work = edits.pop(record.id, None)
                    if work is not None:
                        self._handle(work, _remote_of(record))
                stager.add(page.records)
                seen += len(page.records)
                if self.progress:
                    self.progress(f"check {dataset_id[:8]}", seen, page.count)
                self._drain()
                if self.abort_reason is not None:
                    return {}
        except TransportError as exc:
            self.abort_reason = str(exc)
            return {}
        finally:
            pages.close()
        stager.flush()
        listing = pages.listing
        assert listing is not None
        if listing.complete and self.dry_run:
            for work in edits.values():
                self._handle(work, None)
            return {}
        if self.dry_run:
            return edits
        self._drain()
        if listing.complete:
            self.complete.add(dataset_id)
        staged = StagedListing(dataset_id, listing.count, listing.complete, list(listing.problems))
        result = apply_staged(self.store, staged, exclude=self.sent)
        self.report.pulled += result.records
        self.report.new_conflicts += result.conflicts
        if not listing.complete:
            return edits
        # absent from a complete listing: gone (apply_staged settled the mirrored ones)
        with self.store.transaction() as conn:
            reconcile.settle_remote_gone(conn, edits)
        return {}

    def _get(self, edits: dict[str, LocalWork]) -> None:
        def get(rid: str) -> tuple[str, Record | None]:
            try:
                return rid, get_record_checked(self.client, rid)
            except NotFoundError:
                return rid, None

        try:
            for rid, record in _bounded(get, list(edits), self.concurrency):
                if record is not None and not self.dry_run:
                    self.ready.append(lambda conn, r=record: self._refresh_mirror(r))
                self._handle(edits[rid], None if record is None else _remote_of(record))
                self._drain()
                if self.abort_reason is not None:
                    return
        except TransportError as exc:
            self.abort_reason = str(exc)

    def _refresh_mirror(self, record: Record) -> None:
        if record.id not in self.sent:
            self.store.ensure_dataset(record.dataset_id)
            self.store.upsert_mirror([record])

    # ------------------------------------------------------------ planning

    def _handle(self, work: LocalWork, remote: Remote | None) -> None:
        action = plan_record(work, remote)
        self._count(action)
        if self.dry_run:
            return
        if isinstance(action, Conflict):
            self.ready.append(lambda conn: reconcile.commit_conflict(conn, work, action.parts))
            self.report.new_conflicts += 1
        elif isinstance(action, Settle):
            self.ready.append(lambda conn: reconcile.commit_settle(conn, work, remote_gone=action.remote_gone))
            self.report.settled += 1
        elif isinstance(action, Push):
            self.sent.add(work.record_id)
            self._submit(self._put, action)
        elif isinstance(action, Delete):
            self.sent.add(work.record_id)
            self.deletes.append(work)
            if len(self.deletes) >= BULK_DELETE_MAX:
                self._flush_deletes()

    def _count(self, action: Action) -> None:
        name = type(action).__name__.lower()
        self.report.planned[name] = self.report.planned.get(name, 0) + 1

    # ------------------------------------------------------------ sending

    def _submit(self, fn: Callable[[Any], Outcome], arg: Any) -> None:
        assert self.pool is not None
        # The pool runs `concurrency` at a time; the queue is not bounded here so that
        # reading pages never waits for pushes (the work is in memory already).
        self.in_flight.add(self.pool.submit(fn, arg))

    def _flush_deletes(self) -> None:
        if self.deletes and self.abort_reason is None:
            chunk, self.deletes = self.deletes[:BULK_DELETE_MAX], self.deletes[BULK_DELETE_MAX:]
            self._submit(self._delete, chunk)
            self._flush_deletes()

    def _creates(self) -> None:
        """Creates go last: by now every listing has recognised creates an interrupted
        sync left in flight, so what is still in flight here surely never landed."""
        if self.dry_run:
            for work in reconcile.load_work(self.store.conn):
                if work.kind == "create":
                    self._count(Create(work))
            return
        self._drain()
        # read and mark in one transaction: an edit in between would change the body
        with self.store.transaction() as conn:
            in_flight = reconcile.creates_in_flight(conn)
            creates = [w for w in reconcile.load_work(conn) if w.kind == "create"]
            # one left in flight is sent again only if a complete listing did not find it
            unconfirmed = [w for w in creates if w.record_id in in_flight and w.dataset_id not in self.complete]
            creates = [w for w in creates if w not in unconfirmed]
            reconcile.mark_in_flight(conn, creates)
        if unconfirmed:
            self.report.errors.append(
                f"{len(unconfirmed)} create(s) left in flight by an interrupted sync could not be "
                "confirmed (the dataset's listing did not add up); run sync again"
            )
        for work in creates:
            self._count(Create(work))
            self._submit(self._post, work)

    def _post(self, work: LocalWork) -> Outcome:
        try:
            assert work.payload is not None
            record = self.client.create_record(work.dataset_id, work.payload, work.properties)
        except (RequestRejectedError, NotFoundError) as exc:
            message = exc.message
            return lambda conn: self._rejected(conn, work, message)
        except ApiError as exc:
            # outcome unknown: stays in flight; the next sync finds it in the listing
            # (and adopts it) or sends it again
            return lambda conn, e=exc: self._failed(e)
        return lambda conn: self._created(conn, work, record)

    def _created(self, conn: Any, work: LocalWork, record: Record) -> None:
        reconcile.commit_create(conn, work, record)
        self.report.created += 1
        self._succeeded()

    def _rejected(self, conn: Any, work: LocalWork, message: str) -> None:
        reconcile.commit_rejected_work(conn, work, message)
        self.report.rejected += 1
        self._succeeded()

    def _put(self, action: Push) -> Outcome:
        sent: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        error: ApiError | None = None
        for kind, value in (("payload", action.payload), ("properties", action.properties)):
            if value is None:
                continue
            try:
                if kind == "payload":
                    self.client.put_payload(action.work.record_id, value)
                else:
                    self.client.put_properties(action.work.record_id, value)
                sent[kind] = value
            except RequestRejectedError as exc:
                rejected[kind] = exc.message
            except ApiError as exc:
                error = exc
                break

        planned = {k for k, v in (("payload", action.payload), ("properties", action.properties)) if v is not None}
        unsent = planned - set(sent) - set(rejected)

        def apply(conn: Any) -> None:
            if sent or rejected:
                reconcile.commit_push(conn, action.work, sent, rejected, action.remote, unsent=unsent)
                self.report.updated += 1 if sent else 0
                self.report.rejected += len(rejected)
            if isinstance(error, NotFoundError):  # deleted on the server since the check
                _, conflicts = reconcile.settle_remote_gone(conn, [action.work.record_id])
                self.report.new_conflicts += conflicts
                self._succeeded()
            elif error is not None:
                self._failed(error)
            else:
                self._succeeded()

        return apply

    def _delete(self, chunk: list[LocalWork]) -> Outcome:
        rejected: dict[str, str] = {}
        try:
            self.client.bulk_delete([w.record_id for w in chunk])
        except (NotFoundError, RequestRejectedError):
            # find out which one, record by record; 404 on a delete means done
            for work in chunk:
                try:
                    self.client.delete_record(work.record_id)
                except NotFoundError:
                    pass
                except RequestRejectedError as exc:
                    rejected[work.record_id] = exc.message
                except ApiError as exc:
                    return lambda conn, e=exc: self._failed(e)
        except ApiError as exc:
            return lambda conn, e=exc: self._failed(e)

        def apply(conn: Any) -> None:
            for work in chunk:
                if work.record_id in rejected:
                    reconcile.commit_rejected_work(conn, work, rejected[work.record_id])
                    self.report.rejected += 1
            done = [w for w in chunk if w.record_id not in rejected]
            reconcile.commit_delete(conn, done)
            self.report.deleted += len(done)
            self._succeeded()

        return apply

    # ------------------------------------------------------------ outcomes

    def _succeeded(self) -> None:
        self.failures_in_a_row = 0

    def _failed(self, exc: ApiError) -> None:
        """The network being gone, or failures piling up, stops the push phase; what
        was not sent stays pending."""
        self.failures_in_a_row += 1
        if isinstance(exc, TransportError) or self.failures_in_a_row >= ABORT_AFTER_FAILURES:
            self.abort_reason = self.abort_reason or str(exc)
        else:
            self.report.errors.append(str(exc))

    def _drain(self, *, wait_all: bool = False) -> None:
        """Commit what is ready — planned conflicts/settles and finished pushes — in one
        transaction. With ``wait_all``, keep committing as requests finish (at least
        every quarter second) until none is left."""
        while wait_all and self.in_flight:
            wait(self.in_flight, timeout=0.25, return_when=FIRST_COMPLETED)
            self._drain()
        finished = [f for f in self.in_flight if f.done()]
        self.in_flight.difference_update(finished)
        outcomes = self.ready + [f.result() for f in finished]
        self.ready = []
        if not outcomes:
            return
        with self.store.transaction() as conn:
            for outcome in outcomes:
                outcome(conn)
        self.done += sum(1 for _ in finished)
        if self.progress and finished:
            self.progress("push", self.done, None)


def _remote_of(record: Record) -> Remote | None:
    if record.deleted_at is not None:
        return None
    return Remote(record.updated_at, Content(record.payload, record.properties))


def _bounded(fn: Callable[[Any], Any], items: list[Any], concurrency: int) -> Iterator[Any]:
    """Run fn over items with at most ``concurrency`` in flight, yielding results as they
    complete; the first exception propagates after in-flight calls are abandoned."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="localstore-get") as pool:
        todo = iter(items)
        pending: set[Future[Any]] = set()
        try:
            while True:
                for item in todo:
                    pending.add(pool.submit(fn, item))
                    if len(pending) >= concurrency:
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


# ------------------------------------------------------------------ sync_runs


def _start_run(store: Store) -> int:
    with store.transaction() as conn:
        cursor = conn.execute("INSERT INTO sync_runs (started_at) VALUES (?)", (now_ts(),))
        return int(cursor.lastrowid or 0)


def _finish_run(store: Store, run_id: int | None, report: SyncReport) -> None:
    if run_id is None:
        return
    status = "failed" if report.errors else "conflicts" if report.open_conflicts else "ok"
    with store.transaction() as conn:
        conn.execute(
            """UPDATE sync_runs SET finished_at = ?, pushed = ?, pulled = ?, conflicts = ?,
                      errors = ?, status = ?, message = ? WHERE id = ?""",
            (now_ts(), report.pushed, report.pulled, report.open_conflicts, len(report.errors),
             status, "; ".join(report.errors)[:1000] or None, run_id),
        )
