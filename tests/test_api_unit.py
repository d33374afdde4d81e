"""The API client against httpx.MockTransport: no sockets, no real waiting.

Every request the client sends is checked against the OpenAPI spec when the spec
is present beside the clone.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openapi_contract import SPEC_PATH, Contract

from localstore import __version__
from localstore.api import (
    DEFAULT_SERVER_URL,
    Client,
    Dataset,
    JudgeOutput,
    Record,
    RecordPage,
    RetryPolicy,
    outcome_unknown,
)
from localstore.api._pagination import PREFETCH
from localstore.api._retry import parse_retry_after
from localstore.errors import (
    AuthenticationError,
    HTTPStatusError,
    InsecureTransportError,
    NotFoundError,
    ProtocolError,
    RateLimitedError,
    RequestRejectedError,
    ServerError,
    TransportError,
    UsageError,
)

KEY = "sk-test-0123456789abcdef-SECRET"
BASE = "https://api.test"
DS = "6f1d2a3b-0c4d-4e5f-8a9b-0c1d2e3f4a5b"
REC = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
OWNER = "11111111-2222-4333-8444-555555555555"
TS = "2026-01-02T03:04:05.123456Z"
DATASETS = "/v1/observability/datasets"
RECORDS = "/v1/observability/dataset-records"

CONTRACT: Contract | None = Contract.load() if SPEC_PATH.exists() else None


# -- helpers -------------------------------------------------------------------------


def record_json(i: int = 0, *, dataset_id: str = DS, **over: Any) -> dict[str, Any]:
    body = {
        "id": str(uuid.UUID(int=i + 1)),
        "dataset_id": dataset_id,
        "created_at": "2026-01-02T03:04:05Z",
        "updated_at": "2026-01-02T04:04:05.123456+01:00",
        "deleted_at": None,
        "source": "DIRECT_INPUT",
        "payload": {"messages": [{"role": "user", "content": f"hello {i}"}]},
        "properties": {"label": "x"},
    }
    body.update(over)
    return body


def dataset_json(**over: Any) -> dict[str, Any]:
    body = {
        "id": DS,
        "name": "support tickets",
        "description": "what users asked",
        "created_at": TS,
        "updated_at": TS,
        "deleted_at": None,
        "owner_id": OWNER,
        "workspace_id": OWNER,
        "slug": "support-tickets",
    }
    body.update(over)
    return body


def task_json(**over: Any) -> dict[str, Any]:
    body = {
        "id": str(uuid.UUID(int=99)),
        "created_at": TS,
        "updated_at": TS,
        "deleted_at": None,
        "creator_id": OWNER,
        "dataset_id": DS,
        "workspace_id": OWNER,
        "status": "RUNNING",
        "progress": 0,
        "message": None,
    }
    body.update(over)
    return body


def error_json(message: str, code: str | None = "DATASET_RECORD_NOT_FOUND") -> dict[str, Any]:
    return {"detail": {"message": message, "error_code": code}}


class Recorder:
    """Wraps a handler: records every request and validates it against the spec."""

    def __init__(
        self, handler: Callable[[httpx.Request], httpx.Response], *, validate: bool = True
    ) -> None:
        self.handler = handler
        self.validate = validate
        self.requests: list[httpx.Request] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        body = json.loads(request.content) if request.content else None
        if CONTRACT is not None and self.validate:
            CONTRACT.validate_request(request.method, str(request.url), body)
        return self.handler(request)

    @property
    def count(self) -> int:
        return len(self.requests)


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make_client(
    handler: Callable[[httpx.Request], httpx.Response],
    *,
    policy: RetryPolicy | None = None,
    url: str = BASE,
    validate: bool = True,
    **kw: Any,
) -> tuple[Client, Recorder, FakeSleep]:
    sleep = FakeSleep()
    recorder = Recorder(handler, validate=validate)
    retry = policy or RetryPolicy(sleep=sleep, jitter=0.0)
    client = Client(url, KEY, transport=httpx.MockTransport(recorder), retry=retry, **kw)
    return client, recorder, sleep


def sequence(*responses: httpx.Response | Exception) -> Callable[[httpx.Request], httpx.Response]:
    """A handler answering each request with the next item (the last one repeats)."""
    items = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = items.pop(0) if len(items) > 1 else items[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


def assert_no_key(exc: BaseException) -> None:
    assert KEY not in str(exc)
    assert KEY not in repr(exc)
    assert "\n" not in str(exc)


# -- construction ----------------------------------------------------------------------


def test_missing_key_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MISTRAL_API_KEY", raising=False)
    with pytest.raises(
        UsageError, match=r"^MISTRAL_API_KEY is not set: export your Mistral API key"
    ):
        Client(BASE)
    with pytest.raises(UsageError, match="MISTRAL_API_KEY is not set"):
        Client(BASE, "")
    with pytest.raises(UsageError, match="MISTRAL_API_KEY is not set"):
        Client.from_env(BASE)


def test_key_from_env_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MISTRAL_API_KEY", KEY)
    monkeypatch.setenv("LOCALSTORE_SERVER_URL", BASE)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=record_json())

    with Client.from_env(transport=httpx.MockTransport(handler)) as client:
        assert client.server_url == BASE
        client.get_record(REC)
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["user-agent"] == f"localstore/{__version__}"
    assert str(seen[0].url) == f"{BASE}{RECORDS}/{REC}"


def test_default_server_url() -> None:
    client = Client(api_key=KEY)
    assert client.server_url == DEFAULT_SERVER_URL
    client.close()


@pytest.mark.parametrize("key", [" sk-x", "sk-x\n", "sk\r\nX-Evil: 1", "sk-\x00"])
def test_key_with_control_characters_is_refused(key: str) -> None:
    with pytest.raises(UsageError) as info:
        Client(BASE, key)
    assert key.strip() not in str(info.value)


def test_key_never_in_repr() -> None:
    client = Client(BASE, KEY)
    assert KEY not in repr(client)
    assert KEY not in str(client)
    assert KEY not in repr(vars(client))
    client.close()


@pytest.mark.parametrize(
    "url",
    ["http://api.mistral.ai", "http://example.com:8080", "http://10.0.0.1", "http://[2001:db8::1]"],
)
def test_plain_http_to_remote_host_is_refused(url: str) -> None:
    with pytest.raises(InsecureTransportError):
        Client(url, KEY)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",
        "http://127.0.0.1:9",
        "http://127.8.9.10",
        "http://[::1]:8080",
        "https://example.com",
        "https://proxy.example.com/mistral/",
    ],
)
def test_loopback_and_https_are_allowed(url: str) -> None:
    Client(url, KEY).close()


@pytest.mark.parametrize(
    "url",
    [
        "",
        "not a url",
        "ftp://example.com",
        "https://",
        "https://user:pw@example.com",
        "https://example.com:99999",
        "https://example.com?x=1",
        "mailto:a@b.c",
    ],
)
def test_malformed_server_url(url: str) -> None:
    with pytest.raises(UsageError):
        Client(url, KEY)


def test_server_url_with_path_prefix() -> None:
    client, rec, _ = make_client(
        lambda r: httpx.Response(200, json=record_json()),
        url="https://proxy.test/mistral/",
        validate=False,  # the spec's paths have no prefix
    )
    client.get_record(REC)
    assert rec.requests[0].url.path == f"/mistral{RECORDS}/{REC}"


# -- every endpoint: method, path, body, parsing ---------------------------------------

ENDPOINTS: list[tuple[str, Callable[[Client], Any], str, str, Any, httpx.Response]] = [
    (
        "list_datasets",
        lambda c: c.list_datasets(q="tick"),
        "GET",
        DATASETS + "?q=tick&page=1&page_size=100",
        None,
        httpx.Response(
            200,
            json={
                "datasets": {
                    "results": [dataset_json()],
                    "count": 1,
                    "next": None,
                    "previous": None,
                }
            },
        ),
    ),
    (
        "get_dataset",
        lambda c: c.get_dataset(DS),
        "GET",
        f"{DATASETS}/{DS}",
        None,
        httpx.Response(200, json=dataset_json()),
    ),
    (
        "create_dataset",
        lambda c: c.create_dataset("support tickets", "what users asked"),
        "POST",
        DATASETS,
        {"name": "support tickets", "description": "what users asked"},
        httpx.Response(201, json=dataset_json()),
    ),
    (
        "update_dataset",
        lambda c: c.update_dataset(DS, name="renamed set"),
        "PATCH",
        f"{DATASETS}/{DS}",
        {"name": "renamed set"},
        httpx.Response(200, json=dataset_json(name="renamed set")),
    ),
    (
        "delete_dataset",
        lambda c: c.delete_dataset(DS),
        "DELETE",
        f"{DATASETS}/{DS}",
        None,
        httpx.Response(204),
    ),
    (
        "list_records_page",
        lambda c: c.list_records_page(DS, 2, 10),
        "GET",
        f"{DATASETS}/{DS}/records?page=2&page_size=10",
        None,
        httpx.Response(
            200,
            json={
                "records": {
                    "results": [record_json()],
                    "count": 11,
                    "next": None,
                    "previous": "?page=1&page_size=10",
                }
            },
        ),
    ),
    (
        "create_record",
        lambda c: c.create_record(DS, {"messages": []}, {"k": 1}),
        "POST",
        f"{DATASETS}/{DS}/records",
        {"payload": {"messages": []}, "properties": {"k": 1}},
        httpx.Response(201, json=record_json()),
    ),
    (
        "create_record_no_props",
        lambda c: c.create_record(DS, {"a": 1}),
        "POST",
        f"{DATASETS}/{DS}/records",
        {"payload": {"a": 1}},
        httpx.Response(201, json=record_json()),
    ),
    (
        "get_record",
        lambda c: c.get_record(REC),
        "GET",
        f"{RECORDS}/{REC}",
        None,
        httpx.Response(200, json=record_json()),
    ),
    (
        "put_payload",
        lambda c: c.put_payload(REC, {"messages": [1]}),
        "PUT",
        f"{RECORDS}/{REC}/payload",
        {"payload": {"messages": [1]}},
        httpx.Response(204),
    ),
    (
        "put_properties",
        lambda c: c.put_properties(REC, {"label": None}),
        "PUT",
        f"{RECORDS}/{REC}/properties",
        {"properties": {"label": None}},
        httpx.Response(204),
    ),
    (
        "delete_record",
        lambda c: c.delete_record(REC),
        "DELETE",
        f"{RECORDS}/{REC}",
        None,
        httpx.Response(204),
    ),
    (
        "bulk_delete",
        lambda c: c.bulk_delete([REC, DS]),
        "POST",
        f"{RECORDS}/bulk-delete",
        {"dataset_record_ids": [REC, DS]},
        httpx.Response(204),
    ),
    (
        "judge_record",
        lambda c: c.judge_record(REC, JUDGE),
        "POST",
        f"{RECORDS}/{REC}/live-judging",
        None,  # filled below
        httpx.Response(200, json={"analysis": "fine", "answer": 0.5}),
    ),
    (
        "import_from_campaign",
        lambda c: c.import_from_campaign(DS, OWNER),
        "POST",
        f"{DATASETS}/{DS}/imports/from-campaign",
        {"campaign_id": OWNER},
        httpx.Response(202, json=task_json()),
    ),
    (
        "import_from_explorer",
        lambda c: c.import_from_explorer(DS, ["ev1", "ev2"]),
        "POST",
        f"{DATASETS}/{DS}/imports/from-explorer",
        {"completion_event_ids": ["ev1", "ev2"]},
        httpx.Response(202, json=task_json()),
    ),
    (
        "import_from_file",
        lambda c: c.import_from_file(DS, "file-abc"),
        "POST",
        f"{DATASETS}/{DS}/imports/from-file",
        {"file_id": "file-abc"},
        httpx.Response(202, json=task_json()),
    ),
    (
        "import_from_playground",
        lambda c: c.import_from_playground(DS, ["conv-1"]),
        "POST",
        f"{DATASETS}/{DS}/imports/from-playground",
        {"conversation_ids": ["conv-1"]},
        httpx.Response(202, json=task_json()),
    ),
    (
        "import_from_dataset",
        lambda c: c.import_from_dataset(DS, [REC]),
        "POST",
        f"{DATASETS}/{DS}/imports/from-dataset",
        {"dataset_record_ids": [REC]},
        httpx.Response(202, json=task_json()),
    ),
    (
        "list_tasks",
        lambda c: c.list_tasks(DS),
        "GET",
        f"{DATASETS}/{DS}/tasks?page=1&page_size=100",
        None,
        httpx.Response(200, json={"tasks": {"results": [task_json()], "count": 1}}),
    ),
    (
        "get_task",
        lambda c: c.get_task(DS, str(uuid.UUID(int=99))),
        "GET",
        f"{DATASETS}/{DS}/tasks/{uuid.UUID(int=99)}",
        None,
        httpx.Response(200, json=task_json()),
    ),
    (
        "export_to_jsonl",
        lambda c: c.export_to_jsonl(DS),
        "GET",
        f"{DATASETS}/{DS}/exports/to-jsonl",
        None,
        httpx.Response(200, json={"file_url": "https://files.test/x.jsonl"}),
    ),
]

JUDGE = {
    "name": "helpfulness",
    "description": "is the answer helpful",
    "model_name": "mistral-small-latest",
    "output": {
        "type": "REGRESSION",
        "min": 0,
        "max": 1,
        "min_description": "no",
        "max_description": "yes",
    },
    "instructions": "rate it",
    "tools": [],
}
ENDPOINTS = [
    (n, call, m, p, {"judge_definition": JUDGE} if n == "judge_record" else b, r)
    for (n, call, m, p, b, r) in ENDPOINTS
]


@pytest.mark.parametrize(
    ("call", "method", "path", "body", "response"),
    [e[1:] for e in ENDPOINTS],
    ids=[e[0] for e in ENDPOINTS],
)
def test_endpoint_request_and_answer(
    call: Callable[[Client], Any], method: str, path: str, body: Any, response: httpx.Response
) -> None:
    client, rec, _ = make_client(lambda r: response)
    result = call(client)
    assert rec.count == 1
    request = rec.requests[0]
    assert request.method == method
    assert request.url.raw_path.decode() == path
    assert (json.loads(request.content) if request.content else None) == body
    if body is not None:
        assert request.headers["content-type"] == "application/json"
    if CONTRACT is not None and response.status_code != 204:
        # our canned answers are themselves valid, so the parsing is tested on real shapes
        CONTRACT.validate_response(method, str(request.url), response.status_code, response.json())
    if response.status_code == 204:
        assert result is None
    else:
        assert result is not None


def test_every_spec_operation_has_a_client_method() -> None:
    contract = Contract.load_or_skip()
    covered = set()
    for _name, _call, method, path, body, _resp in ENDPOINTS:
        op = contract.validate_request(method, BASE + path, body)
        covered.add((op.method, op.template))
    assert covered == set(contract.paths())


def test_models_are_parsed_and_normalised() -> None:
    client, _, _ = make_client(
        lambda r: httpx.Response(
            200, json=record_json(deleted_at="2026-01-02T03:04:05+00:00", source="SOMETHING_NEW")
        )
    )
    record = client.get_record(REC)
    assert isinstance(record, Record)
    assert record.created_at == "2026-01-02T03:04:05.000000Z"
    assert record.updated_at == "2026-01-02T03:04:05.123456Z"
    assert record.deleted_at == "2026-01-02T03:04:05.000000Z"
    assert record.source == "SOMETHING_NEW"  # unknown sources pass through
    assert record.payload["messages"][0]["content"] == "hello 0"
    client, _, _ = make_client(lambda r: httpx.Response(200, json=dataset_json(slug=None)))
    dataset = client.get_dataset(DS)
    assert isinstance(dataset, Dataset)
    assert dataset.slug is None and dataset.created_at == TS


def test_judge_output_number_and_string() -> None:
    client, _, _ = make_client(
        sequence(
            httpx.Response(200, json={"analysis": "ok", "answer": 3}),
            httpx.Response(200, json={"analysis": "ok", "answer": "GOOD"}),
        )
    )
    assert client.judge_record(REC, JUDGE) == JudgeOutput(answer=3.0, analysis="ok")
    assert client.judge_record(REC, JUDGE) == JudgeOutput(answer="GOOD", analysis="ok")


def test_slug_dataset_ids_are_accepted() -> None:
    # the SDK documents slugs as dataset ids; the spec says uuid: no spec check here
    client, rec, _ = make_client(lambda r: httpx.Response(200, json=dataset_json()), validate=False)
    client.get_dataset("support-tickets_2")
    assert rec.requests[0].url.path == f"{DATASETS}/support-tickets_2"
    client.get_dataset(DS.upper())
    assert rec.requests[1].url.path == f"{DATASETS}/{DS}"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.get_record("not-a-uuid"),
        lambda c: c.get_record("../datasets"),
        lambda c: c.put_payload("x" * 36, {}),
        lambda c: c.delete_record(""),
        lambda c: c.get_dataset("../../etc"),
        lambda c: c.get_dataset("a/b"),
        lambda c: c.get_dataset("a b"),
        lambda c: c.get_dataset("x?page=2"),
        lambda c: c.create_record(DS, ["not", "a", "dict"]),  # type: ignore[arg-type]
        lambda c: c.create_record(DS, {"x": float("nan")}),
        lambda c: c.create_record(DS, {"x": object()}),
        lambda c: c.put_properties(REC, "label=x"),  # type: ignore[arg-type]
        lambda c: c.bulk_delete([]),
        lambda c: c.bulk_delete([str(uuid.uuid4()) for _ in range(501)]),
        lambda c: c.bulk_delete(REC),
        lambda c: c.bulk_delete([REC, "nope"]),
        lambda c: c.create_dataset("abc", "too short a name"),
        lambda c: c.list_records_page(DS, 0),
        lambda c: c.list_records_page(DS, 1, 101),
        lambda c: c.list_records_page(DS, 1, 0),
        lambda c: c.iter_record_pages(DS, concurrency=0),
        lambda c: c.import_from_dataset(DS, []),
        lambda c: c.get_task(DS, "task-1"),
    ],
)
def test_bad_input_is_refused_locally(call: Callable[[Client], Any]) -> None:
    client, rec, _ = make_client(lambda r: httpx.Response(500))
    with pytest.raises(UsageError):
        call(client)
    assert rec.count == 0


def test_bulk_delete_takes_500() -> None:
    client, rec, _ = make_client(lambda r: httpx.Response(204))
    client.bulk_delete([str(uuid.uuid4()) for _ in range(500)])
    assert len(json.loads(rec.requests[0].content)["dataset_record_ids"]) == 500


# -- retries -----------------------------------------------------------------------------


def test_429_retry_after_seconds_is_honoured() -> None:
    client, rec, sleep = make_client(
        sequence(
            httpx.Response(429, headers={"Retry-After": "7"}, json=error_json("slow down", None)),
            httpx.Response(200, json=record_json()),
        )
    )
    assert client.get_record(REC).id == str(uuid.UUID(int=1))
    assert rec.count == 2
    assert sleep.calls == [7.0]


def test_429_retry_after_http_date_is_honoured() -> None:
    when = time.time() + 12
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(when))
    client, _, sleep = make_client(
        sequence(
            httpx.Response(429, headers={"Retry-After": date}),
            httpx.Response(200, json=record_json()),
        )
    )
    client.get_record(REC)
    assert 9 <= sleep.calls[0] <= 13


def test_retry_after_is_capped() -> None:
    policy_sleep = FakeSleep()
    policy = RetryPolicy(sleep=policy_sleep, max_delay=2.0, max_total_seconds=60)
    client, _, _ = make_client(
        sequence(
            httpx.Response(503, headers={"Retry-After": "3600"}),
            httpx.Response(200, json=record_json()),
        ),
        policy=policy,
    )
    client.get_record(REC)
    assert policy_sleep.calls == [6.0]


def test_retry_after_beyond_the_time_budget_stops_at_once() -> None:
    policy = RetryPolicy(sleep=FakeSleep(), max_total_seconds=5)
    client, rec, _ = make_client(
        lambda r: httpx.Response(429, headers={"Retry-After": "20"}), policy=policy
    )
    with pytest.raises(RateLimitedError) as info:
        client.get_record(REC)
    assert rec.count == 1
    assert info.value.retry_after == 20.0
    assert info.value.status == 429


def test_5xx_then_success_with_exponential_backoff() -> None:
    client, rec, sleep = make_client(
        sequence(
            httpx.Response(500),
            httpx.Response(502),
            httpx.Response(503),
            httpx.Response(504),
            httpx.Response(408, json=error_json("timed out", "DATABASE_TIMEOUT")),
            httpx.Response(200, json=record_json()),
        )
    )
    client.get_record(REC)
    assert rec.count == 6
    assert sleep.calls == pytest.approx([0.2, 0.4, 0.8, 1.6, 3.2])


def test_backoff_is_capped_and_jittered() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=4, jitter=0.5)
    delays = [policy.backoff(n) for n in range(1, 10) for _ in range(20)]
    assert all(0 <= d <= 4 for d in delays)
    assert len(set(delays)) > 10
    assert policy.backoff(1) <= 1


def test_exhaustion_raises_the_last_status() -> None:
    client, rec, sleep = make_client(
        lambda r: httpx.Response(
            503, json=error_json("down for maintenance", "DATABASE_UNAVAILABLE")
        )
    )
    with pytest.raises(ServerError) as info:
        client.get_record(REC)
    assert rec.count == 6 and len(sleep.calls) == 5
    assert info.value.status == 503
    assert info.value.error_code == "DATABASE_UNAVAILABLE"
    assert "down for maintenance" in str(info.value)
    assert not outcome_unknown(info.value)  # a GET changes nothing


def test_connection_refused_exhaustion_message() -> None:
    client, rec, _ = make_client(sequence(httpx.ConnectError("[Errno 111] Connection refused")))
    with pytest.raises(TransportError) as info:
        client.get_record(REC)
    assert str(info.value) == "cannot reach https://api.test (connection refused) after 6 attempts"
    assert rec.count == 6
    assert info.value.__cause__ is None
    assert_no_key(info.value)


def test_real_refused_port_on_loopback() -> None:
    sleep = FakeSleep()
    client = Client("http://127.0.0.1:9", KEY, retry=RetryPolicy(sleep=sleep))
    with pytest.raises(TransportError) as info:
        client.get_record(REC)
    assert (
        str(info.value) == "cannot reach http://127.0.0.1:9 (connection refused) after 6 attempts"
    )
    assert len(sleep.calls) == 5


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.ConnectTimeout("timed out"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.WriteError("broken pipe"),
        httpx.PoolTimeout("pool"),
    ],
)
def test_transport_failures_are_retried_for_idempotent_calls(error: Exception) -> None:
    client, rec, _ = make_client(sequence(error, error, httpx.Response(204)))
    client.put_payload(REC, {"a": 1})
    assert rec.count == 3


def test_undecodable_body_is_retried_then_a_transport_error() -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, stream=httpx.ByteStream(b"not gzip at all"), headers={"Content-Encoding": "gzip"}
        )

    client, rec, _ = make_client(broken)
    with pytest.raises(TransportError) as info:
        client.get_record(REC)
    assert rec.count == 6
    assert "could not be decoded" in str(info.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    client, rec, sleep = make_client(lambda r: httpx.Response(status, json=error_json("no")))
    with pytest.raises(HTTPStatusError) as info:
        client.get_record(REC)
    assert rec.count == 1 and sleep.calls == []
    assert info.value.status == status


def test_no_retry_policy() -> None:
    client, rec, _ = make_client(lambda r: httpx.Response(503), policy=RetryPolicy.never())
    with pytest.raises(ServerError):
        client.get_record(REC)
    assert rec.count == 1


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(503, headers={"Retry-After": "1"}),
        httpx.Response(408, json=error_json("timeout", "DATABASE_TIMEOUT")),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("[Errno 104] Connection reset by peer"),
        httpx.WriteTimeout("timed out"),
    ],
)
def test_create_record_is_not_retried_when_ambiguous(failure: httpx.Response | Exception) -> None:
    client, rec, sleep = make_client(sequence(failure, httpx.Response(201, json=record_json())))
    with pytest.raises((ServerError, TransportError)) as info:
        client.create_record(DS, {"a": 1})
    assert rec.count == 1 and sleep.calls == []
    assert outcome_unknown(info.value)
    assert_no_key(info.value)
    if isinstance(info.value, TransportError):
        assert "may have been created" in str(info.value)


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(429, headers={"Retry-After": "2"}),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectTimeout("timed out"),
    ],
)
def test_create_record_is_retried_when_certainly_not_sent(
    failure: httpx.Response | Exception,
) -> None:
    client, rec, _ = make_client(
        sequence(failure, failure, httpx.Response(201, json=record_json()))
    )
    record = client.create_record(DS, {"a": 1})
    assert record.id == str(uuid.UUID(int=1))
    assert rec.count == 3


def test_create_record_connect_failures_exhausted_are_certainly_not_applied() -> None:
    client, rec, _ = make_client(sequence(httpx.ConnectError("[Errno 111] Connection refused")))
    with pytest.raises(TransportError) as info:
        client.create_record(DS, {"a": 1})
    assert rec.count == 6
    assert not outcome_unknown(info.value)


def test_create_record_rejected_is_not_ambiguous() -> None:
    client, _, _ = make_client(
        lambda r: httpx.Response(
            422, json=error_json("payload is not a conversation", "DATASET_RECORD_FORMAT_ERROR")
        )
    )
    with pytest.raises(RequestRejectedError) as info:
        client.create_record(DS, {"a": 1})
    assert info.value.error_code == "DATASET_RECORD_FORMAT_ERROR"
    assert not outcome_unknown(info.value)


def test_create_record_unreadable_success_is_ambiguous() -> None:
    client, _, _ = make_client(lambda r: httpx.Response(201, json={"id": "nope"}))
    with pytest.raises(ProtocolError) as info:
        client.create_record(DS, {"a": 1})
    assert outcome_unknown(info.value)


def test_other_creates_are_not_retried_on_5xx() -> None:
    client, rec, _ = make_client(lambda r: httpx.Response(503))
    with pytest.raises(ServerError):
        client.create_dataset("a good name", "")
    with pytest.raises(ServerError):
        client.import_from_file(DS, "file-1")
    assert rec.count == 2


def test_put_transport_failure_is_ambiguous_get_is_not() -> None:
    client, _, _ = make_client(sequence(httpx.ReadTimeout("timed out")), policy=RetryPolicy.never())
    with pytest.raises(TransportError) as put:
        client.put_payload(REC, {})
    assert outcome_unknown(put.value)
    assert str(put.value).startswith(
        f"PUT {RECORDS}/{REC}/payload on https://api.test failed (read timeout)"
    )
    with pytest.raises(TransportError) as get:
        client.get_record(REC)
    assert not outcome_unknown(get.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_retry_policy_validation() -> None:
    for bad in (
        {"attempts": 0},
        {"base_delay": -1},
        {"jitter": 2},
        {"max_total_seconds": float("inf")},
    ):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]


# -- error bodies ---------------------------------------------------------------------


def test_observability_error_body() -> None:
    client, _, _ = make_client(
        lambda r: httpx.Response(
            404, json=error_json("record not found", "DATASET_RECORD_NOT_FOUND")
        )
    )
    with pytest.raises(NotFoundError) as info:
        client.get_record(REC)
    error = info.value
    assert error.message == "record not found"
    assert error.error_code == "DATASET_RECORD_NOT_FOUND"
    assert error.method == "GET" and error.path == f"{RECORDS}/{REC}"
    assert str(error) == (
        f"server answered 404 on GET {RECORDS}/{REC}: record not found [DATASET_RECORD_NOT_FOUND]"
    )


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(422, json={"detail": "name too short"}), "name too short"),
        (
            httpx.Response(
                422, json={"detail": [{"loc": ["body", "name"], "msg": "too short", "type": "x"}]}
            ),
            "body.name: too short",
        ),
        (httpx.Response(400, json={"message": "bad\nthing"}), "bad thing"),
        (httpx.Response(400, json=[1, 2]), "Bad Request"),
        (httpx.Response(400, json={"detail": {"message": 5, "error_code": 7}}), "Bad Request"),
        (httpx.Response(400, content=b""), "Bad Request (empty body)"),
        (httpx.Response(400, content=b"\xff\xfe"), "Bad Request, with a non-JSON body"),
    ],
)
def test_tolerated_error_shapes(response: httpx.Response, message: str) -> None:
    client, _, _ = make_client(lambda r: response)
    with pytest.raises(RequestRejectedError) as info:
        client.get_record(REC)
    assert message in info.value.message
    assert "\n" not in str(info.value)


def test_html_error_page_is_summarised() -> None:
    html = "<html><head><title>502</title></head>\n<body>" + "x" * 5000 + "</body></html>"
    client, _, _ = make_client(
        lambda r: httpx.Response(
            502, text=html, headers={"Content-Type": "text/html; charset=utf-8"}
        ),
        policy=RetryPolicy.never(),
    )
    with pytest.raises(ServerError) as info:
        client.get_record(REC)
    text = str(info.value)
    assert "<html" not in text and "\n" not in text
    assert "502" in text and "Bad Gateway" in text and "non-JSON body (text/html)" in text


def test_401_is_an_authentication_error() -> None:
    client, _, _ = make_client(
        lambda r: httpx.Response(401, json=error_json(f"invalid key {KEY}", "AUTH_UNAUTHORIZED"))
    )
    with pytest.raises(AuthenticationError) as info:
        client.list_datasets()
    assert "MISTRAL_API_KEY" in str(info.value)
    assert_no_key(info.value)
    assert KEY not in info.value.message


# -- success bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"<html>ok</html>", "non-JSON body"),
        (b"", "non-JSON body"),
        (b'{"id": NaN}', "non-JSON body"),
        (b"[]", "expected an object"),
        (
            json.dumps({k: v for k, v in record_json().items() if k != "updated_at"}).encode(),
            "updated_at is missing",
        ),
        (json.dumps(record_json(id=5)).encode(), "id is 5, expected a string"),
        (json.dumps(record_json(id="abc")).encode(), "id is 'abc', expected a UUID"),
        (json.dumps(record_json(payload=[1])).encode(), "payload is [1], expected an object"),
        (json.dumps(record_json(properties=None)).encode(), "properties is None"),
        (json.dumps(record_json(source=None)).encode(), "source is None"),
        (json.dumps(record_json(updated_at="yesterday")).encode(), "updated_at='yesterday'"),
        (json.dumps(record_json(updated_at="2026-01-02T03:04:05")).encode(), "without a time zone"),
        (json.dumps(record_json(created_at=1700000000)).encode(), "created_at=1700000000"),
        (json.dumps(record_json(deleted_at="9999-12-31T23:59:59-01:00")).encode(), "out of range"),
        (json.dumps(record_json(deleted_at=False)).encode(), "deleted_at=False"),
    ],
)
def test_wrong_shaped_answers_are_protocol_errors(body: bytes, fragment: str) -> None:
    client, _, _ = make_client(
        lambda r: httpx.Response(200, content=body, headers={"Content-Type": "application/json"})
    )
    with pytest.raises(ProtocolError) as info:
        client.get_record(REC)
    text = str(info.value)
    assert fragment in text
    assert f"GET {RECORDS}/{REC}" in text
    assert "\n" not in text


def test_204_endpoints_need_no_body_and_ignore_one() -> None:
    client, _, _ = make_client(
        sequence(
            httpx.Response(204),
            httpx.Response(200, content=b"<html>fine</html>"),
            httpx.Response(200, json={"ok": True}),
        )
    )
    assert client.put_payload(REC, {}) is None
    assert client.put_properties(REC, {}) is None
    assert client.delete_record(REC) is None


def test_redirect_is_not_followed() -> None:
    client, rec, _ = make_client(
        lambda r: httpx.Response(302, headers={"Location": "https://evil.test/steal"})
    )
    with pytest.raises(ProtocolError, match=r"unexpected answer 302.*check the server URL"):
        client.get_record(REC)
    assert rec.count == 1


def test_judge_output_wrong_shape() -> None:
    for body in (
        {"analysis": "x"},
        {"analysis": "x", "answer": True},
        {"analysis": 1, "answer": 1},
        {"analysis": "x", "answer": [1]},
    ):
        client, _, _ = make_client(lambda r, body=body: httpx.Response(200, json=body))
        with pytest.raises(ProtocolError):
            client.judge_record(REC, JUDGE)


def test_export_and_task_shapes() -> None:
    client, _, _ = make_client(
        sequence(
            httpx.Response(200, json={"file_url": 3}),
            httpx.Response(200, json=task_json(created_at="never")),
            httpx.Response(200, json={"tasks": {"results": "nope", "count": 1}}),
        )
    )
    with pytest.raises(ProtocolError, match="file_url"):
        client.export_to_jsonl(DS)
    with pytest.raises(ProtocolError, match="created_at"):
        client.get_task(DS, str(uuid.UUID(int=99)))
    with pytest.raises(ProtocolError, match=r"tasks\.results"):
        client.list_tasks(DS)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "id",
                    "records",
                    "results",
                    "count",
                    "next",
                    "payload",
                    "detail",
                    "message",
                    "answer",
                    "analysis",
                    "datasets",
                    "source",
                    "created_at",
                    "dataset_id",
                    "file_url",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=JSON | st.binary(max_size=40).map(lambda b: b),
    status=st.sampled_from([200, 201, 204, 400, 404, 422, 500]),
    which=st.sampled_from(
        [
            "get_record",
            "list_page",
            "list_datasets",
            "judge",
            "create",
            "export",
            "get_dataset",
            "list_tasks",
        ]
    ),
)
def test_garbage_answers_raise_only_api_errors(body: Any, status: int, which: str) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    client, _, _ = make_client(
        lambda r: httpx.Response(
            status, content=content, headers={"Content-Type": "application/json"}
        ),
        policy=RetryPolicy.never(),
    )
    calls: dict[str, Callable[[], Any]] = {
        "get_record": lambda: client.get_record(REC),
        "list_page": lambda: client.list_records_page(DS, 1),
        "list_datasets": lambda: client.list_datasets(),
        "judge": lambda: client.judge_record(REC, JUDGE),
        "create": lambda: client.create_record(DS, {"a": 1}),
        "export": lambda: client.export_to_jsonl(DS),
        "get_dataset": lambda: client.get_dataset(DS),
        "list_tasks": lambda: client.list_tasks(DS),
    }
    try:
        calls[which]()
    except (ProtocolError, HTTPStatusError) as exc:
        assert "\n" not in str(exc)
        assert_no_key(exc)


# -- pagination -----------------------------------------------------------------------------


class PagedServer:
    """Serves ``n`` records of a dataset in pages; knobs to break it."""

    def __init__(self, n: int, *, delay: float = 0.0) -> None:
        self.n = n
        self.delay = delay
        self.count_for: Callable[[int], int] = lambda page: self.n
        self.next_for: Callable[[int, int], Any] = self.good_next
        self.records_for: Callable[[int, int], list[dict[str, Any]]] = self.slice
        self.fail_pages: set[int] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.pages_served: list[int] = []
        self.lock = threading.Lock()

    def good_next(self, page: int, size: int) -> str | None:
        return (
            f"{BASE}{DATASETS}/{DS}/records?page={page + 1}&page_size={size}"
            if page * size < self.n
            else None
        )

    def slice(self, page: int, size: int) -> list[dict[str, Any]]:
        return [record_json(i) for i in range((page - 1) * size, min(self.n, page * size))]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        size = int(request.url.params["page_size"])
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.pages_served.append(page)
        try:
            if self.delay:
                time.sleep(self.delay)
            if page in self.fail_pages:
                return httpx.Response(500, json=error_json("boom", "DATABASE_ERROR"))
            body = {
                "records": {
                    "results": self.records_for(page, size),
                    "count": self.count_for(page),
                    "next": self.next_for(page, size),
                    "previous": None,
                }
            }
            return httpx.Response(200, json=body)
        finally:
            with self.lock:
                self.in_flight -= 1


def run_listing(client: Client, **kw: Any) -> tuple[list[RecordPage], Any]:
    iterator = client.iter_record_pages(DS, **kw)
    pages = list(iterator)
    return pages, iterator.listing


def test_listing_of_1050_records_is_complete() -> None:
    server = PagedServer(1050, delay=0.01)
    client, rec, _ = make_client(server)
    pages, listing = run_listing(client, concurrency=4)
    assert sorted(p.page for p in pages) == list(range(1, 12))
    assert sum(len(p.records) for p in pages) == 1050
    assert listing.complete and listing.count == 1050 and listing.pages == 11
    assert listing.distinct == 1050 and len(listing.record_ids) == 1050
    assert 1 < server.max_in_flight <= 4
    assert server.pages_served[0] == 1
    assert rec.count == 11


def test_relative_next_links_are_fine() -> None:
    server = PagedServer(250)
    server.next_for = lambda p, s: (
        f"{DATASETS}/{DS}/records?page_size={s}&page={p + 1}" if p < 3 else None
    )
    client, _, _ = make_client(server)
    _, listing = run_listing(client)
    assert listing.complete


def test_full_last_page_keeps_fetching_until_short() -> None:
    server = PagedServer(300)
    server.count_for = lambda page: 200  # the server undercounts
    client, _, _ = make_client(server)
    pages, listing = run_listing(client)
    assert sorted(p.page for p in pages) == [1, 2, 3, 4]
    assert listing.distinct == 300
    assert not listing.complete


def test_exact_multiple_fetches_one_empty_page() -> None:
    server = PagedServer(200)
    client, _, _ = make_client(server)
    pages, listing = run_listing(client)
    assert sorted(p.page for p in pages) == [1, 2, 3]
    assert listing.complete


def test_empty_dataset() -> None:
    client, rec, _ = make_client(PagedServer(0))
    pages, listing = run_listing(client)
    assert len(pages) == 1 and pages[0].records == []
    assert listing.complete and listing.count == 0
    assert rec.count == 1


def test_endless_full_pages_hit_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("localstore.api._pagination.EXTRA_PAGES_CAP", 5)
    server = PagedServer(100)
    server.count_for = lambda page: 100
    server.records_for = lambda p, s: [record_json(i) for i in range((p - 1) * s, p * s)]
    server.next_for = lambda p, s: None
    client, rec, _ = make_client(server)
    with pytest.raises(ProtocolError, match="still had full pages after page 6"):
        run_listing(client)
    assert rec.count == 6


def test_the_page_after_a_full_last_page_is_asked_for_with_the_others() -> None:
    """When ``count`` fills its last page, the empty page that must follow is requested
    alongside the rest, not one round trip after them: page 3's answer waits until page
    4 has been asked for (a listing that asked only after reading page 3 would time out)."""
    server = PagedServer(300)
    page_4_asked = threading.Event()
    records = server.slice

    def hold_page_3(page: int, size: int) -> list[dict[str, Any]]:
        if page == 4:
            page_4_asked.set()
        if page == 3:
            assert page_4_asked.wait(timeout=10), "page 4 was not asked for before page 3 was read"
        return records(page, size)

    server.records_for = hold_page_3
    client, rec, _ = make_client(server)
    pages, listing = run_listing(client, concurrency=4)
    assert sorted(p.page for p in pages) == [1, 2, 3, 4]
    assert listing.complete and listing.count == 300 and rec.count == 4


def test_a_dataset_that_grew_past_its_count_is_read_on() -> None:
    """The page after the last full one holds records (the dataset grew while it was
    listed): the listing goes on until a short page, and says it does not add up."""
    server = PagedServer(450)
    server.count_for = lambda page: 300 if page == 1 else 450
    client, _, _ = make_client(server)
    pages, listing = run_listing(client, concurrency=4)
    assert sum(len(p.records) for p in pages) == 450
    assert sorted(p.page for p in pages) == [1, 2, 3, 4, 5]
    assert not listing.complete


def test_server_repeating_a_page_forever_is_caught() -> None:
    server = PagedServer(100)
    server.records_for = lambda p, s: [record_json(i) for i in range(100)]
    server.next_for = lambda p, s: None
    client, rec, _ = make_client(server)
    with pytest.raises(ProtocolError, match="repeats records on page 2"):
        run_listing(client)
    assert rec.count == 2


@pytest.mark.parametrize(
    ("next_link", "why"),
    [
        ("https://evil.test/v1/observability/datasets/x/records?page=3", "another path"),
        (f"{DATASETS}/{DS}/other?page=3&page_size=100", "another path"),
        (f"{DATASETS}/{DS}/records?page=2&page_size=100", "loops back"),
        (f"{DATASETS}/{DS}/records?page=1&page_size=100", "loops back"),
        (f"{DATASETS}/{DS}/records?page=7&page_size=100", "skips to page 7"),
        (f"{DATASETS}/{DS}/records?page=three", "not a number"),
        (f"{DATASETS}/{DS}/records?page_size=100", "no single page"),
        (f"{DATASETS}/{DS}/records?page=3&page_size=10", "another page_size"),
        ("http://[::1", "not a URL"),
        (3, "not a string"),
        ({"page": 3}, "not a string"),
    ],
)
def test_garbage_next_link_on_page_2(next_link: Any, why: str) -> None:
    server = PagedServer(450)
    good = server.good_next
    server.next_for = lambda p, s: next_link if p == 2 else good(p, s)
    client, _, _ = make_client(server)
    with pytest.raises(ProtocolError) as info:
        run_listing(client, concurrency=1)
    text = str(info.value)
    assert "inconsistent next link on page 2" in text or ("next" in text and why == "not a string")
    if "inconsistent" in text:
        assert why in text
    assert "\n" not in text


def test_next_link_may_name_the_server_differently() -> None:
    """A server reached as 127.0.0.1 may call itself localhost, or sit behind a prefix:
    the link is checked, never followed, so only the listing and the page matter."""
    server = PagedServer(450)
    server.next_for = lambda p, s: (
        f"https://api.example.test/prefix{DATASETS}/{DS}/records?page={p + 1}&page_size={s}"
        if p * s < 450
        else None
    )
    client, _, _ = make_client(server)
    _, listing = run_listing(client)
    assert listing.complete


def test_single_page_next_is_checked() -> None:
    server = PagedServer(150)
    server.next_for = lambda p, s: f"{DATASETS}/{DS}/records?page={p}&page_size={s}"
    client, _, _ = make_client(server)
    with pytest.raises(ProtocolError, match="inconsistent next link on page 1"):
        client.list_records_page(DS, 1)


def test_count_changing_between_pages_is_incomplete() -> None:
    server = PagedServer(350)
    server.count_for = lambda page: 350 if page != 3 else 351
    client, _, _ = make_client(server)
    _, listing = run_listing(client)
    assert not listing.complete
    assert set(listing.counts) == {350, 351}
    assert any("page 3 reported count 351" in p for p in listing.problems)


def test_duplicates_across_pages_are_incomplete() -> None:
    server = PagedServer(250)
    base = server.slice
    server.records_for = lambda p, s: base(1, s) if p == 2 else base(p, s)
    client, _, _ = make_client(server)
    pages, listing = run_listing(client)
    assert sum(len(p.records) for p in pages) == 250
    assert listing.distinct == 150 and not listing.complete


def test_records_of_another_dataset_are_a_protocol_error() -> None:
    other = str(uuid.uuid4())
    server = PagedServer(250)
    base = server.slice
    server.records_for = lambda p, s: (
        [record_json(999, dataset_id=other), *base(p, s)[1:]] if p == 3 else base(p, s)
    )
    client, _, _ = make_client(server)
    with pytest.raises(ProtocolError, match=f"of dataset {other}"):
        run_listing(client)


def test_more_records_than_page_size_is_a_protocol_error() -> None:
    server = PagedServer(100)
    server.records_for = lambda p, s: [record_json(i) for i in range(s + 1)]
    client, _, _ = make_client(server)
    with pytest.raises(ProtocolError, match="holds 11 records, page_size is 10"):
        client.list_records_page(DS, 1, 10)


def test_a_failed_page_fails_the_iteration() -> None:
    server = PagedServer(1050)
    server.fail_pages = {7}
    client, _, sleep = make_client(server)
    iterator = client.iter_record_pages(DS, concurrency=3)
    got = []
    with pytest.raises(ServerError):
        for page in iterator:
            got.append(page)
    assert 1 <= len(got) < 11
    assert iterator.listing is not None
    assert iterator.listing.failed and not iterator.listing.complete
    assert server.pages_served.count(7) == 6  # retried, then gave up
    assert len(sleep.calls) == 5


def test_first_page_failure_raises() -> None:
    server = PagedServer(10)
    server.fail_pages = {1}
    client, _, _ = make_client(server, policy=RetryPolicy.never())
    iterator = client.iter_record_pages(DS)
    with pytest.raises(ServerError):
        list(iterator)
    assert iterator.listing is not None and iterator.listing.failed
    assert not iterator.listing.complete


def test_closing_early_stops_fetching() -> None:
    server = PagedServer(5000, delay=0.005)
    client, _, _ = make_client(server)
    with client.iter_record_pages(DS, concurrency=2) as iterator:
        next(iterator)
        next(iterator)
    time.sleep(0.05)
    served = len(server.pages_served)
    time.sleep(0.05)
    assert len(server.pages_served) == served < 10
    assert iterator.listing is None


def test_memory_stays_flat_with_a_slow_consumer() -> None:
    server = PagedServer(3000)
    client, _, _ = make_client(server)
    iterator = client.iter_record_pages(DS, concurrency=3)
    next(iterator)
    next(iterator)
    time.sleep(0.1)  # the consumer dawdles: at most PREFETCH x `concurrency` pages wait for it
    assert len(server.pages_served) <= 2 + PREFETCH * 3
    rest = list(iterator)
    assert len(rest) == 28 + 1  # pages 3..30, then the empty page 31 after a full page 30
    assert iterator.listing.complete and iterator.listing.pages == 31


def test_slug_listing_checks_dataset_consistency() -> None:
    server = PagedServer(150)
    server.next_for = lambda p, s: f"?page={p + 1}&page_size={s}" if p < 2 else None
    client, rec, _ = make_client(server, validate=False)
    iterator = client.iter_record_pages("support-tickets")
    assert sum(len(p.records) for p in iterator) == 150
    assert iterator.listing.complete and iterator.listing.dataset_id == DS
    assert rec.requests[0].url.path == f"{DATASETS}/support-tickets/records"


def test_list_datasets_walks_pages_and_dedupes() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        page = int(request.url.params["page"])
        results = [
            dataset_json(id=str(uuid.UUID(int=i + 1)), name=f"dataset {i}")
            for i in range((page - 1) * 100, min(130, page * 100))
        ]
        if page == 2:
            results.append(dataset_json(id=str(uuid.UUID(int=1))))  # shifted listing
        return httpx.Response(200, json={"datasets": {"results": results, "count": 130}})

    client, rec, _ = make_client(handler)
    datasets = client.list_datasets()
    assert len(datasets) == 130
    assert [r.url.params["page"] for r in rec.requests] == ["1", "2"]


# -- threads -------------------------------------------------------------------------------


def test_one_client_from_many_threads() -> None:
    failed_once: set[str] = set()
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        rid = request.url.path.rsplit("/", 1)[-1]
        with lock:
            first = rid not in failed_once
            failed_once.add(rid)
        if int(uuid.UUID(rid)) % 7 == 0 and first:
            return httpx.Response(503)
        return httpx.Response(200, json=record_json(id=rid))

    client, _, _ = make_client(handler)
    ids = [str(uuid.UUID(int=i)) for i in range(1, 201)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda rid: client.get_record(rid), ids, timeout=60))
    assert [r.id for r in results] == ids
    client.close()


def test_errors_never_carry_the_key() -> None:
    errors: list[BaseException] = []
    scenarios: list[Callable[[httpx.Request], httpx.Response]] = [
        sequence(httpx.ConnectError(f"refused {KEY}")),
        sequence(httpx.ReadTimeout(f"timeout {KEY}")),
        lambda r: httpx.Response(500, text=f"<html>{KEY}</html>"),
        lambda r: httpx.Response(400, json={"detail": f"bad key {KEY}"}),
        lambda r: httpx.Response(200, json=record_json(id=KEY)),
        lambda r: httpx.Response(200, json=record_json(updated_at=KEY)),
    ]
    for handler in scenarios:
        client, _, _ = make_client(handler, policy=RetryPolicy.never())
        with pytest.raises(Exception) as info:
            client.get_record(REC)
        errors.append(info.value)
    for error in errors:
        assert_no_key(error)
