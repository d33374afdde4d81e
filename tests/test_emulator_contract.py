"""Every operation of the spec, driven over HTTP against the emulator, every answer
validated against the spec (success and error cases)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from openapi_contract import Contract

from localstore_emulator import EmulatorServer, EmulatorState, seed_dataset

DS = "/v1/observability/datasets"
REC = "/v1/observability/dataset-records"
JUDGE = {
    "name": "correctness",
    "description": "Is it correct?",
    "model_name": "mistral-small-latest",
    "output": {"type": "REGRESSION", "min": 0, "max": 10, "min_description": "no", "max_description": "yes"},
    "instructions": "Score the answer.",
    "tools": [],
}
NO_BODY = object()


class Driver:
    """Sends requests, validates each against the contract and remembers which spec
    operations it touched."""

    def __init__(self, client: httpx.Client, contract: Contract) -> None:
        self.client = client
        self.contract = contract
        self.touched: set[tuple[str, str]] = set()

    def __call__(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = NO_BODY,
        *,
        params: dict[str, Any] | None = None,
        valid_request: bool = True,
        code: str | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"params": params}
        if body is not NO_BODY:
            kwargs["json"] = body
        response = self.client.request(method, path, **kwargs)
        url = str(response.request.url)
        if valid_request:
            self.contract.validate_request(method, url, None if body is NO_BODY else body,
                                           has_body=body is not NO_BODY)
        assert response.status_code == status, response.text
        parsed = response.json() if response.content else None
        self.contract.validate_response(method, url, status, parsed)
        if code is not None:
            assert parsed["detail"]["error_code"] == code
        operation, _ = self.contract.find(method, response.request.url.path)
        self.touched.add((operation.method, operation.template))
        return parsed


@pytest.fixture
def call(emulator_http: httpx.Client, contract: Contract) -> Driver:
    return Driver(emulator_http, contract)


def _record(call: Driver, dataset: Callable[..., str]) -> str:
    dataset_id = dataset(2)
    return call("GET", f"{DS}/{dataset_id}/records", 200)["records"]["results"][0]["id"]


def s_create_dataset(call: Driver, dataset) -> None:
    call("POST", DS, 201, {"name": "contract set", "description": "made by the contract test"})
    call("POST", DS, 422, {"name": "shrt", "description": ""}, valid_request=False, code="VALIDATION_ERROR")


def s_list_datasets(call: Driver, dataset) -> None:
    tag = uuid.uuid4().hex
    for i in range(3):
        dataset(name=f"contract {tag} {i}")
    listing = call("GET", DS, 200, params={"q": tag, "page": 1, "page_size": 2})["datasets"]
    assert listing["count"] == 3 and listing["next"]
    call("GET", DS, 200)
    call("GET", DS, 422, params={"page_size": 101}, valid_request=False, code="VALIDATION_ERROR")


def s_get_dataset(call: Driver, dataset) -> None:
    call("GET", f"{DS}/{dataset()}", 200)
    call("GET", f"{DS}/{uuid.uuid4()}", 404, code="DATASET_NOT_FOUND")
    call("GET", f"{DS}/Not%20a%20UUID", 422, valid_request=False, code="VALIDATION_ERROR")


def s_delete_dataset(call: Driver, dataset) -> None:
    dataset_id = dataset(1)
    call("DELETE", f"{DS}/{dataset_id}", 204)
    call("DELETE", f"{DS}/{dataset_id}", 404, code="DATASET_NOT_FOUND")


def s_patch_dataset(call: Driver, dataset) -> None:
    dataset_id = dataset()
    assert call("PATCH", f"{DS}/{dataset_id}", 200, {"name": "renamed set"})["name"] == "renamed set"
    call("PATCH", f"{DS}/{dataset_id}", 200, {})
    call("PATCH", f"{DS}/{uuid.uuid4()}", 404, {"description": "x"}, code="DATASET_NOT_FOUND")
    call("PATCH", f"{DS}/{dataset_id}", 422, {"name": 5}, valid_request=False, code="VALIDATION_ERROR")


def s_list_records(call: Driver, dataset) -> None:
    dataset_id = dataset(3)
    page = call("GET", f"{DS}/{dataset_id}/records", 200, params={"page": 2, "page_size": 1})
    assert page["records"]["next"] and page["records"]["previous"]
    call("GET", f"{DS}/{dataset_id}/records", 200, params={"page_size": 0})
    call("GET", f"{DS}/{uuid.uuid4()}/records", 404, code="DATASET_NOT_FOUND")
    call("GET", f"{DS}/{dataset_id}/records", 422, params={"page": 0}, valid_request=False)


def s_create_record(call: Driver, dataset) -> None:
    dataset_id = dataset()
    body = {"payload": {"messages": [{"role": "user", "content": "hello"}]}, "properties": {"k": 1}}
    call("POST", f"{DS}/{dataset_id}/records", 201, body)
    call("POST", f"{DS}/{dataset_id}/records", 201, {"payload": {}})
    call("POST", f"{DS}/{dataset_id}/records", 422, {"payload": {"messages": {}}},
         code="DATASET_RECORD_FORMAT_ERROR")
    call("POST", f"{DS}/{uuid.uuid4()}/records", 404, {"payload": {}}, code="DATASET_NOT_FOUND")


def _import(kind: str, good: dict[str, Any]) -> Callable[[Driver, Any], None]:
    def scenario(call: Driver, dataset) -> None:
        dataset_id = dataset(1)
        body = good if kind != "from-dataset" else {
            "dataset_record_ids": [r["id"] for r in call(
                "GET", f"{DS}/{dataset_id}/records", 200)["records"]["results"]]
        }
        call("POST", f"{DS}/{dataset_id}/imports/{kind}", 202, body)
        call("POST", f"{DS}/{uuid.uuid4()}/imports/{kind}", 404, body, code="DATASET_NOT_FOUND")
        call("POST", f"{DS}/{dataset_id}/imports/{kind}", 422, {}, valid_request=False)

    return scenario


def s_export(call: Driver, dataset) -> None:
    assert call("GET", f"{DS}/{dataset(2)}/exports/to-jsonl", 200)["file_url"]
    call("GET", f"{DS}/{uuid.uuid4()}/exports/to-jsonl", 404, code="DATASET_NOT_FOUND")


def s_get_task(call: Driver, dataset) -> None:
    dataset_id = dataset()
    task = call("POST", f"{DS}/{dataset_id}/imports/from-file", 202, {"file_id": "f-1"})
    call("GET", f"{DS}/{dataset_id}/tasks/{task['id']}", 200)
    call("GET", f"{DS}/{dataset_id}/tasks/{uuid.uuid4()}", 404, code="DATASET_TASK_NOT_FOUND")
    call("GET", f"{DS}/{dataset_id}/tasks/nope", 422, valid_request=False)


def s_list_tasks(call: Driver, dataset) -> None:
    dataset_id = dataset()
    for _ in range(3):
        call("POST", f"{DS}/{dataset_id}/imports/from-playground", 202, {"conversation_ids": []})
    tasks = call("GET", f"{DS}/{dataset_id}/tasks", 200, params={"page_size": 2})["tasks"]
    assert tasks["count"] == 3 and tasks["next"]
    call("GET", f"{DS}/{uuid.uuid4()}/tasks", 404, code="DATASET_NOT_FOUND")


def s_get_record(call: Driver, dataset) -> None:
    call("GET", f"{REC}/{_record(call, dataset)}", 200)
    call("GET", f"{REC}/{uuid.uuid4()}", 404, code="DATASET_RECORD_NOT_FOUND")
    call("GET", f"{REC}/12345", 422, valid_request=False, code="VALIDATION_ERROR")


def s_delete_record(call: Driver, dataset) -> None:
    record_id = _record(call, dataset)
    call("DELETE", f"{REC}/{record_id}", 204)
    call("DELETE", f"{REC}/{record_id}", 404, code="DATASET_RECORD_NOT_FOUND")


def s_bulk_delete(call: Driver, dataset) -> None:
    call("POST", f"{REC}/bulk-delete", 204, {"dataset_record_ids": [_record(call, dataset), str(uuid.uuid4())]})
    call("POST", f"{REC}/bulk-delete", 422, {"dataset_record_ids": []}, valid_request=False)


def s_judge(call: Driver, dataset) -> None:
    record_id = _record(call, dataset)
    answer = call("POST", f"{REC}/{record_id}/live-judging", 200, {"judge_definition": JUDGE})
    assert 0 <= answer["answer"] <= 10
    call("POST", f"{REC}/{uuid.uuid4()}/live-judging", 404, {"judge_definition": JUDGE})
    call("POST", f"{REC}/{record_id}/live-judging", 422, {"judge_definition": {**JUDGE, "name": ""}},
         valid_request=False)


def s_put_payload(call: Driver, dataset) -> None:
    record_id = _record(call, dataset)
    call("PUT", f"{REC}/{record_id}/payload", 204, {"payload": {"messages": []}})
    call("PUT", f"{REC}/{record_id}/payload", 422, {"payload": {"messages": [1]}},
         code="DATASET_RECORD_FORMAT_ERROR")
    call("PUT", f"{REC}/{uuid.uuid4()}/payload", 404, {"payload": {}}, code="DATASET_RECORD_NOT_FOUND")


def s_put_properties(call: Driver, dataset) -> None:
    record_id = _record(call, dataset)
    call("PUT", f"{REC}/{record_id}/properties", 204, {"properties": {"a": [1, 2]}})
    call("PUT", f"{REC}/{record_id}/properties", 422, {"properties": "x"}, valid_request=False)
    call("PUT", f"{REC}/{uuid.uuid4()}/properties", 404, {"properties": {}})


SCENARIOS: dict[tuple[str, str], Callable[[Driver, Any], None]] = {
    ("POST", DS): s_create_dataset,
    ("GET", DS): s_list_datasets,
    ("GET", DS + "/{dataset_id}"): s_get_dataset,
    ("DELETE", DS + "/{dataset_id}"): s_delete_dataset,
    ("PATCH", DS + "/{dataset_id}"): s_patch_dataset,
    ("GET", DS + "/{dataset_id}/records"): s_list_records,
    ("POST", DS + "/{dataset_id}/records"): s_create_record,
    ("POST", DS + "/{dataset_id}/imports/from-campaign"): _import(
        "from-campaign", {"campaign_id": str(uuid.uuid4())}),
    ("POST", DS + "/{dataset_id}/imports/from-explorer"): _import(
        "from-explorer", {"completion_event_ids": ["evt-1"]}),
    ("POST", DS + "/{dataset_id}/imports/from-file"): _import("from-file", {"file_id": "file-1"}),
    ("POST", DS + "/{dataset_id}/imports/from-playground"): _import(
        "from-playground", {"conversation_ids": ["conv-1"]}),
    ("POST", DS + "/{dataset_id}/imports/from-dataset"): _import("from-dataset", {}),
    ("GET", DS + "/{dataset_id}/exports/to-jsonl"): s_export,
    ("GET", DS + "/{dataset_id}/tasks/{task_id}"): s_get_task,
    ("GET", DS + "/{dataset_id}/tasks"): s_list_tasks,
    ("GET", REC + "/{dataset_record_id}"): s_get_record,
    ("DELETE", REC + "/{dataset_record_id}"): s_delete_record,
    ("POST", REC + "/bulk-delete"): s_bulk_delete,
    ("POST", REC + "/{dataset_record_id}/live-judging"): s_judge,
    ("PUT", REC + "/{dataset_record_id}/payload"): s_put_payload,
    ("PUT", REC + "/{dataset_record_id}/properties"): s_put_properties,
}


def test_every_spec_operation_has_a_scenario(contract: Contract) -> None:
    assert set(SCENARIOS) == set(contract.paths())


@pytest.mark.parametrize("operation", list(SCENARIOS), ids=lambda op: f"{op[0]} {op[1]}")
def test_operation_matches_the_spec(operation, call: Driver, dataset) -> None:
    SCENARIOS[operation](call, dataset)
    assert operation in call.touched


def _fill(template: str, ids: dict[str, str]) -> str:
    return template.format(**ids)


def test_unauthenticated_and_injected_failures_keep_the_error_shape(contract: Contract) -> None:
    state = EmulatorState()
    dataset_id = seed_dataset(state, 1, name="fault shapes")
    ids = {"dataset_id": dataset_id, "dataset_record_id": state.list_records(dataset_id)[0]["id"],
           "task_id": str(uuid.uuid4())}
    seen: set[int] = set()
    with EmulatorServer(state, fail_rate=1.0, seed=11) as server, httpx.Client(base_url=server.url) as client:
        for method, template in contract.paths():
            url = _fill(template, ids)
            anonymous = client.request(method, url)
            assert anonymous.status_code == 401
            contract.validate_response(method, server.url + url, 401, anonymous.json())
            failed = client.request(method, url, headers={"Authorization": "Bearer k"})
            assert failed.status_code in {429, 500, 502, 503}
            contract.validate_response(method, server.url + url, failed.status_code, failed.json())
            seen.add(failed.status_code)
    assert seen == {429, 500, 502, 503}
    assert len(state.list_records(dataset_id)) == 1 and state.get_dataset(dataset_id)
