"""Records as files: ``checkout``, the watchfiles watcher and ``edit`` in $EDITOR.

Watchers run for real on temporary folders (in a thread, or as a ``localstore watch``
subprocess). Every wait is bounded and waits for a state (a store condition, a message,
a file); no sleep is used as an assertion.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.wait import wait_until

from localstore import files
from localstore.api import Client, RetryPolicy
from localstore.core.jsonvalue import pretty
from localstore.errors import UsageError
from localstore.files.manifest import MANIFEST_NAME, OBJECTS_NAME
from localstore.files.parse import FileProblem, parse_record
from localstore.ops import queries as views
from localstore.ops.edits import delete_records, edit_record
from localstore.ops.resolve import resolve
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

WAIT = 30.0  # upper bound of every wait; a passing test waits far less
CLI = [sys.executable, "-c", "from localstore.cli import main; main()"]




# ------------------------------------------------------------------ fixtures


class Env:
    """A store mirroring one fresh dataset of the session emulator."""

    def __init__(self, tmp: Path, emulator: EmulatorServer, api_key: str, dataset_id: str) -> None:
        self.tmp, self.emulator, self.api_key, self.ds = tmp, emulator, api_key, dataset_id
        self.db = tmp / "store.db"
        self.dir = tmp / "records"
        self.store = Store.open(self.db)
        with self.client() as client:
            pull(self.store, client, [dataset_id])

    def client(self, url: str | None = None) -> Client:
        return Client(url or self.emulator.url, self.api_key, retry=RetryPolicy.never())

    def ids(self) -> list[str]:
        return [r["id"] for r in views.list_records(self.store, self.ds)]

    def path(self, rid: str) -> Path:
        return self.dir / self.ds / f"{rid}.json"

    def record(self, rid: str) -> dict[str, Any]:
        return views.get_record(self.store, rid)

    def status(self) -> views.Status:
        return views.status(self.store)


@pytest.fixture
def make_env(tmp_path: Path, emulator: EmulatorServer, api_key: str, dataset) -> Iterator[Callable[[int], Env]]:
    made: list[Env] = []

    def make(n: int = 3) -> Env:
        env = Env(tmp_path, emulator, api_key, dataset(n))
        made.append(env)
        return env

    yield make
    for env in made:
        env.store.close()


class Watcher:
    """``files.watch`` in a thread on its own store connection, collecting messages."""

    def __init__(self, env: Env, **kw: Any) -> None:
        self.messages: list[str] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(env, kw), daemon=True)
        self.thread.start()
        assert self.ready.wait(WAIT), "the watcher did not start"
        if self.error:
            raise self.error

    def _run(self, env: Env, kw: dict[str, Any]) -> None:
        try:
            with Store.open(env.db) as store:
                files.watch(store, env.dir, stop_event=self.stop, on_message=self.messages.append,
                            ready=self.ready.set, debounce_ms=200, tick_ms=100, **kw)
        except BaseException as exc:
            self.error = exc
            self.ready.set()

    def said(self, needle: str) -> list[str]:
        return [m for m in list(self.messages) if needle in m]

    def wait_said(self, needle: str) -> str:
        return wait_until(lambda: (self.said(needle) or [None])[0], f"a message with {needle!r}")

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "the watcher did not stop"
        if self.error:
            raise self.error
        assert self.messages[-1].startswith("stopped watching")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1), encoding="utf-8")


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------ checkout


def test_checkout_layout_and_format(make_env: Callable[[int], Env]) -> None:
    env = make_env(3)
    report = files.checkout(env.store, env.dir)
    assert (report.records, report.written, report.unchanged) == (3, 3, 0)
    assert sorted(p.name for p in env.dir.iterdir()) == [
        MANIFEST_NAME, ".localstore-checkout.lock", OBJECTS_NAME, env.ds
    ]
    for rid in env.ids():
        record = env.record(rid)
        text = env.path(rid).read_text(encoding="utf-8")
        assert text == pretty({"payload": record["payload"], "properties": record["properties"]})
        assert text.endswith("}\n") and text.startswith('{\n  "payload": {')
        assert list(json.loads(text)) == ["payload", "properties"]
    assert sorted(p.stem for p in (env.dir / env.ds).iterdir()) == sorted(env.ids())

    again = files.checkout(env.store, env.dir)
    assert (again.written, again.unchanged, again.removed) == (0, 3, 0)

    # a record changed locally is refreshed; one edited on disk is kept, never overwritten
    first, second, third = env.ids()
    edit_record(env.store, first, properties={"label": "from the store"})
    write_json(env.path(second), {"payload": {"mine": True}, "properties": {}})
    report = files.checkout(env.store, env.dir)
    assert read_json(env.path(first))["properties"] == {"label": "from the store"}
    assert read_json(env.path(second)) == {"payload": {"mine": True}, "properties": {}}
    assert report.written == 1 and len(report.kept) == 0  # second's record did not change

    # records gone from the store: an untouched file goes, an edited one stays
    env.emulator.state.bulk_delete([second, third])
    with env.client() as client:
        pull(env.store, client, [env.ds])
    report = files.checkout(env.store, env.dir)
    assert report.removed == 1 and not env.path(third).exists()
    assert env.path(second).exists() and any(str(env.path(second)) in k for k in report.kept)


def test_checkout_one_dataset_and_bad_dataset_ids(make_env: Callable[[int], Env], dataset) -> None:
    env = make_env(2)
    with pytest.raises(UsageError, match="not a valid dataset id"):
        files.checkout(env.store, env.dir, dataset_id="../../etc")
    with pytest.raises(UsageError, match="not in the store"):
        files.checkout(env.store, env.dir, dataset_id="3fa85f64-5717-4562-b3fc-2c963f66afa6")
    report = files.checkout(env.store, env.dir, dataset_id=env.ds)
    assert report.records == 2 and sorted(p.name for p in env.dir.iterdir() if not p.name.startswith(".")) == [env.ds]


def test_checkout_never_follows_symlinks(make_env: Callable[[int], Env], tmp_path: Path) -> None:
    env = make_env(2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env.dir.mkdir()
    (env.dir / env.ds).symlink_to(elsewhere, target_is_directory=True)
    report = files.checkout(env.store, env.dir)
    assert report.written == 0 and list(elsewhere.iterdir()) == []
    assert any("symbolic link" in line and env.ds in line for line in report.skipped)

    (env.dir / env.ds).unlink()
    files.checkout(env.store, env.dir)
    first = env.ids()[0]
    secret = tmp_path / "secret.txt"
    secret.write_text("do not touch\n")
    env.path(first).unlink()
    env.path(first).symlink_to(secret)
    edit_record(env.store, first, properties={"changed": 1})
    report = files.checkout(env.store, env.dir)
    assert secret.read_text() == "do not touch\n" and env.path(first).is_symlink()
    assert any("symbolic link" in line for line in report.skipped)

    link = tmp_path / "link"
    link.symlink_to(env.dir, target_is_directory=True)
    with pytest.raises(UsageError, match="symbolic link"):
        files.checkout(env.store, link)


def test_path_traversal_is_impossible(make_env: Callable[[int], Env], tmp_path: Path) -> None:
    env = make_env(1)
    # a damaged store holding ids that are not UUIDs never makes paths from them
    with env.store.transaction() as conn:
        conn.execute("INSERT INTO datasets (id, tracked) VALUES ('../../escape', 1)")
        for rid, ds in (("../../../evil", env.ds), ("ok-looking", "../../escape")):
            conn.execute(
                """INSERT INTO mirror (id, dataset_id, created_at, updated_at, source, payload, properties)
                   VALUES (?, ?, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', 'DIRECT_INPUT', '{}', '{}')""",
                (rid, ds),
            )
    def outside() -> list[Path]:
        return sorted(p for p in tmp_path.rglob("*") if env.dir not in (p, *p.parents) and "store.db" not in p.name)

    before = outside()
    report = files.checkout(env.store, env.dir)
    after = outside()
    assert after == before and report.records == 1
    assert sum("not a UUID" in line for line in report.skipped) == 2
    assert {p.relative_to(env.dir).parts[0] for p in env.dir.iterdir()} == {
        env.ds, MANIFEST_NAME, ".localstore-checkout.lock", OBJECTS_NAME
    }

    # a tampered manifest cannot point outside either
    manifest = json.loads((env.dir / MANIFEST_NAME).read_text())
    manifest["files"]["../../outside.json"] = {"id": env.ids()[0], "sha256": "x", "content": "y"}
    (env.dir / MANIFEST_NAME).write_text(json.dumps(manifest))
    outside = tmp_path / "outside.json"
    outside.write_text("{}")
    files.checkout(env.store, env.dir)
    assert outside.read_text() == "{}"
    # files outside the folder, or not in a dataset folder, are not record files
    assert files.apply_file_event(env.store, env.dir, outside).action == "ignored"
    (env.dir / "not-a-dataset").mkdir()
    stray = env.dir / "not-a-dataset" / "x.json"
    stray.write_text('{"payload": {}, "properties": {}}')
    assert files.apply_file_event(env.store, env.dir, stray).action == "ignored"
    assert env.status().pending == 0


