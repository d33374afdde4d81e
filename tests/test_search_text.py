"""The full-text rows a pull computes in Python (localstore.core.search_text) are exactly the
rows of schema.sql's search_source view, for any payload; and a pull's bulk indexing
leaves the same index as the triggers would."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstore.api import Client
from localstore.core.record import Record
from localstore.core.search_text import message_docs
from localstore.ops import search as search_module
from localstore.ops.search import catch_up
from localstore.store.db import Store
from localstore.store.jsontext import canonical
from localstore.sync.mirror_writer import MirrorWriter
from localstore.sync.pull import pull

DATASET = "00000000-0000-4000-8000-0000000000d5"
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False), text)
part = st.one_of(scalar, st.fixed_dictionaries({}, optional={"text": st.one_of(scalar, st.lists(text, max_size=2)), "type": text}))
message = st.one_of(
    scalar,
    st.lists(text, max_size=2),
    st.fixed_dictionaries(
        {},
        optional={"role": st.one_of(text, scalar), "content": st.one_of(scalar, st.lists(part, max_size=3), st.dictionaries(text, text, max_size=2))},
    ),
)
payload = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(message, max_size=4)}),
    st.fixed_dictionaries({"messages": scalar}),
    st.dictionaries(text, st.one_of(scalar, st.lists(text, max_size=3)), max_size=3),
)


def view_rows(store: Store, rid: str) -> list[tuple[Any, ...]]:
    return sorted(
        (r[0], r[1], r[2]) for r in store.conn.execute(
            "SELECT idx, role, content FROM search_source WHERE record_id = ? AND content != ''", (rid,)
        )
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Store.open(tmp_path_factory.mktemp("text") / "s.db") as opened:
        opened.conn.execute("INSERT INTO datasets (id) VALUES (?)", (DATASET,))
        yield opened


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=payload)
def test_python_rows_equal_the_view(store: Store, payload: dict[str, Any]) -> None:
    rid = "00000000-0000-4000-8000-000000000001"
    with store.transaction() as conn:
        conn.execute("DELETE FROM mirror WHERE id = ?", (rid,))
        conn.execute(
            "INSERT INTO mirror VALUES (?, ?, 't', 't', NULL, 'DIRECT_INPUT', ?, '{}')",
            (rid, DATASET, canonical(payload)),
        )
    docs = message_docs(json.loads(canonical(payload)))
    if docs is not None:  # None: the view decides for this payload
        assert sorted(docs) == view_rows(store, rid)


def test_what_a_pull_wrote_is_indexed_in_bulk_as_the_triggers_would(
    tmp_path: Path, emulator: Any, api_key: str, dataset: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_module, "CATCH_UP_BATCH", 4)  # many batches, each resuming
    ds = dataset(30)
    odd = [  # shapes the server accepts, the common one and those left to the view
        {"messages": [{"role": "user", "content": [{"text": "bulk quokka"}, "and a string part", 7]}]},
        {"messages": [{"role": "user", "content": {"nested": "object content"}},
                      {"role": "tool", "content": "tool quokka"}]},
        {"title": "no messages at all quokka", "tags": ["one", "two"]},
        {"messages": [{"role": "assistant", "content": ""}, {"role": "user", "content": "quokka"}]},
        {"messages": [{"role": "assistant", "content": [{"text": 3}, {"type": "x"}]}], "quokka": "x"},
    ]
    emulator.state.add_records(ds, [{"payload": p, "properties": {}} for p in odd])
    with Store.open(tmp_path / "bulk.db") as bulk, Client(emulator.url, api_key) as client:
        pull(bulk, client, [ds])
        # a first pull marks the dataset, not each record, to index when read
        assert bulk.query("SELECT * FROM search_stale") == [{"dataset_id": ds, "after_created_at": "", "after_id": ""}]
        assert bulk.scalar("SELECT count(*) FROM search_dirty") == 0
        assert catch_up(bulk) == 35 and bulk.scalar("SELECT count(*) FROM search_stale") == 0
        indexed = sorted(bulk.conn.execute("SELECT record_id, idx, role, content FROM search_docs"))
        expected = sorted(bulk.conn.execute(
            "SELECT record_id, idx, role, content FROM search_source WHERE content != ''"
        ))
        assert indexed == expected and len(indexed) > 30
        assert bulk.scalar("SELECT count(*) FROM search_fts WHERE search_fts MATCH 'quokka'") == 4  # not the key of the last one
        bulk.conn.execute("INSERT INTO search_fts (search_fts, rank) VALUES ('integrity-check', 1)")


def test_a_reader_who_indexes_during_a_first_pull_misses_none_of_its_records(tmp_path: Path) -> None:
    """A first pull marks its dataset for the index, not each record, and commits many
    batches; a reader (another process) may catch the index up between two commits and
    drop the mark. Each commit marks the dataset anew, so what the pull writes afterwards
    is indexed as well (the reader starts the dataset over)."""
    stamp = "2026-01-02T03:04:05.000000Z"
    records = [
        Record(str(uuid.UUID(int=i + 1)), DATASET, stamp, stamp, None, "DIRECT_INPUT",
               {"messages": [{"role": "user", "content": f"wombat number {i}"}]}, {})
        for i in range(30)
    ]
    path = tmp_path / "s.db"
    with Store.open(path) as store, Store.open(path) as reader:
        writer = MirrorWriter(store, DATASET, sole_writer=True)
        assert writer.first_pull
        writer.add(records[:10])
        writer.flush()
        writer.commit()
        assert catch_up(reader) == 10 and reader.scalar("SELECT count(*) FROM search_stale") == 0
        writer.add(records[10:])
        listed = writer.finish(SimpleNamespace(count=30, complete=True, problems=[]))
        assert listed.complete and listed.missing == []
        assert catch_up(reader) == 30
        found = {hit.record_id for hit in search_module.search(reader, "wombat", limit=None)}
        assert found == {r.id for r in records}
