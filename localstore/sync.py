"""Sync: refresh the remote state of what is about to be pushed, plan (pure, in
localstore.plan), execute with bounded concurrency, then pull every tracked dataset.

The API has no conditional write, so the push rule is checked against remote state read
just before the push: one listing per dataset where that is cheaper than a GET per
record, otherwise GETs. Each outcome is committed as it arrives, so an interrupted sync
loses nothing and the next one converges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import reconcile
from .errors import (
    ApiError,
    NotFoundError,
    RequestRejectedError,
    TransportError,
)
from .plan import Conflict, Create, Delete, LocalWork, Push, Remote, Settle, plan
from .pull import (
    Progress,
    apply_staged,
    pull_dataset,
    refresh_records,
    stage_listing,
    staged_remotes,
)
from .store import Store
from .timeutil import now_ts

if TYPE_CHECKING:
    from .api import Client, Record

BULK_DELETE_MAX = 500
COMMIT_EVERY = 200  # outcomes per transaction while pushing
ABORT_AFTER_FAILURES = 5  # consecutive transport/server failures end the push phase


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
        data = {k: v for k, v in self.__dict__.items()}
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
    """Push queued edits, then pull. One sync at a time per store (SyncInProgressError)."""
    report = SyncReport(dry_run=dry_run)
    with store.sync_lock():
        run_id = None if dry_run else _start_run(store)
        try:
            works, remotes = _refresh(store, client, dry_run=dry_run, concurrency=concurrency, progress=progress)
            actions = plan(works, remotes)
            for action in actions:
                name = type(action).__name__.lower()
                report.planned[name] = report.planned.get(name, 0) + 1
            if dry_run:
                report.new_conflicts = report.planned.get("conflict", 0)
                report.open_conflicts = reconcile.conflict_count(store.conn) + report.new_conflicts
                report.pending = len(works)
                return report
            _Executor(store, client, report, concurrency, progress).run(actions)
            if not report.errors:
                for dataset_id in store.tracked_dataset_ids():
                    result = pull_dataset(store, client, dataset_id, concurrency=concurrency, progress=progress)
                    report.pulled += result.records
                    report.new_conflicts += result.conflicts
        except ApiError as exc:
            report.errors.append(str(exc))
        finally:
            if not dry_run:
                report.open_conflicts = reconcile.conflict_count(store.conn)
                report.pending = len(reconcile.load_work(store.conn))
                _finish_run(store, run_id, report)
    return report


# ------------------------------------------------------------------ refresh


def _refresh(
    store: Store, client: Client, *, dry_run: bool, concurrency: int, progress: Progress | None
) -> tuple[list[LocalWork], dict[str, Remote | None]]:
    """Bring the remote state of every record with pending work up to date (in the
    mirror; for a dry run only in memory) and return (work, remote states)."""
    works = reconcile.load_work(store.conn)
    by_dataset: dict[str, list[LocalWork]] = {}
    for work in works:
        by_dataset.setdefault(work.dataset_id, []).append(work)
    remotes: dict[str, Remote | None] = {}
    to_get: list[str] = []
    for dataset_id, group in by_dataset.items():
        edits = [w.record_id for w in group if w.kind != "create"]
        if _should_list(store, dataset_id, group):
            staged = stage_listing(store, client, dataset_id, concurrency=concurrency, progress=progress)
            if dry_run:
                remotes.update(staged_remotes(store, edits))
                if not staged.complete:  # a record missing from a partial listing may exist
                    to_get += [r for r, remote in remotes.items() if remote is None and r in edits]
            else:
                apply_staged(store, staged)
                if not staged.complete:
                    to_get += _missing_from_mirror(store, edits)
        else:
            to_get += edits
    if to_get:
        fetched, gone = _get_many(client, to_get, concurrency)
        if dry_run:
            remotes.update({r.id: Remote(r.updated_at, _content(r)) for r in fetched})
            remotes.update({g: None for g in gone})
        else:
            refresh_records(store, client, fetched, gone)
    if dry_run:
        return works, remotes
    works = reconcile.load_work(store.conn)  # the refresh may have settled or conflicted some
    return works, reconcile.load_remotes(store.conn, [w.record_id for w in works if w.kind != "create"])


def _should_list(store: Store, dataset_id: str, group: list[LocalWork]) -> bool:
    """A listing costs one request per 100 records; a GET one per record."""
    if reconcile.has_in_flight_creates(store.conn, dataset_id):
        return True
    edits = sum(1 for w in group if w.kind != "create")
    if edits == 0:
        return False
    pages = -(-store.scalar("SELECT count(*) FROM mirror WHERE dataset_id = ?", (dataset_id,)) // 100)
    return pages <= edits


def _missing_from_mirror(store: Store, ids: list[str]) -> list[str]:
    return [r for r in ids if store.scalar("SELECT 1 FROM mirror WHERE id = ? AND deleted_at IS NULL", (r,)) is None]


def _content(record: Record) -> Any:
    from .merge import Content

    return Content(record.payload, record.properties)


def _get_many(client: Client, ids: Sequence[str], concurrency: int) -> tuple[list[Record], list[str]]:
    fetched: list[Record] = []
    gone: list[str] = []

    def get(rid: str) -> tuple[str, Record | None]:
        try:
            return rid, client.get_record(rid)
        except NotFoundError:
            return rid, None

    for rid, record in _bounded(get, ids, concurrency):
        if record is None:
            gone.append(rid)
        else:
            fetched.append(record)
    return fetched, gone


def _bounded(fn: Callable[[Any], Any], items: Iterable[Any], concurrency: int) -> Iterator[Any]:
    """Run fn over items with at most ``concurrency`` in flight, yielding results as they
    complete; the first exception propagates after in-flight calls are abandoned."""
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="localstore-sync") as pool:
        todo = iter(items)
        pending: set[Future[Any]] = set()
        try:
            while True:
                while len(pending) < concurrency:
                    item = next(todo, _END)
                    if item is _END:
                        break
                    pending.add(pool.submit(fn, item))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


_END = object()


# ------------------------------------------------------------------ execute


class _Executor:
    def __init__(
        self, store: Store, client: Client, report: SyncReport, concurrency: int, progress: Progress | None
    ) -> None:
        self.store = store
        self.client = client
        self.report = report
        self.concurrency = concurrency
        self.progress = progress
        self.failures_in_a_row = 0
        self.abort_reason: str | None = None
        self.done = 0
        self.total = 0

    def run(self, actions: list[Any]) -> None:
        self.total = sum(1 for a in actions if isinstance(a, (Create, Push, Delete)))
        with self.store.transaction() as conn:
            for action in actions:
                if isinstance(action, Conflict):
                    reconcile.commit_conflict(conn, action.work, action.parts)
                    self.report.new_conflicts += 1
                elif isinstance(action, Settle):
                    reconcile.commit_settle(conn, action.work, remote_gone=action.remote_gone)
                    self.report.settled += 1
        for step in (
            lambda: self._creates([a.work for a in actions if isinstance(a, Create)]),
            lambda: self._pushes([a for a in actions if isinstance(a, Push)]),
            lambda: self._deletes([a.work for a in actions if isinstance(a, Delete)]),
        ):
            if self.abort_reason is None:
                step()
        if self.abort_reason is not None:
            self.report.errors.append(self.abort_reason)

    # -- bookkeeping

    def _failed(self, exc: ApiError) -> None:
        """Count a failure; the network being gone (or failures piling up) stops the push
        phase after the current batch is committed."""
        self.failures_in_a_row += 1
        if isinstance(exc, TransportError) or self.failures_in_a_row >= ABORT_AFTER_FAILURES:
            self.abort_reason = self.abort_reason or str(exc)
        else:
            self.report.errors.append(str(exc))

    def _commit_batches(
        self,
        outcomes: Iterator[Any],
        apply: Callable[[Any, Any], None],
        weight: Callable[[Any], int] = lambda _: 1,
    ) -> None:
        """Commit outcomes COMMIT_EVERY at a time (and at least every half second); stop
        early once the push phase is aborted (what is not committed stays pending)."""
        batch: list[Any] = []
        last = time.monotonic()

        def flush() -> None:
            nonlocal batch, last
            if batch:
                with self.store.transaction() as conn:
                    for outcome in batch:
                        apply(conn, outcome)
                batch = []
            last = time.monotonic()

        try:
            for outcome in outcomes:
                batch.append(outcome)
                self.done += weight(outcome)
                if self.progress:
                    self.progress("push", self.done, self.total)
                if len(batch) >= COMMIT_EVERY or time.monotonic() - last > 0.5:
                    flush()
                if self.abort_reason is not None:
                    break
        finally:
            flush()

    # -- creates

    def _creates(self, works: list[LocalWork]) -> None:
        if not works:
            return
        with self.store.transaction() as conn:
            reconcile.mark_in_flight(conn, works)

        def post(work: LocalWork) -> tuple[LocalWork, Record | None, ApiError | None]:
            try:
                assert work.payload is not None
                return work, self.client.create_record(work.dataset_id, work.payload, work.properties), None
            except ApiError as exc:
                return work, None, exc

        def apply(conn: Any, outcome: tuple[LocalWork, Record | None, ApiError | None]) -> None:
            work, record, error = outcome
            if record is not None:
                reconcile.commit_create(conn, work, record)
                self.report.created += 1
                self.failures_in_a_row = 0
            elif isinstance(error, (RequestRejectedError, NotFoundError)):
                reconcile.commit_rejected_work(conn, work, error.message)
                self.report.rejected += 1
            else:
                # Outcome unknown: stays in flight; the next sync finds it in the listing
                # (adopts it) or sends it again.
                assert error is not None
                self._failed(error)

        self._commit_batches(_bounded(post, works, self.concurrency), apply)

    # -- pushes

    def _pushes(self, pushes: list[Push]) -> None:
        if not pushes:
            return

        def put(action: Push) -> tuple[Push, dict[str, Any], dict[str, str], ApiError | None]:
            sent: dict[str, Any] = {}
            rejected: dict[str, str] = {}
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
                    return action, sent, rejected, exc
            return action, sent, rejected, None

        def apply(conn: Any, outcome: tuple[Push, dict[str, Any], dict[str, str], ApiError | None]) -> None:
            action, sent, rejected, error = outcome
            if isinstance(error, NotFoundError):  # deleted on the server since the check
                if sent or rejected:
                    reconcile.commit_push(conn, action.work, sent, rejected)
                reconcile.settle_remote_gone(conn, [action.work.record_id])
                self.report.new_conflicts += 1
                return
            if sent or rejected:
                reconcile.commit_push(conn, action.work, sent, rejected)
                self.report.updated += 1 if sent else 0
                self.report.rejected += len(rejected)
            if error is not None:
                self._failed(error)
            else:
                self.failures_in_a_row = 0

        self._commit_batches(_bounded(put, pushes, self.concurrency), apply)
        self._learn_untracked([a.work for a in pushes])

    def _learn_untracked(self, works: list[LocalWork]) -> None:
        """Records of tracked datasets learn their new updated_at from the closing pull;
        the others with a GET each."""
        tracked = set(self.store.tracked_dataset_ids())
        ids = [w.record_id for w in works if w.dataset_id not in tracked]
        if ids:
            fetched, gone = _get_many(self.client, ids, self.concurrency)
            refresh_records(self.store, self.client, fetched, gone)

    # -- deletes

    def _deletes(self, works: list[LocalWork]) -> None:
        if not works:
            return
        chunks = [works[i : i + BULK_DELETE_MAX] for i in range(0, len(works), BULK_DELETE_MAX)]

        def delete(chunk: list[LocalWork]) -> tuple[list[LocalWork], dict[str, str], ApiError | None]:
            try:
                self.client.bulk_delete([w.record_id for w in chunk])
                return chunk, {}, None
            except (NotFoundError, RequestRejectedError):
                pass  # find out which one, record by record
            except ApiError as exc:
                return chunk, {}, exc
            rejected: dict[str, str] = {}
            for work in chunk:
                try:
                    self.client.delete_record(work.record_id)
                except NotFoundError:
                    pass  # already gone: done
                except RequestRejectedError as exc:
                    rejected[work.record_id] = exc.message
                except ApiError as exc:
                    return chunk, rejected, exc
            return chunk, rejected, None

        def apply(conn: Any, outcome: tuple[list[LocalWork], dict[str, str], ApiError | None]) -> None:
            chunk, rejected, error = outcome
            if error is not None:
                self._failed(error)
                return
            for work in chunk:
                if work.record_id in rejected:
                    reconcile.commit_rejected_work(conn, work, rejected[work.record_id])
                    self.report.rejected += 1
            done = [w for w in chunk if w.record_id not in rejected]
            reconcile.commit_delete(conn, done)
            self.report.deleted += len(done)
            self.failures_in_a_row = 0

        self._commit_batches(_bounded(delete, chunks, self.concurrency), apply, lambda o: len(o[0]))


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