def test_parse_record_reports_line_and_column() -> None:
    cases = {
        b'{"payload": {},\n "properties": {}': (2, 18, "Expecting ',' delimiter"),
        b'[1, 2]': (1, 1, "not a JSON list"),
        b'{"payload": {},\n  "properties": {},\n  "extra": 1}': (3, 3, 'unexpected key "extra"'),
        b'{"payload": [],\n "properties": {}}': (1, 13, '"payload" must be a JSON object'),
        b'  {"payload": {}}': (1, 3, 'missing "properties"'),
        b'{"payload": {"x": NaN}, "properties": {}}': (1, 19, "NaN is not allowed"),
        b'{"payload": {}, "payload": {}, "properties": {}}': (1, 17, 'duplicate key "payload"'),
    }
    for data, (line, col, message) in cases.items():
        with pytest.raises(FileProblem) as caught:
            parse_record(data, "f.json")
        assert (caught.value.line, caught.value.col) == (line, col), data
        assert message in caught.value.message and str(caught.value).startswith(f"f.json:{line}:{col}: ")
    assert parse_record(b'\xef\xbb\xbf{"payload": {"a": 1}, "properties": {}}', "f") == ({"a": 1}, {})


# ------------------------------------------------------------------ the watcher


@pytest.mark.parametrize("part", ["payload", "properties", "both"])
def test_watch_edit_queues_exactly_what_differs(make_env: Callable[[int], Env], part: str) -> None:
    env = make_env(2)
    files.checkout(env.store, env.dir)
    rid = env.ids()[0]
    with Watcher(env) as w:
        content = read_json(env.path(rid))
        if part in ("payload", "both"):
            content["payload"]["messages"].append({"role": "user", "content": "one more thing"})
        if part in ("properties", "both"):
            content["properties"]["label"] = "checked by hand"
        write_json(env.path(rid), content)
        want = ["payload", "properties"] if part == "both" else [part]
        wait_until(lambda: sorted(env.record(rid)["pending"]) == want, f"a pending {want} change")
        w.wait_said(f"queued {' and '.join(want)} change")
    record = env.record(rid)
    assert {"payload": record["payload"], "properties": record["properties"]} == content
    assert env.status().pending_records == {"update": 1}


