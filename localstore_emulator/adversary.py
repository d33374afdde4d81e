"""Rules that make the emulator as adversarial as the real API, one request at a time.

A ``Rule`` matches API requests — method, route template, record or dataset id,
listing page — and, once it has let ``skip`` matches pass, acts on the next ``times``:

===================  =====================================================  ============
``effect``           what the client gets                                   applied?
===================  =====================================================  ============
``"pass"``           the real answer (with ``hold``/``before``/``after``)   yes
``"fail_before"``    ``status`` (429/500/502/503/504; ``Retry-After`` on     no
                     429 and 503, or as ``retry_after`` says)
``"drop_before"``    the connection closed, no answer at all                no
``"apply_then_fail"``  ``status``, after the request was applied            **yes**
``"apply_then_drop"``  the connection closed, after it was applied          **yes**
===================  =====================================================  ============

Any rule may also ``hold`` the request before it is applied, until ``rule.release()``
(``rule.entered`` is set once one is held; the event loop keeps serving other
requests meanwhile), and run ``before`` / ``after`` actions — callables on the
``EmulatorState`` — just before applying it and just after (before the answer leaves).
``Adversary.on_page`` is such an ``after`` action on one page of a dataset's listing:
records deleted there shift the later pages, as offset paging does on the real API.

Rules are checked in the order they were added; each one matching a request counts
it, and the first that still has shots left acts on it. Rules only see ``/v1/``
requests, after authentication and the random ``Faults``. Writes applied through the
API are journaled (``Adversary.writes``) with the answer the client was given.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import parse_qs

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from localstore_emulator.connections import drop
from localstore_emulator.journal import CURRENT_REQUEST, AppliedWrite, RequestInfo, WriteOp
from localstore_emulator.model import dumps
from localstore_emulator.state import EmulatorState

Effect = Literal["pass", "fail_before", "drop_before", "apply_then_fail", "apply_then_drop"]
EFFECTS: tuple[str, ...] = get_args(Effect)
FAIL_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_RETRY_AFTER = 0.05
Action = Callable[[EmulatorState], object]

# Route templates, as FastAPI spells them (a Rule's ``path``).
DATASETS = "/v1/observability/datasets"
DATASET = DATASETS + "/{dataset_id}"
RECORDS = DATASET + "/records"  # GET: the listing; POST: create a record
RECORD = "/v1/observability/dataset-records/{dataset_record_id}"
PAYLOAD = RECORD + "/payload"
PROPERTIES = RECORD + "/properties"
BULK_DELETE = "/v1/observability/dataset-records/bulk-delete"
RECORD_PUTS = (PAYLOAD, PROPERTIES)


def _canonical_id(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return str(value)  # a slug: compared as given


@dataclass(eq=False)
class Rule:
    """What to match and what to do; the fields after ``after`` are its live counters."""

    method: str | None = None  # None: any method
    path: str | Sequence[str] | None = None  # route template(s); None: any /v1/ route
    record_id: str | None = None  # the path's record, or one of a bulk-delete's ids
    dataset_id: str | None = None  # the path's dataset, or the record's dataset
    page: int | None = None  # a listing's ``page`` query parameter (1 when absent)
    skip: int = 0  # matches to let pass untouched first
    times: int | None = 1  # matches to act on after that; None: every one
    effect: Effect = "pass"
    status: int = 500  # for fail_before / apply_then_fail
    retry_after: float | None = None  # seconds; default 0.05 on 429 and 503
    hold: bool = False  # block before applying until release()
    before: Action | None = None  # run on the state just before applying
    after: Action | None = None  # run on the state after applying, before answering
    id: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)  # matching requests so far
    fired: int = field(default=0, init=False)  # of which acted on
    held: int = field(default=0, init=False)  # held right now
    entered: threading.Event = field(default_factory=threading.Event, init=False)
    done: threading.Event = field(default_factory=threading.Event, init=False)
    errors: list[BaseException] = field(default_factory=list, init=False)
    _released: bool = field(default=False, init=False, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=list, init=False, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.method is not None:
            self.method = self.method.upper()
        if isinstance(self.path, str):
            self.path = (self.path,)
        elif self.path is not None:
            self.path = tuple(self.path)
        self.record_id = _canonical_id(self.record_id)
        self.dataset_id = _canonical_id(self.dataset_id)
        if self.effect not in EFFECTS:
            raise ValueError(f"effect must be one of {EFFECTS}, got {self.effect!r}")
        if self.effect in ("fail_before", "apply_then_fail") and self.status not in FAIL_STATUSES:
            raise ValueError(f"status must be one of {FAIL_STATUSES}, got {self.status}")
        if self.skip < 0 or (self.times is not None and self.times < 1):
            raise ValueError("skip must be >= 0 and times >= 1 (or None)")

    # ---- holding ---------------------------------------------------------------

    def release(self) -> None:
        """Let every held request of this rule go on, and any later one pass unheld."""
        with self._lock:
            self._released = True
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_resolve, future)

    def wait_entered(self, timeout: float | None = None) -> bool:
        """Block until a request is held (or, without ``hold``, has begun); False on timeout."""
        return self.entered.wait(timeout)

    async def _hold(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._released:
                return
            self._waiters.append((loop, future))
            self.held += 1
        self.entered.set()
        try:
            await future
        finally:
            with self._lock:
                self.held -= 1

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "method": self.method,
            "path": list(self.path) if self.path is not None else None,
            "record_id": self.record_id,
            "dataset_id": self.dataset_id,
            "page": self.page,
            "skip": self.skip,
            "times": self.times,
            "effect": self.effect,
            "status": self.status,
            "retry_after": self.retry_after,
            "hold": self.hold,
            "seen": self.seen,
            "fired": self.fired,
            "held": self.held,
            "entered": self.entered.is_set(),
            "done": self.done.is_set(),
            "released": self._released,
            "errors": [f"{type(e).__name__}: {e}" for e in self.errors],
        }


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


# ---- actions: what a teammate (or the server) does meanwhile ------------------------


def delete_first(dataset_id: str, n: int) -> Action:
    """Delete the first ``n`` live records of the dataset, in listing order."""

    def action(state: EmulatorState) -> None:
        _, text = state.records_page(dataset_id, 1, n)
        ids = [r["id"] for r in _records_of(text)]
        if ids:
            state.bulk_delete(ids)

    return action


def create_records(dataset_id: str, n: int) -> Action:
    """Create ``n`` small records at the end of the dataset."""

    def action(state: EmulatorState) -> None:
        state.add_records(dataset_id, [{"payload": {"added": i}} for i in range(n)])

    return action


def delete_records(record_ids: Iterable[str]) -> Action:
    ids = list(record_ids)

    def action(state: EmulatorState) -> None:
        state.bulk_delete(ids)

    return action


def update_properties(record_id: str, properties: dict[str, Any]) -> Action:
    """A teammate replacing a record's properties."""

    def action(state: EmulatorState) -> None:
        state.update_properties(record_id, properties)

    return action


