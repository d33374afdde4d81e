"""The adversary over HTTP (``/_emulator/...``), as a test drives it when the client is
a CLI subprocess; and ``localstore emulator --timestamp-format`` as such a server."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localstore_emulator import EmulatorServer
from localstore_emulator.adversary import PAYLOAD, PROPERTIES, RECORDS

DS = "/v1/observability/datasets"
REC = "/v1/observability/dataset-records"
WAIT = 10.0


@pytest.fixture
def admin(emulator: EmulatorServer, emulator_http: httpx.Client) -> Iterator[httpx.Client]:
    """The plain client, with the adversary reset over HTTP before and after."""
    assert emulator_http.post("/_emulator/reset").status_code == 204
    yield emulator_http
    assert emulator_http.post("/_emulator/reset").status_code == 204
    emulator_http.put("/_emulator/clock", json={"timestamp_format": "ms"})


def ids_of(emulator: EmulatorServer, dataset_id: str) -> list[str]:
    return [r["id"] for r in emulator.state.list_records(dataset_id)]


def test_a_rule_armed_over_http_fails_the_second_put(admin: httpx.Client, emulator: EmulatorServer, dataset: Any) -> None:
    rid = ids_of(emulator, dataset(1))[0]
    armed = admin.post(
        "/_emulator/rules",
        json={"method": "put", "path": [PAYLOAD, PROPERTIES], "record_id": rid.upper(), "skip": 1,
              "effect": "fail_before", "status": 429, "retry_after": 2},
    )
    assert armed.status_code == 201 and armed.json()["record_id"] == rid
    first = admin.put(f"{REC}/{rid}/payload", json={"payload": {"n": 1}})
    second = admin.put(f"{REC}/{rid}/properties", json={"properties": {"n": 2}})
    assert (first.status_code, second.status_code, second.headers["retry-after"]) == (204, 429, "2")
    rule = admin.get(f"/_emulator/rules/{armed.json()['id']}").json()
    assert (rule["seen"], rule["fired"]) == (2, 1)
    writes = admin.get("/_emulator/writes", params={"record_id": rid}).json()["writes"]
    assert [(w["op"], w["answer"], w["acknowledged"]) for w in writes] == [("update_payload", 204, True)]


def test_hold_wait_and_release_over_http(admin: httpx.Client, emulator: EmulatorServer, dataset: Any, api_key: str) -> None:
    rid = ids_of(emulator, dataset(1))[0]
    armed = admin.post(
        "/_emulator/rules", json={"method": "PUT", "path": PROPERTIES, "record_id": rid, "hold": True,
                                  "effect": "apply_then_drop"},
    ).json()
    not_yet = admin.post(f"/_emulator/rules/{armed['id']}/wait", params={"timeout": 0}).json()
    assert not_yet["entered"] is False
    errors: list[str] = []

    def put() -> None:
        try:
            httpx.put(f"{emulator.url}{REC}/{rid}/properties", json={"properties": {"h": 1}},
                      headers={"Authorization": f"Bearer {api_key}"}, timeout=WAIT)
        except httpx.HTTPError as exc:
            errors.append(type(exc).__name__)

    worker = threading.Thread(target=put)
    worker.start()
    try:
        waited = admin.post(f"/_emulator/rules/{armed['id']}/wait", params={"timeout": WAIT}).json()
        assert waited["entered"] is True and waited["rule"]["held"] == 1
    finally:
        released = admin.post(f"/_emulator/rules/{armed['id']}/release")
        worker.join(WAIT)
    assert released.status_code == 200 and errors == ["RemoteProtocolError"]
    assert emulator.state.get_record(rid)["properties"] == {"h": 1}
    (write,) = admin.get("/_emulator/writes", params={"record_id": rid}).json()["writes"]
    assert write["answer"] == "dropped"


def test_a_listing_shift_armed_over_http(admin: httpx.Client, emulator: EmulatorServer, dataset: Any) -> None:
    dataset_id = dataset(6)
    original = ids_of(emulator, dataset_id)
    armed = admin.post(
        "/_emulator/rules",
        json={"method": "GET", "path": RECORDS, "dataset_id": dataset_id, "page": 1,
              "after": {"kind": "delete_first", "n": 2}},
    )
    assert armed.status_code == 201
    first = admin.get(f"{DS}/{dataset_id}/records", params={"page": 1, "page_size": 3}).json()["records"]
    second = admin.get(f"{DS}/{dataset_id}/records", params={"page": 2, "page_size": 3}).json()["records"]
    seen = [r["id"] for r in first["results"] + second["results"]]
    assert (first["count"], second["count"]) == (6, 4)
    assert seen == original[:3] + original[5:]  # the 4th and 5th, still live, never listed
    assert set(ids_of(emulator, dataset_id)) == set(original[2:])


def test_the_clock_over_http(admin: httpx.Client, emulator: EmulatorServer, dataset: Any) -> None:
    rid = ids_of(emulator, dataset(1))[0]
    settings = admin.put("/_emulator/clock", json={"timestamp_format": "offset", "freeze_updated_at": True})
    assert settings.json() == {"timestamp_format": "offset", "clock_resolution_ms": 0, "freeze_updated_at": True}
    before = admin.get(f"{REC}/{rid}").json()["updated_at"]
    assert before.endswith("+00:00")
    admin.put(f"{REC}/{rid}/payload", json={"payload": {"frozen": True}})
    assert admin.get(f"{REC}/{rid}").json()["updated_at"] == before
    assert admin.post("/_emulator/reset").status_code == 204
    assert admin.get("/_emulator/clock").json()["freeze_updated_at"] is False


def test_bad_admin_requests_are_refused_in_the_api_error_shape(admin: httpx.Client) -> None:
    cases = [
        ({"path": "/v1/observability/dataset-records/{id}"}, "template"),
        ({"effect": "apply_then_fail", "status": 418}, "status"),
        ({"effect": "explode"}, "effect"),
        ({"after": {"kind": "delete_first"}}, "dataset_id"),
    ]
    for body, word in cases:
        refused = admin.post("/_emulator/rules", json=body)
        assert refused.status_code == 422, body
        assert word in refused.json()["detail"]["message"] and refused.json()["detail"]["error_code"] == "VALIDATION_ERROR"
    missing = admin.post("/_emulator/rules/999999/release")
    assert missing.status_code == 404 and "no emulator rule" in missing.json()["detail"]["message"]


def test_rules_never_touch_the_admin_endpoints(admin: httpx.Client) -> None:
    armed = admin.post("/_emulator/rules", json={"effect": "fail_before", "status": 503, "times": None}).json()
    assert admin.get("/_emulator/rules").status_code == 200
    assert admin.get("/_emulator/health").status_code == 200
    assert admin.get(DS).status_code == 503  # while every /v1/ request fails
    assert admin.get(f"/_emulator/rules/{armed['id']}").json()["fired"] == 1
    assert admin.delete(f"/_emulator/rules/{armed['id']}").status_code == 204
    assert admin.get(DS).status_code == 200


# ---- a separate `localstore emulator` process, a `localstore pull` against it -------------


def _env(url: str, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCALSTORE_", "MISTRAL_"))}
    env.update(LOCALSTORE_SERVER_URL=url, MISTRAL_API_KEY=api_key)
    return env


@pytest.mark.slow  # `localstore emulator` and `localstore pull` as subprocesses
def test_a_cli_emulator_in_offset_form_with_a_rule_set_over_http(tmp_path: Path, api_key: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstore", "emulator", "--port", "0", "--seed-records", "250",
         "--timestamp-format", "offset"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:  # the start-up lines, then it serves
            lines.append(line)
            if "listening on" in line:
                break
        url = lines[-1].split("listening on ")[1].split()[0]
        dataset_id = next(line for line in lines if line.startswith("seeded dataset ")).split()[2]
        with httpx.Client(base_url=url, timeout=WAIT) as admin:
            rule = admin.post(
                "/_emulator/rules",
                json={"method": "GET", "path": RECORDS, "dataset_id": dataset_id, "page": 2,
                      "effect": "fail_before", "status": 503},
            ).json()
            pulled = subprocess.run(
                [sys.executable, "-m", "localstore", "--db", str(tmp_path / "s.db"), "pull", dataset_id],
                env=_env(url, api_key), capture_output=True, text=True, timeout=120,
            )
            assert pulled.returncode == 0, pulled.stderr
            assert admin.get(f"/_emulator/rules/{rule['id']}").json()["fired"] == 1  # retried through it
            served = admin.get(f"{DS}/{dataset_id}/records", params={"page_size": 1},
                               headers={"Authorization": f"Bearer {api_key}"}).json()["records"]["results"][0]
        assert served["updated_at"].endswith("+00:00")
        with sqlite3.connect(tmp_path / "s.db") as db:
            stamps = [row[0] for row in db.execute("SELECT updated_at FROM records")]
        assert len(stamps) == 250 and all(len(s) == 27 and s.endswith("Z") for s in stamps)
    finally:
        proc.terminate()
        proc.wait(WAIT)