def test_watch_never_reverts_what_changed_in_the_store_meanwhile(make_env: Callable[[int], Env]) -> None:
    env = make_env(3)
    files.checkout(env.store, env.dir)
    a, b, c = env.ids()
    # files edited while no watcher runs; meanwhile the server changed both records' payload
    # and a pull brought that into the store
    mine_a = read_json(env.path(a))
    mine_a["properties"]["label"] = "mine"
    write_json(env.path(a), mine_a)
    mine_b = read_json(env.path(b))
    mine_b["payload"] = {"messages": [{"role": "user", "content": "mine"}]}
    write_json(env.path(b), mine_b)
    original_c = env.path(c).read_bytes()
    write_json(env.path(c), {**read_json(env.path(c)), "payload": {"mine": "c"}})
    theirs = {"messages": [{"role": "user", "content": "theirs"}]}
    for rid in (a, b, c):
        env.emulator.state.update_payload(rid, theirs)
    with env.client() as client:
        pull(env.store, client, [env.ds])
    with Watcher(env) as w:
        # a: only the part edited in the file is queued; the newer payload stands and reaches the file
        wait_until(lambda: env.record(a)["pending"] == ["properties"], "a's properties edit")
        assert env.record(a)["payload"] == theirs
        want_a = {"payload": theirs, "properties": mine_a["properties"]}
        wait_until(lambda: read_json(env.path(a)) == want_a, "a's file refreshed from the store")
        # b: the payload changed in the file and in the store: held, not queued, file kept
        w.wait_said(f"{b}.json: not queued: the payload also changed in the store")
        assert env.record(b)["pending"] == [] and read_json(env.path(b)) == mine_b
        # saving it again changes nothing: it still clashes with the store's payload
        write_json(env.path(b), {**mine_b, "properties": {**mine_b["properties"], "x": 1}})
        w.wait_said(f"{b}.json: not queued: the payload also changed in the store")
        wait_until(lambda: len(w.said(f"{b}.json: not queued")) == 2, "the second save held too")
        assert env.record(b)["pending"] == []
        # the user keeps theirs from the command line: the file then merges cleanly
        edit_record(env.store, b, payload=mine_b["payload"])
        wait_until(lambda: env.record(b)["pending"] == ["payload", "properties"], "b's property after the set")
        # c: held too, then the edit is undone: the file takes the store's version, nothing queued
        w.wait_said(f"{c}.json: not queued")
        env.path(c).write_bytes(original_c)
        wait_until(lambda: read_json(env.path(c))["payload"] == theirs, "c's file refreshed")
    assert env.record(b)["payload"] == mine_b["payload"] and env.record(b)["properties"]["x"] == 1
    assert env.record(c)["pending"] == [] and env.record(c)["payload"] == theirs


