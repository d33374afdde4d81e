"""The FastAPI application that speaks the observability datasets API.

Handlers return pre-built JSON ``Response`` objects (no response models), so a
listing page is a slice of an ordered id list joined into text. Every error,
FastAPI's own included, leaves as the spec's ObservabilityError.
"""

from __future__ import annotations

import asyncio
import random
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from localstore_emulator.admin import admin_router
from localstore_emulator.adversary import Adversary
from localstore_emulator.bodies import (
    CreateDatasetBody,
    CreateRecordBody,
    FromCampaignBody,
    FromDatasetBody,
    FromExplorerBody,
    FromFileBody,
    FromPlaygroundBody,
    JudgeBody,
    PayloadBody,
    PropertiesBody,
    RecordIdsBody,
    UpdateDatasetBody,
    describe_validation,
)
from localstore_emulator.clock import TimestampFormat
from localstore_emulator.model import EmulatorError, canonical_uuid, dumps
from localstore_emulator.state import EmulatorState

API_PREFIX = "/v1/"
EXPORTS_PATH = "/_emulator/exports"
RETRY_AFTER = "0.05"
FAULT_STATUSES = (429, 500, 502, 503)

PageArg = Annotated[int, Query(ge=1)]
PageSizeArg = Annotated[int, Query(ge=0, le=100)]


