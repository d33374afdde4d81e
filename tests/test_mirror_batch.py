"""A listing's batch is written set-based (one JSON array text per statement, see
``localstore.store.mirror``): it must write exactly the text the row-by-row path writes
and find exactly the rows that path finds changed, for any JSON value, including the
ones that cannot travel as JSON text (a NUL, a lone surrogate) and fall back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localstore.store.db import Store
from localstore.store.jsontext import canonical
from localstore.store.mirror import (
    MIRROR_UPSERT,
    BatchRow,
    batch_row_text,
    batch_text,
    changed_in_batch,
    upsert_batch,
)
from localstore.sync.mirror_writer import MirrorWriter

DS = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["\x00", "a\\u0000b", '"\\', "\n\t\r\b\f", "😀", "é", "\u2028", "</script>"]
)
SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
OBJECTS = st.dictionaries(TEXT, VALUES, max_size=3)  # payloads and properties are objects
STAMPS = st.sampled_from(["2025-10-07T20:56:01.974Z", "2025-10-07T20:56:02.000Z"])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with Store.open(tmp_path_factory.mktemp("batch") / "s.db") as opened:
        opened.ensure_dataset(DS)
        yield opened


def _row(i: int, stamp: str, payload: object, properties: object) -> BatchRow:
    return (f"r-{i}", DS, stamp, stamp, "DIRECT_INPUT", payload, properties)


def _has_big_int(value: object) -> bool:
    """Whether orjson refuses the value (an integer outside 64 bits)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not -(2**63) <= value < 2**64
    if isinstance(value, dict):
        return any(_has_big_int(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_big_int(v) for v in value)
    return False


def _mirror(store: Store) -> list[tuple[object, ...]]:
    return store.conn.execute("SELECT * FROM mirror ORDER BY id").fetchall()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    before=st.lists(st.tuples(STAMPS, OBJECTS, OBJECTS, st.booleans()), max_size=4),
    after=st.lists(st.tuples(STAMPS, OBJECTS, OBJECTS), min_size=1, max_size=5),
)
def test_the_batch_finds_and_writes_what_row_by_row_does(
    store: Store,
    before: list[tuple[str, object, object, bool]],
    after: list[tuple[str, object, object]],
) -> None:
    conn = store.conn
    with store.transaction():
        conn.execute("DELETE FROM mirror")
        for i, (stamp, payload, properties, tombstone) in enumerate(before):
            row = batch_row_text(_row(i, stamp, payload, properties))
            conn.execute(MIRROR_UPSERT, (*row[:4], stamp if tombstone else None, *row[4:]))
    rows = [_row(i, *values) for i, values in enumerate(after)]
    expected_changed = MirrorWriter._changed_row_by_row(conn, rows)
    text = batch_text(rows)
    if text is None:  # cannot travel as JSON: the writer takes the row-by-row path
        joined = "".join("".join(batch_row_text(r)) for r in rows)
        too_big = any(_has_big_int(v) for r in rows for v in r[5:])
        assert too_big or "\x00" in joined or "\\u0000" in joined or any("\ud800" <= c <= "\udfff" for c in joined)
        return
    assert changed_in_batch(conn, text) == expected_changed
    with store.transaction():
        conn.execute("SAVEPOINT by_rows")
        conn.executemany(MIRROR_UPSERT, [(*r[:4], None, *r[4:]) for r in map(batch_row_text, rows)])
        by_rows = _mirror(store)
        conn.execute("ROLLBACK TO by_rows")
        upsert_batch(conn, text)
        assert _mirror(store) == by_rows
        conn.execute("ROLLBACK TO by_rows")
        upsert_batch(conn, text, in_id_order=True)
        assert _mirror(store) == by_rows


