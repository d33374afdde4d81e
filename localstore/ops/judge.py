"""Live judging: run a judge (the spec's CreateJudgeRequest) on stored records through
``POST /v1/observability/dataset-records/{id}/live-judging`` and keep every verdict.

Each verdict becomes a row of ``judgement_runs`` (nothing is ever overwritten); the
``judgements`` view shows the latest per record and judge. Verdicts are committed in
batches as they arrive, so an interrupted run keeps what completed.

The server judges the record it holds, so a record with unpushed local edits is skipped
unless ``allow_stale`` (it is then judged as the server has it), and a record created
offline, which the server does not have yet, is always skipped. Each record is read from
the server just before it is judged, and its verdict is filed under that version's
``updated_at``; a record that changed on the server since the pull is mirrored anew and
named in ``JudgeReport.refreshed``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from localstore.core.ids import parse_uuid
from localstore.core.timestamps import now_ts
from localstore.errors import (
    ApiError,
    AuthenticationError,
    Interrupted,
    NotFoundError,
    NotFoundLocally,
    RequestRejectedError,
    TransportError,
    UsageError,
)
from localstore.ops.edits import resolve_record_id
from localstore.ops.judge_definition import validate_judge_definition
from localstore.store.db import Store
from localstore.sync.bounded import bounded

if TYPE_CHECKING:
    from localstore.api import Client, JudgeOutput
    from localstore.core.record import Record

Progress = Callable[[str, int, "int | None"], None]

COMMIT_EVERY = 50  # verdicts per transaction (and at least one commit every COMMIT_SECONDS)
COMMIT_SECONDS = 0.5
ABORT_AFTER_FAILURES = 5  # consecutive server-side failures (after retries) stop the batch
MAX_CONCURRENCY = 64
_IN_CHUNK = 500  # ids per "IN (…)" lookup


# ------------------------------------------------------------------ choosing records


def select_records(store: Store, ids: Sequence[str] | None = None, *, where: str | None = None) -> list[str]:
    """Record ids to judge: the given ids (canonical, deduplicated, each known to the
    store) or those of the ``records`` view matching the SQL condition ``where``, which
    runs on a read-only connection."""
    from localstore.ops.queries import run_sql

    if (not ids) == (where is None):
        raise UsageError("give RECORD_IDs or --where CONDITION (one of the two)")
    if where is not None:
        if not where.strip():
            raise UsageError("--where is empty: give an SQL condition on the records view")
        sql = f"SELECT id FROM records WHERE (\n{where}\n) ORDER BY dataset_id, created_at, id"
        try:
            result = run_sql(store, sql)
        except UsageError as exc:
            raise UsageError(f"bad --where condition: {exc}") from None
        return list(dict.fromkeys(str(row[0]) for row in result.rows))
    assert ids is not None
    wanted = _canonical_ids(store, ids)
    known = set(_lookup(store, wanted))
    for rid in wanted:
        if rid not in known:
            raise NotFoundLocally(f"record {rid} is not in the store; `localstore fetch {rid}` mirrors it")
    return wanted


def _canonical_ids(store: Store, ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise UsageError("give a list of record ids, not one string")
    return list(dict.fromkeys(resolve_record_id(store.conn, parse_uuid(i)) for i in ids))


@dataclass(frozen=True)
class _Local:
    """What the store knows of a record, for judging."""

    remote_updated_at: str | None  # None: the server does not have it (offline create)
    remote_deleted: bool
    working_state: str | None  # 'pending' / 'conflict' / None


def _lookup(store: Store, ids: Sequence[str]) -> dict[str, _Local]:
    found: dict[str, _Local] = {}
    for start in range(0, len(ids), _IN_CHUNK):
        chunk = list(ids[start : start + _IN_CHUNK])
        marks = ", ".join("?" * len(chunk))
        rows = store.conn.execute(
            f"""SELECT m.id, m.updated_at, m.deleted_at IS NOT NULL, w.state
                FROM mirror AS m LEFT JOIN working AS w ON w.record_id = m.id
                WHERE m.id IN ({marks})
                UNION ALL
                SELECT w.record_id, NULL, 0, w.state FROM working AS w
                WHERE w.record_id IN ({marks})
                  AND NOT EXISTS (SELECT 1 FROM mirror AS m WHERE m.id = w.record_id)""",
            chunk + chunk,
        ).fetchall()
        for rid, updated_at, deleted, state in rows:
            found[rid] = _Local(updated_at, bool(deleted), state)
    return found


# ------------------------------------------------------------------ judging


@dataclass
class JudgeReport:
    judge_name: str
    model_name: str
    selected: int = 0
    succeeded: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)  # {record_id, error}
    skipped: list[dict[str, str]] = field(default_factory=list)  # {record_id, reason}
    not_judged: list[str] = field(default_factory=list)  # left out when the batch stopped
    refreshed: list[str] = field(default_factory=list)  # changed on the server since the pull
    stopped: str | None = None  # why the batch stopped early, if it did
    interrupted: bool = False  # Ctrl-C stopped it
    answers: Counter[str | float] = field(default_factory=Counter)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed or self.not_judged else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge_name": self.judge_name,
            "model_name": self.model_name,
            "selected": self.selected,
            "succeeded": self.succeeded,
            "failed": len(self.failed) + len(self.not_judged),
            "skipped": len(self.skipped),
            "failures": self.failed,
            "skips": self.skipped,
            "not_judged": self.not_judged,
            "refreshed": self.refreshed,
            "stopped": self.stopped,
            "interrupted": self.interrupted,
            "answers": [
                {"answer": answer, "n": n}
                for answer, n in sorted(self.answers.items(), key=lambda kv: (-kv[1], str(kv[0])))
            ],
        }


STALE_HINT = "sync first, or pass --allow-stale to judge the server's version"


def _skip_reason(local: _Local | None, allow_stale: bool) -> str | None:
    if local is None:
        return "not in the store"
    if local.remote_updated_at is None:
        return "created offline and not on the server yet: run `localstore sync` first"
    if local.working_state is not None and not allow_stale:
        what = "an open conflict" if local.working_state == "conflict" else "unpushed local edits"
        return f"has {what} and the server would judge its remote version: {STALE_HINT}"
    if local.remote_deleted:
        return "deleted on the server"
    return None


JudgeCall = tuple[str, "JudgeOutput | None", "ApiError | None", "Record | None"]


def judge_records(
    store: Store,
    client: Client,
    definition: Mapping[str, Any],
    record_ids: Iterable[str],
    *,
    concurrency: int = 8,
    allow_stale: bool = False,
    progress: Progress | None = None,
) -> JudgeReport:
    """Judge each record on the server and store every verdict in ``judgement_runs``.

    A record that fails for good is reported and the others go on. Raises the
    TransportError (AuthenticationError) when the server is unreachable (refuses the
    key) before any verdict: then nothing is stored. Once verdicts have arrived, such a
    failure stops the batch: what completed is kept, the rest is ``not_judged``. Ctrl-C
    does the same (calls in flight are abandoned) and raises :class:`Interrupted` with
    the report."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"concurrency must be 1..{MAX_CONCURRENCY}, not {concurrency!r}")
    judge_def = dict(definition)
    validate_judge_definition(judge_def)
    report = JudgeReport(judge_def["name"], judge_def["model_name"])
    ids = _canonical_ids(store, record_ids)
    report.selected = len(ids)
    known = _lookup(store, ids)
    todo: list[str] = []
    for rid in ids:
        reason = _skip_reason(known.get(rid), allow_stale)
        if reason is None:
            todo.append(rid)
        else:
            report.skipped.append({"record_id": rid, "reason": reason})
    if todo:
        try:
            _Run(store, client, judge_def, report, known, progress).run(todo, concurrency)
        except KeyboardInterrupt:
            report.interrupted = True
            raise Interrupted(report) from None
    return report


