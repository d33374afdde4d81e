"""The merge rules of DESIGN.md, as exhaustive tables (every combination of unchanged /
changed / deleted on each side, for the payload and for a property key) and as
properties checked by hypothesis."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localstore.core.jsonvalue import json_equal
from localstore.core.merge import (
    DELETE_VS_EDIT,
    EDIT_VS_DELETE,
    MISSING,
    PAYLOAD,
    Content,
    merge,
    merge_properties,
    merge_value,
    property_key,
    property_part,
    rebase_local,
)

BASE_PAYLOAD = {"messages": [{"role": "user", "content": "base"}]}
PAYLOADS = {
    "same": BASE_PAYLOAD,
    "A": {"messages": [{"role": "user", "content": "A"}]},
    "B": {"messages": [{"role": "user", "content": "B"}]},
}
DELETED = "deleted"

# (local, remote) -> expected: a payload name, DELETED, or ("conflict", part)
PAYLOAD_TABLE = {
    ("same", "same"): "same",
    ("same", "A"): "A",
    ("same", "B"): "B",
    ("same", "del"): DELETED,
    ("A", "same"): "A",
    ("A", "A"): "A",  # both changed to the same value: no conflict
    ("A", "B"): ("conflict", PAYLOAD),
    ("A", "del"): ("conflict", EDIT_VS_DELETE),
    ("B", "same"): "B",
    ("B", "A"): ("conflict", PAYLOAD),
    ("B", "B"): "B",
    ("B", "del"): ("conflict", EDIT_VS_DELETE),
    ("del", "same"): DELETED,
    ("del", "A"): ("conflict", DELETE_VS_EDIT),
    ("del", "B"): ("conflict", DELETE_VS_EDIT),
    ("del", "del"): DELETED,
}


def _payload_side(name: str) -> Content | None:
    return None if name == "del" else Content(PAYLOADS[name], {"k": 1})


@pytest.mark.parametrize(("local", "remote"), sorted(PAYLOAD_TABLE))
def test_payload_table(local: str, remote: str) -> None:
    expected = PAYLOAD_TABLE[(local, remote)]
    result = merge(Content(BASE_PAYLOAD, {"k": 1}), _payload_side(local), _payload_side(remote))
    if isinstance(expected, tuple):
        assert result.conflicts == (expected[1],)
        assert result.content is None
    elif expected == DELETED:
        assert result.clean and result.content is None
    else:
        assert result.clean
        assert result.content == Content(PAYLOADS[expected], {"k": 1})


def test_payload_table_is_exhaustive() -> None:
    sides = ["same", "A", "B", "del"]
    assert set(PAYLOAD_TABLE) == {(a, b) for a in sides for b in sides}


# A property key "k". Base either holds k=0 ("present") or lacks it ("absent").
# Side values: same, A (=1), B (=2), unset (key removed), del (record deleted).
KEY_VALUES = {"A": 1, "B": 2}


def _key_side(name: str, base_has_key: bool) -> Content | None:
    if name == "del":
        return None
    props = {"other": "x"}
    if name == "same" and base_has_key:
        props["k"] = 0
    elif name in KEY_VALUES:
        props["k"] = KEY_VALUES[name]
    return Content(BASE_PAYLOAD, props)


# expected: a value of k (int), "absent", DELETED, or ("conflict", part)
KEY_TABLE_PRESENT = {
    ("same", "same"): 0,
    ("same", "A"): 1,
    ("same", "B"): 2,
    ("same", "unset"): "absent",
    ("same", "del"): DELETED,
    ("A", "same"): 1,
    ("A", "A"): 1,
    ("A", "B"): ("conflict", "/properties/k"),
    ("A", "unset"): ("conflict", "/properties/k"),
    ("A", "del"): ("conflict", EDIT_VS_DELETE),
    ("B", "same"): 2,
    ("B", "A"): ("conflict", "/properties/k"),
    ("B", "B"): 2,
    ("B", "unset"): ("conflict", "/properties/k"),
    ("B", "del"): ("conflict", EDIT_VS_DELETE),
    ("unset", "same"): "absent",
    ("unset", "A"): ("conflict", "/properties/k"),
    ("unset", "B"): ("conflict", "/properties/k"),
    ("unset", "unset"): "absent",
    ("unset", "del"): ("conflict", EDIT_VS_DELETE),
    ("del", "same"): DELETED,
    ("del", "A"): ("conflict", DELETE_VS_EDIT),
    ("del", "B"): ("conflict", DELETE_VS_EDIT),
    ("del", "unset"): ("conflict", DELETE_VS_EDIT),
    ("del", "del"): DELETED,
}
# base lacks k: "same" and "unset" both mean absent
KEY_TABLE_ABSENT = {
    ("same", "same"): "absent",
    ("same", "A"): 1,
    ("same", "B"): 2,
    ("same", "del"): DELETED,
    ("A", "same"): 1,
    ("A", "A"): 1,
    ("A", "B"): ("conflict", "/properties/k"),
    ("A", "del"): ("conflict", EDIT_VS_DELETE),
    ("B", "same"): 2,
    ("B", "A"): ("conflict", "/properties/k"),
    ("B", "B"): 2,
    ("B", "del"): ("conflict", EDIT_VS_DELETE),
    ("del", "same"): DELETED,
    ("del", "A"): ("conflict", DELETE_VS_EDIT),
    ("del", "B"): ("conflict", DELETE_VS_EDIT),
    ("del", "del"): DELETED,
}


def _check_key_case(base_has_key: bool, local: str, remote: str, expected: object) -> None:
    base = _key_side("same", base_has_key)
    assert base is not None
    result = merge(base, _key_side(local, base_has_key), _key_side(remote, base_has_key))
    if isinstance(expected, tuple):
        assert result.conflicts == (expected[1],)
    elif expected == DELETED:
        assert result.clean and result.content is None
    else:
        assert result.clean and result.content is not None
        props = result.content.properties
        assert props["other"] == "x"  # untouched keys survive every merge
        if expected == "absent":
            assert "k" not in props
        else:
            assert props["k"] == expected


@pytest.mark.parametrize(("local", "remote"), sorted(KEY_TABLE_PRESENT))
def test_property_key_table_base_has_key(local: str, remote: str) -> None:
    _check_key_case(True, local, remote, KEY_TABLE_PRESENT[(local, remote)])


@pytest.mark.parametrize(("local", "remote"), sorted(KEY_TABLE_ABSENT))
def test_property_key_table_base_lacks_key(local: str, remote: str) -> None:
    _check_key_case(False, local, remote, KEY_TABLE_ABSENT[(local, remote)])


def test_property_tables_are_exhaustive() -> None:
    present = ["same", "A", "B", "unset", "del"]
    absent = ["same", "A", "B", "del"]
    assert set(KEY_TABLE_PRESENT) == {(a, b) for a in present for b in present}
    assert set(KEY_TABLE_ABSENT) == {(a, b) for a in absent for b in absent}


def test_payload_and_property_conflicts_are_reported_together() -> None:
    base = Content({"v": 0}, {"a": 0, "b": 0})
    local = Content({"v": 1}, {"a": 1, "b": 0})
    remote = Content({"v": 2}, {"a": 2, "b": 5})
    assert merge(base, local, remote).conflicts == (PAYLOAD, "/properties/a")


def test_json_equality_distinguishes_true_from_one() -> None:
    assert merge_value(0, True, 1) == (None, True)
    value, conflicting = merge_value(1, True, 1)  # True is a change from 1, not the same value
    assert value is True and not conflicting


def test_rebase_local_takes_local_on_conflicts_and_merges_the_rest() -> None:
    base = Content({"v": 0}, {"a": 0, "b": 0, "c": 0})
    local = Content({"v": 1}, {"a": 1, "b": 0})  # c removed here
    remote = Content({"v": 2}, {"a": 2, "b": 9, "c": 0})
    assert rebase_local(base, local, remote) == Content({"v": 1}, {"a": 1, "b": 9})


# ------------------------------------------------------------------ properties

def _same(x: object, y: object) -> bool:
    """JSON equality (True is not 1), MISSING equal only to itself."""
    if x is MISSING or y is MISSING:
        return x is y
    return json.dumps(x) == json.dumps(y)


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["x", "y"]))
prop_maps = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_scalars, max_size=4)


@given(prop_maps, prop_maps, prop_maps)
def test_property_merge_is_symmetric(base: dict, left: dict, right: dict) -> None:
    assert merge_properties(base, left, right) == merge_properties(base, right, left)


@given(prop_maps, prop_maps)
def test_one_sided_changes_always_merge_to_that_side(base: dict, changed: dict) -> None:
    assert merge_properties(base, changed, base) == (changed, ())
    assert merge_properties(base, base, changed) == (changed, ())
    assert merge_properties(base, changed, changed) == (changed, ())


@given(prop_maps, prop_maps, prop_maps)
def test_no_change_of_either_side_is_lost(base: dict, local: dict, remote: dict) -> None:
    merged, conflicts = merge_properties(base, local, remote)
    for key in base.keys() | local.keys() | remote.keys():
        if key in conflicts:
            continue
        b, l_, r = (side.get(key, MISSING) for side in (base, local, remote))
        got = merged.get(key, MISSING)
        if not _same(l_, b):  # changed locally: the local value wins (or it is a conflict)
            assert _same(got, l_)
        elif not _same(r, b):
            assert _same(got, r)
        else:
            assert _same(got, b)


@given(prop_maps, prop_maps, prop_maps)
def test_conflicts_only_where_both_sides_changed_a_key_differently(base: dict, local: dict, remote: dict) -> None:
    _, conflicts = merge_properties(base, local, remote)
    for key in conflicts:
        b, l_, r = (side.get(key, MISSING) for side in (base, local, remote))
        assert not _same(l_, b) and not _same(r, b) and not _same(l_, r)


# ------------------------------------------------------------------ part names, numbers


@pytest.mark.parametrize(
    ("key", "part"),
    [("label", "/properties/label"), ("a.b", "/properties/a.b"), ("a/b", "/properties/a~1b"),
     ("", "/properties/"), ("~", "/properties/~0"), ("~1", "/properties/~01")],
)
def test_conflict_parts_are_json_pointers_that_name_one_key(key: str, part: str) -> None:
    base = Content({"m": 0}, {key: 0, "other": 0})
    result = merge(base, Content({"m": 0}, {key: 1, "other": 0}), Content({"m": 0}, {key: 2, "other": 0}))
    assert result.conflicts == (part,)
    assert property_key(part) == key


@given(st.text())
def test_property_part_names_round_trip(key: str) -> None:
    assert property_key(property_part(key)) == key


def test_names_that_are_not_property_pointers() -> None:
    assert property_key(PAYLOAD) is None
    assert property_key("/properties/a/b") is None  # a nested path, not a key
    assert property_key("/properties/a~2") is None
    assert property_key("delete-vs-edit") is None


@pytest.mark.parametrize(
    ("local", "remote", "conflict"),
    [(1, 1.0, False), (1.0, 1, False), (2**53 + 1, float(2**53), True), ("1", 1, True),
     (True, 1, True), (0, False, True), ({"x": [1, 2.0]}, {"x": [1.0, 2]}, False), (None, 0, True)],
)
def test_json_numbers_compare_as_numbers(local: object, remote: object, conflict: bool) -> None:
    base = Content({"m": 0}, {"k": "base"})
    result = merge(base, Content({"m": 0}, {"k": local}), Content({"m": 0}, {"k": remote}))
    assert result.conflicts == (("/properties/k",) if conflict else ())
    assert json_equal(local, remote) is not conflict