def error_response(
    status: int, message: str, error_code: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = dumps({"detail": {"message": message, "error_code": error_code}})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


class Faults:
    """Latency and injected failures, changeable while the server runs."""

    def __init__(self, latency_ms: float = 0, fail_rate: float = 0.0, seed: int | None = None) -> None:
        self.latency_ms = 0.0
        self.fail_rate = 0.0
        self.rng = random.Random(seed)
        self.in_flight = 0  # requests inside the latency wait right now
        self.max_in_flight = 0  # the most that ever overlapped
        self.configure(latency_ms=latency_ms, fail_rate=fail_rate)

    def configure(
        self, *, latency_ms: float | None = None, fail_rate: float | None = None, seed: int | None = None
    ) -> None:
        if latency_ms is not None:
            if latency_ms < 0:
                raise ValueError("latency_ms must be >= 0")
            self.latency_ms = float(latency_ms)
        if fail_rate is not None:
            if not 0.0 <= fail_rate <= 1.0:
                raise ValueError("fail_rate must be between 0 and 1")
            self.fail_rate = float(fail_rate)
        if seed is not None:
            self.rng = random.Random(seed)

    def pick(self) -> int | None:
        """The status to fail this request with, or None to serve it."""
        if self.fail_rate > 0 and self.rng.random() < self.fail_rate:
            return self.rng.choice(FAULT_STATUSES)
        return None


def _fault_response(status: int) -> Response:
    if status == 429:
        return error_response(
            429, "rate limit exceeded (injected by the emulator)", None, {"Retry-After": RETRY_AFTER}
        )
    if status == 503:
        return error_response(
            503, "service unavailable (injected by the emulator)", "DATABASE_UNAVAILABLE",
            {"Retry-After": RETRY_AFTER},
        )
    return error_response(status, f"server error {status} (injected by the emulator)", "UNKNOWN_ERROR")


def _has_bearer(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and bool(token.strip())
    return False


class Gate:
    """Outermost layer: counts, delays, authenticates and injects faults — in that
    order, and before any handler can change state — then hands API requests to the
    ``Adversary`` (rules, the write journal)."""

    def __init__(self, app: ASGIApp, *, owner: FastAPI) -> None:
        self.app = app
        self.owner = owner

    def _route(self, scope: Scope) -> tuple[str, dict[str, Any]]:
        """The route template the request matches, and its path parameters."""
        partial: tuple[Any, dict[str, Any]] | None = None
        for route in self.owner.router.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                template = str(getattr(route, "path_format", scope["path"]))
                params: dict[str, Any] = child.get("path_params", {})
                return template, params
            if match == Match.PARTIAL and partial is None:
                partial = (getattr(route, "path_format", None), child.get("path_params", {}))
        return partial or (scope["path"], {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: EmulatorState = self.owner.state.emulator
        faults: Faults = self.owner.state.faults
        template, params = self._route(scope)
        state.count_request(scope["method"], template)
        if faults.latency_ms > 0:
            faults.in_flight += 1
            faults.max_in_flight = max(faults.max_in_flight, faults.in_flight)
            try:
                await asyncio.sleep(faults.latency_ms / 1000)
            finally:
                faults.in_flight -= 1
        if scope["path"].startswith(API_PREFIX):
            if not _has_bearer(scope):
                response = error_response(
                    401,
                    "missing or invalid API key: send 'Authorization: Bearer <key>'",
                    "AUTH_UNAUTHORIZED",
                    {"WWW-Authenticate": "Bearer"},
                )
                await response(scope, receive, send)
                return
            status = faults.pick()
            if status is not None:
                await _fault_response(status)(scope, receive, send)
                return
            adversary: Adversary = self.owner.state.adversary
            await adversary.serve(scope, receive, send, template, params, self.app)
            return
        await self.app(scope, receive, send)


# ---- error conversion -----------------------------------------------------------


async def _on_emulator_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmulatorError)
    return error_response(exc.status, exc.message, exc.error_code)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, describe_validation(exc.errors()), "VALIDATION_ERROR")


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return error_response(exc.status_code, message, None, getattr(exc, "headers", None))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return error_response(500, f"emulator bug: {type(exc).__name__}: {exc}", "UNKNOWN_ERROR")


# ---- the application ------------------------------------------------------------


def _page_links(
    request: Request, page: int, page_size: int, count: int, extra: dict[str, str] | None = None
) -> tuple[str | None, str | None]:
    base = f"{request.url.scheme}://{request.url.netloc}{request.url.path}"

    def link(number: int) -> str:
        return base + "?" + urlencode({**(extra or {}), "page": number, "page_size": page_size})

    has_next = page_size > 0 and page * page_size < count
    return (link(page + 1) if has_next else None, link(page - 1) if page > 1 else None)


def _paginated(request: Request, key: str, items: list[dict[str, Any]], page: int, page_size: int,
               extra: dict[str, str] | None = None) -> Response:
    start = (page - 1) * page_size
    nxt, prev = _page_links(request, page, page_size, len(items), extra)
    results = items[start : start + page_size]
    return json_response({key: {"results": results, "count": len(items), "next": nxt, "previous": prev}})


def create_app(
    state: EmulatorState,
    *,
    latency_ms: float = 0,
    fail_rate: float = 0.0,
    seed: int | None = None,
    timestamp_format: TimestampFormat | None = None,
) -> FastAPI:
    """The emulator app over ``state``; faults live in ``app.state.faults`` (a ``Faults``),
    rules in ``app.state.adversary`` (an ``Adversary``). ``timestamp_format`` (None: keep
    the state's) is how stamps are rendered: ``"ms"``, ``"us"`` or ``"offset"``."""
    if timestamp_format is not None:
        state.timestamp_format = timestamp_format
    app = FastAPI(
        title="localstore API emulator",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers={
            EmulatorError: _on_emulator_error,
            RequestValidationError: _on_validation_error,
            StarletteHTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
    )
    app.state.emulator = state
    app.state.faults = Faults(latency_ms, fail_rate, seed)
    app.add_middleware(Gate, owner=app)
    datasets = "/v1/observability/datasets"
    ds_path = datasets + "/{dataset_id}"
    rec_path = "/v1/observability/dataset-records/{dataset_record_id}"

    def record_id(value: str) -> str:
        return canonical_uuid(value, "dataset_record_id")

    @app.post(datasets)
    async def create_dataset(body: CreateDatasetBody) -> Response:
        return json_response(state.create_dataset(body.name, body.description), 201)

    @app.get(datasets)
    async def list_datasets(
        request: Request, page: PageArg = 1, page_size: PageSizeArg = 50, q: str | None = None
    ) -> Response:
        extra = {"q": q} if q is not None else None
        return _paginated(request, "datasets", state.list_datasets(q), page, page_size, extra)

    @app.get(ds_path)
    async def get_dataset(dataset_id: str) -> Response:
        return json_response(state.require_dataset(dataset_id))

    @app.patch(ds_path)
    async def update_dataset(dataset_id: str, body: UpdateDatasetBody) -> Response:
        return json_response(state.update_dataset(dataset_id, body.name, body.description))

    @app.delete(ds_path)
    async def delete_dataset(dataset_id: str) -> Response:
        state.delete_dataset(dataset_id)
        return Response(status_code=204)

    @app.get(ds_path + "/records")
    async def list_records(
        request: Request, dataset_id: str, page: PageArg = 1, page_size: PageSizeArg = 50
    ) -> Response:
        count, results = state.records_page(dataset_id, page, page_size)
        nxt, prev = _page_links(request, page, page_size, count)
        body = (
            f'{{"records":{{"results":[{results}],"count":{count},'
            f'"next":{dumps(nxt)},"previous":{dumps(prev)}}}}}'
        )
        return Response(body, media_type="application/json")

    @app.post(ds_path + "/records")
    async def create_record(dataset_id: str, body: CreateRecordBody) -> Response:
        return json_response(state.create_record(dataset_id, body.payload, body.properties), 201)

    @app.post(ds_path + "/imports/from-campaign")
    async def import_from_campaign(dataset_id: str, body: FromCampaignBody) -> Response:
        return json_response(state.create_import_task(dataset_id, "campaigns", 1), 202)

    @app.post(ds_path + "/imports/from-explorer")
    async def import_from_explorer(dataset_id: str, body: FromExplorerBody) -> Response:
        task = state.create_import_task(dataset_id, "the explorer", len(body.completion_event_ids))
        return json_response(task, 202)

    @app.post(ds_path + "/imports/from-file")
    async def import_from_file(dataset_id: str, body: FromFileBody) -> Response:
        return json_response(state.create_import_task(dataset_id, "files", 1), 202)

    @app.post(ds_path + "/imports/from-playground")
    async def import_from_playground(dataset_id: str, body: FromPlaygroundBody) -> Response:
        task = state.create_import_task(dataset_id, "the playground", len(body.conversation_ids))
        return json_response(task, 202)

    @app.post(ds_path + "/imports/from-dataset")
    async def import_from_dataset(dataset_id: str, body: FromDatasetBody) -> Response:
        ids = [str(i) for i in body.dataset_record_ids]
        return json_response(state.import_from_dataset(dataset_id, ids), 202)

    @app.get(ds_path + "/exports/to-jsonl")
    async def export_to_jsonl(request: Request, dataset_id: str) -> Response:
        export_id = state.export_jsonl(dataset_id)
        base = str(request.base_url).rstrip("/")
        return json_response({"file_url": f"{base}{EXPORTS_PATH}/{export_id}.jsonl"})

    @app.get(ds_path + "/tasks/{task_id}")
    async def get_task(dataset_id: str, task_id: str) -> Response:
        return json_response(state.get_task(dataset_id, canonical_uuid(task_id, "task_id")))

    @app.get(ds_path + "/tasks")
    async def list_tasks(
        request: Request, dataset_id: str, page: PageArg = 1, page_size: PageSizeArg = 50
    ) -> Response:
        return _paginated(request, "tasks", state.list_tasks(dataset_id), page, page_size)

    @app.post("/v1/observability/dataset-records/bulk-delete")
    async def bulk_delete(body: RecordIdsBody) -> Response:
        """204 even for unknown or already deleted ids (see EmulatorState.bulk_delete)."""
        state.bulk_delete(str(i) for i in body.dataset_record_ids)
        return Response(status_code=204)

    @app.get(rec_path)
    async def get_record(dataset_record_id: str) -> Response:
        return json_response(state.require_record(record_id(dataset_record_id)))

    @app.delete(rec_path)
    async def delete_record(dataset_record_id: str) -> Response:
        state.delete_record(record_id(dataset_record_id))
        return Response(status_code=204)

    @app.post(rec_path + "/live-judging")
    async def judge(dataset_record_id: str, body: JudgeBody) -> Response:
        definition = body.judge_definition.model_dump()
        return json_response(state.judge(record_id(dataset_record_id), definition))

    @app.put(rec_path + "/payload")
    async def update_payload(dataset_record_id: str, body: PayloadBody) -> Response:
        state.update_payload(record_id(dataset_record_id), body.payload)
        return Response(status_code=204)

    @app.put(rec_path + "/properties")
    async def update_properties(dataset_record_id: str, body: PropertiesBody) -> Response:
        state.update_properties(record_id(dataset_record_id), body.properties)
        return Response(status_code=204)

    @app.get(EXPORTS_PATH + "/{name}")
    async def export_file(name: str) -> Response:
        content = state.export_content(name.removesuffix(".jsonl"))
        if content is None:
            return error_response(404, f"no export named {name}", None)
        return Response(content, media_type="application/jsonl")

    @app.get("/_emulator/health")
    async def health() -> Response:
        return json_response({"ok": True})

    app.include_router(admin_router())
    app.state.adversary = Adversary(
        state, [getattr(r, "path_format", "") for r in app.router.routes if getattr(r, "path_format", "").startswith(API_PREFIX)]
    )
    return app
