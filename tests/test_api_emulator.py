"""The API client against the real emulator on loopback.

Every request the client sends goes through an httpx request hook that validates
it against the OpenAPI spec (when the spec is present beside the clone).
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openapi_contract import SPEC_PATH, Contract

from localstore.api import Client, JudgeOutput, Record, RetryPolicy, outcome_unknown
from localstore.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TransportError,
    UsageError,
)
from localstore_emulator import EmulatorServer

CONTRACT: Contract | None = Contract.load() if SPEC_PATH.exists() else None

JUDGE = {
    "name": "helpfulness",
    "description": "is the answer helpful",
    "model_name": "mistral-small-latest",
    "output": {
        "type": "CLASSIFICATION",
        "options": [
            {"value": "GOOD", "description": "helpful"},
            {"value": "BAD", "description": "not helpful"},
        ],
    },
    "instructions": "judge the assistant",
    "tools": [],
}


class SpecHook:
    """An httpx request hook: every request the client sends must be valid against
    the spec; remembers which operations were exercised."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> None:
        body = json.loads(request.content) if request.content else None
        with self.lock:
            self.count += 1
        if CONTRACT is not None:
            op = CONTRACT.validate_request(request.method, str(request.url), body)
            with self.lock:
                self.seen.add((op.method, op.template))


@pytest.fixture
def hook() -> SpecHook:
    return SpecHook()


@pytest.fixture
def make(emulator: EmulatorServer, api_key: str, hook: SpecHook) -> Iterator[Callable[..., Client]]:
    clients: list[Client] = []

    def factory(**kw: Any) -> Client:
        kw.setdefault("retry", RetryPolicy(base_delay=0.01, max_delay=0.1))
        kw.setdefault("on_request", hook)
        client = Client(emulator.url, kw.pop("api_key", api_key), **kw)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def client(make: Callable[..., Client]) -> Client:
    return make()


