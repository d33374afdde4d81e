"""Creates left in flight by an interrupted sync: adopted when a complete listing finds
them, sent again only when a complete listing does not, and kept waiting otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localstore.api import Client, ListingIterator
from localstore.ops import edits
from localstore.store import ledger
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync

BODY = {"messages": [{"role": "user", "content": "made offline"}]}


def _interrupted_create(store: Store, client: Client, dataset_id: str, *, landed: bool) -> str:
    """A create marked in flight whose POST did (or did not) reach the server, as after a
    SIGKILL between the POST and its commit."""
    rid = edits.add_record(store, dataset_id, BODY, {"n": 1})
    with store.transaction() as conn:
        for work in ledger.load_work(conn):
            if work.kind == "create":
                ledger.begin_create(conn, work)
    if landed:
        client.create_record(dataset_id, BODY, {"n": 1})
    return rid


def _copies(emulator: Any, dataset_id: str) -> int:
    return sum(1 for r in emulator.state.list_records(dataset_id) if r["payload"] == BODY)


@pytest.mark.parametrize("landed", [True, False])
def test_complete_listing_adopts_or_resends(tmp_path: Path, emulator: Any, api_key: str, dataset: Any, landed: bool) -> None:
    dataset_id = dataset(120)
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        pull(store, client, [dataset_id])
        rid = _interrupted_create(store, client, dataset_id, landed=landed)
        report = sync(store, client)
        assert report.exit_code == 0 and report.created == (0 if landed else 1)
        assert _copies(emulator, dataset_id) == 1
        assert store.scalar("SELECT server_id FROM id_map WHERE provisional_id = ?", (rid,))


def test_incomplete_listing_keeps_the_create_waiting(
    tmp_path: Path, emulator: Any, api_key: str, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset_id = dataset(120)
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        pull(store, client, [dataset_id])
        _interrupted_create(store, client, dataset_id, landed=False)
        real_finish = ListingIterator._finish

        def incomplete(self: ListingIterator, count: int, *, failed: bool) -> None:
            real_finish(self, count, failed=failed)
            assert self.listing is not None
            self.listing.complete = False  # as if records moved while the pages were read

        monkeypatch.setattr(ListingIterator, "_finish", incomplete)
        report = sync(store, client)
        assert report.exit_code == 1 and "could not be confirmed" in report.errors[0]
        assert _copies(emulator, dataset_id) == 0  # not sent blind
        monkeypatch.undo()
        assert sync(store, client).exit_code == 0
        assert _copies(emulator, dataset_id) == 1
