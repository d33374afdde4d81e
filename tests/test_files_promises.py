"""Records as files keep the README's promises (issue 16), each through the command line:
``localstore checkout`` / ``watch`` / ``sync`` subprocesses against the emulator, with a
teammate writing through the official SDK.

1. a stale editor buffer never reverts a teammate's key;   5. a file that vanishes for a
2. a held file stays held (saves, restarts);                  moment keeps its record;
3. a file removed before a pull is a delete-vs-edit;        6. the watcher never dies on
4. SIGKILL while new files are queued: no duplicate;          content or on its folder;
                                                            8. small things said right.

Every wait is bounded and waits for a state (a store row, a line, a file).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mistralai.client")
from mistralai.client import Mistral
from support.cli import EXIT_CONFLICTS, Cli, content_counts, server_records
from support.wait import wait_until

pytestmark = pytest.mark.slow  # each starts `localstore watch` processes (2-5 s; the SIGKILL loop ~20 s)

WAIT = 30.0




class Watch:
    """``localstore watch DIR …`` as a subprocess; its lines collected by reader threads."""

    def __init__(self, cli: Cli, folder: Path, *args: str) -> None:
        self.proc = cli.start("watch", str(folder), *args)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.errors), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        wait_until(lambda: self.said("watching ") or self.proc.poll() is not None, "the watcher to start")
        assert self.proc.poll() is None, f"the watcher died: {self.errors}"

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def said(self, needle: str) -> list[str]:
        return [line for line in list(self.lines) if needle in line]

    def wait_said(self, needle: str) -> str:
        return wait_until(lambda: (self.said(needle) or [None])[0], f"the watcher saying {needle!r}")

    def stop(self) -> int:
        """Ctrl-C; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(WAIT)
        for reader in self.readers:
            reader.join(WAIT)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        for reader in self.readers:
            reader.join(WAIT)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            code = self.stop()
            assert code == 0 and not self.errors, (code, self.errors)
            assert not self.said("internal error")
        else:
            self.kill()


class Folder:
    """A store mirroring one fresh dataset, checked out by the CLI."""

    def __init__(self, cli: Cli, dataset: Callable[..., str], tmp: Path, n: int = 1) -> None:
        self.cli = cli
        self.ds = dataset(n)
        self.dir = tmp / "records"
        cli.ok("pull", self.ds)
        cli.ok("checkout", str(self.dir))
        self.ids = sorted(p.stem for p in (self.dir / self.ds).glob("*.json"))
        assert len(self.ids) == n

    def path(self, rid: str) -> Path:
        return self.dir / self.ds / f"{rid}.json"

    def read(self, rid: str) -> dict[str, Any]:
        return json.loads(self.path(rid).read_text(encoding="utf-8"))

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"{self.cli.db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def pending(self, rid: str) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT kind FROM changes WHERE record_id = ? AND state IN ('pending', 'in_flight') ORDER BY kind", (rid,)
        )]

    def queued_properties(self, rid: str) -> dict[str, Any] | None:
        rows = self.query(
            "SELECT body FROM changes WHERE record_id = ? AND kind = 'properties' AND state = 'pending'", (rid,)
        )
        return json.loads(rows[0][0]) if rows else None