def test_watch_delete_file_queues_a_delete(make_env: Callable[[int], Env]) -> None:
    env = make_env(3)
    files.checkout(env.store, env.dir)
    rid = env.ids()[1]
    with Watcher(env) as w:
        with pytest.raises(UsageError, match="another `localstore watch`"):
            files.checkout(env.store, env.dir)  # one watcher or checkout per folder
        saved = env.path(rid).read_bytes()
        env.path(rid).unlink()
        wait_until(lambda: env.status().pending_records == {"delete": 1}, "a pending delete")
        w.wait_said(f"queued delete of {rid}")
        assert rid not in env.ids()
        env.path(rid).write_bytes(saved)  # e.g. `git checkout -- FILE`
        wait_until(lambda: env.status().pending == 0, "the delete undone")
        w.wait_said("delete undone")
    assert rid in env.ids()


def _watch_step(env: Env) -> list[files.FileOutcome]:
    """One pass of the watcher's loop (as ``files.watch`` runs it), without the timing."""
    co = files.Checkout.open(env.store, env.dir)
    with co.locked():
        outcomes = [co.apply(change.path) for change in co.scan()]
        co.refresh()
        outcomes += [co.apply(co.root / rel) for rel in sorted({*co.refused, *(r for r, e in co.files.items() if e.held)})]
        co.save()
    return outcomes


@pytest.mark.parametrize("deleted_by", ["me", "teammate"])
def test_the_file_of_a_deleted_record_never_brings_it_back(make_env: Callable[[int], Env], deleted_by: str) -> None:
    """A file edited, then its record deleted (`localstore rm` and a sync, or a teammate
    and a pull): the file is left alone and said to be refused, never created anew as
    another record (found by the model-based test of sync)."""
    env = make_env(2)
    files.checkout(env.store, env.dir)
    rid = env.ids()[0]
    edited = read_json(env.path(rid))
    edited["properties"]["label"] = "mine"
    write_json(env.path(rid), edited)
    with env.client() as client:
        if deleted_by == "me":
            delete_records(env.store, [rid])
            assert [o.action for o in _watch_step(env)] == ["refused", "refused"]  # deleted here: not undone
            sync(env.store, client)
        else:
            env.emulator.state.bulk_delete([rid])
            pull(env.store, client, [env.ds])
    outcomes = _watch_step(env)
    refused = [o for o in outcomes if o.action == "refused" and o.message]
    assert refused and "no longer in the store" in refused[0].message, outcomes
    assert not [o for o in outcomes if o.action == "created"]
    assert len(env.emulator.state.list_records(env.ds)) == 1 and env.status().pending == 0
    assert read_json(env.path(rid)) == edited  # the user's content is kept
    env.path(rid).unlink()  # removing the file lets it go
    _watch_step(env)
    assert not _watch_step(env) and env.status().pending == 0


