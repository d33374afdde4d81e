"""Issue #7, concurrency drill: two processes edit one store while a third runs
``localstore sync`` over and over; after a final sync, every edit either editor made is
on the server (the last value of each key per record, deletes gone, creates once).

The editors are ``python -c`` scripts calling localstore.ops.edits, each logging the edits
the store accepted (in its own commit order) to a JSON-lines file; the expected server
state is rebuilt from those logs. Each editor owns a property key and half of the
records for payload edits and deletes, so the two logs never disagree about a value;
property edits go to any record, so both editors rewrite the same properties maps.

The one-sync-at-a-time rule across processes: tests/test_scenario_cli.py
(test_edits_during_a_sync_are_not_lost_and_a_second_sync_is_refused) checks a second
CLI ``sync`` against a running one; here the lock is taken through ``Store.sync_lock``
by other processes, and released by a holder's death.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DrillFigures
from fault_proxy import FaultProxy
from test_drills_faults import pull_store, server_contents, tally
from test_scenario_cli import Cli, Content, Intent, content, integrity, local_records, wait_for

from localstore_emulator import EmulatorServer, seed_dataset

EXIT_OK, EXIT_ERROR = 0, 1
EDITS_PER_EDITOR = 400
RECORDS = 300

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

EDITOR = r"""
import json, random, sys, time
from localstore.ops import edits
from localstore.errors import LocalstoreError
from localstore.store.db import Store

db, dataset_id, name, seed, count, pool_file, log_path = sys.argv[1:8]
pool = json.loads(open(pool_file, encoding="utf-8").read())
rng = random.Random(int(seed))
key = "key_" + name
created = []  # (token, provisional id) of records this editor added
ops = ["set", "payload", "rm", "add", "set_created", "rm_created"]
with Store.open(db) as store, open(log_path, "w", encoding="utf-8") as log:
    def note(**entry):
        log.write(json.dumps(entry) + "\n")
        log.flush()

    for i in range(int(count)):
        op = rng.choices(ops, weights=[55, 15, 6, 10, 10, 4])[0]
        value = name + "-" + str(i)
        try:
            if op == "set":
                rid = rng.choice(pool["all"])
                edits.set_properties(store, rid, {key: value})
                note(op=op, rid=rid, key=key, value=value)
            elif op == "payload":
                rid = rng.choice(pool[name])
                body = {"messages": [{"role": "user", "content": f"payload by {name} #{i}"}]}
                edits.set_payload(store, rid, body)
                note(op=op, rid=rid, payload=body)
            elif op == "rm":
                rid = rng.choice(pool[name])
                edits.delete_records(store, [rid])
                note(op=op, rid=rid)
            elif op == "add":
                token = f"{name}-create-{i}"
                body = {"messages": [{"role": "user", "content": f"created by {name} #{i}"}]}
                rid = edits.add_record(store, dataset_id, body, {"token": token})
                created.append((token, rid))
                note(op=op, token=token, payload=body, properties={"token": token})
            elif op == "set_created" and created:
                token, rid = rng.choice(created)  # by its provisional id, mapped or not
                edits.set_properties(store, rid, {key: value})
                note(op=op, token=token, key=key, value=value)
            elif op == "rm_created" and created:
                token, rid = created.pop(rng.randrange(len(created)))
                edits.delete_records(store, [rid])
                note(op=op, token=token)
        except LocalstoreError as exc:  # e.g. a record the other editor deleted
            note(op="refused", what=op, error=str(exc))
        time.sleep(rng.random() * 0.01)
"""

HOLDER = r"""
import sys
from localstore.store.db import Store
with Store.open(sys.argv[1]) as store, store.sync_lock():
    print("held", flush=True)
    sys.stdin.read()  # until killed
"""

TRY_LOCK = r"""
import sys
from localstore.errors import SyncInProgressError
from localstore.store.db import Store
with Store.open(sys.argv[1]) as store:
    try:
        with store.sync_lock():
            print("acquired")
    except SyncInProgressError as exc:
        print("refused:", exc)
