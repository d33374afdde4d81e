"""The emulator's adversarial knobs (``localstore_emulator.adversary``), each checked
with plain httpx and, where it says something, the official SDK as a second client;
every answer is held to the spec."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from openapi_contract import Contract

from localstore_emulator import EmulatorServer
from localstore_emulator.adversary import (
    BULK_DELETE,
    PAYLOAD,
    PROPERTIES,
    RECORD,
    RECORD_PUTS,
    RECORDS,
    Rule,
    delete_first,
)

DS = "/v1/observability/datasets"
REC = "/v1/observability/dataset-records"
WAIT = 10.0  # seconds a test waits for the server before failing


@pytest.fixture
def adversary(emulator: EmulatorServer) -> Iterator[Any]:
    """The session emulator's adversary, reset after the test (rules, journal, clock)."""
    emulator.adversary.reset()
    yield emulator.adversary
    emulator.adversary.reset()


@pytest.fixture
def http(emulator_http: httpx.Client, contract: Contract) -> Callable[..., httpx.Response]:
    """Send a request and hold the answer to the spec."""

    def send(method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = emulator_http.request(method, path, **kwargs)
        body = response.json() if response.content else None
        contract.validate_response(method, str(response.request.url), response.status_code, body)
        return response

    return send


def first_ids(emulator: EmulatorServer, dataset_id: str, n: int) -> list[str]:
    return [r["id"] for r in emulator.state.list_records(dataset_id)[:n]]


# ---- fail_before, drop_before ---------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_fail_before_answers_the_status_and_applies_nothing(
    status: int, adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any
) -> None:
    dataset_id = dataset(2)
    (rid,) = first_ids(emulator, dataset_id, 1)
    before = emulator.state.get_record(rid)
    rule = adversary.add(Rule("PUT", PROPERTIES, record_id=rid, effect="fail_before", status=status))
    answer = http("PUT", f"{REC}/{rid}/properties", json={"properties": {"x": 1}})
    assert answer.status_code == status
    assert ("retry-after" in answer.headers) == (status in (429, 503))
    assert emulator.state.get_record(rid) == before
    assert adversary.writes(record_id=rid) == []
    assert (rule.seen, rule.fired, rule.exhausted) == (1, 1, True)
    assert http("PUT", f"{REC}/{rid}/properties", json={"properties": {"x": 2}}).status_code == 204
    assert [(w.op, w.answer) for w in adversary.writes(record_id=rid)] == [("update_properties", 204)]


def test_fail_the_second_put_of_a_record(adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any) -> None:
    dataset_id = dataset(2)
    rid, other = first_ids(emulator, dataset_id, 2)
    adversary.add(Rule("PUT", RECORD_PUTS, record_id=rid, skip=1, effect="fail_before", status=503))
    statuses = [
        http("PUT", f"{REC}/{other}/payload", json={"payload": {"other": 1}}).status_code,
        http("PUT", f"{REC}/{rid}/payload", json={"payload": {"v": 1}}).status_code,
        http("PUT", f"{REC}/{other}/properties", json={"properties": {"other": 2}}).status_code,
        http("PUT", f"{REC}/{rid}/properties", json={"properties": {"v": 2}}).status_code,
        http("PUT", f"{REC}/{rid}/properties", json={"properties": {"v": 3}}).status_code,
    ]
    assert statuses == [204, 204, 204, 503, 204]
    assert [w.op for w in adversary.writes(record_id=rid)] == ["update_payload", "update_properties"]
    assert emulator.state.get_record(rid)["properties"] == {"v": 3}


def test_drop_before_closes_the_connection_and_applies_nothing(
    adversary: Any, emulator: EmulatorServer, dataset: Any, emulator_http: httpx.Client
) -> None:
    dataset_id = dataset(1)
    adversary.add(Rule("POST", RECORDS, dataset_id=dataset_id, effect="drop_before"))
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        emulator_http.post(f"{DS}/{dataset_id}/records", json={"payload": {"lost": True}})
    assert len(emulator.state.list_records(dataset_id)) == 1
    assert adversary.writes(dataset_id=dataset_id) == []
    # the client's pool recovers: the next request opens a new connection
    assert emulator_http.get(f"{DS}/{dataset_id}/records").status_code == 200


# ---- apply_then_fail, apply_then_drop ---------------------------------------------