@pytest.mark.parametrize("in_id_order", [False, True])
def test_a_record_listed_twice_in_a_batch_is_stored_as_listed_last(store: Store, in_id_order: bool) -> None:
    rows = [_row(i % 3, "2025-10-07T20:56:01.974Z", {"n": i}, {}) for i in (5, 4, 3, 2, 1, 0)]
    text = batch_text(rows)
    assert text is not None
    with store.transaction() as conn:
        conn.execute("DELETE FROM mirror")
        upsert_batch(conn, text, in_id_order=in_id_order)
    assert dict(store.conn.execute("SELECT id, payload FROM mirror")) == {
        "r-0": '{"n":0}', "r-1": '{"n":1}', "r-2": '{"n":2}'
    }


def test_text_that_cannot_travel_as_json_falls_back(store: Store) -> None:
    nul = _row(1, "2025-10-07T20:56:01.974Z", {"a": "x"}, {})
    nul = (nul[0] + "\x00", *nul[1:])
    surrogate = _row(2, "2025-10-07T20:56:01.974Z", {"a": "\ud800"}, {})
    plain = _row(3, "2025-10-07T20:56:01.974Z", {"a": "\x00 escaped in the payload text"}, {})
    assert batch_text([nul]) is None
    assert batch_text([surrogate]) is None
    assert batch_text([plain]) is None  # conservative: an escaped NUL also goes row by row
    assert batch_text([_row(4, "2025-10-07T20:56:01.974Z", {"a": "ok"}, {})]) is not None


def test_a_pull_of_awkward_text_stores_what_canonical_gives(tmp_path: Path) -> None:
    """End to end through the writer: a batch mixing plain records and one that must go
    row by row is stored exactly as canonical() renders each value."""
    from localstore.core.record import Record

    payloads = [{"messages": [{"role": "user", "content": text}]}
                for text in ["plain", "é😀\n\"q\"\\", "nul \x00 inside", ""]]
    records = [Record(f"r-{i}", DS, "2025-10-07T20:56:01.974Z", "2025-10-07T20:56:01.974Z", None,
                      "DIRECT_INPUT", payload, {"n": i, "big": 2**65}) for i, payload in enumerate(payloads)]
    with Store.open(tmp_path / "s.db") as fresh:
        writer = MirrorWriter(fresh, DS)
        writer.add(records[:2] + records[3:])  # set-based
        writer.flush()
        writer.add(records[2:3])  # the NUL: row by row
        writer.flush()
        stored = dict(fresh.conn.execute("SELECT id, payload FROM mirror").fetchall())
        props = dict(fresh.conn.execute("SELECT id, properties FROM mirror").fetchall())
    assert stored == {r.id: canonical(r.payload) for r in records}
    assert props == {r.id: canonical(r.properties) for r in records}


def test_a_first_pull_counts_the_tombstones_it_listed_once(tmp_path: Path) -> None:
    """A first pull keeps no ids: its distinct records are the rows it wrote plus the
    tombstones it listed that are not among them (one listed live too counts once)."""
    from types import SimpleNamespace

    from localstore.core.record import Record

    stamp = "2025-10-07T20:56:01.974000Z"

    def record(n: int, deleted: str | None = None) -> Record:
        return Record(f"r-{n}", DS, stamp, stamp, deleted, "DIRECT_INPUT", {"n": n}, {})

    with Store.open(tmp_path / "s.db") as fresh:
        writer = MirrorWriter(fresh, DS, sole_writer=True)
        assert writer.first_pull
        writer.add([record(1), record(2), record(3), record(4, stamp), record(3, stamp)])
        listed = writer.finish(SimpleNamespace(count=4, complete=True, problems=[]))
        assert (listed.complete, listed.problems) == (True, [])
        listed_short = MirrorWriter(fresh, "another-dataset", sole_writer=True)
        assert listed_short.first_pull
        listed_short.add([Record("x-1", "another-dataset", stamp, stamp, None, "DIRECT_INPUT", {}, {})])
        short = listed_short.finish(SimpleNamespace(count=2, complete=True, problems=[]))
        assert not short.complete and short.problems == ["saw 1 distinct records, count is 2"]