def test_watch_removed_dataset_folder_deletes_nothing(make_env: Callable[[int], Env]) -> None:
    env = make_env(3)
    files.checkout(env.store, env.dir)
    folder = env.dir / env.ds
    with Watcher(env) as w:
        shutil.rmtree(folder)
        w.wait_said(f"{env.ds}/ was removed: its 3 record(s) are not deleted")
        wait_until(lambda: len(list(folder.glob("*.json"))) == 3, "the folder written again")
    assert env.status().pending == 0 and not w.said("queued delete")


def test_watch_new_file_is_created_and_renamed_after_sync(make_env: Callable[[int], Env]) -> None:
    env = make_env(1)
    files.checkout(env.store, env.dir)
    new = env.dir / env.ds / "my new record.json"
    body = {"payload": {"messages": [{"role": "user", "content": "hello"}]}, "properties": {"label": "new"}}
    with Watcher(env, client_factory=env.client, sync_every=0.2) as w:
        write_json(new, body)
        w.wait_said("queued create")
        renamed = w.wait_said("renamed")
        server_id = renamed.split("/")[-1].split(".json")[0]
        assert not new.exists() and read_json(env.path(server_id)) == body
    on_server = env.emulator.state.get_record(server_id)
    assert on_server is not None and on_server["payload"] == body["payload"]
    assert on_server["properties"] == body["properties"] and env.status().pending == 0


def test_watch_invalid_json_is_reported_and_queues_nothing(make_env: Callable[[int], Env]) -> None:
    env = make_env(2)
    files.checkout(env.store, env.dir)
    rid = env.ids()[0]
    path = env.path(rid)
    with Watcher(env) as w:
        good = read_json(path)
        good["properties"]["label"] = "good"
        write_json(path, good)
        wait_until(lambda: env.record(rid)["properties"].get("label") == "good", "the good edit")

        text = path.read_text().replace('"good"', "good", 1)  # a string without quotes
        path.write_text(text)
        at = text.index("good")
        line, col = text[:at].count("\n") + 1, at - text.rfind("\n", 0, at)
        message = w.wait_said(f"{path}:{line}:{col}: Expecting value")
        assert message.endswith("nothing queued")
        assert env.record(rid)["properties"]["label"] == "good"  # the last good state
        assert env.status().pending_by_kind == {"properties": 1}

        good["properties"]["label"] = "fixed"
        write_json(path, good)
        wait_until(lambda: env.record(rid)["properties"].get("label") == "fixed", "the fixed edit")
    assert env.status().pending_by_kind == {"properties": 1}


def test_watch_wrong_shape_is_reported_and_queues_nothing(make_env: Callable[[int], Env]) -> None:
    env = make_env(3)
    files.checkout(env.store, env.dir)
    a, b, c = env.ids()
    with Watcher(env) as w:
        env.path(a).write_text('{\n  "payload": {},\n  "properties": {},\n  "label": "x"\n}\n')
        w.wait_said(f'{env.path(a)}:4:3: unexpected key "label"')
        env.path(b).write_text('{"payload": "just text", "properties": {}}')
        w.wait_said(f'{env.path(b)}:1:13: "payload" must be a JSON object')
        env.path(c).write_text('["payload", "properties"]')
        w.wait_said(f"{env.path(c)}:1:1: a record file holds")
        (env.dir / env.ds / "new.json").write_text('{"payload": {}}')
        w.wait_said('new.json:1:1: missing "properties"')
    assert env.status().pending == 0


def test_watch_atomic_saves_and_vim_backups_count_once(make_env: Callable[[int], Env]) -> None:
    env = make_env(2)
    files.checkout(env.store, env.dir)
    a, b = env.ids()
    with Watcher(env) as w:
        content = read_json(env.path(a))
        content["properties"]["label"] = "atomic"
        atomic_write(env.path(a), json.dumps(content))
        # vim without backupcopy: the file is renamed to a backup, rewritten, backup removed
        other = read_json(env.path(b))
        other["properties"]["label"] = "vim"
        backup = env.path(b).with_name(env.path(b).name + "~")
        os.rename(env.path(b), backup)
        (env.dir / env.ds / f".{b}.json.swp").write_text("swap")
        write_json(env.path(b), other)
        backup.unlink()
        wait_until(
            lambda: env.record(a)["properties"].get("label") == "atomic"
            and env.record(b)["properties"].get("label") == "vim",
            "both edits",
        )
        assert not w.said("queued delete") and not w.said("swp")
    assert env.status().pending_records == {"update": 2}
    assert env.status().pending_by_kind == {"properties": 2}