def delete_dataset(dataset_id: str) -> Action:
    def action(state: EmulatorState) -> None:
        state.delete_dataset(dataset_id)

    return action


def _records_of(text: str) -> list[dict[str, Any]]:
    return json.loads(f"[{text}]") if text else []


# ---- the adversary -----------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: str
    template: str
    record_ids: frozenset[str]
    dataset_id: str | None
    page: int | None


class Adversary:
    """The rules, clock knobs and write journal of one emulator app (``server.adversary``)."""

    def __init__(self, state: EmulatorState, templates: Iterable[str] = ()) -> None:
        self.state = state
        self.templates = frozenset(templates)
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._requests = itertools.count(1)

    # ---- rules -----------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        """Arm ``rule`` (after any already armed) and return it."""
        unknown = [p for p in rule.path or () if self.templates and p not in self.templates]
        if unknown:
            raise ValueError(f"no route has the template {unknown[0]!r}")
        with self._lock:
            rule.id = next(self._ids)
            self._rules.append(rule)
        return rule

    def on_page(self, dataset_id: str, after_page: int, action: Action, *, times: int | None = 1) -> Rule:
        """Run ``action`` once page ``after_page`` of the dataset's listing has been read
        (before it is sent, so pages asked for after it see the change)."""
        return self.add(Rule("GET", RECORDS, dataset_id=dataset_id, page=after_page, times=times, after=action))

    def remove(self, rule: Rule) -> None:
        rule.release()
        with self._lock:
            self._rules = [r for r in self._rules if r is not rule]

    @property
    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def rule(self, rule_id: int) -> Rule | None:
        return next((r for r in self.rules if r.id == rule_id), None)

    # ---- clock and data knobs --------------------------------------------------

    def set_clock(self, *, freeze_updated_at: bool | None = None, resolution_ms: int | None = None) -> None:
        """``freeze_updated_at``: PUTs leave ``updated_at`` as it was. ``resolution_ms``:
        every write within one window of that many ms shares its stamp (0: off)."""
        with self.state._lock:
            self.state.clock.configure(freeze_updated_at=freeze_updated_at, resolution_ms=resolution_ms)

    def writes(
        self,
        *,
        record_id: str | None = None,
        dataset_id: str | None = None,
        op: WriteOp | None = None,
        after: int = 0,
    ) -> list[AppliedWrite]:
        """Writes applied through the API, oldest first (see ``journal``)."""
        return self.state.journal.writes(
            record_id=_canonical_id(record_id), dataset_id=_canonical_id(dataset_id), op=op, after=after
        )

    def reset(self) -> None:
        """Release and drop every rule, clear the journal, restore the clock's behaviour
        (the timestamp format stays)."""
        with self._lock:
            rules, self._rules = self._rules, []
        for rule in rules:
            rule.release()
        self.state.journal.clear()
        self.set_clock(freeze_updated_at=False, resolution_ms=0)

    # ---- serving (called by the Gate for every /v1/ request) -------------------

    async def serve(
        self, scope: Scope, receive: Receive, send: Send, template: str, params: dict[str, Any], app: ASGIApp
    ) -> None:
        info = RequestInfo(next(self._requests), scope["method"], scope["path"], template)
        rules = self.rules
        rule = None
        if rules:
            receive, body = await self._body_if_needed(rules, template, receive)
            rule = self._pick(rules, self._describe(scope, template, params, body))

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                info.answer = message["status"]
            await send(message)

        if rule is None:
            await self._apply(info, scope, receive, answer, app)
            return
        try:
            await self._act(rule, info, scope, receive, answer, app)
        finally:
            rule.done.set()

    async def _act(
        self, rule: Rule, info: RequestInfo, scope: Scope, receive: Receive, answer: Send, app: ASGIApp
    ) -> None:
        if rule.hold:
            await rule._hold()  # sets rule.entered once the request is waiting
        else:
            rule.entered.set()
        self._run(rule, rule.before)
        if rule.effect == "fail_before":
            await self._fault(rule)(scope, receive, answer)
            return
        if rule.effect == "drop_before":
            info.answer = "dropped"
            await drop(scope)
            return
        if rule.effect == "pass" and rule.after is None:
            await self._apply(info, scope, receive, answer, app)
            return
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        await self._apply(info, scope, receive, capture, app)
        self._run(rule, rule.after)
        if rule.effect == "pass":
            for message in captured:
                await answer(message)
        elif rule.effect == "apply_then_fail":
            await self._fault(rule)(scope, receive, answer)
        else:  # apply_then_drop
            info.answer = "dropped"
            await drop(scope)

    @staticmethod
    async def _apply(info: RequestInfo, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        token = CURRENT_REQUEST.set(info)
        try:
            await app(scope, receive, send)
        finally:
            CURRENT_REQUEST.reset(token)

    def _run(self, rule: Rule, action: Action | None) -> None:
        if action is None:
            return
        try:
            action(self.state)
        except Exception as exc:  # the request goes on; the test reads rule.errors
            rule.errors.append(exc)

    @staticmethod
    def _fault(rule: Rule) -> Response:
        headers = {}
        retry_after = rule.retry_after
        if retry_after is None and rule.status in (429, 503):
            retry_after = DEFAULT_RETRY_AFTER
        if retry_after is not None:
            headers["Retry-After"] = f"{retry_after:g}"
        code = {429: None, 503: "DATABASE_UNAVAILABLE"}.get(rule.status, "UNKNOWN_ERROR")
        message = f"error {rule.status} injected by emulator rule {rule.id} ({rule.effect})"
        body = dumps({"detail": {"message": message, "error_code": code}})
        return Response(body, status_code=rule.status, media_type="application/json", headers=headers)

    # ---- matching --------------------------------------------------------------

    @staticmethod
    async def _body_if_needed(rules: list[Rule], template: str, receive: Receive) -> tuple[Receive, bytes]:
        """A bulk-delete's ids can only be matched from its body: read it, then hand the
        app a receive that replays it."""
        if template != BULK_DELETE or not any(r.record_id or r.dataset_id for r in rules):
            return receive, b""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, body

    def _describe(self, scope: Scope, template: str, params: dict[str, Any], body: bytes) -> _Request:
        record_ids: set[str] = set()
        if "dataset_record_id" in params:
            record_ids.add(_canonical_id(str(params["dataset_record_id"])) or "")
        if body:
            try:
                ids = json.loads(body).get("dataset_record_ids", [])
                record_ids.update(_canonical_id(str(i)) or "" for i in ids)
            except (ValueError, AttributeError, TypeError):
                pass
        dataset_id = params.get("dataset_id")
        if dataset_id is not None:
            dataset_id = _canonical_id(str(dataset_id))
            if dataset_id is not None and not _is_uuid(dataset_id):
                found = self.state.get_dataset(dataset_id)
                dataset_id = found["id"] if found else dataset_id
        page = None
        if template == RECORDS and scope["method"] == "GET":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            try:
                page = int(query.get("page", ["1"])[0])
            except ValueError:
                page = None
        return _Request(scope["method"], template, frozenset(record_ids), dataset_id, page)

    def _matches(self, rule: Rule, request: _Request) -> bool:
        if rule.method is not None and rule.method != request.method:
            return False
        if rule.path is not None and request.template not in rule.path:
            return False
        if rule.record_id is not None and rule.record_id not in request.record_ids:
            return False
        if rule.page is not None and rule.page != request.page:
            return False
        if rule.dataset_id is not None:
            if request.dataset_id is not None:
                return rule.dataset_id == request.dataset_id
            owners = {self._owner(i) for i in request.record_ids}
            return rule.dataset_id in owners
        return True

    def _owner(self, record_id: str) -> str | None:
        with self.state._lock:
            record = self.state._records.get(record_id)
            return record.dataset_id if record is not None else None

    def _pick(self, rules: list[Rule], request: _Request) -> Rule | None:
        chosen = None
        with self._lock:
            for rule in rules:
                if not self._matches(rule, request):
                    continue
                rule.seen += 1
                if chosen is None and rule.seen > rule.skip and not rule.exhausted:
                    rule.fired += 1
                    chosen = rule
        return chosen


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