def test_apply_then_fail_applies_a_post_the_client_is_told_failed(
    adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any
) -> None:
    dataset_id = dataset(0)
    rule = adversary.add(Rule("POST", RECORDS, dataset_id=dataset_id, effect="apply_then_fail", status=502))
    answer = http("POST", f"{DS}/{dataset_id}/records", json={"payload": {"made": 1}})
    assert answer.status_code == 502 and answer.json()["detail"]["error_code"] == "UNKNOWN_ERROR"
    (made,) = emulator.state.list_records(dataset_id)
    assert made["payload"] == {"made": 1}
    (write,) = adversary.writes(dataset_id=dataset_id)
    assert (write.op, write.record_id, write.answer, write.acknowledged) == ("create_record", made["id"], 502, False)
    assert write.at == made["created_at"]
    assert rule.done.wait(10)  # set once the answer went out: the client may read it first


def test_apply_then_drop_applies_a_post_whose_answer_never_comes(
    adversary: Any, emulator: EmulatorServer, dataset: Any, emulator_http: httpx.Client
) -> None:
    dataset_id = dataset(0)
    adversary.add(Rule("POST", RECORDS, dataset_id=dataset_id, effect="apply_then_drop"))
    with pytest.raises(httpx.RemoteProtocolError):
        emulator_http.post(f"{DS}/{dataset_id}/records", json={"payload": {"made": 2}})
    (made,) = emulator.state.list_records(dataset_id)
    (write,) = adversary.writes(dataset_id=dataset_id)
    assert (write.record_id, write.answer, write.acknowledged) == (made["id"], "dropped", False)


def test_the_sdk_sees_the_same_faults(adversary: Any, emulator: EmulatorServer, dataset: Any, sdk: Any) -> None:
    errors = pytest.importorskip("mistralai.client.errors")
    dataset_id = dataset(1)
    (rid,) = first_ids(emulator, dataset_id, 1)
    records = sdk.beta.observability.datasets.records
    adversary.add(Rule("PUT", PAYLOAD, record_id=rid, effect="apply_then_fail", status=500))
    with pytest.raises(errors.SDKError) as failed:
        records.update_payload(dataset_record_id=rid, payload={"by": "sdk"})
    assert failed.value.status_code == 500
    assert emulator.state.get_record(rid)["payload"] == {"by": "sdk"}  # applied all the same
    adversary.add(Rule("PUT", PAYLOAD, record_id=rid, effect="apply_then_drop"))
    with pytest.raises(Exception, match="without sending a response") as dropped:
        records.update_payload(dataset_record_id=rid, payload={"by": "sdk", "n": 2})
    assert type(dropped.value).__name__ == "RemoteProtocolError"  # the SDK's own httpx fork
    assert emulator.state.get_record(rid)["payload"] == {"by": "sdk", "n": 2}
    assert [w.answer for w in adversary.writes(record_id=rid)] == [500, "dropped"]


def test_a_bulk_delete_is_matched_by_the_ids_in_its_body(
    adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any
) -> None:
    dataset_id = dataset(4)
    a, b, c, _ = first_ids(emulator, dataset_id, 4)
    adversary.add(Rule("POST", BULK_DELETE, record_id=c, effect="apply_then_fail", status=504))
    assert http("POST", f"{REC}/bulk-delete", json={"dataset_record_ids": [a]}).status_code == 204
    assert http("POST", f"{REC}/bulk-delete", json={"dataset_record_ids": [b, c]}).status_code == 504
    assert [r["id"] for r in emulator.state.list_records(dataset_id)] == first_ids(emulator, dataset_id, 4)[-1:]
    assert [(w.record_id, w.answer) for w in adversary.writes(dataset_id=dataset_id)] == [
        (a, 204), (b, 504), (c, 504)
    ]


# ---- hold --------------------------------------------------------------------------