def test_watch_burst_of_saves_is_one_pending_change(make_env: Callable[[int], Env]) -> None:
    env = make_env(1)
    files.checkout(env.store, env.dir)
    rid = env.ids()[0]
    with Watcher(env):
        content = read_json(env.path(rid))
        for i in range(5):
            content["properties"]["draft"] = i
            write_json(env.path(rid), content)
        wait_until(lambda: env.record(rid)["properties"].get("draft") == 4, "the last save")
        # saving the same content again queues nothing more
        atomic_write(env.path(rid), json.dumps(content))
        write_json(env.path(rid), content)
    status = env.status()
    assert status.pending == 1 and status.pending_by_kind == {"properties": 1}


def test_watch_skips_symlinks(make_env: Callable[[int], Env], tmp_path: Path) -> None:
    env = make_env(2)
    files.checkout(env.store, env.dir)
    a, _ = env.ids()
    secret = tmp_path / "secret.json"
    secret.write_text('{"payload": {"stolen": true}, "properties": {}}')
    with Watcher(env) as w:
        env.path(a).unlink()
        env.path(a).symlink_to(secret)
        w.wait_said(f"skipped {env.path(a)} is a symbolic link")
        (env.dir / env.ds / "linked.json").symlink_to(secret)
        w.wait_said("linked.json is a symbolic link")
    assert env.status().pending == 0 and "stolen" not in json.dumps(env.record(a)["payload"])


def test_watch_conflict_file_appears_and_goes_once_resolved(make_env: Callable[[int], Env]) -> None:
    env = make_env(2)
    files.checkout(env.store, env.dir)
    rid = env.ids()[0]
    conflict = env.dir / env.ds / f"{rid}.conflict.json"
    with Watcher(env) as w:
        mine = read_json(env.path(rid))
        mine["payload"] = {"messages": [{"role": "user", "content": "mine"}]}
        write_json(env.path(rid), mine)
        wait_until(lambda: env.record(rid)["pending"] == ["payload"], "the local edit")
        theirs = {"messages": [{"role": "user", "content": "theirs"}]}
        env.emulator.state.update_payload(rid, theirs)
        with env.client() as client:
            assert sync(env.store, client).open_conflicts == 1  # another process syncs
        wait_until(conflict.exists, "the conflict file")
        w.wait_said(f"conflict on {rid}")
        body = read_json(conflict)
        assert body["local"]["payload"] == mine["payload"] and body["remote"]["payload"] == theirs
        assert body["base"]["payload"] != theirs and body["parts"] == ["/payload"]

        resolve(env.store, rid, "theirs")
        wait_until(lambda: not conflict.exists(), "the conflict file to go")
        wait_until(lambda: read_json(env.path(rid))["payload"] == theirs, "the file to take the remote")
        w.wait_said("conflict settled")
    assert env.status().conflicts == 0 and env.status().pending == 0


def test_watch_sync_every_is_quiet_during_an_outage(make_env: Callable[[int], Env]) -> None:
    env = make_env(1)
    files.checkout(env.store, env.dir)
    target = {"url": closed_port_url()}
    attempts: list[str] = []

    def factory() -> Client:
        attempts.append(target["url"])
        return env.client(target["url"])

    with Watcher(env, client_factory=factory, sync_every=0.05) as w:
        wait_until(lambda: len(attempts) >= 5, "five failed syncs")
        assert len(w.said("sync failed")) == 1
        target["url"] = env.emulator.url
        w.wait_said("the API answers again")
        target["url"] = closed_port_url()
        seen = len(attempts)
        wait_until(lambda: len(attempts) >= seen + 4, "four more failed syncs")
        assert len(w.said("sync failed")) == 2 and len(w.said("answers again")) == 1
    assert not [m for m in w.messages if "Traceback" in m]


# ------------------------------------------------------------------ CLI subprocesses


def cli_env(env: Env, server_url: str | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if k not in ("VISUAL", "EDITOR")}
    out.update(
        MISTRAL_API_KEY=env.api_key,
        LOCALSTORE_SERVER_URL=server_url or env.emulator.url,
        LOCALSTORE_DB=str(env.db),
        NO_COLOR="1",
    )
    return out