"""


@pytest.fixture(scope="module")
def slow_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(latency_ms=5) as server:
        yield server


@pytest.fixture(scope="module")
def tap(slow_server: EmulatorServer) -> Iterator[FaultProxy]:
    with FaultProxy(slow_server.url) as proxy:  # no faults: counts requests
        yield proxy


def python(*args: str) -> list[str]:
    return [sys.executable, "-c", *args]


def expected_after(
    dataset_id: str, original: dict[str, Content], logs: list[list[dict[str, Any]]]
) -> tuple[Intent, int]:
    """What the accepted edits leave on the server, and how many edits were accepted."""
    want = dict(original)
    gone: set[str] = set()
    creates: dict[str, Content | None] = {}
    accepted = 0
    for log in logs:
        for e in log:
            op = e["op"]
            accepted += op != "refused"
            if op == "set":
                c = want[e["rid"]]
                want[e["rid"]] = content(c["payload"], {**c["properties"], e["key"]: e["value"]})
            elif op == "payload":
                want[e["rid"]] = content(e["payload"], want[e["rid"]]["properties"])
            elif op == "rm":
                gone.add(e["rid"])
            elif op == "add":
                creates[e["token"]] = content(e["payload"], e["properties"])
            elif op == "set_created":
                c = creates[e["token"]]
                assert c is not None
                creates[e["token"]] = content(
                    c["payload"], {**c["properties"], e["key"]: e["value"]}
                )
            elif op == "rm_created":
                creates[e["token"]] = None
    for rid in gone:
        del want[rid]
    made = [c for c in creates.values() if c is not None]
    return Intent(dataset_id, want, gone, made), accepted


def read_log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_two_editors_and_a_sync_loop_lose_nothing(
    tmp_path: Path,
    slow_server: EmulatorServer,
    tap: FaultProxy,
    api_key: str,
    drill_figures: DrillFigures,
) -> None:
    dataset_id = seed_dataset(
        slow_server.state, RECORDS, name=f"concurrency-{os.getpid()}", seed=91
    )
    db = tmp_path / "store.db"
    pull_store(db, slow_server.url, api_key, dataset_id)
    original = server_contents(slow_server, dataset_id)
    ids = sorted(original)
    pool_file = tmp_path / "pool.json"
    pool_file.write_text(json.dumps({"all": ids, "a": ids[0::2], "b": ids[1::2]}), encoding="utf-8")
    cli = Cli(db, tap.url, api_key)
    tap.reset_stats()

    # the third process: `localstore sync`, again and again, until the editors are done
    stop = threading.Event()
    syncs: list[subprocess.CompletedProcess[str]] = []

    def sync_loop() -> None:
        while not stop.is_set():
            syncs.append(cli.run("sync"))

    syncer = threading.Thread(target=sync_loop, name="sync-loop", daemon=True)
    syncer.start()
    wait_for(lambda: syncs or stop.is_set(), "a first sync")  # edits start mid-stream
    logs = {name: tmp_path / f"editor-{name}.jsonl" for name in ("a", "b")}
    editors = {
        name: subprocess.Popen(
            python(
                EDITOR,
                str(db),
                dataset_id,
                name,
                str(seed),
                str(EDITS_PER_EDITOR),
                str(pool_file),
                str(log),
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for (name, log), seed in zip(logs.items(), (1, 2), strict=True)
    }
    try:
        outputs = {name: proc.communicate(timeout=120) for name, proc in editors.items()}
        during = len(syncs)
    finally:
        stop.set()
        for proc in editors.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        syncer.join(timeout=120)
    assert not syncer.is_alive(), "the sync loop did not stop"
    for name, proc in editors.items():
        assert proc.returncode == 0, f"editor {name} failed: {outputs[name][1]}"

    final = cli.run("sync")
    server = server_contents(slow_server, dataset_id)
    intent, accepted = expected_after(dataset_id, original, [read_log(p) for p in logs.values()])
    refusals = [e for p in logs.values() for e in read_log(p) if e["op"] == "refused"]
    t = tally(server, intent)
    drill_figures.record(
        requests=tap.stats().requests,
        changes=accepted,
        syncs=len(syncs) + 1,
        kills=0,
        lost=len(t.lost),
        duplicated=len(t.duplicated),
        refused=len(refusals),
    )

    failed = [s for s in syncs if s.returncode != EXIT_OK]
    assert not failed, f"{len(failed)} syncs failed, first: {failed[0].stderr}"
    assert final.returncode == EXIT_OK, final.stderr
    assert during >= 2, "fewer than two syncs overlapped the edits: the drill proved little"
    # refusals are edits of records one of the editors deleted, never a busy store
    unexpected = [
        e
        for e in refusals
        if "deleted locally" not in e["error"] and "not in the store" not in e["error"]
    ]
    assert not unexpected, unexpected[:3]
    t.check()
    assert len(server) == len(intent.want) + len(intent.creates)
    assert integrity(db) == "ok"
    status = cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0), status
    assert local_records(db, dataset_id) == server
    again = cli.json("sync")
    assert (again["exit_code"], again["pushed"]) == (EXIT_OK, 0), again


def test_the_sync_lock_is_one_per_store_across_processes(
    tmp_path: Path,
    emulator: EmulatorServer,
    api_key: str,
    dataset: Callable[..., str],
    drill_figures: DrillFigures,
) -> None:
    """A process holding ``Store.sync_lock`` makes a CLI ``sync`` exit 1 at once (it
    returns while the lock is still held: it did not wait) with one line naming the
    holder, and another process's ``sync_lock`` refuse; the holder's death (SIGKILL)
    frees the lock."""
    dataset_id = dataset(3)
    cli = Cli(tmp_path / "store.db", emulator.url, api_key)
    cli.ok("pull", dataset_id)
    rid = sorted(server_contents(emulator, dataset_id))[0]
    cli.ok("set", rid, "label=locked-out")

    holder = subprocess.Popen(
        python(HOLDER, str(cli.db)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        refused = cli.run("sync")
        other = subprocess.run(
            python(TRY_LOCK, str(cli.db)), capture_output=True, text=True, timeout=60, check=False
        )
        assert holder.poll() is None, "the holder ended: the checks above proved nothing"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert refused.returncode == EXIT_ERROR and refused.stdout == ""
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert "a sync is already running" in lines[0] and f"(pid {holder.pid})" in lines[0], lines
    assert other.stdout.startswith("refused: a sync is already running"), other
    assert cli.json("status")["pending"] == 1  # the refused sync sent nothing

    report = cli.json("sync")  # the dead holder's lock is gone with it
    assert (report["exit_code"], report["updated"]) == (EXIT_OK, 1), report
    assert server_contents(emulator, dataset_id)[rid]["properties"]["label"] == "locked-out"
    drill_figures.record(syncs=2, kills=1, changes=1, lost=0, duplicated=0)