def test_a_held_put_waits_while_the_server_answers_others(
    adversary: Any, emulator: EmulatorServer, dataset: Any, emulator_http: httpx.Client, api_key: str
) -> None:
    dataset_id = dataset(3)
    rid, other, _ = first_ids(emulator, dataset_id, 3)
    rule = adversary.add(Rule("PUT", PROPERTIES, record_id=rid, hold=True))
    answers: list[int] = []
    headers = {"Authorization": f"Bearer {api_key}"}

    def put() -> None:
        url = f"{emulator.url}{REC}/{rid}/properties"
        answers.append(httpx.put(url, json={"properties": {"held": 1}}, headers=headers, timeout=WAIT).status_code)

    worker = threading.Thread(target=put)
    worker.start()
    try:
        assert rule.entered.wait(WAIT)
        assert rule.held == 1
        # the event loop is free: reads, writes and listings go on meanwhile
        assert emulator_http.get(f"{REC}/{rid}").json()["properties"] != {"held": 1}
        assert emulator_http.put(f"{REC}/{other}/properties", json={"properties": {"n": 1}}).status_code == 204
        assert emulator_http.get(f"{DS}/{dataset_id}/records").json()["records"]["count"] == 3
        assert adversary.writes(record_id=rid) == [] and answers == []
    finally:
        rule.release()
        worker.join(WAIT)
    assert answers == [204] and rule.held == 0
    assert emulator.state.get_record(rid)["properties"] == {"held": 1}


def test_hold_then_apply_then_fail_with_a_teammate_edit_in_between(
    adversary: Any, emulator: EmulatorServer, dataset: Any, api_key: str
) -> None:
    dataset_id = dataset(1)
    (rid,) = first_ids(emulator, dataset_id, 1)
    rule = adversary.add(Rule("PUT", PAYLOAD, record_id=rid, hold=True, effect="apply_then_fail", status=500))
    answers: list[int] = []
    worker = threading.Thread(
        target=lambda: answers.append(
            httpx.put(
                f"{emulator.url}{REC}/{rid}/payload", json={"payload": {"mine": 1}},
                headers={"Authorization": f"Bearer {api_key}"}, timeout=WAIT,
            ).status_code
        )
    )
    worker.start()
    try:
        assert rule.entered.wait(WAIT)
        emulator.state.update_payload(rid, {"teammate": 1})  # lands first
    finally:
        rule.release()
        worker.join(WAIT)
    assert answers == [500]
    assert emulator.state.get_record(rid)["payload"] == {"mine": 1}  # ours won, unheard
    assert [w.answer for w in adversary.writes(record_id=rid)] == [500]  # the teammate is not journaled


def test_reset_releases_held_requests_and_drops_every_rule(
    adversary: Any, emulator: EmulatorServer, dataset: Any, api_key: str
) -> None:
    dataset_id = dataset(1)
    (rid,) = first_ids(emulator, dataset_id, 1)
    rule = adversary.add(Rule("GET", RECORD, record_id=rid, hold=True, times=None))
    answers: list[int] = []
    worker = threading.Thread(
        target=lambda: answers.append(
            httpx.get(f"{emulator.url}{REC}/{rid}", headers={"Authorization": f"Bearer {api_key}"}, timeout=WAIT).status_code
        )
    )
    worker.start()
    assert rule.entered.wait(WAIT)
    adversary.reset()
    worker.join(WAIT)
    assert answers == [200] and adversary.rules == []


# ---- listing shifts ------------------------------------------------------------------


def test_records_deleted_between_pages_shift_the_rest_out_of_the_listing(
    adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any
) -> None:
    dataset_id = dataset(10)
    original = first_ids(emulator, dataset_id, 10)
    rule = adversary.on_page(dataset_id, after_page=1, action=delete_first(dataset_id, 3))
    seen: list[str] = []
    counts: list[int] = []
    page = 1
    while True:
        listing = http("GET", f"{DS}/{dataset_id}/records", params={"page": page, "page_size": 4}).json()["records"]
        seen += [r["id"] for r in listing["results"]]
        counts.append(listing["count"])
        if listing["next"] is None:
            break
        page += 1
    live = first_ids(emulator, dataset_id, 10)
    assert counts == [10, 7] and not rule.errors
    assert len(set(seen)) == counts[-1] == len(live)  # the figures add up...
    assert set(live) - set(seen) == set(original[4:7])  # ...yet three live records were never listed


def test_records_created_between_pages_and_the_sdk_paging(
    adversary: Any, emulator: EmulatorServer, dataset: Any, sdk: Any
) -> None:
    from localstore_emulator.adversary import create_records

    dataset_id = dataset(5)
    adversary.on_page(dataset_id, after_page=1, action=create_records(dataset_id, 3))
    datasets = sdk.beta.observability.datasets
    first = datasets.list_records(dataset_id=dataset_id, page=1, page_size=5).records
    second = datasets.list_records(dataset_id=dataset_id, page=2, page_size=5).records
    assert (first.count, second.count) == (5, 8) and first.next is None  # page 1 said: done
    assert [r.payload for r in second.results] == [{"added": i} for i in range(3)]


