"""The SQL surface agrees with itself: `messages` is exactly the expansion of
`records.payload.messages`, whatever local state the records are in."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstore.core.record import Record
from localstore.ops import edits
from localstore.ops import queries as views
from localstore.store.db import Store

DATASET = "5f0c6b2e-8a51-4a8e-9d3c-1f2b3c4d5e6f"
TS = "2026-01-01T00:00:00.000001Z"

# (SQLite's JSON functions return text up to a NUL character: contents avoid it)
messages_strategy = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=5)}),
    max_size=3,
)
payloads = st.one_of(
    st.builds(lambda m: {"messages": m}, messages_strategy),
    st.just({"messages": "not a list"}),
    st.just({"messages": {"role": "user"}}),
    st.just({}),
)


def expected_messages(store: Store) -> list[tuple[Any, ...]]:
    rows = []
    for record in views.list_records(store):
        messages = record["payload"].get("messages")
        if isinstance(messages, list):
            for idx, message in enumerate(messages):
                role = message.get("role") if isinstance(message, dict) else None
                content = message.get("content") if isinstance(message, dict) else None
                rows.append((record["id"], record["dataset_id"], idx, role, content))
    return sorted(rows)


def actual_messages(store: Store) -> list[tuple[Any, ...]]:
    return sorted(
        tuple(r.values())
        for r in store.query("SELECT record_id, dataset_id, idx, role, content FROM messages")
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    remote=st.lists(payloads, min_size=1, max_size=5),
    edits_=st.lists(st.tuples(st.integers(0, 4), st.sampled_from(["payload", "delete", "props"]), payloads), max_size=4),
    creates=st.lists(payloads, max_size=2),
)
def test_messages_is_the_expansion_of_records(
    tmp_path_factory: Any, remote: list[dict[str, Any]], edits_: list[tuple[int, str, dict[str, Any]]], creates: list[dict[str, Any]]
) -> None:
    path = Path(tmp_path_factory.mktemp("views")) / "s.db"
    with Store.open(path) as store:
        ids = [str(uuid.uuid4()) for _ in remote]
        with store.transaction():
            store.ensure_dataset(DATASET)
            store.upsert_mirror(
                Record(rid, DATASET, TS, TS, None, "DIRECT_INPUT", payload, {})
                for rid, payload in zip(ids, remote, strict=True)
            )
        deleted: set[str] = set()
        for index, kind, payload in edits_:
            rid = ids[index % len(ids)]
            if rid in deleted:
                continue
            if kind == "payload":
                edits.set_payload(store, rid, payload)
            elif kind == "props":
                edits.set_properties(store, rid, {"k": json.dumps(payload)})
            else:
                edits.delete_records(store, [rid])
                deleted.add(rid)
        for payload in creates:
            edits.add_record(store, DATASET, payload, {})
        assert actual_messages(store) == expected_messages(store)
