"""Sync planning: the push rule by updated_at, the merge path, and what goes out."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from localstore.core.merge import DELETE_VS_EDIT, EDIT_VS_DELETE, Content
from localstore.core.plan import (
    Conflict,
    Create,
    Delete,
    LocalWork,
    Push,
    Remote,
    Settle,
    plan,
    plan_record,
)

T0, T1 = "2026-01-01T00:00:00.000001Z", "2026-01-01T00:00:00.000002Z"
BASE = Content({"m": "base"}, {"label": "a", "split": "train"})


def work(kind: str = "edit", payload: dict | None = None, properties: dict | None = None) -> LocalWork:
    return LocalWork("r1", "d1", kind, payload, properties, BASE, T0, (1,))  # type: ignore[arg-type]


def remote(updated_at: str = T0, payload: dict | None = None, properties: dict | None = None) -> Remote:
    return Remote(updated_at, Content(payload or BASE.payload, properties or BASE.properties))


def test_create_is_posted() -> None:
    create = LocalWork("p1", "d1", "create", {"m": 1}, {}, None, None, (1,))
    assert plan_record(create, None) == Create(create)


def test_unchanged_remote_gets_the_local_edit() -> None:
    w = work(properties={"label": "b", "split": "train"})
    assert plan_record(w, remote()) == Push(w, None, {"label": "b", "split": "train"}, merged=False)


def test_only_parts_that_differ_from_the_remote_are_sent() -> None:
    w = work(payload={"m": "new"}, properties=dict(BASE.properties))
    assert plan_record(w, remote()) == Push(w, {"m": "new"}, None, merged=False)


def test_local_equal_to_remote_settles_without_a_request() -> None:
    w = work(properties=dict(BASE.properties))
    assert plan_record(w, remote()) == Settle(w, remote_gone=False)


def test_moved_remote_with_another_key_changed_merges() -> None:
    w = work(properties={"label": "b", "split": "train"})
    r = remote(T1, properties={"label": "a", "split": "test"})
    assert plan_record(w, r) == Push(w, None, {"label": "b", "split": "test"}, merged=True)


def test_moved_remote_with_the_same_key_changed_conflicts() -> None:
    w = work(properties={"label": "b", "split": "train"})
    r = remote(T1, properties={"label": "c", "split": "train"})
    assert plan_record(w, r) == Conflict(w, ("/properties/label",))


def test_both_sides_same_value_settles() -> None:
    w = work(properties={"label": "b", "split": "train"})
    r = remote(T1, properties={"label": "b", "split": "train"})
    assert plan_record(w, r) == Settle(w, remote_gone=False)


def test_updated_at_moved_by_a_write_that_changed_nothing_is_no_conflict() -> None:
    w = work(payload={"m": "mine"})
    assert plan_record(w, remote(T1)) == Push(w, {"m": "mine"}, None, merged=True)


def test_remote_payload_change_with_local_properties_change() -> None:
    w = work(properties={"label": "b", "split": "train"})
    r = remote(T1, payload={"m": "theirs"})
    assert plan_record(w, r) == Push(w, None, {"label": "b", "split": "train"}, merged=True)


def test_local_edit_remote_deleted_conflicts() -> None:
    w = work(payload={"m": "mine"})
    assert plan_record(w, None) == Conflict(w, (EDIT_VS_DELETE,))


def test_local_edit_undone_remote_deleted_settles() -> None:
    w = work(payload=dict(BASE.payload))
    assert plan_record(w, None) == Settle(w, remote_gone=True)


def test_delete_against_unchanged_remote() -> None:
    w = work("delete")
    assert plan_record(w, remote()) == Delete(w)
    assert plan_record(w, remote(T1)) == Delete(w)  # updated_at moved, content did not


def test_delete_against_remote_edit_conflicts() -> None:
    w = work("delete")
    assert plan_record(w, remote(T1, properties={"label": "z"})) == Conflict(w, (DELETE_VS_EDIT,))


def test_delete_against_remote_delete_is_done() -> None:
    w = work("delete")
    assert plan_record(w, None) == Settle(w, remote_gone=True)


def test_plan_covers_every_record_in_order() -> None:
    a, b = work(payload={"m": 1}), LocalWork("p", "d1", "create", {}, {}, None, None, (2,))
    assert [type(x) for x in plan([a, b], {"r1": remote()})] == [Push, Create]


values = st.sampled_from([None, "a", "b", "c"])


@given(values, values, values, st.booleans())
def test_pushes_never_send_what_the_server_already_has(local_label, remote_label, base_label, moved) -> None:
    base = Content({"m": 0}, {} if base_label is None else {"label": base_label})
    local_props = {} if local_label is None else {"label": local_label}
    remote_props = {} if remote_label is None else {"label": remote_label}
    w = LocalWork("r1", "d1", "edit", None, local_props, base, T0, (1,))
    r = Remote(T1 if moved else T0, Content({"m": 0}, remote_props if moved else dict(base.properties)))
    action = plan_record(w, r)
    if isinstance(action, Push):
        assert action.properties is not None and action.properties != r.content.properties
        assert action.payload is None
    if not moved:  # the push rule: nothing changed remotely, so local wins outright
        assert isinstance(action, (Push, Settle))
        if isinstance(action, Push):
            assert action.properties == local_props


def test_equal_updated_at_with_changed_content_still_merges() -> None:
    """A coarse server clock may not move updated_at: the content decides then."""
    w = work(properties={"label": "b", "split": "train"})
    r = remote(T0, properties={"label": "c", "split": "train"})
    assert plan_record(w, r) == Conflict(w, ("/properties/label",))