# ---- updated_at that does not move -------------------------------------------------------


def test_freeze_updated_at_keeps_the_stamp_while_the_content_changes(
    adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any
) -> None:
    dataset_id = dataset(1)
    (rid,) = first_ids(emulator, dataset_id, 1)
    stamp = emulator.state.get_record(rid)["updated_at"]
    adversary.set_clock(freeze_updated_at=True)
    http("PUT", f"{REC}/{rid}/payload", json={"payload": {"v": 1}})
    http("PUT", f"{REC}/{rid}/properties", json={"properties": {"v": 1}})
    after = http("GET", f"{REC}/{rid}").json()
    assert (after["updated_at"], after["payload"], after["properties"]) == (stamp, {"v": 1}, {"v": 1})
    adversary.reset()
    http("PUT", f"{REC}/{rid}/properties", json={"properties": {"v": 2}})
    assert http("GET", f"{REC}/{rid}").json()["updated_at"] != stamp


def test_a_coarse_clock_gives_writes_in_one_window_one_stamp(
    adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any
) -> None:
    dataset_id = dataset(2)
    rid, other = first_ids(emulator, dataset_id, 2)
    adversary.set_clock(resolution_ms=3_600_000)  # one hour: a burst of writes shares it
    stamps = []
    for n in range(3):
        for target in (rid, other):
            http("PUT", f"{REC}/{target}/properties", json={"properties": {"n": n}})
            stamps.append(http("GET", f"{REC}/{target}").json()["updated_at"])
    assert stamps == sorted(stamps) and len(set(stamps)) <= 2  # 2 only if an hour turned
    assert all(s.endswith(":00:00.000Z") for s in stamps)


# ---- a dataset deleted while a client works ---------------------------------------------


def test_a_dataset_deleted_under_a_held_put_answers_404_everywhere(
    adversary: Any, emulator: EmulatorServer, dataset: Any, http: Any, api_key: str,
    emulator_http: httpx.Client,
) -> None:
    dataset_id = dataset(3)
    rid, other, _ = first_ids(emulator, dataset_id, 3)
    rule = adversary.add(Rule("PUT", PROPERTIES, record_id=rid, hold=True))
    answers: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: answers.append(
            httpx.put(
                f"{emulator.url}{REC}/{rid}/properties", json={"properties": {"late": 1}},
                headers={"Authorization": f"Bearer {api_key}"}, timeout=WAIT,
            )
        )
    )
    worker.start()
    try:
        assert rule.entered.wait(WAIT)
        admin = emulator_http.post("/_emulator/actions", json={"kind": "delete_dataset", "dataset_id": dataset_id})
        assert admin.status_code == 200
    finally:
        rule.release()
        worker.join(WAIT)
    (late,) = answers
    assert (late.status_code, late.json()["detail"]["error_code"]) == (404, "DATASET_RECORD_NOT_FOUND")
    checks = [
        ("GET", f"{DS}/{dataset_id}/records", {}, "DATASET_NOT_FOUND"),
        ("POST", f"{DS}/{dataset_id}/records", {"json": {"payload": {}}}, "DATASET_NOT_FOUND"),
        ("GET", f"{REC}/{other}", {}, "DATASET_RECORD_NOT_FOUND"),
        ("PUT", f"{REC}/{other}/payload", {"json": {"payload": {}}}, "DATASET_RECORD_NOT_FOUND"),
        ("DELETE", f"{REC}/{other}", {}, "DATASET_RECORD_NOT_FOUND"),
    ]
    for method, path, kwargs, code in checks:
        answer = http(method, path, **kwargs)
        assert (answer.status_code, answer.json()["detail"]["error_code"]) == (404, code), (method, path)
    assert adversary.writes(record_id=rid) == []


# ---- the Python API refuses what would never match ------------------------------------


def test_rules_that_could_never_act_are_refused(adversary: Any) -> None:
    with pytest.raises(ValueError, match="template"):
        adversary.add(Rule("PUT", "/v1/observability/dataset-records/{id}/properties"))
    with pytest.raises(ValueError, match="status"):
        Rule("PUT", PAYLOAD, effect="fail_before", status=404)
    with pytest.raises(ValueError, match="effect"):
        Rule("PUT", PAYLOAD, effect="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        Rule("PUT", PAYLOAD, times=0)
