"""Behaviour of the API emulator over real HTTP (uvicorn on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from localstore_emulator import (
    EmulatorError,
    EmulatorServer,
    EmulatorState,
    RefusedHost,
    seed_dataset,
)
from localstore_emulator.seed import make_record

DS = "/v1/observability/datasets"
REC = "/v1/observability/dataset-records"
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")  # the default: the API reference's form
US_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
JUDGE = {
    "name": "helpfulness",
    "description": "Is the answer helpful?",
    "model_name": "mistral-small-latest",
    "output": {
        "type": "CLASSIFICATION",
        "options": [
            {"value": "good", "description": "helpful"},
            {"value": "bad", "description": "not helpful"},
        ],
    },
    "instructions": "Rate the assistant's answer.",
    "tools": [],
}


def error_of(response: httpx.Response) -> tuple[int, str | None]:
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"]["message"], str)
    assert body["detail"]["message"]
    return response.status_code, body["detail"]["error_code"]


def record_ids(client: httpx.Client, dataset_id: str) -> list[str]:
    page = client.get(f"{DS}/{dataset_id}/records", params={"page_size": 100}).json()
    return [r["id"] for r in page["records"]["results"]]


# ---- datasets ---------------------------------------------------------------


def test_create_get_patch_delete_dataset(emulator_http: httpx.Client, us_stamps: None) -> None:
    created = emulator_http.post(DS, json={"name": "Eval Set #1", "description": "first"})
    assert created.status_code == 201
    body = created.json()
    assert body["name"] == "Eval Set #1" and body["description"] == "first"
    assert body["deleted_at"] is None and body["slug"].startswith("eval-set-1")
    assert US_RE.match(body["created_at"]) and body["created_at"] == body["updated_at"]
    second = emulator_http.post(DS, json={"name": "Eval Set #1", "description": ""}).json()
    assert second["slug"] != body["slug"]  # slugs stay unique

    for ref in (body["id"], body["id"].upper(), body["slug"]):
        fetched = emulator_http.get(f"{DS}/{ref}")
        assert fetched.status_code == 200 and fetched.json()["id"] == body["id"]

    patched = emulator_http.patch(f"{DS}/{body['id']}", json={"description": "changed"})
    assert patched.status_code == 200
    assert patched.json()["name"] == "Eval Set #1" and patched.json()["description"] == "changed"
    assert patched.json()["updated_at"] > body["updated_at"]

    assert emulator_http.delete(f"{DS}/{body['id']}").status_code == 204
    assert error_of(emulator_http.get(f"{DS}/{body['id']}")) == (404, "DATASET_NOT_FOUND")
    assert error_of(emulator_http.get(f"{DS}/{body['slug']}")) == (404, "DATASET_NOT_FOUND")
    assert error_of(emulator_http.delete(f"{DS}/{body['id']}")) == (404, "DATASET_NOT_FOUND")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"name": "abcd", "description": ""}, "name too short"),
        ({"name": "x" * 51, "description": ""}, "name too long"),
        ({"name": "valid name"}, "description missing"),
        ({"name": "valid name", "description": "d" * 201}, "description too long"),
        ([], "not an object"),
    ],
)
def test_create_dataset_validation(emulator_http: httpx.Client, body: Any, reason: str) -> None:
    assert error_of(emulator_http.post(DS, json=body)) == (422, "VALIDATION_ERROR"), reason


def test_dataset_ids_unknown_or_malformed(emulator_http: httpx.Client) -> None:
    assert error_of(emulator_http.get(f"{DS}/{uuid.uuid4()}")) == (404, "DATASET_NOT_FOUND")
    assert error_of(emulator_http.get(f"{DS}/no-such-slug")) == (404, "DATASET_NOT_FOUND")
    assert error_of(emulator_http.get(f"{DS}/Not A UUID!")) == (422, "VALIDATION_ERROR")


def test_list_datasets_filter_and_pages(emulator_http: httpx.Client, dataset) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [dataset(name=f"listing {tag} {i}") for i in range(5)]
    page = emulator_http.get(DS, params={"q": tag.upper(), "page_size": 2, "page": 2}).json()
    listing = page["datasets"]
    assert listing["count"] == 5
    assert [d["id"] for d in listing["results"]] == ids[2:4]
    assert "q=" in listing["next"] and "page=3" in listing["next"] and "page=1" in listing["previous"]
    last = emulator_http.get(listing["next"]).json()["datasets"]
    assert [d["id"] for d in last["results"]] == ids[4:] and last["next"] is None
    assert all("slug" in d for d in last["results"])


# ---- record listing -----------------------------------------------------------


def test_records_pagination_links(emulator_http: httpx.Client, dataset, emulator) -> None:
    dataset_id = dataset(7)
    expected = [r["id"] for r in emulator.state.list_records(dataset_id)]
    first = emulator_http.get(f"{DS}/{dataset_id}/records", params={"page_size": 3}).json()["records"]
    assert first["count"] == 7 and first["previous"] is None
    assert first["next"] == f"{emulator.url}{DS}/{dataset_id}/records?page=2&page_size=3"
    seen, url = [], f"{DS}/{dataset_id}/records?page=1&page_size=3"
    while url:
        page = emulator_http.get(url).json()["records"]
        seen += [r["id"] for r in page["results"]]
        url = page["next"]
    assert seen == expected
    created = [r["created_at"] for r in emulator.state.list_records(dataset_id)]
    assert created == sorted(created)  # ms stamps: records made in one millisecond tie
    internal = [emulator.state._records[i] for i in expected]
    assert [r.created_at for r in internal] == sorted({r.created_at for r in internal})

    third = emulator_http.get(f"{DS}/{dataset_id}/records", params={"page": 3, "page_size": 3})
    third_page = third.json()["records"]
    assert len(third_page["results"]) == 1 and third_page["next"] is None
    assert third_page["previous"].endswith("page=2&page_size=3")
    beyond = emulator_http.get(f"{DS}/{dataset_id}/records", params={"page": 9, "page_size": 3})
    assert beyond.status_code == 200 and beyond.json()["records"]["results"] == []
    default = emulator_http.get(f"{DS}/{dataset_id}/records").json()["records"]
    assert len(default["results"]) == 7 and default["next"] is None
    zero = emulator_http.get(f"{DS}/{dataset_id}/records", params={"page_size": 0}).json()["records"]
    assert zero == {"results": [], "count": 7, "next": None, "previous": None}


def test_default_page_size_is_50(emulator_http: httpx.Client, dataset) -> None:
    dataset_id = dataset(120)
    page = emulator_http.get(f"{DS}/{dataset_id}/records").json()["records"]
    assert len(page["results"]) == 50 and page["count"] == 120
    assert page["next"].endswith("page=2&page_size=50")
    full = emulator_http.get(f"{DS}/{dataset_id}/records", params={"page_size": 100, "page": 2})
    assert len(full.json()["records"]["results"]) == 20


@pytest.mark.parametrize(
    "params",
    [{"page": 0}, {"page": -1}, {"page_size": 101}, {"page_size": -1}, {"page": "x"}],
)
def test_page_parameters_out_of_range(emulator_http: httpx.Client, dataset, params) -> None:
    dataset_id = dataset(1)
    for path in (f"{DS}/{dataset_id}/records", DS, f"{DS}/{dataset_id}/tasks"):
        assert error_of(emulator_http.get(path, params=params)) == (422, "VALIDATION_ERROR")


# ---- record writes ------------------------------------------------------------


def test_create_record(emulator_http: httpx.Client, dataset, emulator) -> None:
    dataset_id = dataset()
    body = {"payload": {"messages": [{"role": "user", "content": "hi"}]}, "source": "TELEMETRY_SPAN"}
    response = emulator_http.post(f"{DS}/{dataset_id}/records", json=body)
    assert response.status_code == 201
    record = response.json()
    assert record["source"] == "DIRECT_INPUT" and record["properties"] == {}
    assert record["payload"] == body["payload"] and record["dataset_id"] == dataset_id
    assert record["deleted_at"] is None and TS_RE.match(record["updated_at"])
    assert emulator.state.get_record(record["id"]) == record
    assert emulator_http.get(f"{REC}/{record['id']}").json() == record


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"payload": [1, 2]}, "VALIDATION_ERROR"),
        ({"payload": "text"}, "VALIDATION_ERROR"),
        ({"payload": {}, "properties": [1]}, "VALIDATION_ERROR"),
        ({"payload": {}, "properties": None}, "VALIDATION_ERROR"),
        ({"properties": {}}, "VALIDATION_ERROR"),
        ({"payload": {"messages": "hello"}}, "DATASET_RECORD_FORMAT_ERROR"),
        ({"payload": {"messages": ["hello"]}}, "DATASET_RECORD_FORMAT_ERROR"),
        ({"payload": {"messages": [{"content": "no role"}]}}, "DATASET_RECORD_FORMAT_ERROR"),
        ({"payload": {"messages": [{"role": 3}]}}, "DATASET_RECORD_FORMAT_ERROR"),
        ({"payload": {"blob": "x" * (1024 * 1024)}}, "VALIDATION_ERROR"),
        ({"payload": {}, "properties": {"blob": "é" * (600 * 1024)}}, "VALIDATION_ERROR"),
    ],
)
def test_create_record_rejections(emulator_http: httpx.Client, dataset, emulator, body, code) -> None:
    dataset_id = dataset()
    assert error_of(emulator_http.post(f"{DS}/{dataset_id}/records", json=body)) == (422, code)
    assert emulator.state.list_records(dataset_id) == []


def test_puts_replace_values_and_rejections_change_nothing(emulator_http, dataset, emulator) -> None:
    record = emulator.state.list_records(dataset(1))[0]
    url = f"{REC}/{record['id']}"
    new_payload = {"messages": [{"role": "user", "content": "edited"}], "extra": 1}
    put = emulator_http.put(f"{url}/payload", json={"payload": new_payload})
    assert put.status_code == 204 and put.content == b""
    put = emulator_http.put(f"{url}/properties", json={"properties": {"only": "this"}})
    assert put.status_code == 204 and put.content == b""
    after = emulator_http.get(url).json()
    assert after["payload"] == new_payload and after["properties"] == {"only": "this"}

    bad_payload = {"payload": {"messages": [{"role": None}]}}
    message = emulator_http.put(f"{url}/payload", json=bad_payload).json()["detail"]["message"]
    assert "messages[0]" in message and "role" in message
    assert error_of(emulator_http.put(f"{url}/payload", json={"payload": []})) == (422, "VALIDATION_ERROR")
    assert error_of(emulator_http.put(f"{url}/properties", json={})) == (422, "VALIDATION_ERROR")
    assert emulator_http.get(url).json() == after
    assert error_of(emulator_http.put(f"{REC}/not-a-uuid/payload", json={"payload": {}})) == (
        422, "VALIDATION_ERROR",
    )


def test_updated_at_strictly_increases_on_every_write(emulator_http, dataset, emulator, us_stamps) -> None:
    dataset_id = dataset()
    stamps = []
    record = emulator_http.post(f"{DS}/{dataset_id}/records", json={"payload": {"a": 1}}).json()
    stamps.append(record["updated_at"])
    url = f"{REC}/{record['id']}"
    for _ in range(3):  # the same value again and again: still a write
        assert emulator_http.put(f"{url}/payload", json={"payload": {"a": 1}}).status_code == 204
        stamps.append(emulator_http.get(url).json()["updated_at"])
        assert emulator_http.put(f"{url}/properties", json={"properties": {}}).status_code == 204
        stamps.append(emulator_http.get(url).json()["updated_at"])
        emulator.state.update_properties(record["id"], {})  # a "teammate" writing directly
        stamps.append(emulator.state.get_record(record["id"])["updated_at"])
    other = emulator_http.post(f"{DS}/{dataset_id}/records", json={"payload": {}}).json()
    stamps.append(other["updated_at"])
    emulator.state.delete_record(other["id"])
    stamps.append(emulator.state._records[other["id"]].updated_at)
    assert all(US_RE.match(s) for s in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)


def test_deleted_records_are_gone_everywhere(emulator_http, dataset, emulator) -> None:
    dataset_id = dataset(3)
    doomed, *kept = record_ids(emulator_http, dataset_id)
    url = f"{REC}/{doomed}"
    response = emulator_http.delete(url)
    assert response.status_code == 204 and response.content == b""
    assert record_ids(emulator_http, dataset_id) == kept
    page = emulator_http.get(f"{DS}/{dataset_id}/records").json()["records"]
    assert page["count"] == 2
    not_found = (404, "DATASET_RECORD_NOT_FOUND")
    assert error_of(emulator_http.get(url)) == not_found
    assert error_of(emulator_http.delete(url)) == not_found
    assert error_of(emulator_http.put(f"{url}/payload", json={"payload": {}})) == not_found
    assert error_of(emulator_http.put(f"{url}/properties", json={"properties": {}})) == not_found
    judged = emulator_http.post(f"{url}/live-judging", json={"judge_definition": JUDGE})
    assert error_of(judged) == not_found
    assert emulator.state.get_record(doomed) is None
    assert error_of(emulator_http.get(f"{REC}/{uuid.uuid4()}")) == not_found


def test_deleting_a_dataset_hides_its_records(emulator_http, dataset) -> None:
    dataset_id = dataset(2)
    ids = record_ids(emulator_http, dataset_id)
    assert emulator_http.delete(f"{DS}/{dataset_id}").status_code == 204
    assert error_of(emulator_http.get(f"{REC}/{ids[0]}")) == (404, "DATASET_RECORD_NOT_FOUND")
    listing = emulator_http.get(f"{DS}/{dataset_id}/records")
    assert error_of(listing) == (404, "DATASET_NOT_FOUND")
    created = emulator_http.post(f"{DS}/{dataset_id}/records", json={"payload": {}})
    assert error_of(created) == (404, "DATASET_NOT_FOUND")


def test_bulk_delete_bounds_and_ignored_ids(emulator_http, dataset, emulator) -> None:
    dataset_id = dataset(5)
    ids = record_ids(emulator_http, dataset_id)
    url = f"{REC}/bulk-delete"
    assert error_of(emulator_http.post(url, json={"dataset_record_ids": []})) == (422, "VALIDATION_ERROR")
    too_many = [str(uuid.uuid4()) for _ in range(501)]
    assert error_of(emulator_http.post(url, json={"dataset_record_ids": too_many})) == (
        422, "VALIDATION_ERROR",
    )
    assert error_of(emulator_http.post(url, json={"dataset_record_ids": ["nope"]}))[0] == 422
    assert emulator.state.delete_record(ids[0]) is None
    batch = ids[:3] + [str(uuid.uuid4()) for _ in range(497)]  # 500: deleted, live, unknown
    response = emulator_http.post(url, json={"dataset_record_ids": batch})
    assert response.status_code == 204 and response.content == b""
    assert record_ids(emulator_http, dataset_id) == ids[3:]
    again = emulator_http.post(url, json={"dataset_record_ids": ids[:3]})
    assert again.status_code == 204  # already deleted: ignored
    with pytest.raises(EmulatorError):
        emulator.state.bulk_delete([])


# ---- judging, imports, exports -------------------------------------------------


def test_live_judging(emulator_http, dataset) -> None:
    record_id = record_ids(emulator_http, dataset(1))[0]
    url = f"{REC}/{record_id}/live-judging"
    first = emulator_http.post(url, json={"judge_definition": JUDGE})
    assert first.status_code == 200
    assert first.json()["answer"] in {"good", "bad"} and first.json()["analysis"]
    assert emulator_http.post(url, json={"judge_definition": JUDGE}).json() == first.json()
    regression = {**JUDGE, "output": {
        "type": "REGRESSION", "min": 2, "max": 7, "min_description": "bad", "max_description": "good",
    }}
    answer = emulator_http.post(url, json={"judge_definition": regression}).json()["answer"]
    assert isinstance(answer, float) and 2 <= answer <= 7
    for broken in (
        {**JUDGE, "name": "shrt"},
        {**JUDGE, "tools": None},
        {**JUDGE, "output": {"type": "OTHER"}},
        {**JUDGE, "output": {"type": "CLASSIFICATION", "options": []}},
        {k: v for k, v in JUDGE.items() if k != "instructions"},
    ):
        assert error_of(emulator_http.post(url, json={"judge_definition": broken})) == (
            422, "VALIDATION_ERROR",
        )


def test_import_from_dataset_copies_records(emulator_http, dataset, emulator) -> None:
    source, target = dataset(3), dataset(1)
    ids = record_ids(emulator_http, source)
    emulator.state.delete_record(ids[2])
    body = {"dataset_record_ids": [*ids, str(uuid.uuid4())]}
    response = emulator_http.post(f"{DS}/{target}/imports/from-dataset", json=body)
    assert response.status_code == 202
    task = response.json()
    assert task["status"] == "COMPLETED" and task["dataset_id"] == target
    assert task["result"] == {
        "requested_record_count": 4, "imported_record_count": 2, "skipped_record_count": 2,
    }
    copies = emulator.state.list_records(target)[1:]
    originals = [emulator.state.get_record(i) for i in ids[:2]]
    assert [c["payload"] for c in copies] == [o["payload"] for o in originals]
    assert {c["id"] for c in copies}.isdisjoint(ids)
    fetched = emulator_http.get(f"{DS}/{target}/tasks/{task['id']}")
    assert fetched.status_code == 200 and fetched.json() == task
    assert error_of(emulator_http.get(f"{DS}/{source}/tasks/{task['id']}")) == (
        404, "DATASET_TASK_NOT_FOUND",
    )


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("from-campaign", {"campaign_id": str(uuid.uuid4())}),
        ("from-explorer", {"completion_event_ids": ["a", "b"]}),
        ("from-file", {"file_id": "file-123"}),
        ("from-playground", {"conversation_ids": ["c1"]}),
    ],
)
def test_other_imports_complete_with_nothing(emulator_http, dataset, emulator, kind, body) -> None:
    dataset_id = dataset(1)
    response = emulator_http.post(f"{DS}/{dataset_id}/imports/{kind}", json=body)
    assert response.status_code == 202
    task = response.json()
    assert task["status"] == "COMPLETED" and "not emulated" in task["message"]
    assert len(emulator.state.list_records(dataset_id)) == 1
    tasks = emulator_http.get(f"{DS}/{dataset_id}/tasks").json()["tasks"]
    assert tasks["count"] == 1 and tasks["results"][0]["id"] == task["id"]
    assert error_of(emulator_http.post(f"{DS}/{dataset_id}/imports/{kind}", json={})) == (
        422, "VALIDATION_ERROR",
    )


def test_export_to_jsonl_serves_a_file(emulator_http, dataset, emulator) -> None:
    dataset_id = dataset(4)
    response = emulator_http.get(f"{DS}/{dataset_id}/exports/to-jsonl")
    assert response.status_code == 200
    file_url = response.json()["file_url"]
    assert file_url.startswith(emulator.url + "/_emulator/exports/")
    download = httpx.get(file_url)  # a pre-signed style URL: no key needed
    assert download.status_code == 200
    lines = [json.loads(line) for line in download.text.splitlines()]
    assert lines == emulator.state.list_records(dataset_id)


# ---- transport: auth, routing, faults, latency -----------------------------------


@pytest.mark.parametrize("auth", [None, "", "Bearer", "Token abc", "Basic abc", "abc"])
def test_requests_without_a_bearer_key_get_401(emulator, dataset, auth) -> None:
    dataset_id = dataset(1)
    headers = {} if auth is None else {"Authorization": auth}
    for method, path in (("GET", DS), ("GET", f"{DS}/{dataset_id}/records"), ("DELETE", f"{DS}/{dataset_id}")):
        response = httpx.request(method, emulator.url + path, headers=headers)
        assert error_of(response) == (401, "AUTH_UNAUTHORIZED")
    assert emulator.state.get_dataset(dataset_id) is not None
    accepted = httpx.get(emulator.url + DS, headers={"Authorization": "bearer anything-at-all"})
    assert accepted.status_code == 200


def test_unknown_routes_and_methods(emulator_http) -> None:
    assert error_of(emulator_http.get("/v1/observability/nothing-here"))[0] == 404
    assert error_of(emulator_http.get("/"))[0] == 404
    assert error_of(emulator_http.put(DS, json={}))[0] == 405


def test_request_counts_by_template(emulator, emulator_http, dataset) -> None:
    dataset_id = dataset(2)
    record_id = record_ids(emulator_http, dataset_id)[0]
    emulator.state.reset_counts()
    emulator_http.get(f"{REC}/{record_id}")
    emulator_http.get(f"{REC}/{record_id}")
    emulator_http.get(f"{DS}/{dataset_id}/records")
    counts = emulator.state.request_counts
    assert counts[("GET", "/v1/observability/dataset-records/{dataset_record_id}")] >= 2
    assert counts[("GET", "/v1/observability/datasets/{dataset_id}/records")] >= 1


def test_fault_injection_applies_no_change(api_key: str) -> None:
    state = EmulatorState()
    dataset_id = seed_dataset(state, 2, name="faulty data")
    record = state.list_records(dataset_id)[0]
    headers = {"Authorization": f"Bearer {api_key}"}
    with EmulatorServer(state, fail_rate=1.0, seed=7) as server, httpx.Client(
        base_url=server.url, headers=headers
    ) as client:
        statuses = []
        for _ in range(12):
            response = client.put(f"{REC}/{record['id']}/payload", json={"payload": {"x": 1}})
            statuses.append(response.status_code)
            error_of(response)
            if response.status_code == 429:
                assert float(response.headers["Retry-After"]) <= 0.1
        created = client.post(f"{DS}/{dataset_id}/records", json={"payload": {}})
        assert created.status_code in {429, 500, 502, 503}
        assert set(statuses) <= {429, 500, 502, 503} and len(set(statuses)) > 1
        assert len(state.list_records(dataset_id)) == 2
        assert state.get_record(record["id"]) == record
        assert client.get("/_emulator/health").status_code == 200  # not an API path

        server.configure(fail_rate=0.0)
        assert client.put(f"{REC}/{record['id']}/payload", json={"payload": {"x": 1}}).status_code == 204
        server.configure(fail_rate=0.5, seed=3)
        first = [client.get(DS).status_code for _ in range(20)]
        server.configure(seed=3)
        assert [client.get(DS).status_code for _ in range(20)] == first
        assert 200 in first and set(first) - {200}


def test_latency_is_per_request_and_overlaps(api_key: str) -> None:
    """Concurrent requests wait their latency side by side, not one after another
    (observed through the emulator's own count of overlapping waits, not a clock)."""
    with EmulatorServer(latency_ms=300) as server:
        headers = {"Authorization": f"Bearer {api_key}"}
        barrier = threading.Barrier(4)
        statuses: list[int] = []

        def call() -> None:
            barrier.wait()
            statuses.append(httpx.get(server.url + DS, headers=headers).status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert statuses == [200] * 4
        assert server.faults.max_in_flight >= 2
        assert server.faults.in_flight == 0
        server.configure(latency_ms=0)
        before = server.faults.max_in_flight
        httpx.get(server.url + DS, headers=headers)
        assert server.faults.max_in_flight == before  # no wait at all without latency


def test_non_loopback_hosts_are_refused() -> None:
    with pytest.raises(RefusedHost):
        EmulatorServer(host="0.0.0.0")
    with pytest.raises(RefusedHost):
        EmulatorServer(host="192.168.1.10")
    EmulatorServer(host="0.0.0.0", allow_remote=True)  # allowed, not started
    EmulatorServer(host="localhost")


# ---- state: persistence, seeding -------------------------------------------------


def test_persistence_across_two_states(tmp_path) -> None:
    db = tmp_path / "emulator.sqlite"
    first = EmulatorState(db, timestamp_format="us")  # µs: the clock's strict increase shows
    dataset_id = seed_dataset(first, 5, name="persisted set")
    gone = first.create_dataset("deleted later")
    first.delete_dataset(gone["id"])
    ids = [r["id"] for r in first.list_records(dataset_id)]
    first.update_payload(ids[0], {"messages": [], "v": 2})
    first.update_properties(ids[1], {"k": "v"})
    first.delete_record(ids[2])
    task = first.import_from_dataset(dataset_id, [ids[3]])
    before = first.list_records(dataset_id)
    last_stamp = max(r["updated_at"] for r in before)
    first.close()

    second = EmulatorState(db, timestamp_format="us")
    assert second.list_records(dataset_id) == before
    assert second.get_record(ids[2]) is None
    assert second.get_dataset(gone["id"]) is None
    assert second.get_dataset(dataset_id)["slug"] == "persisted-set"
    assert second.get_task(dataset_id, task["id"]) == task
    assert second.update_payload(ids[0], {"v": 3})["updated_at"] > last_stamp
    second.close()
    assert EmulatorState(db).get_record(ids[0])["payload"] == {"v": 3}


def test_seeding_1000_records(emulator_http, emulator) -> None:
    dataset_id = seed_dataset(emulator.state, 1000, name="seeded thousand", seed=5)
    page = emulator_http.get(f"{DS}/{dataset_id}/records", params={"page_size": 100, "page": 10})
    assert page.json()["records"]["count"] == 1000 and len(page.json()["records"]["results"]) == 100
    records = emulator.state.list_records(dataset_id)
    other = EmulatorState()
    again = other.list_records(seed_dataset(other, 1000, seed=5))
    assert [r["payload"] for r in again] == [r["payload"] for r in records]
    sizes = [len(json.dumps({"payload": r["payload"], "properties": r["properties"]})) for r in records]
    assert 700 < sum(sizes) / len(sizes) < 1300
    for record in records[:50]:
        assert {"label", "split", "score", "lang"} <= set(record["properties"])
        assert record["payload"]["messages"][0]["role"] == "system"
        assert all(m["role"] in {"system", "user", "assistant"} for m in record["payload"]["messages"])


def test_make_record_is_deterministic_and_sized() -> None:
    assert make_record(3, random.Random(1)) == make_record(3, random.Random(1))
    big = make_record(0, random.Random(2), approx_bytes=8000)
    assert 6000 < len(json.dumps(big)) < 10000


def test_add_records_validates_before_storing() -> None:
    state = EmulatorState()
    dataset_id = state.create_dataset("direct seeding")["id"]
    made = state.add_records(dataset_id, [{"payload": {"a": 1}, "properties": {}, "source": "PLAYGROUND"}])
    assert made[0]["source"] == "PLAYGROUND" and state.get_record(made[0]["id"]) == made[0]
    with pytest.raises(EmulatorError):
        state.add_records(dataset_id, [{"payload": {}}, {"payload": {}, "source": "TELEMETRY_SPAN"}])
    with pytest.raises(EmulatorError):
        state.add_records(dataset_id, [{"payload": {"messages": [{}]}}])
    assert len(state.list_records(dataset_id)) == 1


def test_serve_in_the_foreground(tmp_path, api_key: str) -> None:
    """``serve`` is what ``localstore emulator`` runs: seed, print a hint, serve until SIGTERM."""
    code = (
        "from localstore_emulator import serve; "
        f"serve(port=0, db_path={str(tmp_path / 'e.sqlite')!r}, seed_records=30)"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert proc.stdout is not None
        seeded = proc.stdout.readline()
        hint = proc.stdout.readline()
        listening = proc.stdout.readline()
        dataset_id = re.search(r"dataset (\S+) with 30 records", seeded).group(1)
        url = re.search(r"(http://127\.0\.0\.1:\d+)", listening).group(1)
        assert f"--server-url {url} pull {dataset_id}" in hint
        headers = {"Authorization": f"Bearer {api_key}"}
        page = httpx.get(f"{url}{DS}/{dataset_id}/records", headers=headers).json()
        assert page["records"]["count"] == 30
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert EmulatorState(tmp_path / "e.sqlite").get_dataset(dataset_id) is not None
