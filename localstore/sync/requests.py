"""The requests a sync sends — a create's POST, a record's PUTs, a batch of deletes —
each run on the pool and returning what to commit on the sync's thread (``Commit``):
the ledger transition of exactly the entries sent, and the report's counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from localstore.core.merge import Content
from localstore.core.plan import Remote
from localstore.errors import (
    ApiError,
    NotFoundError,
    RequestRejectedError,
    TransportError,
    outcome_unknown,
)
from localstore.store import ledger
from localstore.store.ledger import InFlight, PartOutcome
from localstore.sync.report import SyncReport

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.core.record import Record

ABORT_AFTER_FAILURES = 5  # consecutive failed requests end the push phase

Commit = Callable[[sqlite3.Connection], None]  # applied inside a transaction


@dataclass(frozen=True)
class Request:
    send: Callable[[], Commit]  # runs on the pool; returns what to commit
    unsent: Commit  # committed instead when the request is never started


def remote_of(record: Record) -> Remote | None:
    if record.deleted_at is not None:
        return None
    return Remote(record.updated_at, Content(record.payload, record.properties))


class Sends:
    """The requests of a sync run (``localstore.sync.run._Run``) and how their outcomes
    count: what they change of the run's state is declared here."""

    client: Client
    report: SyncReport
    sent: set[str]  # records written this sync: listings keep off them
    deleted: set[str]  # records this sync deleted on the server
    to_plan: list[tuple[str, Remote | None]]
    failures_in_a_row: int
    abort_reason: str | None

    def _deletes_unsent(self, conn: sqlite3.Connection, chunk: list[InFlight]) -> None:
        ledger.deletes_done(conn, [(flight, "unknown", None) for flight in chunk])

    def _post(self, flight: InFlight) -> Commit:
        body = flight.sent
        try:
            record = self.client.create_record(flight.dataset_id, body["payload"], body.get("properties") or {})
        except (RequestRejectedError, NotFoundError) as exc:
            message = exc.message

            def rejected(conn: sqlite3.Connection) -> None:
                ledger.create_rejected(conn, flight.record_id, message)
                self.report.rejected += 1
                self._succeeded()

            return rejected
        except ApiError as exc:
            unknown = outcome_unknown(exc)

            def failed(conn: sqlite3.Connection, e: ApiError = exc) -> None:
                if not unknown:  # certainly not applied: a plain pending create again
                    ledger.create_not_landed(conn, flight.record_id)
                self._failed(e)

            return failed

        def created(conn: sqlite3.Connection) -> None:
            new_id = ledger.create_landed(conn, flight.record_id, record)
            self.report.created += 1
            self.sent.add(new_id)
            self.to_plan.append((new_id, remote_of(record)))  # edits made while it was sent
            self._succeeded()

        return created

    def _put(self, flight: InFlight) -> Commit:
        outcomes: dict[str, PartOutcome] = {}
        messages: dict[str, str] = {}
        error: ApiError | None = None
        gone = False
        for part in ("payload", "properties"):
            if part not in flight.sent:
                continue
            if error is not None or gone:
                outcomes[part] = "unknown"  # not attempted
                continue
            try:
                if part == "payload":
                    self.client.put_payload(flight.record_id, flight.sent[part])
                else:
                    self.client.put_properties(flight.record_id, flight.sent[part])
                outcomes[part] = "sent"
            except RequestRejectedError as exc:
                outcomes[part] = "rejected"
                messages[part] = exc.message
            except NotFoundError:
                outcomes[part] = "unknown"
                gone = True
            except ApiError as exc:
                outcomes[part] = "unknown"
                error = exc

        def apply(conn: sqlite3.Connection) -> None:
            ledger.push_done(conn, flight, outcomes, messages)
            self.report.updated += "sent" in outcomes.values()
            self.report.rejected += sum(1 for o in outcomes.values() if o == "rejected")
            if gone:  # deleted on the server since the check
                self._count_gone(ledger.remote_gone(conn, flight.record_id))
            if error is not None:
                self._failed(error)
            else:
                self._succeeded()

        return apply

    def _delete(self, chunk: list[InFlight]) -> Commit:
        outcome: dict[str, tuple[PartOutcome, str | None]] = {}
        try:
            self.client.bulk_delete([f.record_id for f in chunk])
            outcome = {f.record_id: ("sent", None) for f in chunk}
        except (NotFoundError, RequestRejectedError):
            # find out which one, record by record; 404 on a delete means done
            for flight in chunk:
                try:
                    self.client.delete_record(flight.record_id)
                    outcome[flight.record_id] = ("sent", None)
                except NotFoundError:
                    outcome[flight.record_id] = ("sent", None)
                except RequestRejectedError as exc:
                    outcome[flight.record_id] = ("rejected", exc.message)
                except ApiError as exc:
                    return self._deletes_failed(chunk, outcome, exc)
        except ApiError as exc:
            return self._deletes_failed(chunk, outcome, exc)

        def apply(conn: sqlite3.Connection) -> None:
            ledger.deletes_done(conn, [(f, *outcome[f.record_id]) for f in chunk])
            for state, _ in outcome.values():
                self.report.deleted += state == "sent"
                self.report.rejected += state == "rejected"
            self.deleted.update(rid for rid, (state, _) in outcome.items() if state == "sent")
            self._succeeded()

        return apply

    def _deletes_failed(
        self, chunk: list[InFlight], known: dict[str, tuple[PartOutcome, str | None]], exc: ApiError
    ) -> Commit:
        def apply(conn: sqlite3.Connection) -> None:
            outcomes = [(f, *known.get(f.record_id, ("unknown", None))) for f in chunk]
            ledger.deletes_done(conn, outcomes)
            for flight, state, _ in outcomes:
                self.report.deleted += state == "sent"
                self.report.rejected += state == "rejected"
                if state == "sent":
                    self.deleted.add(flight.record_id)
            self._failed(exc)

        return apply

    def _count_gone(self, outcome: str) -> None:
        if outcome == "conflict":
            self.report.new_conflicts += 1

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
