"""What a sync reports of its deletes when the server refuses the batch and then one
record's delete: each delete the server rejected is counted as rejected, even when a
later one in the same batch fails otherwise (that one stays pending)."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import httpx

from localstore.api import Client
from localstore.ops import edits
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync

KEY = "sk-test-delete-outcomes"
DATASETS = "/v1/observability/datasets"
RECORDS = "/v1/observability/dataset-records"
STAMP = "2026-01-02T03:04:05.000Z"
DS = "6f1d2a3b-0c4d-4e5f-8a9b-0c1d2e3f4a5b"
IDS = [str(uuid.UUID(int=i + 1)) for i in range(3)]


def _record(rid: str) -> dict[str, Any]:
    return {"id": rid, "dataset_id": DS, "created_at": STAMP, "updated_at": STAMP, "deleted_at": None,
            "source": "DIRECT_INPUT", "payload": {"messages": []}, "properties": {}}


class Server:
    """A dataset of 3 records. The bulk delete is refused (422); then the first delete of
    one record is refused (422) and every later one is forbidden (403)."""

    def __init__(self) -> None:
        self.deletes = 0
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path == f"{DATASETS}/{DS}":
            return httpx.Response(200, json={"id": DS, "name": "d", "description": "", "created_at": STAMP,
                                             "updated_at": STAMP, "deleted_at": None, "owner_id": "o",
                                             "workspace_id": "w", "slug": None})
        if request.method == "GET" and path == f"{DATASETS}/{DS}/records":
            results = [_record(rid) for rid in IDS] if request.url.params["page"] == "1" else []
            return httpx.Response(200, json={"records": {"count": 3, "results": results, "next": None, "previous": None}})
        if request.method == "POST" and path == f"{RECORDS}/bulk-delete":
            return httpx.Response(422, json={"detail": {"message": "one of these records is locked"}})
        if request.method == "DELETE" and path.startswith(f"{RECORDS}/"):
            with self.lock:
                self.deletes += 1
                first = self.deletes == 1
            if first:
                return httpx.Response(422, json={"detail": {"message": "this record is locked"}})
            return httpx.Response(403, json={"detail": {"message": "not allowed"}})
        return httpx.Response(404, json={"detail": {"message": f"no route {request.method} {path}"}})


def test_a_rejected_delete_is_counted_when_a_later_one_fails(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store, \
            Client("https://api.test", KEY, transport=httpx.MockTransport(Server())) as client:
        pull(store, client, [DS])
        edits.delete_records(store, IDS[:2])
        report = sync(store, client)
        assert (report.deleted, report.rejected) == (0, 1)
        states = dict(store.conn.execute(
            "SELECT record_id, state FROM changes WHERE kind = 'delete' ORDER BY id"
        ).fetchall())
        assert sorted(states.values()) == ["pending", "rejected"]
