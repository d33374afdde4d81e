"""Full-text search (issue #14): the FTS5 index agrees with a brute-force scan of the
records as the user sees them, whichever code path changed them (pull, edits, a direct
SQL write to the working copies, remote changes, revert, sync, resolve); the FTS5 query
syntax works; a malformed query is one line; a store made before the index gets it by
migration; `localstore search` and `localstore sql` reach it.

The oracle tokenizes as FTS5's unicode61 does for ASCII text (runs of letters and
digits, case-folded), so the corpora here are ASCII.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstore.api import Client
from localstore.core.record import Record
from localstore.errors import UsageError
from localstore.ops import edits
from localstore.ops import queries as views
from localstore.ops.resolve import resolve
from localstore.ops.search import catch_up, search
from localstore.ops.sqlwrite import run_write
from localstore.store.db import MIGRATIONS, SCHEMA_VERSION, Store
from localstore.store.migrations import FTS_MIGRATION
from localstore.sync.pull import pull
from localstore.sync.run import sync

REPO = Path(__file__).resolve().parent.parent
DATASET = "5f0c6b2e-8a51-4a8e-9d3c-1f2b3c4d5e6f"
OTHER_DATASET = "6a1d7c3f-9b62-4b9f-8e4d-2a3b4c5d6e7f"
TS = "2026-01-01T00:00:00.000001Z"
FTS_SECTION = "-- ================================================================ full-text search"

Doc = tuple[str, int | None]  # (record_id, message index; None for a non-chat payload)


# ------------------------------------------------------------------ the oracle


def tokens(text: str) -> list[str]:
    return re.findall(r"[0-9a-z]+", text.lower())


def _part_text(part: Any) -> str | None:
    if isinstance(part, str):
        return part
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        return part["text"]
    return None


def _message_text(message: Any) -> str | None:
    if not isinstance(message, dict):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [t for t in (_part_text(p) for p in content) if t is not None]
        return "\n".join(parts) if parts else None
    return None


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def expected_docs(store: Store) -> dict[Doc, tuple[str, str | None, str]]:
    """What should be indexed, computed in Python from `records`:
    {(record_id, idx): (dataset_id, role, text)}."""
    docs: dict[Doc, tuple[str, str | None, str]] = {}
    for record in views.list_records(store):
        payload = record["payload"]
        messages = payload.get("messages")
        if isinstance(messages, list):
            for idx, message in enumerate(messages):
                text = _message_text(message)
                if text:
                    role = message.get("role") if isinstance(message, dict) else None
                    docs[(record["id"], idx)] = (record["dataset_id"], role, text)
        else:
            strings = _strings(payload)
            if strings and "\n".join(strings):
                docs[(record["id"], None)] = (record["dataset_id"], None, "\n".join(strings))
    return docs


def has(word: str) -> Callable[[list[str]], bool]:
    return lambda t: word in t


def phrase(*words: str) -> Callable[[list[str]], bool]:
    n = len(words)
    return lambda t: any(tuple(t[i : i + n]) == words for i in range(len(t) - n + 1))


def prefix(start: str) -> Callable[[list[str]], bool]:
    return lambda t: any(x.startswith(start) for x in t)


QUERIES: dict[str, Callable[[list[str]], bool]] = {
    "refund": has("refund"),
    "zebrafruit": has("zebrafruit"),
    "quokka": has("quokka"),
    "Quokka": has("quokka"),
    "zebrafruit quokka": lambda t: "zebrafruit" in t and "quokka" in t,
    "zebrafruit OR quokka": lambda t: "zebrafruit" in t or "quokka" in t,
    "refund NOT damaged": lambda t: "refund" in t and "damaged" not in t,
    "refund AND (billing OR damaged)": lambda t: "refund" in t and ("billing" in t or "damaged" in t),
    '"arrived damaged"': phrase("arrived", "damaged"),
    '"purple quokka"': phrase("purple", "quokka"),
    "escalat*": prefix("escalat"),
    "zebra*": prefix("zebra"),
}
PLANTED = ("zebrafruit", "quokka")


def indexed_docs(store: Store) -> dict[Doc, tuple[str, str | None, str]]:
    catch_up(store)  # what every reader of the index does first
    return {
        (r, i): (d, role, content)
        for r, i, d, role, content in store.conn.execute(
            "SELECT record_id, idx, dataset_id, role, content FROM search_docs"
        )
    }


def assert_index_true(store: Store) -> None:
    """The index holds exactly what the records show, and every query finds exactly what
    a scan of the records finds (also a LIKE over `messages` for the planted words)."""
    expected = expected_docs(store)
    assert indexed_docs(store) == expected
    source = store.query("SELECT record_id, idx FROM search_source WHERE content != ''")
    assert sorted((r["record_id"], r["idx"] if r["idx"] is not None else -1) for r in source) == sorted(
        (r, i if i is not None else -1) for r, i in expected
    )
    store.conn.execute("INSERT INTO search_fts (search_fts, rank) VALUES ('integrity-check', 1)")
    for query, matches in QUERIES.items():
        found = {(h.record_id, h.idx) for h in search(store, query, limit=None)}
        assert found == {doc for doc, (_, _, text) in expected.items() if matches(tokens(text))}, query
    for word in PLANTED:
        like = {
            r["record_id"]
            for r in store.query(
                "SELECT DISTINCT record_id FROM messages WHERE content LIKE ?", (f"%{word}%",)
            )
        }
        assert like == {h.record_id for h in search(store, word, limit=None)}, word


def _chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def _planted(payload: dict[str, Any], text: str) -> dict[str, Any]:
    messages = [dict(m) for m in payload["messages"]]
    messages[-1]["content"] = f"{messages[-1]['content']} {text}"
    return {**payload, "messages": messages}


# ------------------------------------------------------------------ every code path


def test_search_equals_a_scan_through_pull_edits_sql_writes_remote_changes_reverts_sync_and_resolve(
    tmp_path: Path, emulator: Any, api_key: str, dataset: Any
) -> None:
    dataset_id = dataset(60)
    remote = emulator.state.list_records(dataset_id)
    ids = [r["id"] for r in remote]
    payload_of = {r["id"]: r["payload"] for r in remote}
    for rid in ids[:3]:
        emulator.state.update_payload(rid, _planted(payload_of[rid], "zebrafruit"))
        payload_of[rid] = _planted(payload_of[rid], "zebrafruit")
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        pull(store, client, [dataset_id])  # pull: mirror inserts
        assert len(indexed_docs(store)) > 60
        assert_index_true(store)

        # edits, through the Python API
        edits.set_payload(store, ids[10], _planted(payload_of[ids[10]], "a purple quokka"))
        edits.edit_record(
            store, ids[11], payload=_planted(payload_of[ids[11]], "zebrafruit"), properties={"label": "x"}
        )
        edits.set_properties(store, ids[12], {"label": "reviewed"})
        edits.delete_records(store, [ids[0]])  # held zebrafruit: a pending delete hides it
        created = edits.add_record(store, dataset_id, _chat(("user", "zebrafruit and quokka")), {})
        assert_index_true(store)
        assert {h.record_id for h in search(store, "zebrafruit", limit=None)} >= {created, ids[11]}
        assert ids[0] not in {h.record_id for h in search(store, "zebrafruit", limit=None)}

        # SQL writes through `records`, as `localstore sql --write` runs them
        run_write(store, "UPDATE records SET payload = ? WHERE id = ?",
                  (json.dumps(_chat(("user", "purple quokka by sql"))), ids[10]))
        run_write(store, "UPDATE records SET payload = ? WHERE id = ?",
                  (json.dumps(_chat(("assistant", "quokka via sql"))), ids[13]))
        inserted = run_write(store, "INSERT INTO records (dataset_id, payload) VALUES (?, ?)",
                             (dataset_id, json.dumps(_chat(("user", "a kiwano typed in sql")))))
        assert inserted.queued is not None and len(inserted.queued.created_ids) == 1
        assert_index_true(store)
        assert {h.record_id for h in search(store, "kiwano", limit=None)} == set(inserted.queued.created_ids)

        # remote changes, then a pull: mirror updates and removals
        emulator.state.update_payload(ids[20], _planted(payload_of[ids[20]], "quokka"))
        emulator.state.update_payload(ids[10], _planted(payload_of[ids[10]], "zebrafruit"))
        emulator.state.delete_record(ids[1])  # held zebrafruit
        emulator.state.update_properties(ids[21], {"label": "remote"})
        pull(store, client, [dataset_id])
        assert_index_true(store)
        assert ids[1] not in {h.record_id for h in search(store, "zebrafruit", limit=None)}

        # revert: the working copy goes, the mirror shows again
        edits.revert(store, ids[13])
        edits.revert(store, ids[0])
        assert_index_true(store)
        assert ids[0] in {h.record_id for h in search(store, "zebrafruit", limit=None)}

        # sync: the create takes its server id; ids[10] conflicts (edited on both sides)
        report = sync(store, client)
        assert report.open_conflicts == 1
        found = {h.record_id for h in search(store, "zebrafruit quokka", limit=None)}
        assert created not in found and len(found) == 1
        assert_index_true(store)

        # resolve --theirs: the remote payload (zebrafruit) replaces the local one (quokka)
        resolve(store, ids[10], "theirs")
        assert_index_true(store)
        assert ids[10] in {h.record_id for h in search(store, "zebrafruit", limit=None)}
        assert ids[10] not in {h.record_id for h in search(store, '"purple quokka"', limit=None)}

        # resolve --ours keeps the local payload
        edits.set_payload(store, ids[30], _chat(("user", "local quokka")))
        emulator.state.update_payload(ids[30], _chat(("user", "remote zebrafruit")))
        assert sync(store, client).open_conflicts == 1
        resolve(store, ids[30], "ours")
        assert_index_true(store)
        assert {h.record_id for h in search(store, "local quokka", limit=None)} == {ids[30]}
        assert sync(store, client).exit_code == 0
        assert_index_true(store)


def test_an_unchanged_pull_and_a_properties_edit_leave_the_index_alone(
    tmp_path: Path, emulator: Any, api_key: str, dataset: Any
) -> None:
    dataset_id = dataset(30)
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        pull(store, client, [dataset_id])
        catch_up(store)
        before = store.query("SELECT * FROM search_docs ORDER BY id")
        rid = before[0]["record_id"]
        emulator.state.update_properties(rid, {"label": "changed remotely"})
        pull(store, client, [dataset_id])
        assert store.scalar("SELECT count(*) FROM search_dirty") == 0  # the text did not change
        edits.set_properties(store, rid, {"label": "changed locally"})
        assert store.query("SELECT * FROM search_docs ORDER BY id") == before  # not rewritten
        emulator.state.update_payload(rid, _chat(("user", "new words")))
        pull(store, client, [dataset_id])
        catch_up(store)
        after = store.query("SELECT * FROM search_docs WHERE record_id = ?", (rid,))
        assert [(r["role"], r["content"]) for r in after] == [("user", "new words")]


# ------------------------------------------------------------------ any local state

_text = st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=12)
_content = st.one_of(
    _text,
    st.lists(st.one_of(_text, st.fixed_dictionaries({"type": st.just("text"), "text": _text}),
                       st.fixed_dictionaries({"type": st.just("image_url"), "image_url": _text})), max_size=3),
    st.none(),
    st.integers(),
)
_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": _content}),
    st.fixed_dictionaries({"content": _content}),
    _text,
    st.integers(),
)
payloads = st.one_of(
    st.builds(lambda m: {"messages": m}, st.lists(_message, max_size=3)),
    st.builds(lambda m, x: {"messages": m, "meta": x}, st.lists(_message, max_size=2), _text),
    st.just({"messages": "not a list"}),
    st.builds(lambda t: {"messages": {"role": "user", "content": t}}, _text),
    st.builds(lambda a, b: {"input": a, "nested": {"list": [b, 1, None]}}, _text, _text),
    st.just({}),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    remote=st.lists(payloads, min_size=1, max_size=5),
    steps=st.lists(
        st.tuples(
            st.integers(0, 4),
            st.sampled_from(["payload", "props", "delete", "revert", "sql", "remote", "remote-delete"]),
            payloads,
        ),
        max_size=6,
    ),
    creates=st.lists(payloads, max_size=2),
)
def test_the_index_follows_any_local_state(
    tmp_path_factory: Any, remote: list[dict[str, Any]], steps: list[tuple[int, str, dict[str, Any]]],
    creates: list[dict[str, Any]],
) -> None:
    path = Path(tmp_path_factory.mktemp("search")) / "s.db"
    with Store.open(path) as store:
        ids = [str(uuid.uuid4()) for _ in remote]
        with store.transaction():
            store.ensure_dataset(DATASET)
            store.upsert_mirror(
                Record(rid, DATASET, TS, TS, None, "DIRECT_INPUT", payload, {})
                for rid, payload in zip(ids, remote, strict=True)
            )
        for payload in creates:
            ids.append(edits.add_record(store, DATASET, payload, {}))
        for index, kind, payload in steps:
            # the server holds only the records it listed, never an offline create's id
            rid = ids[index % len(remote)] if kind.startswith("remote") else ids[index % len(ids)]
            try:
                if kind == "payload":
                    edits.set_payload(store, rid, payload)
                elif kind == "props":
                    edits.set_properties(store, rid, {"k": 1})
                elif kind == "delete":
                    edits.delete_records(store, [rid])
                elif kind == "revert":
                    edits.revert(store, rid)
                elif kind == "sql":
                    run_write(store, "UPDATE records SET payload = ? WHERE id = ?", (json.dumps(payload), rid))
                elif kind in ("remote", "remote-delete"):
                    with store.transaction():
                        gone = TS if kind == "remote-delete" else None
                        store.upsert_mirror([Record(rid, DATASET, TS, TS, gone, "DIRECT_INPUT", payload, {})])
            except UsageError:
                pass  # e.g. editing a record deleted a step before
            assert indexed_docs(store) == expected_docs(store)
        store.conn.execute("INSERT INTO search_fts (search_fts, rank) VALUES ('integrity-check', 1)")


# ------------------------------------------------------------------ the query language


@pytest.fixture
def corpus(tmp_path: Path) -> Iterator[Store]:
    store = Store.open(tmp_path / "corpus.db")
    rows = [
        ("a", DATASET, _chat(("system", "You help with billing."), ("user", "I want a refund for my order."),
                             ("assistant", "The refund was issued. Refund refund."))),
        ("b", DATASET, _chat(("user", "The parcel arrived damaged, I need a refund"),
                             ("assistant", "Sorry: we will ship a new one."))),
        ("c", OTHER_DATASET, _chat(("user", "Can I get a refund? Café crème."), ("assistant", "No."))),
        ("d", DATASET, {"input": "refund request in a form", "fields": {"reason": "damaged box"}}),
        ("e", DATASET, {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "look at this picture of a refund"},
            {"type": "image_url", "image_url": "https://example.invalid/refund.png"}]}]}),
    ]
    with store.transaction():
        store.ensure_dataset(DATASET)
        store.ensure_dataset(OTHER_DATASET)
        store.upsert_mirror(
            Record(f"00000000-0000-4000-8000-00000000000{n}", ds, TS, TS, None, "DIRECT_INPUT", payload, {})
            for n, (_, ds, payload) in enumerate(rows)
        )
    yield store
    store.close()


def _rid(n: int) -> str:
    return f"00000000-0000-4000-8000-00000000000{n}"


def test_query_syntax_ranking_filters_and_snippets(corpus: Store) -> None:
    hits = search(corpus, "refund", limit=None)
    assert (hits[0].record_id, hits[0].idx) == (_rid(0), 2)  # "refund" three times: best
    assert {(h.record_id, h.idx, h.role) for h in hits} == {
        (_rid(0), 1, "user"), (_rid(0), 2, "assistant"), (_rid(1), 0, "user"), (_rid(2), 0, "user"),
        (_rid(3), None, None), (_rid(4), 0, "user"),
    }
    assert [h.score for h in hits] == sorted(h.score for h in hits)  # bm25, best first
    assert {h.record_id for h in search(corpus, '"arrived damaged"')} == {_rid(1)}
    assert {h.record_id for h in search(corpus, '"damaged arrived"')} == set()
    assert {h.record_id for h in search(corpus, "damaged")} == {_rid(1), _rid(3)}  # nested payload strings
    assert {h.record_id for h in search(corpus, "refund NOT damaged")} == {_rid(0), _rid(2), _rid(4)}
    assert {h.record_id for h in search(corpus, "billing OR parcel")} == {_rid(0), _rid(1)}
    assert {h.record_id for h in search(corpus, "ref*")} == {_rid(n) for n in range(5)}
    assert {h.record_id for h in search(corpus, "NEAR(want order, 4)")} == {_rid(0)}
    assert {h.record_id for h in search(corpus, "cafe creme")} == {_rid(2)}  # diacritics folded
    assert search(corpus, "png") == []  # an image part's URL is not text
    assert len(search(corpus, "refund", limit=2)) == 2
    assert {h.record_id for h in search(corpus, "refund", dataset_id=OTHER_DATASET)} == {_rid(2)}
    assert {(h.record_id, h.idx) for h in search(corpus, "refund", role="assistant")} == {(_rid(0), 2)}
    (hit,) = search(corpus, '"new one"')
    assert hit.snippet == "Sorry: we will ship a [new one]."  # a phrase is marked whole
    (hit,) = search(corpus, "parcel", highlight=("<b>", "</b>"))
    assert hit.snippet.startswith("The <b>parcel</b> arrived damaged")


@pytest.mark.parametrize("query", ["refund AND", '"unterminated', "e-mail", "don't", "*x", "NOT x", "a:b"])
def test_a_malformed_query_is_a_one_line_usage_error(corpus: Store, query: str) -> None:
    with pytest.raises(UsageError) as caught:
        search(corpus, query)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"bad search query {query!r}: ")
    assert "FTS5 syntax" in message


def test_empty_query_and_bad_filters_are_usage_errors(corpus: Store) -> None:
    with pytest.raises(UsageError, match="empty"):
        search(corpus, "  ")
    with pytest.raises(UsageError, match="not a valid dataset id"):
        search(corpus, "refund", dataset_id="nope")
    with pytest.raises(UsageError, match="limit"):
        search(corpus, "refund", limit=0)


# ------------------------------------------------------------------ migration


def _pre_fts_store(path: Path) -> int:
    """A store as the version before the index: schema.sql without its full-text search
    section. Returns that version."""
    (from_version,) = [v for v, sql in MIGRATIONS.items() if sql is FTS_MIGRATION]
    # later migrations run on it too: they must accept a store that already has what
    # schema.sql declares before the search section (CREATE … IF NOT EXISTS)
    schema = (REPO / "schema.sql").read_text(encoding="utf-8")
    older = schema.split(FTS_SECTION)[0]
    older = re.sub(r"PRAGMA user_version = \d+;", f"PRAGMA user_version = {from_version};", older)
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(older)
    return from_version


def _schema_objects(path: Path) -> list[tuple[str, str, str | None]]:
    with closing(sqlite3.connect(path)) as conn:
        return sorted(conn.execute("SELECT type, name, sql FROM sqlite_master").fetchall())


def test_a_store_made_before_the_index_gets_it_by_migration(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _pre_fts_store(path)
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO datasets (id) VALUES (?)", (DATASET,))
        for n in range(4):
            conn.execute(
                "INSERT INTO mirror VALUES (?, ?, ?, ?, NULL, 'DIRECT_INPUT', ?, '{}')",
                (_rid(n), DATASET, TS, TS, json.dumps(_chat(("user", f"zebrafruit number {n}")))),
            )
        conn.execute(  # a pending payload edit, a pending delete and an offline create
            """INSERT INTO working (record_id, dataset_id, payload, base_payload, base_properties, created_at)
               VALUES (?, ?, ?, '{}', '{}', ?)""",
            (_rid(0), DATASET, json.dumps(_chat(("user", "quokka"))), TS),
        )
        conn.execute(
            """INSERT INTO working (record_id, dataset_id, deleted, base_payload, base_properties, created_at)
               VALUES (?, ?, 1, '{}', '{}', ?)""",
            (_rid(1), DATASET, TS),
        )
        conn.execute(
            """INSERT INTO working (record_id, dataset_id, payload, properties, is_create, created_at)
               VALUES (?, ?, ?, '{}', 1, ?)""",
            (_rid(9), DATASET, json.dumps(_chat(("user", "zebrafruit offline"))), TS),
        )
    with Store.open(path) as store:
        assert store.scalar("PRAGMA user_version") == SCHEMA_VERSION
        assert indexed_docs(store) == expected_docs(store)
        assert {h.record_id for h in search(store, "zebrafruit", limit=None)} == {_rid(2), _rid(3), _rid(9)}
        store.conn.execute("INSERT INTO search_fts (search_fts, rank) VALUES ('integrity-check', 1)")
        edits.set_payload(store, _rid(2), _chat(("user", "quokka too")))  # the triggers run
        assert {h.record_id for h in search(store, "quokka", limit=None)} == {_rid(0), _rid(2)}
    Store.open(tmp_path / "new.db").close()
    assert _schema_objects(path) == _schema_objects(tmp_path / "new.db")


# ------------------------------------------------------------------ the command line


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localstore", "--db", str(db), *args],
        capture_output=True, text=True, timeout=60,
    )


def test_the_search_command(corpus: Store) -> None:
    db = corpus.path
    out = _cli(db, "search", "refund", "--limit", "2")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"{_rid(0)}\tassistant\tThe [refund] was issued. [Refund] [refund]."
    assert len(lines) == 2
    out = _cli(db, "search", "damaged", "--json")
    rows = json.loads(out.stdout)
    assert {(r["record_id"], r["idx"], r["role"]) for r in rows} == {(_rid(1), 0, "user"), (_rid(3), None, None)}
    assert set(rows[0]) == {"record_id", "dataset_id", "idx", "role", "snippet", "score"}
    out = _cli(db, "search", "refund", "--role", "user", "--dataset", OTHER_DATASET)
    assert out.stdout.splitlines() == [f"{_rid(2)}\tuser\tCan I get a [refund]? Café crème."]
    out = _cli(db, "search", "zzzz")
    assert (out.returncode, out.stdout) == (0, "no match for 'zzzz'\n")
    out = _cli(db, "search", '"open')
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("localstore: error: bad search query '\"open': ")
    assert len(out.stderr.splitlines()) == 1


def test_the_index_is_usable_from_localstore_sql(corpus: Store) -> None:
    query = (
        "select record_id, role, snippet(search_fts, 0, '<', '>', '…', 8) as s from search_fts "
        "where search_fts match 'parcel' order by rank"
    )
    out = _cli(corpus.path, "sql", "--json", query)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [{"record_id": _rid(1), "role": "user", "s": "The <parcel> arrived damaged, I need a refund"}]