@pytest.fixture
def faults(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator, its latency and faults reset afterwards."""
    try:
        yield emulator
    finally:
        emulator.configure(latency_ms=0, fail_rate=0.0)


def test_list_1050_records_with_concurrency_8(
    client: Client, dataset: Callable[..., str], emulator: EmulatorServer
) -> None:
    dataset_id = dataset(1050)
    iterator = client.iter_record_pages(dataset_id, concurrency=8)
    seen: dict[str, Record] = {}
    for page in iterator:
        for record in page.records:
            seen[record.id] = record
    listing = iterator.listing
    assert listing is not None
    assert listing.complete, listing.problems
    assert listing.count == 1050 == listing.distinct == len(seen)
    assert listing.pages == 11
    expected = {r["id"] for r in emulator.state.list_records(dataset_id)}
    assert set(seen) == expected == set(listing.record_ids)
    some = next(iter(seen.values()))
    assert some.dataset_id == dataset_id
    assert some.updated_at.endswith("Z")


def test_exact_multiple_of_page_size(client: Client, dataset: Callable[..., str]) -> None:
    dataset_id = dataset(200)
    iterator = client.iter_record_pages(dataset_id, concurrency=3)
    assert sum(len(p.records) for p in iterator) == 200
    assert iterator.listing is not None and iterator.listing.complete
    assert iterator.listing.pages == 3  # the full page 2 is followed by an empty page 3


def test_listing_by_slug(client: Client, emulator: EmulatorServer) -> None:
    created = emulator.state.create_dataset("slugged dataset", "")
    emulator.state.add_records(created["id"], [{"payload": {"i": i}} for i in range(120)])
    # the spec says dataset_id is a uuid; the SDK documents slugs: no spec check here
    slug_client = Client(client.server_url, "k", retry=client.retry)
    try:
        iterator = slug_client.iter_record_pages(created["slug"])
        assert sum(len(p.records) for p in iterator) == 120
        assert iterator.listing is not None and iterator.listing.complete
        assert iterator.listing.dataset_id == created["id"]
        assert slug_client.get_dataset(created["slug"]).id == created["id"]
    finally:
        slug_client.close()


def test_record_round_trips(client: Client, dataset: Callable[..., str]) -> None:
    dataset_id = dataset(0)
    payload = {"messages": [{"role": "user", "content": "héllo"}]}
    created = client.create_record(dataset_id, payload, {"label": "new", "score": 0.5})
    assert created.dataset_id == dataset_id
    assert created.payload == payload
    assert created.properties == {"label": "new", "score": 0.5}
    assert created.deleted_at is None

    fetched = client.get_record(created.id)
    assert fetched == created

    new_payload = {"messages": [{"role": "user", "content": "edited"}]}
    assert client.put_payload(created.id, new_payload) is None
    after_payload = client.get_record(created.id)
    assert after_payload.payload == new_payload
    assert after_payload.updated_at >= created.updated_at

    assert client.put_properties(created.id, {"label": "done"}) is None
    after_props = client.get_record(created.id)
    assert after_props.properties == {"label": "done"}  # the whole map is replaced
    assert after_props.payload == new_payload

    client.delete_record(created.id)
    with pytest.raises(NotFoundError) as info:
        client.get_record(created.id)
    assert info.value.error_code == "DATASET_RECORD_NOT_FOUND"
    with pytest.raises(NotFoundError):
        client.delete_record(created.id)  # callers treat 404 on delete as done
    with pytest.raises(NotFoundError):
        client.put_payload(created.id, {})


def test_bulk_delete(client: Client, dataset: Callable[..., str]) -> None:
    dataset_id = dataset(5)
    pages = list(client.iter_record_pages(dataset_id))
    ids = [r.id for p in pages for r in p.records]
    client.bulk_delete(ids[:3])
    for record_id in ids[:3]:
        with pytest.raises(NotFoundError):
            client.get_record(record_id)
    remaining = client.list_records_page(dataset_id, 1)
    assert remaining.count == 2
    assert {r.id for r in remaining.records} == set(ids[3:])


def test_dataset_round_trips(client: Client) -> None:
    name = f"api test {uuid.uuid4().hex[:8]}"
    created = client.create_dataset(name, "made by the client tests")
    assert created.name == name and created.slug
    assert client.get_dataset(created.id) == created
    updated = client.update_dataset(created.id, description="changed")
    assert updated.description == "changed" and updated.name == name
    listed = client.list_datasets(q=name)
    assert [d.id for d in listed] == [created.id]
    assert created.id in {d.id for d in client.list_datasets()}
    client.delete_dataset(created.id)
    with pytest.raises(NotFoundError):
        client.get_dataset(created.id)


def test_many_datasets_are_listed_across_pages(client: Client, emulator: EmulatorServer) -> None:
    tag = uuid.uuid4().hex[:8]
    made = {emulator.state.create_dataset(f"bulk {tag} {i}", "")["id"] for i in range(130)}
    found = client.list_datasets(q=tag)
    assert {d.id for d in found} == made


def test_judge_imports_tasks_export(
    client: Client, dataset: Callable[..., str], emulator: EmulatorServer
) -> None:
    source = dataset(3)
    target = dataset(0)
    ids = [r["id"] for r in emulator.state.list_records(source)]
    output = client.judge_record(ids[0], JUDGE)
    assert isinstance(output, JudgeOutput) and output.answer in ("GOOD", "BAD")

    task = client.import_from_dataset(target, ids)
    assert task["status"] == "COMPLETED"
    assert client.list_records_page(target, 1).count == 3
    assert client.get_task(target, task["id"])["id"] == task["id"]
    others = [
        client.import_from_campaign(target, str(uuid.uuid4())),
        client.import_from_explorer(target, ["event-1"]),
        client.import_from_file(target, "file-123"),
        client.import_from_playground(target, ["conversation-1"]),
    ]
    assert all(t["dataset_id"] == target for t in others)
    tasks = client.list_tasks(target)
    assert {t["id"] for t in tasks} == {task["id"]} | {t["id"] for t in others}
    url = client.export_to_jsonl(target)
    assert url.startswith("http")


def test_every_spec_operation_is_exercised_and_valid(
    make: Callable[..., Client],
    hook: SpecHook,
    dataset: Callable[..., str],
    emulator: EmulatorServer,
) -> None:
    contract = Contract.load_or_skip()
    client = make()
    test_dataset_round_trips(client)
    test_judge_imports_tasks_export(client, dataset, emulator)
    test_record_round_trips(client, dataset)
    test_bulk_delete(client, dataset)
    assert hook.seen == set(contract.paths())


def test_empty_key_is_refused_locally(emulator: EmulatorServer, hook: SpecHook) -> None:
    with pytest.raises(UsageError, match="MISTRAL_API_KEY is not set"):
        Client(emulator.url, "", on_request=hook)
    assert hook.count == 0


def test_server_401_is_an_authentication_error(
    make: Callable[..., Client], dataset: Callable[..., str], api_key: str
) -> None:
    sent: list[httpx.Request] = []

    def strip_auth(request: httpx.Request) -> None:
        sent.append(request)
        del request.headers["authorization"]

    client = make(on_request=strip_auth)
    with pytest.raises(AuthenticationError) as info:
        client.list_records_page(dataset(1), 1)
    assert info.value.status == 401
    assert info.value.error_code == "AUTH_UNAUTHORIZED"
    assert len(sent) == 1  # not retried
    assert api_key not in str(info.value)


def test_retries_against_a_flaky_server(
    make: Callable[..., Client], dataset: Callable[..., str], faults: EmulatorServer
) -> None:
    dataset_id = dataset(1050)
    record_ids = [r["id"] for r in faults.state.list_records(dataset_id)[:40]]
    client = make(retry=RetryPolicy(attempts=12, base_delay=0.01, max_delay=0.05))
    faults.configure(fail_rate=0.3, seed=1234)

    iterator = client.iter_record_pages(dataset_id, concurrency=8)
    assert sum(len(p.records) for p in iterator) >= 1050
    assert iterator.listing is not None and iterator.listing.complete

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda rid: client.put_properties(rid, {"flaky": True}), record_ids))
    for record_id in record_ids:
        assert client.get_record(record_id).properties == {"flaky": True}
    client.bulk_delete(record_ids[:5])


def test_create_record_against_a_flaky_server(
    make: Callable[..., Client], dataset: Callable[..., str], faults: EmulatorServer
) -> None:
    """429 is retried; 5xx is not (the create might have happened) and says so."""
    dataset_id = dataset(0)
    client = make(retry=RetryPolicy(attempts=12, base_delay=0.01, max_delay=0.05))
    faults.configure(fail_rate=0.4, seed=99)
    created, ambiguous = [], []
    for i in range(40):
        try:
            created.append(client.create_record(dataset_id, {"i": i}))
        except ServerError as exc:
            assert outcome_unknown(exc)
            ambiguous.append(exc)
        except RateLimitedError:  # pragma: no cover - 12 consecutive 429s
            pytest.fail("429 should have been retried")
    faults.configure(fail_rate=0.0)
    assert created and ambiguous
    # the emulator injects faults before the handler runs: nothing half-created
    on_server = {r["id"] for r in faults.state.list_records(dataset_id)}
    assert on_server == {r.id for r in created}


def test_read_timeout_is_retried_for_reads_but_not_for_creates(
    make: Callable[..., Client], dataset: Callable[..., str], faults: EmulatorServer
) -> None:
    dataset_id = dataset(1)
    client = make(
        timeout=httpx.Timeout(0.15, connect=2.0),
        retry=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02),
    )
    faults.configure(latency_ms=400)
    with pytest.raises(TransportError) as read:
        client.list_records_page(dataset_id, 1)
    assert "read timeout" in str(read.value) and "after 3 attempts" in str(read.value)
    assert not outcome_unknown(read.value)
    with pytest.raises(TransportError) as create:
        client.create_record(dataset_id, {"late": True})
    assert "after 1 attempt" in str(create.value)
    assert "may have been created" in str(create.value)
    assert outcome_unknown(create.value)


def test_connection_refused_after_the_server_stops(api_key: str) -> None:
    server = EmulatorServer()
    server.start()
    url = server.url
    server.stop()
    client = Client(url, api_key, retry=RetryPolicy(attempts=3, base_delay=0.01))
    with pytest.raises(TransportError) as info:
        client.get_record(str(uuid.uuid4()))
    assert str(info.value) == f"cannot reach {url} (connection refused) after 3 attempts"


def test_pushes_from_many_threads(client: Client, dataset: Callable[..., str]) -> None:
    dataset_id = dataset(120)
    ids = [r.id for p in client.iter_record_pages(dataset_id) for r in p.records]

    def push(record_id: str) -> str:
        client.put_payload(record_id, {"messages": [], "id": record_id})
        client.put_properties(record_id, {"pushed": record_id})
        return client.get_record(record_id).properties["pushed"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(push, ids)) == ids