def run_cli(env: Env, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env={**cli_env(env), **(extra or {})}, capture_output=True, text=True, timeout=120
    )


class CliWatcher:
    """``localstore watch`` as a subprocess, its output collected by a reader thread."""

    def __init__(self, env: Env, *args: str, server_url: str | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*CLI, "watch", str(env.dir), *args], env=cli_env(env, server_url),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_until(lambda: self.said("watching"), "the watcher to start")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, needle: str) -> list[str]:
        return [line for line in list(self.lines) if needle in line]

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(WAIT)
        self.reader.join(WAIT)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)


def test_cli_watch_outage_then_ctrl_c(make_env: Callable[[int], Env]) -> None:
    env = make_env(1)
    assert run_cli(env, "checkout", str(env.dir)).returncode == 0
    watcher = CliWatcher(env, "--sync-every", "0.1", server_url=closed_port_url())
    try:
        failed = "SELECT count(*) FROM sync_runs WHERE status = 'failed'"
        wait_until(lambda: env.store.scalar(failed) >= 3, "three failed syncs")
        code, stderr = watcher.interrupt()
    finally:
        watcher.kill()
    assert code == 0 and stderr == ""
    assert len(watcher.said("sync failed")) == 1
    assert watcher.lines[-1] == f"stopped watching {env.dir.resolve()}"


EDITOR_SCRIPT = """
import json, os, sys
path, mode = sys.argv[1], os.environ["EDIT_MODE"]
if mode == "same":
    text = open(path).read()
    open(path, "w").write(text)
elif mode == "invalid":
    open(path, "w").write('{"payload": {"messages": [}\\n')
elif mode == "change":
    record = json.load(open(path))
    record["payload"]["note"] = "edited in the editor"
    record["properties"]["label"] = "edited"
    json.dump(record, open(path, "w"))
"""


@pytest.fixture
def editor(tmp_path: Path) -> dict[str, str]:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR_SCRIPT)
    wrapper = tmp_path / "editor.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    return {"EDITOR": str(wrapper)}


@pytest.mark.parametrize("mode", ["noop", "same"])
def test_edit_in_editor_unchanged_queues_nothing(make_env: Callable[[int], Env], editor: dict[str, str], mode: str) -> None:
    env = make_env(1)
    rid = env.ids()[0]
    result = run_cli(env, "edit", rid, extra={**editor, "EDIT_MODE": mode})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"no change to {rid}: nothing queued\n"
    assert env.status().pending == 0


def test_edit_in_editor_invalid_queues_nothing(make_env: Callable[[int], Env], editor: dict[str, str]) -> None:
    env = make_env(1)
    rid = env.ids()[0]
    kept_dir = env.tmp / "tmpdir"
    kept_dir.mkdir()
    result = run_cli(env, "edit", rid, extra={**editor, "EDIT_MODE": "invalid", "TMPDIR": str(kept_dir)})
    assert result.returncode == 1 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "not valid JSON" in result.stderr and "nothing" in result.stderr
    assert env.status().pending == 0
    [kept] = kept_dir.iterdir()  # the buffer is not lost
    assert kept.read_text() == '{"payload": {"messages": [}\n' and str(kept) in result.stderr