def write(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def teammate_sets(sdk: Mistral, rid: str, **keys: Any) -> None:
    record = sdk.beta.observability.datasets.records.fetch(dataset_record_id=rid)
    sdk.beta.observability.datasets.records.update_properties(
        dataset_record_id=rid, properties={**record.properties, **keys}
    )


def on_server(sdk: Mistral, rid: str) -> dict[str, Any]:
    record = sdk.beta.observability.datasets.records.fetch(dataset_record_id=rid)
    return {"payload": record.payload, "properties": record.properties, "created_at": record.created_at}


# ------------------------------------------------------------------ 1. a stale editor buffer


@pytest.mark.parametrize("meanwhile", ["teammate", "local_set"])
def test_a_stale_editor_buffer_queues_only_the_users_key(
    cli: Cli, sdk: Mistral, dataset: Callable[..., str], tmp_path: Path, meanwhile: str
) -> None:
    folder = Folder(cli, dataset, tmp_path)
    (rid,) = folder.ids
    with Watch(cli, folder.dir) as watch:
        buffer = folder.read(rid)  # the editor loads the file
        if meanwhile == "teammate":
            teammate_sets(sdk, rid, topic="theirs")
            cli.ok("pull")
        else:
            cli.ok("set", rid, "topic=from-another-terminal")
        want_topic = "theirs" if meanwhile == "teammate" else "from-another-terminal"
        wait_until(lambda: folder.read(rid)["properties"].get("topic") == want_topic, "the file refreshed")
        buffer["properties"]["label"] = "mine"  # the user changed only the label, in the old buffer
        write(folder.path(rid), buffer)
        queued = wait_until(lambda: (folder.queued_properties(rid) or {}).get("label") == "mine"
                            and folder.queued_properties(rid), "the label queued")
        assert queued["topic"] == want_topic, "the stale buffer reverted the topic"
        watch.wait_said("saved from an older version of the file: only your change to property label counts")
        wait_until(lambda: folder.read(rid)["properties"] == queued, "the file showing the merged properties")
    cli.ok("sync")
    server = on_server(sdk, rid)
    assert server["properties"]["topic"] == want_topic and server["properties"]["label"] == "mine"


# ------------------------------------------------------------------ 2. a held file stays held


def test_a_held_file_stays_held_and_disjoint_keys_merge(
    cli: Cli, sdk: Mistral, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path, n=2)
    clash, disjoint = folder.ids
    mine = folder.read(clash)
    mine["properties"]["label"] = "mine"
    write(folder.path(clash), mine)
    other = folder.read(disjoint)
    other["properties"]["note"] = "mine"
    write(folder.path(disjoint), other)
    teammate_sets(sdk, clash, label="theirs")
    teammate_sets(sdk, disjoint, label="theirs")
    cli.ok("pull")

    with Watch(cli, folder.dir) as watch:
        watch.wait_said(f"{clash}.json: not queued: property label also changed in the store")
        wait_until(lambda: folder.pending(disjoint) == ["properties"], "the disjoint key queued")
        assert folder.queued_properties(disjoint) == {**other["properties"], "label": "theirs"}
        assert folder.pending(clash) == []
        # saving it again: still held
        mine["properties"]["more"] = 1
        write(folder.path(clash), mine)
        wait_until(lambda: len(watch.said(f"{clash}.json: not queued")) == 2, "the second save held")
        assert folder.pending(clash) == [] and folder.read(clash) == mine
    # a watcher started again with no save: still held, the file kept
    with Watch(cli, folder.dir) as watch:
        watch.wait_said(f"{clash}.json: not queued: property label also changed")
        assert folder.pending(clash) == [] and folder.read(clash) == mine
    cli.ok("sync")
    assert on_server(sdk, clash)["properties"]["label"] == "theirs"
    assert on_server(sdk, disjoint)["properties"] == {**other["properties"], "label": "theirs"}

    # taking the store's value into the file releases it: the rest is queued
    with Watch(cli, folder.dir) as watch:
        mine["properties"]["label"] = "theirs"
        write(folder.path(clash), mine)
        wait_until(lambda: folder.pending(clash) == ["properties"], "the rest queued")
    cli.ok("sync")
    assert on_server(sdk, clash)["properties"] == mine["properties"]


# ------------------------------------------------------------------ 3. removed before a pull


def test_a_file_removed_before_a_pull_is_a_delete_vs_edit_conflict(
    cli: Cli, sdk: Mistral, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path)
    (rid,) = folder.ids
    folder.path(rid).unlink()
    teammate_sets(sdk, rid, label="theirs")
    cli.ok("pull")
    with Watch(cli, folder.dir, "--grace", "0") as watch:
        watch.wait_said(f"queued delete of {rid}")
    cli.ok("sync", code=EXIT_CONFLICTS)
    assert on_server(sdk, rid)["properties"]["label"] == "theirs"  # not deleted
    [conflict] = cli.json("conflicts")
    assert conflict["record_id"] == rid and conflict["parts"] == ["delete-vs-edit"]


# ------------------------------------------------------------------ 4. SIGKILL while creating


def test_sigkill_while_new_files_are_queued_never_creates_twice(
    cli: Cli, sdk: Mistral, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path)
    rounds, per_round = 10, 50
    total = 0
    killed_mid_way = 0

    def creates() -> int:
        return folder.query("SELECT count(*) FROM changes WHERE kind = 'create' AND state = 'pending'")[0][0]

    def kill_while_queueing(n: int, start: int) -> bool:
        """Start a watcher and SIGKILL it once some (a different number each round) of this
        round's creates are in; True when it died with files still to queue."""
        proc = cli.start("watch", str(folder.dir))
        try:
            target = start + 1 + (n * 7) % (per_round // 2)
            wait_until(lambda: creates() >= target or proc.poll() is not None, "creates being queued")
        finally:
            proc.kill()
            proc.communicate(timeout=WAIT)
        return creates() < start + per_round

    for n in range(rounds):
        for i in range(per_round):
            write(folder.dir / folder.ds / f"new-{n}-{i}.json",
                  {"payload": {"messages": [{"role": "user", "content": f"new {n} {i}"}]}, "properties": {}})
        killed_mid_way += kill_while_queueing(n, total)
        want = total + per_round
        with Watch(cli, folder.dir):
            wait_until(lambda want=want: creates() == want, "every new file queued once")
        total = want
        assert creates() == total
    assert killed_mid_way >= rounds // 2, "the kills did not land while files were being queued"
    cli.ok("sync")
    server = server_records(sdk, folder.ds)
    assert len(server) == 1 + total
    assert max(content_counts(server).values()) == 1  # no content twice
    with Watch(cli, folder.dir):  # every file renamed to its record's id
        wait_until(lambda: len(list((folder.dir / folder.ds).glob("new-*.json"))) == 0, "the files renamed")
    assert {p.stem for p in (folder.dir / folder.ds).glob("*.json")} == set(server)


# ------------------------------------------------------------------ 5. a file that vanishes for a moment


def test_a_file_that_vanishes_for_a_moment_keeps_its_record(
    cli: Cli, sdk: Mistral, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path)
    (rid,) = folder.ids
    before = on_server(sdk, rid)

    def syncs() -> int:
        return folder.query("SELECT count(*) FROM sync_runs WHERE finished_at IS NOT NULL")[0][0]

    with Watch(cli, folder.dir, "--sync-every", "0.2", "--grace", "60") as watch:
        content = folder.read(rid)
        backup = folder.path(rid).with_name(f"{rid}.json~")
        os.rename(folder.path(rid), backup)  # the editor's backup
        seen = syncs()
        wait_until(lambda: syncs() >= seen + 3, "sync ticks while the file is away")
        content["properties"]["label"] = "saved by the editor"
        write(folder.path(rid), content)
        backup.unlink()
        wait_until(lambda: on_server(sdk, rid)["properties"].get("label") == "saved by the editor", "the edit pushed")
        assert not watch.said("queued delete")
    after = on_server(sdk, rid)
    assert after["created_at"] == before["created_at"]  # the same record, never deleted
    assert len(server_records(sdk, folder.ds)) == 1


def test_a_removed_file_queues_its_delete_after_the_grace_period(
    cli: Cli, sdk: Mistral, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path, n=2)
    gone, kept = folder.ids
    with Watch(cli, folder.dir, "--grace", "0.5") as watch:
        folder.path(gone).unlink()
        watch.wait_said(f"queued delete of {gone}")
    cli.ok("sync")
    assert set(server_records(sdk, folder.ds)) == {kept}


# ------------------------------------------------------------------ 6. never dies


def test_a_lone_surrogate_is_reported_like_any_invalid_file(
    cli: Cli, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path, n=2)
    bad, good = folder.ids
    text = '{\n  "payload": {"messages": []},\n  "properties": {"label": "x\\ud800"}\n}\n'
    folder.path(bad).write_text(text, encoding="utf-8")
    for _ in range(2):  # the watcher starts while the file exists, and again
        with Watch(cli, folder.dir) as watch:
            watch.wait_said(f"{folder.path(bad)}:3:29: \\ud800 is half of a surrogate pair")
            content = folder.read(good)
            content["properties"]["label"] = "still watching"
            write(folder.path(good), content)
            wait_until(lambda: folder.pending(good) == ["properties"], "the next edit queued")
        cli.ok("revert", good)
        write(folder.path(good), {"payload": content["payload"], "properties": {}})
    assert folder.pending(bad) == []


def test_removing_the_checkout_folder_stops_the_watcher_with_one_line(
    cli: Cli, dataset: Callable[..., str], tmp_path: Path
) -> None:
    import shutil

    folder = Folder(cli, dataset, tmp_path)
    watch = Watch(cli, folder.dir)
    try:
        shutil.rmtree(folder.dir)
        code = watch.proc.wait(WAIT)
        for reader in watch.readers:
            reader.join(WAIT)
    finally:
        watch.kill()
    assert code == 1
    assert watch.errors == [f"localstore: error: the checkout folder {folder.dir.resolve()} is gone; "
                            "stopped watching (nothing queued was lost)"]


# ------------------------------------------------------------------ 8. small things


def test_a_truncate_then_write_save_reports_nothing_spurious(
    cli: Cli, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path)
    (rid,) = folder.ids
    with Watch(cli, folder.dir) as watch:
        content = folder.read(rid)
        for i in range(3):  # a tool that truncates, pauses, then writes — three saves in a burst
            content["properties"]["draft"] = i
            with open(folder.path(rid), "w", encoding="utf-8") as handle:
                handle.flush()
                os.fsync(handle.fileno())
                threading.Event().wait(0.1)  # the tool's own pause between truncating and writing
                handle.write(json.dumps(content))
        wait_until(lambda: folder.queued_properties(rid) == content["properties"], "the last save queued")
        watch.wait_said("queued properties change")
        assert not watch.said("Expecting value") and not watch.said("nothing queued")
        assert len(watch.said("queued properties change")) == 1  # the burst counts once


def test_a_tool_writing_a_temp_file_then_moving_it_says_what_happened(
    cli: Cli, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path, n=2)
    a, b = folder.ids
    tmp = folder.dir / folder.ds / "tmp.json"
    with Watch(cli, folder.dir, "--grace", "0.3") as watch:
        # `tool > tmp.json && mv tmp.json A.json`, quick: only the edit of A is seen
        content = folder.read(a)
        content["properties"]["label"] = "by the tool"
        write(tmp, content)
        os.replace(tmp, folder.path(a))
        wait_until(lambda: folder.pending(a) == ["properties"], "A's edit")
        # slow: tmp.json was seen (a create) before the move; the move drops that create
        content = folder.read(b)
        content["properties"]["label"] = "by the slow tool"
        write(tmp, content)
        watch.wait_said("tmp.json: queued create")
        os.replace(tmp, folder.path(b))
        watch.wait_said("tmp.json removed: its create")
        wait_until(lambda: folder.pending(b) == ["properties"], "B's edit")
    assert not watch.said("queued delete")
    assert watch.said("tmp.json removed: its create")[0].endswith("was never sent; dropped")
    assert folder.query("SELECT count(*) FROM changes WHERE kind = 'create' AND state = 'pending'")[0][0] == 0


def test_json_files_outside_dataset_folders_are_said_to_be_ignored_once(
    cli: Cli, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path)
    (rid,) = folder.ids
    bad = folder.path(rid)
    with Watch(cli, folder.dir) as watch:
        bad.write_text('{"payload": {}, "properties": oops}', encoding="utf-8")
        watch.wait_said(f"{bad}:1:")
        (folder.dir / "top.json").write_text("{}")
        watch.wait_said(f"ignored {folder.dir.resolve() / 'top.json'}: files in the checkout's top folder")
        (folder.dir / "notes").mkdir()
        (folder.dir / "notes" / "n.json").write_text("{}")
        watch.wait_said("notes/ is not a dataset folder")
        (folder.dir / folder.ds / "sub").mkdir()
        (folder.dir / folder.ds / "sub" / "x.json").write_text("{}")
        watch.wait_said("files in folders inside a dataset folder are not read")
        (folder.dir / "top.json").write_text('{"again": 1}')
        (folder.dir / "more").mkdir()  # a new folder: nothing is reported again
        (folder.dir / "more" / "m.json").write_text("{}")
        watch.wait_said("more/ is not a dataset folder")
    assert len(watch.said(f"{bad}:1:")) == 1
    assert len(watch.said("top.json")) == 1
    assert folder.query("SELECT count(*) FROM changes")[0][0] == 0


def test_a_dataset_folder_replaced_by_a_link_is_said_once_and_written_again(
    cli: Cli, dataset: Callable[..., str], tmp_path: Path
) -> None:
    folder = Folder(cli, dataset, tmp_path, n=2)
    real = folder.dir / folder.ds
    elsewhere = tmp_path / "elsewhere"
    with Watch(cli, folder.dir) as watch:
        os.rename(real, elsewhere)
        real.symlink_to(elsewhere, target_is_directory=True)
        watch.wait_said("is a symbolic link")
        (elsewhere / f"{folder.ids[0]}.json").write_text('{"payload": {}, "properties": {}}')
        real.unlink()
        wait_until(lambda: real.is_dir() and not real.is_symlink() and len(list(real.glob("*.json"))) == 2,
                   "the folder written again")
    assert len(watch.said("is a symbolic link")) == 1
    assert folder.query("SELECT count(*) FROM changes")[0][0] == 0