@dataclass
class _Run:
    """One batch of judge calls: outcomes are committed as they arrive."""

    store: Store
    client: Client
    definition: dict[str, Any]
    report: JudgeReport
    known: Mapping[str, _Local]
    progress: Progress | None
    failures_in_a_row: int = 0
    finished: set[str] = field(default_factory=set)
    batch: list[tuple[Any, ...]] = field(default_factory=list)
    newer: list[Record] = field(default_factory=list)  # server versions newer than the mirror's

    def call(self, rid: str) -> JudgeCall:
        """Read the record as the server holds it, then judge it: the verdict is filed
        under the version read (a write landing between the two is not seen)."""
        try:
            record = self.client.get_record(rid)
            return rid, self.client.judge_record(rid, self.definition), None, record
        except ApiError as exc:
            return rid, None, exc, None

    def flush(self) -> None:
        if self.batch or self.newer:
            from localstore.store.mirror import upsert_mirror_rows

            with self.store.transaction() as conn:
                upsert_mirror_rows(conn, self.newer)  # as a pull would have
                conn.executemany(
                    """INSERT INTO judgement_runs (record_id, judge_name, model_name, answer,
                           analysis, judged_at, record_updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    self.batch,
                )
            self.batch, self.newer = [], []

    def run(self, todo: list[str], concurrency: int) -> None:
        last = time.monotonic()
        outcomes = cast(Generator[JudgeCall, None, None], bounded(self.call, todo, concurrency))
        try:
            for rid, verdict, error, record in outcomes:
                self.finished.add(rid)
                if verdict is not None:
                    assert record is not None
                    self.batch.append(self._row(rid, verdict, record))
                else:
                    assert error is not None
                    self._failed(rid, error)
                if self.progress:
                    self.progress("judge", len(self.finished), len(todo))
                if self.report.stopped is not None:
                    break
                if len(self.batch) >= COMMIT_EVERY or time.monotonic() - last > COMMIT_SECONDS:
                    self.flush()
                    last = time.monotonic()
        except KeyboardInterrupt:
            self.report.stopped = "interrupted (Ctrl-C)"
            raise
        finally:
            outcomes.close()  # cancels what has not started; abandons calls in flight
            if self.store.conn.in_transaction:  # Ctrl-C just before a COMMIT
                self.store.conn.execute("ROLLBACK")
            self.flush()
            if self.report.stopped is not None:
                self.report.not_judged = [rid for rid in todo if rid not in self.finished]

    def _row(self, rid: str, verdict: JudgeOutput, record: Record) -> tuple[Any, ...]:
        self.failures_in_a_row = 0
        self.report.succeeded += 1
        self.report.answers[verdict.answer] += 1
        name, model = self.definition["name"], self.definition["model_name"]
        if record.updated_at != self.known[rid].remote_updated_at:
            self.newer.append(record)
            self.report.refreshed.append(rid)
        return (rid, name, model, verdict.answer, verdict.analysis, now_ts(), record.updated_at)

    def _failed(self, rid: str, error: ApiError) -> None:
        fatal = isinstance(error, (TransportError, AuthenticationError))
        if not isinstance(error, (NotFoundError, RequestRejectedError)):
            self.failures_in_a_row += 1
        if self.report.succeeded == 0 and fatal:  # offline (or a refused key): store nothing
            if isinstance(error, TransportError):
                raise TransportError(f"{error}; nothing was judged") from None
            raise error
        if fatal or self.failures_in_a_row >= ABORT_AFTER_FAILURES:
            self.report.stopped = str(error)
        self.report.failed.append({"record_id": rid, "error": str(error)})
