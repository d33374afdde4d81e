"""What a pull asks the server, and in what order: a named dataset's metadata is asked
for together with its first page (one round trip, not two), and an unknown dataset is
still an error before anything is written."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from localstore.api import Client
from localstore.errors import ProtocolError, UsageError
from localstore.store.db import Store
from localstore.sync.pull import pull

KEY = "sk-test-pull-requests"
BASE = "https://api.test"
DATASETS = "/v1/observability/datasets"
STAMP = "2026-01-02T03:04:05.000Z"
KNOWN = "6f1d2a3b-0c4d-4e5f-8a9b-0c1d2e3f4a5b"
OTHER = "7a1d2a3b-0c4d-4e5f-8a9b-0c1d2e3f4a5b"
UNKNOWN = "00000000-0000-4000-8000-00000000beef"


def _dataset(dataset_id: str) -> dict[str, Any]:
    return {"id": dataset_id, "name": "tickets", "description": "", "created_at": STAMP,
            "updated_at": STAMP, "deleted_at": None, "owner_id": "o", "workspace_id": "w", "slug": None}


def _record(dataset_id: str, i: int) -> dict[str, Any]:
    return {"id": str(uuid.UUID(int=i + 1)), "dataset_id": dataset_id, "created_at": STAMP,
            "updated_at": STAMP, "deleted_at": None, "source": "DIRECT_INPUT",
            "payload": {"messages": []}, "properties": {}}


class Server:
    """Two datasets of 3 records each; GET of ``hold`` waits until its page 1 is asked for."""

    def __init__(self, hold: str | None = None) -> None:
        self.hold = hold
        self.page_1_asked = threading.Event()
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        with self.lock:
            self.asked.append(f"{path}?page={request.url.params.get('page')}")
        dataset_id = path.removeprefix(f"{DATASETS}/").split("/")[0]
        if dataset_id not in (KNOWN, OTHER):
            return httpx.Response(404, json={"detail": {"message": "no such dataset", "error_code": "DATASET_NOT_FOUND"}})
        if path.endswith("/records"):
            if dataset_id == self.hold:
                self.page_1_asked.set()
            results = [_record(dataset_id, i + (10 if dataset_id == OTHER else 0)) for i in range(3)]
            return httpx.Response(200, json={"records": {"count": 3, "results": results, "next": None, "previous": None}})
        if dataset_id == self.hold:
            assert self.page_1_asked.wait(timeout=10), "the dataset's first page was not asked for meanwhile"
        return httpx.Response(200, json=_dataset(dataset_id))


def _client(server: Server) -> Client:
    return Client(BASE, KEY, transport=httpx.MockTransport(server))


def test_the_metadata_and_the_first_page_are_asked_for_together(tmp_path: Path) -> None:
    server = Server(hold=KNOWN)
    with Store.open(tmp_path / "s.db") as store, _client(server) as client:
        pull(store, client, [KNOWN])
        assert store.scalar("SELECT count(*) FROM records") == 3
        assert store.scalar("SELECT name FROM datasets WHERE id = ?", (KNOWN,)) == "tickets"
        assert store.tracked_dataset_ids() == [KNOWN]


@pytest.mark.parametrize("named", [[UNKNOWN], [KNOWN, UNKNOWN], [UNKNOWN, KNOWN]])
def test_an_unknown_dataset_is_an_error_before_anything_is_written(tmp_path: Path, named: list[str]) -> None:
    server = Server()
    with Store.open(tmp_path / "s.db") as store, _client(server) as client:
        with pytest.raises(UsageError, match=f"dataset {UNKNOWN} does not exist on the server"):
            pull(store, client, named)
        assert store.scalar("SELECT count(*) FROM mirror") == 0
        assert store.tracked_dataset_ids() == []
    if named[0] == KNOWN:  # the others are checked before the first one is listed
        assert f"{DATASETS}/{KNOWN}/records?page=1" not in server.asked


class BrokenLastPage:
    """A dataset of 3,000 records whose page 30 is not an answer the API gives."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        dataset_id = request.url.path.removeprefix(f"{DATASETS}/").split("/")[0]
        if not request.url.path.endswith("/records"):
            return httpx.Response(200, json=_dataset(dataset_id))
        page = int(request.url.params["page"])
        if page == 30:
            return httpx.Response(200, json={"records": "not a page"})
        results = [_record(dataset_id, (page - 1) * 100 + i + 10_000) for i in range(100)]
        return httpx.Response(200, json={"records": {"count": 3000, "results": results, "next": None, "previous": None}})


def test_a_pull_that_fails_keeps_what_it_wrote_committed(tmp_path: Path) -> None:
    """A pull commits many batches at a time; when the listing fails, what it wrote is
    committed all the same, as each record was sent (one connection: pages 1-29, 2,900
    records, arrive before page 30; what is left unwritten is less than a batch, 2,500)."""
    with Store.open(tmp_path / "s.db") as store, _client(BrokenLastPage()) as client:  # type: ignore[arg-type]
        with pytest.raises(ProtocolError, match="records"):
            pull(store, client, [KNOWN], concurrency=1)
        assert not store.conn.in_transaction
    with Store.open(tmp_path / "s.db") as other:  # what another process sees
        assert 400 <= other.scalar("SELECT count(*) FROM mirror") <= 2900
        assert other.scalar("SELECT count(*) FROM search_stale") == 1  # indexed when read


def test_a_pull_leaves_the_store_checking_and_indexing_as_before(tmp_path: Path) -> None:
    """While it writes, a pull sets the mirror's CHECKs and search triggers aside; after
    it, whether it succeeded or failed, both are back for every other write."""
    with Store.open(tmp_path / "s.db") as store:
        with _client(Server()) as client:
            pull(store, client, [KNOWN])
        with _client(BrokenLastPage()) as client, pytest.raises(ProtocolError, match="records"):  # type: ignore[arg-type]
            pull(store, client, [OTHER], concurrency=1)
        assert store.scalar("SELECT count(*) FROM mirror WHERE dataset_id = ?", (OTHER,)) >= 400
        assert store.scalar("PRAGMA ignore_check_constraints") == 0
        assert store.scalar("SELECT deferred FROM search_state") == 0
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.conn.execute(
                "INSERT INTO mirror VALUES ('x', ?, 't', 't', NULL, 'DIRECT_INPUT', '[]', '{}')", (KNOWN,)
            )
