"""A model-based test of sync against an adversarial server, Jepsen-style.

Hypothesis drives two stores (A and B, two people) and a teammate writing straight to
the server, over a small dataset, in random histories: local edits (set a key, replace
the payload, delete, create, revert, resolve), pulls, and syncs while the server
misbehaves — a request failing before it is applied, applied with its answer lost
(an error, or the connection dropped), the second PUT of a record failing, records
deleted and created while a listing's pages are read (offset paging shifts), a PUT held
on the wire while the user edits, writes that keep ``updated_at``, the dataset deleted,
and a sync killed with SIGKILL while one of its writes is on the wire.

Every value anyone writes is unique, so the server's write log (``support.serverlog``)
tells whose value each part holds. After every step the oracle checks, part by part:

- **no silent overwrite**: a write a store sent replaced a value only if that value was
  the store's own or its user had seen it (or something newer) when making the edit;
  a store never writes back a value its user did not write;
- **no lost edit**: a local write the store no longer has pending is on the server (it
  was written there at some point), in an open conflict, or rejected — never a
  ``pushed`` that did not land;
- **no duplicate**: no create lands twice;
- **convergence**: after a quiet sync the store's ``records`` view equals the server
  for every record it has no local work on.

The number of histories and steps is printed with the drill figures.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)
from support.serverlog import EXISTS, GONE, MISSING, ServerLog, Write, key_part

from localstore import files
from localstore.api import Client, RetryPolicy
from localstore.errors import LocalstoreError
from localstore.files.fs import canonical_uuid
from localstore.files.manifest import Manifest
from localstore.ops import edits
from localstore.ops.resolve import resolve
from localstore.store import ledger
from localstore.store.db import Store
from localstore.store.jsontext import canonical
from localstore.sync import listing
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer
from localstore_emulator.adversary import BULK_DELETE, RECORD, RECORD_PUTS, RECORDS, Rule

pytestmark = pytest.mark.slow

HISTORIES = int(os.environ.get("LOCALSTORE_MODEL_HISTORIES", "500"))
STEPS = 12
KEYS = ("k1", "k2", "k3")
SEED = 3
STORES = ("A", "B")
FAST_RETRY = RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0, max_total_seconds=5.0)

FAULTS = (
    "none", "fail_before_put", "lose_put_answer", "drop_put", "second_put_fails",
    "lose_post_answer", "drop_post", "lose_delete_answer", "fail_listing", "pages_shift",
    "frozen_clock",
)


@dataclass
class Intent:
    """What a user meant a part of a record to become, and the version they saw."""

    store: str
    record_id: str
    part: str  # exists / payload / k:<key>
    value: str
    seen: dict[str, int]  # part -> position in the server log of the version they saw
    made: int  # the server log's length when the edit was made
    live: bool = True  # still an obligation (not landed, replaced, reverted)


@dataclass
class FileIntent:
    """A change made in a checkout file, not queued yet (the watcher has not seen it, or
    held it): it becomes an Intent once the store shows it queued."""

    rel: str
    record_id: str | None  # None: a new file (a create)
    kind: str  # edit / delete / restore / create
    part: str
    value: str
    seen: dict[str, int]
    extra: str | None = None  # a create's k1


def file_holds(content: dict[str, Any], part: str, value: str) -> bool:
    if part == "payload":
        return canonical(content["payload"]) == value
    key = part.removeprefix("k:")
    return key in content["properties"] and canonical(content["properties"][key]) == value


def _arm_checkpoints(point: int, pipe: int) -> None:
    """In a forked watcher step: after its ``point``-th commit or manifest write, tell the
    parent (which SIGKILLs it) and stop."""
    count = [0]

    def checkpoint() -> None:
        count[0] += 1
        if count[0] == point:
            os.write(pipe, b"k")
            os.kill(os.getpid(), signal.SIGSTOP)

    transaction = Store.transaction

    @contextlib.contextmanager
    def counted(self: Store) -> Iterator[sqlite3.Connection]:
        with transaction(self) as conn:
            yield conn
        checkpoint()

    save = Manifest.save

    def saved(self: Manifest, folder: Any) -> None:
        save(self, folder)
        checkpoint()

    Store.transaction = counted  # type: ignore[method-assign]
    Manifest.save = saved  # type: ignore[method-assign]


@dataclass
class Figures:
    histories: int = 0
    steps: int = 0
    syncs: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    conflicts: int = 0
    unconfirmed: int = 0
    rules: dict[str, int] = field(default_factory=dict)

    def ran(self, rule: str) -> None:
        self.rules[rule] = self.rules.get(rule, 0) + 1


class Oracle:
    def __init__(self, log: ServerLog) -> None:
        self.log = log
        self.checked = 0
        self.by_value: dict[tuple[str, str], Intent] = {}  # (part, value) -> the intent
        self.intents: dict[tuple[str, str, str], Intent] = {}  # (store, record, part) -> latest
        self.deletes: list[Intent] = []  # every delete a user made
        self.creates: set[str] = set()  # payloads of the records users created
        self.asked: set[str] = set()  # the same, never taken back

    def intend(self, intent: Intent) -> None:
        old = self.intents.get((intent.store, intent.record_id, intent.part))
        if old is not None:
            old.live = False
        self.intents[(intent.store, intent.record_id, intent.part)] = intent
        if intent.part == "exists":
            self.deletes.append(intent)
        else:
            self.by_value[(intent.part, intent.value)] = intent

    def drop(self, store: str, record_id: str) -> None:
        for (s, rid, _), intent in self.intents.items():
            if s == store and rid == record_id:
                intent.live = False

    def rekey(self, store: str, mapping: dict[str, str]) -> None:
        for key in [k for k in self.intents if k[0] == store and k[1] in mapping]:
            intent = self.intents.pop(key)
            intent.record_id = mapping[key[1]]
            self.intents[(store, intent.record_id, intent.part)] = intent
        for intent in [*self.by_value.values(), *self.deletes]:
            if intent.store == store and intent.record_id in mapping:
                intent.record_id = mapping[intent.record_id]

    # ---- no silent overwrite -----------------------------------------------------

    def check_writes(self) -> None:
        writes = self.log.snapshot()
        for write in writes[self.checked :]:
            if write.teammate or write.creation:
                continue
            if write.part == "exists":
                self._check_delete(write)
            else:
                self._check_overwrite(write)
        self.checked = len(writes)

    def _owner(self, part: str, value: str) -> str | None:
        intent = self.by_value.get((part, value))
        return None if intent is None else intent.store

    def _check_overwrite(self, write: Write) -> None:
        intent = self.by_value.get((write.part, write.value))
        assert intent is not None, (
            f"a store wrote {write.record_id} {write.part} = {write.value}, a value its user "
            "never wrote (a stale value sent back over a newer one)"
        )
        previous = self.log.last_before(write.record_id, write.part, write.pos)
        if previous is None:
            return
        if self._owner(previous.part, previous.value) == intent.store:
            return
        assert previous.pos <= intent.seen.get(write.part, -1), (
            f"store {intent.store} overwrote {write.record_id} {write.part} = {previous.value} "
            f"(written at {previous.pos}) with {write.value}, made having seen version "
            f"{intent.seen.get(write.part)}: a teammate's write lost without a conflict"
        )

    def _check_delete(self, write: Write) -> None:
        assert write.value == GONE, f"a store un-deleted {write.record_id}"
        candidates = [i for i in self.deletes if i.record_id == write.record_id]
        assert candidates, f"a store deleted {write.record_id}, which no user deleted"
        problems = [self._delete_problem(intent, write) for intent in candidates]
        assert None in problems, problems[0]

    def _delete_problem(self, intent: Intent, write: Write) -> str | None:
        for part in {w.part for w in self.log.writes[: write.pos] if w.record_id == write.record_id} - {"exists"}:
            previous = self.log.last_before(write.record_id, part, write.pos)
            assert previous is not None
            if self._owner(part, previous.value) == intent.store:
                continue
            if previous.pos > intent.seen.get(part, -1):
                return (
                    f"store {intent.store} deleted {write.record_id} over {part} = {previous.value} "
                    f"(written at {previous.pos}) it had not seen: a delete-vs-edit without a conflict"
                )
        return None

    # ---- no lost edit ---------------------------------------------------------------

    def check_obligations(self, store: str, conn: sqlite3.Connection) -> None:
        local = StoreState.read(conn)
        for (s, rid, part), intent in list(self.intents.items()):
            if s != store or not intent.live:
                continue
            if rid in local.open or (part == "exists" and intent.value == EXISTS and rid in local.unsent):
                continue  # still pending: no promise yet
            if rid in local.conflicts:
                continue
            if rid in local.rejected:
                intent.live = False
                continue
            landed = any(
                w.record_id == rid and w.part == part and w.value == intent.value and w.pos >= intent.made
                for w in self.log.writes
            )
            if part == "exists" and intent.value == GONE:
                landed = landed or any(
                    w.record_id == rid and w.part == "exists" and w.value == GONE for w in self.log.writes
                )
                if not any(w.record_id == rid for w in self.log.writes):
                    # a create of this store the server never acknowledged: deleting it is
                    # done when no live record holds what was created
                    landed = not self._created_copy_alive(store, rid)
            assert landed, (
                f"store {store}: the edit {rid} {part} = {intent.value} is not pending, not in a "
                f"conflict, not rejected, and never reached the server; log: {local.log.get(rid)}"
            )
            intent.live = False

    def _created_copy_alive(self, store: str, rid: str) -> bool:
        payloads = {i.value for i in self.by_value.values()
                    if i.store == store and i.record_id == rid and i.part == "payload"}
        live = {w.record_id for w in self.log.writes if w.part == "exists" and w.value == EXISTS}
        live -= {w.record_id for w in self.log.writes if w.part == "exists" and w.value == GONE}
        current: dict[str, str] = {}
        for w in self.log.writes:
            if w.part == "payload" and w.record_id in live:
                current[w.record_id] = w.value
        return bool(set(current.values()) & payloads)

    def check_no_duplicates(self) -> None:
        created: dict[str, int] = {}
        for write in self.log.writes:
            if write.creation and not write.teammate and write.part == "payload" and write.value in self.creates:
                created[write.value] = created.get(write.value, 0) + 1
        twice = {v: n for v, n in created.items() if n > 1}
        assert not twice, f"creates landed more than once: {twice}"
        for write in self.log.writes:
            if write.creation and not write.teammate and write.part == "payload":
                # (a create's payload may be edited before it is sent; resolving a delete
                # conflict "ours" re-creates the record with the user's payload)
                assert write.value in self.asked or ("payload", write.value) in self.by_value, (
                    f"a store created {write.record_id} with payload {write.value}, which no user "
                    "created (a deleted record brought back?)"
                )


@dataclass
class StoreState:
    open: set[str]  # records with pending or in-flight entries (not in conflict)
    unsent: set[str]
    conflicts: set[str]
    rejected: set[str]
    log: dict[str, list[tuple[str, str]]]

    @classmethod
    def read(cls, conn: sqlite3.Connection) -> StoreState:
        working = {r[0]: r[1] for r in conn.execute("SELECT record_id, state FROM working")}
        open_ids = {
            r[0] for r in conn.execute("SELECT record_id FROM changes WHERE state IN ('pending', 'in_flight')")
        }
        rejected = {r[0] for r in conn.execute("SELECT record_id FROM changes WHERE state = 'rejected'")}
        log: dict[str, list[tuple[str, str]]] = {}
        for rid, kind, state in conn.execute("SELECT record_id, kind, state FROM changes ORDER BY id"):
            log.setdefault(rid, []).append((kind, state))
        conflicts = {rid for rid, state in working.items() if state == "conflict"}
        return cls(open_ids - conflicts, set(), conflicts, rejected, log)


def records_view(conn: sqlite3.Connection, dataset_id: str) -> dict[str, dict[str, str]]:
    rows = conn.execute(
        "SELECT id, payload, properties, sync_state FROM records WHERE dataset_id = ?", (dataset_id,)
    ).fetchall()
    return {rid: {"payload": canonical(json.loads(p)), "properties": canonical(json.loads(q)), "state": s}
            for rid, p, q, s in rows}


def make_machine(
    server: EmulatorServer, api_key: str, client: Client, figures: Figures
) -> type[RuleBasedStateMachine]:
    class SyncModel(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            figures.histories += 1
            server.adversary.reset()
            self.tmp = Path(tempfile.mkdtemp(prefix="ls-model-"))
            self.log = ServerLog(server.state)
            self.oracle = Oracle(self.log)
            self.counter = 0
            self.kills = 0
            self.created = dict.fromkeys(STORES, 0)
            self.known: dict[str, set[str]] = {name: set() for name in STORES}
            self.dataset_gone = False
            with self.log.teammate():
                self.dataset = server.state.create_dataset(f"model-{self.tmp.name}", "model test")["id"]
                server.state.add_records(
                    self.dataset,
                    [{"payload": {"v": self.unique("seed")}, "properties": {"k1": self.unique("seed"), "k2": self.unique("seed")}}
                     for _ in range(SEED)],
                )
            self.client = client
            self.stores: dict[str, Store] = {}
            for name in STORES:
                store = Store.open(self.tmp / f"{name}.db")
                pull(store, self.client, [self.dataset])
                self.stores[name] = store

        def teardown(self) -> None:
            try:
                if hasattr(self, "stores"):
                    self.settle_everything()
            finally:
                server.adversary.reset()
                if hasattr(self, "log"):
                    self.log.close()
                for store in getattr(self, "stores", {}).values():
                    store.close()
                if hasattr(self, "tmp"):  # a history's stores: ~1 MB each, hundreds per run
                    shutil.rmtree(self.tmp, ignore_errors=True)

        # ---- helpers ---------------------------------------------------------------

        def unique(self, prefix: str) -> str:
            self.counter += 1
            return f"{prefix}-{self.counter}"

        def db(self, name: str) -> Path:
            return self.tmp / f"{name}.db"

        def server_ids(self) -> list[str]:
            if self.dataset_gone:
                return []
            return [r["id"] for r in server.state.list_records(self.dataset)]

        def unacknowledged(self) -> set[str]:
            """Records a store created whose id no store knows yet."""
            made = {w.record_id for w in self.log.writes if w.creation and not w.teammate}
            known: set[str] = set()
            for store in self.stores.values():
                known |= {r[0] for r in store.conn.execute("SELECT server_id FROM id_map")}
                known |= {r[0] for r in store.conn.execute("SELECT id FROM mirror")}
            return made - known

        def local_ids(self, name: str) -> list[str]:
            return sorted(records_view(self.stores[name].conn, self.dataset))

        def seen_of(self, name: str, rid: str) -> dict[str, int]:
            """The server version of each part the user of ``name`` sees now."""
            view = records_view(self.stores[name].conn, self.dataset).get(rid)
            if view is None:
                return {}
            parts = {"payload": view["payload"]}
            props = json.loads(view["properties"])
            for key in {*KEYS, *props}:
                parts[key_part(key)] = canonical(props[key]) if key in props else MISSING
            seen: dict[str, int] = {}
            for part, value in parts.items():
                own = self.oracle.intents.get((name, rid, part))
                if own is not None and own.value == value and own.live:
                    seen[part] = own.seen.get(part, -1)
                else:
                    seen[part] = self.log.version_of(rid, part, value)
            return seen

        def check_nothing_vanished(self, name: str) -> None:
            """A record the store knew and the server still has is still in the store:
            absence from a listing is no proof of a delete."""
            mirrored = {r[0] for r in self.stores[name].conn.execute("SELECT id FROM mirror WHERE deleted_at IS NULL")}
            live = set(self.server_ids())
            vanished = (live & self.known[name]) - mirrored
            assert not vanished, f"store {name} lost records the server still has: {sorted(vanished)}"
            self.known[name] |= mirrored

        def after_step(self, name: str | None = None) -> None:
            figures.steps += 1
            for store_name in STORES:
                self.check_nothing_vanished(store_name)
            for store_name, store in self.stores.items():
                mapping = dict(store.conn.execute("SELECT provisional_id, server_id FROM id_map").fetchall())
                self.oracle.rekey(store_name, mapping)
            self.oracle.check_writes()
            self.oracle.check_no_duplicates()
            for store_name in (STORES if name is None else (name,)):
                self.oracle.check_obligations(store_name, self.stores[store_name].conn)

        def edit_view(self, name: str, rid: str, part: str, value: str) -> None:
            seen = self.seen_of(name, rid)
            self.oracle.intend(Intent(name, rid, part, value, seen, len(self.log.writes)))

        # ---- local edits -----------------------------------------------------------

        @rule(name=st.sampled_from(STORES), pick=st.integers(0, 99), key=st.sampled_from(KEYS))
        def set_key(self, name: str, pick: int, key: str) -> None:
            figures.ran("set_key")
            ids = self.local_ids(name)
            if ids:
                self.set_key_of(name, ids[pick % len(ids)], key)

        def set_key_of(self, name: str, rid: str, key: str) -> None:
            value = self.unique(f"{name}{key}")
            seen = self.seen_of(name, rid)
            try:
                edits.set_properties(self.stores[name], rid, {key: value})
            except LocalstoreError:
                return  # in conflict, deleted here: refused, nothing queued
            self.oracle.intend(Intent(name, rid, key_part(key), canonical(value), seen, len(self.log.writes)))
            self.after_step(name)

        @rule(name=st.sampled_from(STORES), pick=st.integers(0, 99))
        def edit_payload(self, name: str, pick: int) -> None:
            figures.ran("edit_payload")
            ids = self.local_ids(name)
            if not ids:
                return
            rid = ids[pick % len(ids)]
            payload = {"v": self.unique(f"{name}p")}
            seen = self.seen_of(name, rid)
            try:
                edits.set_payload(self.stores[name], rid, payload)
            except LocalstoreError:
                return
            self.oracle.intend(Intent(name, rid, "payload", canonical(payload), seen, len(self.log.writes)))
            self.after_step(name)

        @rule(name=st.sampled_from(STORES), pick=st.integers(0, 99))
        def delete(self, name: str, pick: int) -> None:
            figures.ran("delete")
            ids = self.local_ids(name)
            if not ids:
                return
            rid = ids[pick % len(ids)]
            seen = self.seen_of(name, rid)
            try:
                (result,) = edits.delete_records(self.stores[name], [rid])
            except LocalstoreError:
                return
            self.oracle.drop(name, rid)
            if not result.dropped_unsent_create:
                self.oracle.intend(Intent(name, rid, "exists", GONE, seen, len(self.log.writes)))
            self.after_step(name)

        @rule(name=st.sampled_from(STORES))
        def create(self, name: str) -> None:
            figures.ran("create")
            if self.dataset_gone or self.created[name] >= 2:
                return
            self.created[name] += 1
            payload, k1 = {"v": self.unique(f"{name}new")}, self.unique(f"{name}new")
            rid = edits.add_record(self.stores[name], self.dataset, payload, {"k1": k1})
            made = len(self.log.writes)
            self.oracle.intend(Intent(name, rid, "payload", canonical(payload), {}, made))
            self.oracle.intend(Intent(name, rid, key_part("k1"), canonical(k1), {}, made))
            self.oracle.creates.add(canonical(payload))
            self.oracle.asked.add(canonical(payload))
            self.after_step(name)

        @rule(name=st.sampled_from(STORES), pick=st.integers(0, 99))
        def revert(self, name: str, pick: int) -> None:
            figures.ran("revert")
            rows = self.stores[name].query("SELECT record_id FROM working ORDER BY record_id")
            if not rows:
                return
            rid = rows[pick % len(rows)]["record_id"]
            try:
                edits.revert(self.stores[name], rid)
            except LocalstoreError:
                return
            self.oracle.drop(name, rid)
            self.after_step(name)

        @rule(name=st.sampled_from(STORES), pick=st.integers(0, 99), ours=st.booleans())
        def settle_conflict(self, name: str, pick: int, ours: bool) -> None:
            figures.ran("settle_conflict")
            rows = self.stores[name].query("SELECT record_id FROM working WHERE state = 'conflict' ORDER BY record_id")
            if not rows:
                return
            self.resolve_one(name, rows[pick % len(rows)]["record_id"], ours)
            self.after_step(name)

        def resolve_one(self, name: str, rid: str, ours: bool) -> None:
            figures.conflicts += 1
            parts = self.stores[name].scalar("SELECT conflict_parts FROM working WHERE record_id = ?", (rid,))
            if json.loads(parts) == [ledger.CREATE_UNCONFIRMED]:
                # a create that may have landed, changed since by the teammate: sending it
                # again (ours) knowingly risks a second copy, taking it as landed drops it
                figures.unconfirmed += 1
                payload = self.stores[name].scalar("SELECT payload FROM working WHERE record_id = ?", (rid,))
                if ours:
                    self.oracle.creates.discard(canonical(json.loads(payload)))
                else:
                    self.oracle.drop(name, rid)
                resolve(self.stores[name], rid, "ours" if ours else "theirs")
                return
            remote = ledger.remote_of_mirror(self.stores[name].conn, rid)
            if ours and remote is not None:
                # the user sees the remote side in the conflict: their values now stand on it
                seen = {"payload": self.log.version_of(rid, "payload", canonical(remote.content.payload))}
                for key in {*KEYS, *remote.content.properties}:
                    value = canonical(remote.content.properties[key]) if key in remote.content.properties else MISSING
                    seen[key_part(key)] = self.log.version_of(rid, key_part(key), value)
                for (s, r, _), intent in self.oracle.intents.items():
                    if s == name and r == rid and intent.live:
                        intent.seen = dict(seen)
            new = resolve(self.stores[name], rid, "ours" if ours else "theirs")
            if not ours:
                self.oracle.drop(name, rid)
            elif new != rid:  # re-created: a create of the local side under a new id
                self.oracle.rekey(name, {rid: new})
                self.oracle.drop(name, new)
                content = self.stores[name].query("SELECT payload FROM working WHERE record_id = ?", (new,))
                payload = canonical(json.loads(content[0]["payload"]))
                # the re-created content may equal another record's: no uniqueness to check
                self.oracle.intend(Intent(name, new, "payload", payload, {}, len(self.log.writes)))

        # ---- the teammate ------------------------------------------------------------

        @rule(pick=st.integers(0, 99), key=st.sampled_from(KEYS), what=st.sampled_from(["key", "payload", "delete", "create"]),
              frozen=st.booleans())
        def teammate(self, pick: int, key: str, what: str, frozen: bool) -> None:
            figures.ran("teammate")
            ids = self.server_ids()
            if self.dataset_gone or (not ids and what != "create"):
                return
            server.adversary.set_clock(freeze_updated_at=frozen)
            with self.log.teammate():
                if what == "create":
                    server.state.add_records(self.dataset, [{"payload": {"v": self.unique("Tnew")}, "properties": {}}])
                else:
                    if what == "delete":
                        # a create whose answer was lost, deleted before its store saw it,
                        # is indistinguishable from one that never landed: the API has no
                        # idempotency key (README, Guarantees); the model leaves it out
                        ids = [i for i in ids if i not in self.unacknowledged()] or ids[:0]
                        if not ids:
                            return
                    rid = ids[pick % len(ids)]
                    record = server.state.get_record(rid)
                    if what == "key":
                        server.state.update_properties(rid, {**record["properties"], key: self.unique(f"T{key}")})
                    elif what == "payload":
                        server.state.update_payload(rid, {"v": self.unique("Tp")})
                    else:
                        server.state.delete_record(rid)
            server.adversary.set_clock(freeze_updated_at=False)
            self.after_step()

        @precondition(lambda self: not self.dataset_gone)
        @rule(chance=st.integers(0, 19))
        def teammate_deletes_the_dataset(self, chance: int) -> None:
            figures.ran("teammate_deletes_the_dataset")
            if chance:  # rare: one time in twenty this rule is drawn
                return
            with self.log.teammate():
                server.state.delete_dataset(self.dataset)
            self.dataset_gone = True
            self.after_step()

        # ---- pull and sync -----------------------------------------------------------

        @rule(name=st.sampled_from(STORES))
        def pull_step(self, name: str) -> None:
            figures.ran("pull_step")
            with contextlib.suppress(LocalstoreError):
                pull(self.stores[name], self.client, [] if self.dataset_gone else [self.dataset])
            self.after_step(name)

        @rule(name=st.sampled_from(STORES), fault=st.sampled_from(FAULTS), pick=st.integers(0, 99))
        def sync_step(self, name: str, fault: str, pick: int) -> None:
            figures.ran("sync_step")
            figures.syncs += 1
            figures.faults[fault] = figures.faults.get(fault, 0) + 1
            self.arm(fault, pick)
            try:
                report = sync(self.stores[name], self.client, concurrency=2)
            finally:
                server.adversary.reset()
                server.adversary.set_clock(freeze_updated_at=False)
            self.after_step(name)
            if fault in ("none", "frozen_clock") and report.exit_code in (0, 3):
                self.check_converged(name)

        def arm(self, fault: str, pick: int) -> None:
            adversary = server.adversary
            ids = self.server_ids()
            if fault == "fail_before_put":
                adversary.add(Rule("PUT", RECORD_PUTS, times=1 + pick % 3, effect="fail_before", status=503))
            elif fault == "lose_put_answer":
                adversary.add(Rule("PUT", RECORD_PUTS, skip=pick % 2, effect="apply_then_fail", status=502))
            elif fault == "drop_put":
                adversary.add(Rule("PUT", RECORD_PUTS, skip=pick % 2, effect="apply_then_drop"))
            elif fault == "second_put_fails":
                adversary.add(Rule("PUT", RECORD_PUTS, skip=1, times=None, effect="fail_before", status=503))
            elif fault == "lose_post_answer":
                adversary.add(Rule("POST", RECORDS, effect="apply_then_fail", status=500))
            elif fault == "drop_post":
                adversary.add(Rule("POST", RECORDS, effect="apply_then_drop"))
            elif fault == "lose_delete_answer":
                adversary.add(Rule(None, (BULK_DELETE, RECORD), effect="apply_then_fail", status=504))
            elif fault == "fail_listing":
                adversary.add(Rule("GET", RECORDS, times=None, effect="fail_before", status=503))
            elif fault == "pages_shift" and [i for i in ids if i not in self.unacknowledged()]:
                victims = [i for i in ids if i not in self.unacknowledged()][: 1 + pick % 2]

                def shift(state: Any) -> None:
                    state.bulk_delete(victims)
                    state.add_records(self.dataset, [{"payload": {"v": self.unique("Tshift")}, "properties": {}}])

                adversary.on_page(self.dataset, 1, self.log.as_teammate(shift))
            elif fault == "frozen_clock":
                adversary.set_clock(freeze_updated_at=True)

        @rule(name=st.sampled_from(STORES), key=st.sampled_from(KEYS), pick=st.integers(0, 99))
        def sync_while_a_put_is_held(self, name: str, key: str, pick: int) -> None:
            """A PUT of a record with local edits is held on the wire while the user edits
            that record again."""
            figures.ran("sync_while_a_put_is_held")
            import threading

            pending = sorted(rid for ids in ledger.records_to_check(self.stores[name].conn).values() for rid in ids)
            if not pending or self.dataset_gone:
                return
            rid = pending[pick % len(pending)]
            held = server.adversary.add(Rule("PUT", RECORD_PUTS, record_id=rid, hold=True))
            path = self.db(name)
            done: list[Any] = []

            def run() -> None:
                with Store.open(path) as store:
                    done.append(sync(store, self.client, concurrency=1))

            thread = threading.Thread(target=run)
            thread.start()
            try:
                while thread.is_alive() and not held.wait_entered(0.005):
                    pass
                if held.entered.is_set():
                    self.set_key_of(name, rid, key)
            finally:
                held.release()
                thread.join(60)
                server.adversary.reset()
            assert not thread.is_alive(), "the sync did not finish after the held PUT was released"
            figures.syncs += 1
            self.after_step(name)

        @precondition(lambda self: self.kills < 1)
        @rule(name=st.sampled_from(STORES), apply=st.booleans(), which=st.sampled_from(["PUT", "POST", "DELETE"]))
        def sync_killed(self, name: str, apply: bool, which: str) -> None:
            """SIGKILL the sync (a forked process) while one of its writes is held on the
            wire; the held write is then applied, or not. Once per history at most."""
            figures.ran("sync_killed")
            self.kills += 1
            path = {"PUT": RECORD_PUTS, "POST": RECORDS, "DELETE": (BULK_DELETE, RECORD)}[which]
            method = None if which == "DELETE" else which
            held = server.adversary.add(Rule(method, path, hold=True, effect="pass" if apply else "fail_before", status=503))
            pid = os.fork()
            if pid == 0:  # the child: a sync of its own, nothing shared but the file
                code = 0
                try:
                    with Store.open(self.db(name)) as store, Client(server.url, api_key, retry=FAST_RETRY) as client:
                        sync(store, client, concurrency=1)
                except BaseException:
                    code = 1
                os._exit(code)
            try:
                exited = False
                while not held.wait_entered(0.005):
                    if os.waitpid(pid, os.WNOHANG) != (0, 0):
                        exited = True
                        break
                if not exited:
                    figures.kills += 1
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            finally:
                held.release()
                server.adversary.reset()
            self.after_step(name)

        # ---- records as files (store A) -----------------------------------------------
        # Store A's user also edits a checkout of the dataset: saves (of the file as it is,
        # or of a stale editor buffer), removals, restores, new files, and the watcher's
        # "apply what changed, then refresh" step — sometimes SIGKILLed half way. A file
        # edit's intent is recorded once the watcher queued it, with the version the user
        # saw in the file (the buffer they saved) as its ``seen``.

        def files_dir(self) -> Path:
            if not hasattr(self, "checkout"):
                self.checkout = self.tmp / "A-files"
                self.file_pending: list[FileIntent] = []
                self.buffers: dict[str, dict[str, Any]] = {}  # rel -> an editor buffer
                self.removed_files: dict[str, tuple[bytes, list[FileIntent]]] = {}
                self.file_creates = 0
                self.file_kills = 0
                files.checkout(self.stores["A"], self.checkout)
            return self.checkout

        def record_files(self) -> list[str]:
            folder = self.files_dir() / self.dataset
            if not folder.is_dir():
                return []
            return sorted(f"{self.dataset}/{p.name}" for p in folder.glob("*.json")
                          if not p.name.endswith(".conflict.json") and canonical_uuid(p.stem))

        def seen_of_content(self, name: str, rid: str, content: dict[str, Any]) -> dict[str, int]:
            """The server version of each part of ``content`` (what the user saw in a file)."""
            parts = {"payload": canonical(content["payload"])}
            props = content["properties"]
            for key in {*KEYS, *props}:
                parts[key_part(key)] = canonical(props[key]) if key in props else MISSING
            unqueued = {(i.part, i.value): i for i in getattr(self, "file_pending", []) if i.kind == "edit"}
            seen: dict[str, int] = {}
            for part, value in parts.items():
                own = self.oracle.intents.get((name, rid, part))
                if own is not None and own.value == value and own.live:
                    seen[part] = own.seen.get(part, -1)
                elif (part, value) in unqueued:  # the user's own edit in the file, not queued yet
                    seen[part] = unqueued[(part, value)].seen.get(part, -1)
                elif (earlier := self.oracle.by_value.get((part, value))) is not None \
                        and (earlier.store, earlier.record_id) == (name, rid):
                    # an earlier edit of the user's own, shown by a file not refreshed since
                    # (values are unique): what they had seen when they made it
                    seen[part] = earlier.seen.get(part, -1)
                else:
                    seen[part] = self.log.version_of(rid, part, value)
            return seen

        @rule(pick=st.integers(0, 99))
        def file_open(self, pick: int) -> None:
            """The user's editor loads a file (saved later, maybe after the file was refreshed)."""
            figures.ran("file_open")
            rels = self.record_files()
            if rels:
                rel = rels[pick % len(rels)]
                self.buffers[rel] = json.loads((self.files_dir() / rel).read_text(encoding="utf-8"))

        @rule(pick=st.integers(0, 99), key=st.sampled_from(KEYS), what=st.sampled_from(["key", "payload"]),
              stale=st.booleans())
        def file_save(self, pick: int, key: str, what: str, stale: bool) -> None:
            figures.ran("file_save")
            rels = self.record_files()
            if not rels:
                return
            rel = rels[pick % len(rels)]
            path = self.files_dir() / rel
            buffer = self.buffers.get(rel) if stale else None
            if buffer is None:
                buffer = json.loads(path.read_text(encoding="utf-8"))
            rid = edits.resolve_record_id(self.stores["A"].conn, Path(rel).stem)
            seen = self.seen_of_content("A", rid, buffer)
            content = {"payload": dict(buffer["payload"]), "properties": dict(buffer["properties"])}
            if what == "payload":
                content["payload"] = {"v": self.unique("Afp")}
                part, value = "payload", canonical(content["payload"])
            else:
                content["properties"][key] = self.unique(f"Af{key}")
                part, value = key_part(key), canonical(content["properties"][key])
            path.write_text(json.dumps(content, indent=1), encoding="utf-8")
            self.buffers[rel] = content
            # edits of this file not yet queued that this save does not hold are gone with it
            self.file_pending = [i for i in self.file_pending
                                 if i.rel != rel or i.kind != "edit" or file_holds(content, i.part, i.value)]
            self.file_pending.append(FileIntent(rel, rid, "edit", part, value, seen))
            self.after_step("A")

        @rule(pick=st.integers(0, 99))
        def file_remove(self, pick: int) -> None:
            figures.ran("file_remove")
            rels = self.record_files()
            if not rels:
                return
            rel = rels[pick % len(rels)]
            path = self.files_dir() / rel
            data = path.read_bytes()
            rid = edits.resolve_record_id(self.stores["A"].conn, Path(rel).stem)
            seen = self.seen_of_content("A", rid, json.loads(data))
            self.removed_files[rel] = (data, [i for i in self.file_pending if i.rel == rel and i.kind == "edit"])
            path.unlink()
            self.file_pending = [i for i in self.file_pending if i.rel != rel]
            self.file_pending.append(FileIntent(rel, rid, "delete", "exists", GONE, seen))
            self.after_step("A")

        @rule(pick=st.integers(0, 99))
        def file_restore(self, pick: int) -> None:
            """A removed file put back (`git checkout -- FILE`)."""
            figures.ran("file_restore")
            rels = sorted(rel for rel in getattr(self, "removed_files", {}) if not (self.files_dir() / rel).exists())
            if not rels:
                return
            rel = rels[pick % len(rels)]
            data, unqueued = self.removed_files.pop(rel)
            (self.files_dir() / rel).write_bytes(data)  # with the edits it held, not queued yet
            # once its delete has synced, the file is a new *.json file: a create (README)
            self.oracle.asked.add(canonical(json.loads(data)["payload"]))
            rid = edits.resolve_record_id(self.stores["A"].conn, Path(rel).stem)
            self.file_pending = [i for i in self.file_pending if i.rel != rel] + unqueued
            self.file_pending.append(FileIntent(rel, rid, "restore", "exists", EXISTS, {}))
            self.after_step("A")

        @precondition(lambda self: not self.dataset_gone and getattr(self, "file_creates", 0) < 2)
        @rule()
        def file_create(self) -> None:
            figures.ran("file_create")
            self.files_dir()
            self.file_creates += 1
            payload, k1 = {"v": self.unique("Afnew")}, self.unique("Afnew")
            rel = f"{self.dataset}/new-{self.counter}.json"
            (self.files_dir() / self.dataset).mkdir(exist_ok=True)
            (self.files_dir() / rel).write_text(json.dumps({"payload": payload, "properties": {"k1": k1}}))
            self.oracle.creates.add(canonical(payload))
            self.oracle.asked.add(canonical(payload))
            self.file_pending.append(FileIntent(rel, None, "create", "payload", canonical(payload), {}, canonical(k1)))
            self.after_step("A")

        def files_apply(self, store: Store) -> None:
            """What the watcher does on its loop: apply every changed file (a removed one
            at once: no grace here), refresh the folder from the store, merge held and
            refused files again."""
            co = files.Checkout.open(store, self.files_dir())
            with co.locked():
                for change in co.scan():
                    co.apply(change.path)
                co.refresh()
                for rel in sorted({*co.refused, *(r for r, e in co.files.items() if e.held)}):
                    co.apply(co.root / rel)
                co.save()

        @rule()
        def files_watch(self) -> None:
            figures.ran("files_watch")
            self.files_apply(self.stores["A"])
            self.resolve_file_intents()
            self.after_step("A")

        @precondition(lambda self: getattr(self, "file_kills", 0) < 2)
        @rule(point=st.integers(1, 4))
        def files_watch_killed(self, point: int) -> None:
            """The watcher's step in a forked process, SIGKILLed right after its
            ``point``-th commit or manifest write (if it gets that far)."""
            figures.ran("files_watch_killed")
            self.files_dir()
            self.file_kills += 1
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: nothing shared with the parent but the files
                os.close(read_end)
                code = 0
                try:
                    _arm_checkpoints(point, write_end)
                    with Store.open(self.db("A")) as store:
                        self.files_apply(store)
                except BaseException:
                    code = 1
                os._exit(code)
            os.close(write_end)
            try:
                ready, _, _ = select.select([read_end], [], [], 60)
                if ready and os.read(read_end, 1) == b"k":
                    figures.kills += 1
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            finally:
                os.close(read_end)
            self.resolve_file_intents()
            self.after_step("A")

        def resolve_file_intents(self) -> None:
            """Right after a watcher step: the file intents it queued become the user's
            intents (made now, so no earlier write can count as theirs)."""
            if not hasattr(self, "file_pending"):
                return
            conn = self.stores["A"].conn
            view = records_view(self.stores["A"].conn, self.dataset)
            made = len(self.log.writes)
            keep: list[FileIntent] = []
            for i in self.file_pending:
                if i.kind == "create":
                    found = [rid for rid, r in view.items() if r["payload"] == i.value]
                    if not found:
                        keep.append(i)
                        continue
                    self.oracle.intend(Intent("A", found[0], "payload", i.value, {}, made))
                    self.oracle.intend(Intent("A", found[0], key_part("k1"), str(i.extra), {}, made))
                    continue
                assert i.record_id is not None
                rid = edits.resolve_record_id(conn, i.record_id)
                deleted = conn.execute(
                    "SELECT deleted FROM working WHERE record_id = ? AND deleted = 1", (rid,)
                ).fetchone() is not None
                if i.kind == "edit":
                    record = view.get(rid)
                    if record is not None and file_holds(
                        {"payload": json.loads(record["payload"]), "properties": json.loads(record["properties"])},
                        i.part, i.value,
                    ):
                        self.oracle.intend(Intent("A", rid, i.part, i.value, i.seen, made))
                    elif record is not None or deleted:
                        # held, or refused while the record is deleted here: merged again
                        # later (after a revert of the delete, say)
                        keep.append(i)
                elif i.kind == "delete":
                    if deleted:
                        self.oracle.drop("A", rid)
                        self.oracle.intend(Intent("A", rid, "exists", GONE, i.seen, made))
                    elif rid not in view:
                        self.oracle.drop("A", rid)  # an unsent create dropped, or gone anyway
                    else:
                        keep.append(i)
                elif not deleted:  # a restore: the delete is undone
                    intent = self.oracle.intents.get(("A", rid, "exists"))
                    if intent is not None:
                        intent.live = False
            self.file_pending = keep

        # ---- the end -----------------------------------------------------------------

        def check_converged(self, name: str) -> None:
            local = records_view(self.stores[name].conn, self.dataset)
            state = StoreState.read(self.stores[name].conn)
            remote = {} if self.dataset_gone else {
                r["id"]: {"payload": canonical(r["payload"]), "properties": canonical(r["properties"])}
                for r in server.state.list_records(self.dataset)
            }
            busy = state.open | state.conflicts
            for rid in (local.keys() | remote.keys()) - busy:
                mine = local.get(rid)
                theirs = remote.get(rid)
                assert (None if mine is None else {k: mine[k] for k in ("payload", "properties")}) == theirs, (
                    f"store {name} after a quiet sync: {rid} is {mine} here and {theirs} on the server"
                )

        def settle_everything(self) -> None:
            """Quiet syncs, every conflict resolved, quiet syncs: every store equals the server."""
            for name in STORES:
                sync(self.stores[name], self.client)
                self.after_step(name)
            for i, name in enumerate(STORES):
                for row in self.stores[name].query("SELECT record_id FROM working WHERE state = 'conflict'"):
                    self.resolve_one(name, row["record_id"], ours=bool(i % 2))
                sync(self.stores[name], self.client)
                self.after_step(name)
            for name in STORES:
                report = sync(self.stores[name], self.client)
                assert report.exit_code == 0, report
                self.after_step(name)
                self.check_converged(name)
                assert self.stores[name].scalar(
                    "SELECT count(*) FROM changes WHERE state IN ('pending', 'in_flight')"
                ) == 0

    return SyncModel


@pytest.fixture(scope="module")
def model_server() -> Iterator[EmulatorServer]:
    with EmulatorServer() as server:
        yield server


@pytest.mark.timeout(900)
def test_sync_keeps_its_promises_under_an_adversary(
    model_server: EmulatorServer, api_key: str, drill_figures: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pages of two records: a handful of records make a listing of several pages, so
    # records deleted while it is read shift the later ones
    monkeypatch.setattr(listing, "PAGE_SIZE", 2)
    figures = Figures()
    client = Client(model_server.url, api_key, retry=FAST_RETRY)
    machine = make_machine(model_server, api_key, client, figures)
    try:
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=HISTORIES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            ),
        )
    finally:
        client.close()
        drill_figures.record(histories=figures.histories, steps=figures.steps, syncs=figures.syncs,
                             kills=figures.kills, conflicts=figures.conflicts,
                             unconfirmed_creates=figures.unconfirmed, faults=dict(figures.faults),
                             rules=dict(figures.rules))
    assert figures.histories >= min(HISTORIES, 500)
