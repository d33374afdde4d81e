"""Two stores and a third writer on one emulator, in random interleavings of edits,
deletes, creates, syncs, resolves and reverts (hypothesis). After every sync:

- no local edit is lost: each changed part is on the server, or the record is in an
  open conflict (reverts and ``resolve --theirs`` drop edits on purpose);
- no remote change is overwritten without a conflict;
- no conflict is raised unless both sides changed the same part differently;
- the store's records equal the server's for everything not in conflict.

At the end, after final resolves and syncs, every store equals the server.

The model is per part: whether the record exists, its payload, and each property key.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from localstore.api import Client
from localstore.ops import edits
from localstore.ops import queries as views
from localstore.ops.resolve import resolve
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync

KEYS = ("k1", "k2")
VALUES = (0, 1, 2)
PAYLOADS = ("p0", "p1", "p2")
SEED_RECORDS = 3

Snap = tuple[str, tuple[tuple[str, Any], ...]]  # (payload text, sorted property items)


def snap(payload: dict[str, Any], properties: dict[str, Any]) -> Snap:
    return json.dumps(payload, sort_keys=True), tuple(sorted(properties.items()))


def parts(s: Snap | None) -> dict[str, Any]:
    """A record as independent parts: existence, payload, one entry per property key."""
    if s is None:
        return {"exists": False}
    out: dict[str, Any] = {"exists": True, "payload": s[0]}
    out.update({f"prop:{k}": json.dumps(v) for k, v in s[1]})
    return out


MISSING = "<missing>"


def diff_parts(a: Snap | None, b: Snap | None) -> set[str]:
    pa, pb = parts(a), parts(b)
    if not pa["exists"] or not pb["exists"]:
        return set() if pa["exists"] == pb["exists"] else {"exists"}
    return {k for k in pa.keys() | pb.keys() if pa.get(k, MISSING) != pb.get(k, MISSING)}


def conflict_justified(base: Snap | None, local: Snap | None, remote: Snap | None) -> bool:
    """Both sides changed the record and the changes collide: the same part changed to
    different values, or an edit on one side met a delete on the other."""
    if local is None and remote is None:
        return False
    if local is None:
        return bool(diff_parts(base, remote))
    if remote is None:
        return bool(diff_parts(base, local))
    lp, rp = parts(local), parts(remote)
    both = diff_parts(base, local) & diff_parts(base, remote)
    return any(lp.get(p, MISSING) != rp.get(p, MISSING) for p in both)


@dataclass
class Side:
    name: str
    store: Store
    base: dict[str, Snap]  # the server as this store last saw it (records it knows)
    local: dict[str, Snap | None]  # user intent for records edited here (None: deleted)
    creates: dict[str, Snap]  # provisional id -> content
    conflicts: set[str]


def make_machine(emulator: Any, api_key: str) -> type[RuleBasedStateMachine]:
    class SyncMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.tmp = Path(tempfile.mkdtemp(prefix="ls-sm-"))
            state = emulator.state
            self.dataset = state.create_dataset(f"sm-{self.tmp.name}", "state machine")["id"]
            state.add_records(
                self.dataset,
                [{"payload": {"v": "p0"}, "properties": {"k1": 0, "k2": 0}} for _ in range(SEED_RECORDS)],
            )
            self.client = Client(emulator.url, api_key)
            self.http = httpx.Client(base_url=emulator.url, headers={"Authorization": f"Bearer {api_key}"})
            self.ranks: dict[str, int] = {}
            self.sides: dict[str, Side] = {}
            for name in ("A", "B"):
                store = Store.open(self.tmp / f"{name}.db")
                pull(store, self.client, [self.dataset])
                self.sides[name] = Side(name, store, self.server(), {}, {}, set())
            self.counter = 0

        def teardown(self) -> None:
            if hasattr(self, "sides"):
                try:
                    self.converge()
                finally:
                    for side in self.sides.values():
                        side.store.close()
                    self.client.close()
                    self.http.close()
                    shutil.rmtree(self.tmp, ignore_errors=True)

        # -------------------------------------------------------- helpers

        def server(self) -> dict[str, Snap]:
            records = emulator.state.list_records(self.dataset)  # in creation order
            for record in records:
                self.ranks.setdefault(record["id"], len(self.ranks))
            return {r["id"]: snap(r["payload"], r["properties"]) for r in records}

        def ordered(self, ids: Any) -> list[str]:
            """Ids are random UUIDs: order by first sighting so a replay picks the same."""
            return sorted(ids, key=lambda rid: self.ranks.get(rid, len(self.ranks)))

        def editable(self, side: Side) -> list[str]:
            return self.ordered(
                rid for rid in side.base
                if rid not in side.conflicts and side.local.get(rid, side.base[rid]) is not None
            )

        def view(self, side: Side, rid: str) -> Snap | None:
            return side.local.get(rid, side.base.get(rid))

        # -------------------------------------------------------- local edits

        @rule(who=st.sampled_from("AB"), pick=st.integers(0, 10), key=st.sampled_from(KEYS), value=st.sampled_from(VALUES))
        def set_property(self, who: str, pick: int, key: str, value: int) -> None:
            side = self.sides[who]
            candidates = self.editable(side)
            if not candidates:
                return
            rid = candidates[pick % len(candidates)]
            current = self.view(side, rid)
            assert current is not None
            result = edits.set_properties(side.store, rid, {key: value})
            new = (current[0], tuple(sorted({**dict(current[1]), key: value}.items())))
            assert bool(result.kinds) == (new != current)
            if new != current:
                side.local[rid] = new

        @rule(who=st.sampled_from("AB"), pick=st.integers(0, 10), key=st.sampled_from(KEYS))
        def unset_property(self, who: str, pick: int, key: str) -> None:
            side = self.sides[who]
            candidates = [r for r in self.editable(side) if key in dict(self.view(side, r)[1])]  # type: ignore[index]
            if not candidates:
                return
            rid = candidates[pick % len(candidates)]
            current = self.view(side, rid)
            assert current is not None
            edits.unset_properties(side.store, rid, [key])
            side.local[rid] = (current[0], tuple((k, v) for k, v in current[1] if k != key))

        @rule(who=st.sampled_from("AB"), pick=st.integers(0, 10), value=st.sampled_from(PAYLOADS))
        def edit_payload(self, who: str, pick: int, value: str) -> None:
            side = self.sides[who]
            candidates = self.editable(side)
            if not candidates:
                return
            rid = candidates[pick % len(candidates)]
            current = self.view(side, rid)
            assert current is not None
            result = edits.set_payload(side.store, rid, {"v": value})
            new = (json.dumps({"v": value}), current[1])
            assert bool(result.kinds) == (new != current)
            if new != current:
                side.local[rid] = new

        @rule(who=st.sampled_from("AB"), pick=st.integers(0, 10))
        def delete(self, who: str, pick: int) -> None:
            side = self.sides[who]
            candidates = self.editable(side)
            if not candidates:
                return
            rid = candidates[pick % len(candidates)]
            edits.delete_records(side.store, [rid])
            side.local[rid] = None

        @rule(who=st.sampled_from("AB"), value=st.sampled_from(PAYLOADS))
        def create(self, who: str, value: str) -> None:
            side = self.sides[who]
            self.counter += 1
            props = {"k1": value, "n": self.counter}  # unique content per create
            rid = edits.add_record(side.store, self.dataset, {"v": value}, props)
            side.creates[rid] = snap({"v": value}, props)

        @rule(who=st.sampled_from("AB"), pick=st.integers(0, 10))
        def revert(self, who: str, pick: int) -> None:
            side = self.sides[who]
            candidates = self.ordered(r for r in side.local if r not in side.conflicts)
            if not candidates:
                return
            rid = candidates[pick % len(candidates)]
            edits.revert(side.store, rid)
            del side.local[rid]

        # -------------------------------------------------------- the third writer

        @rule(pick=st.integers(0, 10), key=st.sampled_from(KEYS), value=st.sampled_from((*VALUES, None)))
        def third_sets_property(self, pick: int, key: str, value: int | None) -> None:
            live = emulator.state.list_records(self.dataset)
            if not live:
                return
            record = live[pick % len(live)]
            props = dict(record["properties"])
            if value is None:
                props.pop(key, None)
            else:
                props[key] = value
            url = f"/v1/observability/dataset-records/{record['id']}/properties"
            assert self.http.put(url, json={"properties": props}).status_code == 204

        @rule(pick=st.integers(0, 10), value=st.sampled_from(PAYLOADS))
        def third_sets_payload(self, pick: int, value: str) -> None:
            live = emulator.state.list_records(self.dataset)
            if not live:
                return
            record = live[pick % len(live)]
            url = f"/v1/observability/dataset-records/{record['id']}/payload"
            assert self.http.put(url, json={"payload": {"v": value}}).status_code == 204

        @rule(pick=st.integers(0, 10))
        def third_deletes(self, pick: int) -> None:
            live = emulator.state.list_records(self.dataset)
            if not live:
                return
            record = live[pick % len(live)]
            assert self.http.delete(f"/v1/observability/dataset-records/{record['id']}").status_code == 204

        @rule()
        def third_creates(self) -> None:
            self.counter += 1
            body = {"payload": {"v": "p0"}, "properties": {"k1": 0, "k2": 0, "third": self.counter}}
            url = f"/v1/observability/datasets/{self.dataset}/records"
            assert self.http.post(url, json=body).status_code == 201

        # -------------------------------------------------------- sync and resolve

        @rule(who=st.sampled_from("AB"))
        def sync_store(self, who: str) -> None:
            self.checked_sync(self.sides[who])

        def checked_sync(self, side: Side) -> None:
            before = self.server()
            report = sync(side.store, self.client)
            after = self.server()
            assert not report.errors, report.errors
            conflicts = {c["record_id"] for c in views.conflict_list(side.store)}
            new_conflicts = conflicts - side.conflicts
            for rid in new_conflicts:
                assert rid in side.local, f"{side.name}: conflict on {rid} without a local edit"
                assert conflict_justified(side.base[rid], side.local[rid], before.get(rid)), (
                    f"{side.name}: {rid} conflicted but the changes do not collide"
                )
            for rid in side.conflicts:  # open conflicts are left alone on the server
                assert after.get(rid) == before.get(rid)
            for rid, intent in side.local.items():
                if rid in conflicts:
                    continue
                base, remote_before, now = side.base[rid], before.get(rid), after.get(rid)
                assert not conflict_justified(base, intent, remote_before), (
                    f"{side.name}: {rid} changed on both sides without a conflict"
                )
                if intent is None or remote_before is None:
                    # a delete on either side wins when the other side did not change it
                    assert now is None, f"{side.name}: {rid} should be deleted"
                    continue
                local_changed = diff_parts(base, intent)
                remote_changed = diff_parts(base, remote_before)
                lp, rp, np_ = parts(intent), parts(remote_before), parts(now)
                for p in local_changed:
                    assert np_.get(p, MISSING) == lp.get(p, MISSING), f"{side.name}: local edit of {p} on {rid} lost"
                for p in remote_changed - local_changed:
                    assert np_.get(p, MISSING) == rp.get(p, MISSING), (
                        f"{side.name}: remote change of {p} on {rid} overwritten"
                    )
            for rid in set(before) - set(side.local) - set(conflicts):
                assert after.get(rid) == before[rid], f"{side.name}: untouched record {rid} changed by the sync"
            mapping = dict(side.store.conn.execute("SELECT provisional_id, server_id FROM id_map").fetchall())
            for prov, content in side.creates.items():
                sid = mapping.get(prov)
                assert sid is not None and after.get(sid) == content, f"{side.name}: create {prov} lost"
            created_here = {mapping[p] for p in side.creates}
            assert len(created_here) == len(side.creates)
            # the model follows the store: what synced cleanly is now the base
            side.creates = {}
            side.local = {rid: v for rid, v in side.local.items() if rid in conflicts}
            side.conflicts = conflicts
            keep = {rid: side.base[rid] for rid in conflicts if rid in side.base}
            side.base = {**after, **keep}
            self.check_mirror(side)

        def check_mirror(self, side: Side) -> None:
            server = self.server()
            mine = {
                r["id"]: snap(r["payload"], r["properties"])
                for r in views.list_records(side.store, self.dataset)
                if r["sync_state"] == "synced"
            }
            expected = {rid: s for rid, s in server.items() if rid not in side.conflicts}
            assert mine == expected, f"{side.name}: store differs from the server after sync"

        @precondition(lambda self: any(s.conflicts for s in self.sides.values()))
        @rule(who=st.sampled_from("AB"), pick=st.integers(0, 10), ours=st.booleans())
        def resolve_conflict(self, who: str, pick: int, ours: bool) -> None:
            side = self.sides[who]
            if not side.conflicts:
                return
            rid = self.ordered(side.conflicts)[pick % len(side.conflicts)]
            self.resolve_one(side, rid, ours)

        def resolve_one(self, side: Side, rid: str, ours: bool) -> None:
            new_id = resolve(side.store, rid, "ours" if ours else "theirs")
            side.conflicts.discard(rid)
            mirror = side.store.query(
                "SELECT payload, properties FROM remote_records WHERE id = ?", (rid,)
            )
            if mirror:
                side.base[rid] = snap(json.loads(mirror[0]["payload"]), json.loads(mirror[0]["properties"]))
            else:
                side.base.pop(rid, None)
            side.local.pop(rid, None)
            if not ours:
                return
            if new_id != rid:  # deleted remotely, kept here: re-created
                record = views.get_record(side.store, new_id)
                side.creates[new_id] = snap(record["payload"], record["properties"])
                return
            rows = side.store.query("SELECT deleted FROM working WHERE record_id = ?", (rid,))
            if rows and rows[0]["deleted"]:
                side.local[rid] = None
            elif rows:
                record = views.get_record(side.store, rid)
                side.local[rid] = snap(record["payload"], record["properties"])

        @invariant()
        def stores_pass_integrity_check(self) -> None:
            if hasattr(self, "sides"):
                for side in self.sides.values():
                    assert side.store.scalar("PRAGMA quick_check") == "ok"

        def converge(self) -> None:
            for _ in range(4):
                for side in self.sides.values():
                    for rid in self.ordered(side.conflicts):
                        self.resolve_one(side, rid, ours=True)
                    self.checked_sync(side)
                if not any(s.conflicts or s.local or s.creates for s in self.sides.values()):
                    break
            for side in self.sides.values():
                self.checked_sync(side)
                assert not side.conflicts and not side.local
                assert views.status(side.store).pending == 0

    return SyncMachine


def test_sync_state_machine(emulator: Any, api_key: str) -> None:
    machine = make_machine(emulator, api_key)
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not