def test_edit_in_editor_changed_queues_the_change(make_env: Callable[[int], Env], editor: dict[str, str]) -> None:
    env = make_env(1)
    rid = env.ids()[0]
    result = run_cli(env, "edit", rid, extra={**editor, "EDIT_MODE": "change"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"queued payload and properties change for {rid}\n"
    record = env.record(rid)
    assert record["payload"]["note"] == "edited in the editor" and record["properties"]["label"] == "edited"
    assert sorted(record["pending"]) == ["payload", "properties"]


# ------------------------------------------------------------------ acceptance


def test_acceptance_checkout_1000_edit_watch_sync(
    tmp_path: Path, emulator: EmulatorServer, api_key: str, dataset
) -> None:
    from mistralai.client import Mistral

    ds = dataset(1000)
    env = Env.__new__(Env)
    env.tmp, env.emulator, env.api_key, env.ds = tmp_path, emulator, api_key, ds
    env.db, env.dir = tmp_path / "store.db", tmp_path / "records"
    for args in (("pull", ds), ("checkout", str(env.dir))):
        done = run_cli(env, *args)
        assert done.returncode == 0, done.stderr
    folder = env.dir / ds
    paths = sorted(folder.glob("*.json"))
    assert len(paths) == 1000
    originals = {p.stem: read_json(p) for p in paths}

    watcher = CliWatcher(env)
    try:
        expected: dict[str, Any] = {}
        for i, path in enumerate(paths[:10]):
            content = read_json(path)
            if i % 2:
                content["properties"]["label"] = f"reviewed-{i}"
            else:
                content["payload"]["messages"][-1]["content"] += " (edited)"
            expected[path.stem] = content
            (atomic_write(path, json.dumps(content)) if i % 3 else write_json(path, content))
        for path in paths[10:12]:
            path.unlink()
        new_body = {"payload": {"messages": [{"role": "user", "content": "brand new"}]}, "properties": {"label": "new"}}
        write_json(folder / "new-record.json", new_body)
        invalid = paths[12]
        invalid.write_text('{"payload": {"messages": []},\n  "properties": {"label": oops}\n}\n')

        env.store = Store.open(env.db)
        wait_until(
            lambda: env.status().pending_records == {"update": 10, "delete": 2, "create": 1}
            and watcher.said(f"{invalid}:2:"),
            "10 updates, 2 deletes, 1 create and the invalid file reported",
        )
        status = run_cli(env, "status", "--json")
        assert status.returncode == 0
        assert json.loads(status.stdout)["pending_records"] == {"update": 10, "delete": 2, "create": 1}

        synced = run_cli(env, "sync")
        assert synced.returncode == 0, synced.stderr
        assert "pushed 13 (created 1, updated 10, deleted 2)" in synced.stdout
        # the watcher sees the other process's sync and renames the new file to its server id
        wait_until(lambda: watcher.said("renamed"), "the new file renamed to its server id")
        code, stderr = watcher.interrupt()
        assert code == 0 and watcher.lines[-1].startswith("stopped watching"), stderr
    finally:
        watcher.kill()
        if getattr(env, "store", None) is not None:
            env.store.close()

    with Mistral(api_key=api_key, server_url=emulator.url) as sdk:
        server: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            listing = sdk.beta.observability.datasets.list_records(dataset_id=ds, page=page, page_size=100).records
            server.update({r.id: {"payload": r.payload, "properties": r.properties} for r in listing.results})
            if not listing.next:
                break
            page += 1
    on_disk = {p.stem: p for p in folder.glob("*.json")}
    assert set(server) == set(on_disk) and len(server) == 999
    for rid, path in on_disk.items():
        if path == invalid:
            assert server[rid] == originals[rid]  # the invalid file queued nothing
        else:
            assert server[rid] == read_json(path)
    for rid, content in expected.items():
        assert server[rid] == content
    assert new_body in server.values()


def test_a_version_1_manifest_is_upgraded_with_the_versions_it_can_know(make_env: Callable[[int], Env]) -> None:
    from localstore.files.fs import part_hash

    env = make_env(2)
    files.checkout(env.store, env.dir)
    a, b = env.ids()
    manifest = json.loads((env.dir / MANIFEST_NAME).read_text())
    old = {"version": 1, "store": manifest["store"], "datasets": manifest["datasets"], "conflicts": {}, "files": {}}
    for rel, entry in manifest["files"].items():
        content = read_json(env.dir / rel)
        old["files"][rel] = {"id": entry["id"], "sha256": entry["sha256"],
                             "payload": part_hash(content["payload"]), "properties": part_hash(content["properties"])}
    (env.dir / MANIFEST_NAME).write_text(json.dumps(old))
    # a's file edited before the upgrade; meanwhile the server changed a's payload
    mine = read_json(env.path(a))
    mine["properties"]["label"] = "mine"
    write_json(env.path(a), mine)
    theirs = {"messages": [{"role": "user", "content": "theirs"}]}
    env.emulator.state.update_payload(a, theirs)
    with env.client() as client:
        pull(env.store, client, [env.ds])
    with Watcher(env):
        wait_until(lambda: env.record(a)["pending"] == ["properties"], "a's label queued")
        assert env.record(a)["payload"] == theirs  # the stale payload in the file is not queued
    upgraded = json.loads((env.dir / MANIFEST_NAME).read_text())
    assert upgraded["version"] == 2 and all(e["versions"] for e in upgraded["files"].values())
    assert env.status().pending == 1 and b in env.ids()
