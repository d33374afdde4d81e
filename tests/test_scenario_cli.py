"""Acceptance of issue #3: the whole offline loop through the command line.

Every ``localstore`` call here is a subprocess (``python -m localstore``) against a
real HTTP emulator; the "other client" and every read-back of the server go through the
official SDK (``mistralai``), an independent client of the same API.

1. The scenario: offline property sets, payload edits, deletes and creates meet
   concurrent remote changes; sync pushes what merges, flags exactly the collisions,
   a second sync is a no-op, and resolving settles everything.
2. SIGKILL at any moment of a sync: the next sync converges, loses nothing, duplicates
   nothing, and the SQLite file stays sound.
3. Edits made while a sync runs are not lost (also to records it is pushing or
   creating). A second sync on the same store while one runs does not wait: it exits 1
   at once with one line on stderr, ``localstore: error: a sync is already running on
   DB (pid N); wait for it to finish and run sync again``.
4. ``sync --dry-run --json`` predicts the scenario and changes nothing.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mistralai.client")
from mistralai.client import Mistral
from support.cli import (
    CLI_TIMEOUT,
    EXIT_CONFLICTS,
    EXIT_ERROR,
    EXIT_OK,
    Cli,
    Content,
    content,
    content_counts,
    content_key,
    integrity,
    server_records,
)
from support.wait import wait_until

from localstore.ops import edits
from localstore.store.db import Store
from localstore_emulator import EmulatorServer, seed_dataset

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

WAIT_TIMEOUT = 30.0



# ------------------------------------------------------------------ helpers


def local_records(db: Path, dataset_id: str) -> dict[str, Content]:
    """The store's ``records`` view (what the user sees now), read with plain sqlite3."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, payload, properties FROM records WHERE dataset_id = ?", (dataset_id,)
        ).fetchall()
    finally:
        conn.close()
    return {r[0]: content(json.loads(r[1]), json.loads(r[2])) for r in rows}


def dump(db: Path) -> str:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT_TIMEOUT) -> Any:
    return wait_until(predicate, what, timeout, interval=0.005)


class StoreProbe:
    """Read-only peeks at a store another process is writing (WAL: never blocks it)."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(
            f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=10
        )

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, params).fetchall()

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()[0]

    def close(self) -> None:
        self.conn.close()


def finish(proc: subprocess.Popen[str], timeout: float = CLI_TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"`localstore sync` did not finish: {err}") from None
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def slow_emulator() -> Iterator[EmulatorServer]:
    """Every request takes 20 ms more: a sync of a few hundred changes lasts a while."""
    with EmulatorServer(latency_ms=20) as server:
        yield server


@pytest.fixture
def slow_sdk(slow_emulator: EmulatorServer, api_key: str) -> Iterator[Mistral]:
    with Mistral(api_key=api_key, server_url=slow_emulator.url) as client:
        yield client


# ------------------------------------------------------------------ the scenario

LABEL = "reviewed"
THEIR_LABEL = "disputed-by-other-client"
THEIR_KEY, THEIR_VALUE = "reviewer", "other-client"


@dataclass
class Scenario:
    cli: Cli
    dataset_id: str
    original: dict[str, Content]
    clean_label: list[str]  # 40: label set here only
    same_key: list[str]  # 5: label set here, label set differently there
    other_key: list[str]  # 5: label set here, another key set there
    payload_clean: list[str]  # 18: payload replaced here only
    payload_gone: list[str]  # 2: payload replaced here, record deleted there
    deleted: list[str]  # 10: deleted here
    new_payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    creates: list[Content] = field(default_factory=list)

    @property
    def conflicted(self) -> set[str]:
        return set(self.same_key) | set(self.payload_gone)

    @property
    def untouched(self) -> set[str]:
        touched = {
            *self.clean_label,
            *self.same_key,
            *self.other_key,
            *self.payload_clean,
            *self.payload_gone,
            *self.deleted,
        }
        return set(self.original) - touched

    def expected_server(self) -> dict[str, Content]:
        """What the server must hold after the first sync (conflicts left alone)."""
        want: dict[str, Content] = {rid: self.original[rid] for rid in self.untouched}
        for rid in self.clean_label:
            want[rid] = self._with(rid, label=LABEL)
        for rid in self.other_key:
            want[rid] = self._with(rid, label=LABEL, **{THEIR_KEY: THEIR_VALUE})
        for rid in self.same_key:
            want[rid] = self._with(rid, label=THEIR_LABEL)  # not overwritten
        for rid in self.payload_clean:
            want[rid] = content(self.new_payloads[rid], self.original[rid]["properties"])
        return want

    def _with(self, rid: str, **props: Any) -> Content:
        c = self.original[rid]
        return content(c["payload"], {**c["properties"], **props})


def build_scenario(
    tmp_path: Path, emulator: EmulatorServer, api_key: str, sdk: Mistral, dataset_id: str
) -> Scenario:
    """Pull 200 records, edit offline through the CLI, then let the SDK change the server."""
    cli = Cli(tmp_path / "store.db", emulator.url, api_key)
    cli.ok("pull", dataset_id)
    original = {
        rid: content(r["payload"], r["properties"])
        for rid, r in server_records(sdk, dataset_id).items()
    }
    assert len(original) == 200
    ids = sorted(original)
    random.Random(3).shuffle(ids)
    labelled, payloads, deleted = ids[:50], ids[50:70], ids[70:80]
    assert all(original[r]["properties"].get("label") != LABEL for r in labelled)
    sc = Scenario(
        cli,
        dataset_id,
        original,
        clean_label=labelled[10:],
        same_key=labelled[:5],
        other_key=labelled[5:10],
        payload_clean=payloads[2:],
        payload_gone=payloads[:2],
        deleted=deleted,
    )

    # offline: the server URL points at a closed port
    files = tmp_path / "files"
    files.mkdir()
    jobs: list[tuple[str, ...]] = [("set", rid, f"label={LABEL}") for rid in labelled]
    for n, rid in enumerate(payloads):
        sc.new_payloads[rid] = {
            "messages": [{"role": "user", "content": f"rewritten offline #{n}"}]
        }
        path = files / f"payload-{n}.json"
        path.write_text(json.dumps(sc.new_payloads[rid]), encoding="utf-8")
        jobs.append(("edit", rid, "--payload-file", str(path)))
    with ThreadPoolExecutor(4) as pool:  # concurrent CLI writers on one store are fine
        outputs = list(pool.map(lambda job: cli.ok(*job, offline=True), jobs))
    assert all(o.startswith("queued ") for o in outputs), outputs
    assert "queued 10 delete(s)" in cli.ok("rm", *deleted, offline=True)
    for n in range(5):
        made = content(
            {"messages": [{"role": "user", "content": f"created offline #{n} in {dataset_id}"}]},
            {"label": "new", "n": n},
        )
        sc.creates.append(made)
        (files / f"new-{n}.json").write_text(json.dumps(made["payload"]), encoding="utf-8")
        (files / f"new-{n}-props.json").write_text(json.dumps(made["properties"]), encoding="utf-8")
        cli.json(
            "add",
            dataset_id,
            "--payload-file",
            str(files / f"new-{n}.json"),
            "--properties-file",
            str(files / f"new-{n}-props.json"),
            offline=True,
        )
    status = cli.json("status", offline=True)
    assert (status["pending"], status["conflicts"]) == (50 + 20 + 10 + 5, 0)

    # meanwhile, another client
    records = sdk.beta.observability.datasets.records
    for rid in sc.same_key:
        records.update_properties(
            dataset_record_id=rid, properties={**original[rid]["properties"], "label": THEIR_LABEL}
        )
    for rid in sc.other_key:
        records.update_properties(
            dataset_record_id=rid,
            properties={**original[rid]["properties"], THEIR_KEY: THEIR_VALUE},
        )
    for rid in sc.payload_gone:
        records.delete(dataset_record_id=rid)
    return sc


def check_server_after_first_sync(sc: Scenario, server: dict[str, dict[str, Any]]) -> None:
    want = sc.expected_server()
    for rid, expected in want.items():
        assert rid in server, f"record {rid} vanished from the server"
        assert content(server[rid]["payload"], server[rid]["properties"]) == expected, rid
    for rid in [*sc.deleted, *sc.payload_gone]:
        assert rid not in server, f"record {rid} should be deleted"
    extra = {rid: server[rid] for rid in set(server) - set(want)}
    assert sorted(content_counts(extra).elements()) == sorted(content_key(c) for c in sc.creates)
    assert len(server) == 200 - 10 - 2 + 5


def conflict_rows(cli: Cli) -> dict[str, dict[str, Any]]:
    return {row["record_id"]: row for row in cli.json("conflicts")}


def test_offline_scenario_conflicts_then_resolve(
    tmp_path: Path,
    emulator: EmulatorServer,
    api_key: str,
    sdk: Mistral,
    dataset: Callable[..., str],
) -> None:
    sc = build_scenario(tmp_path, emulator, api_key, sdk, dataset(200, seed=31))
    cli = sc.cli

    report = cli.json("sync", code=EXIT_CONFLICTS)
    assert (report["created"], report["deleted"], report["open_conflicts"]) == (5, 10, 7)
    conflicts = conflict_rows(cli)
    assert set(conflicts) == sc.conflicted
    for rid in sc.same_key:
        row = conflicts[rid]
        assert row["parts"] == ["/properties/label"]
        assert row["local"]["properties"]["label"] == LABEL  # both sides kept
        assert row["remote"]["properties"]["label"] == THEIR_LABEL
    for rid in sc.payload_gone:
        row = conflicts[rid]
        assert row["parts"] == ["edit-vs-delete"] and row["remote"] is None
        assert row["local"]["payload"] == sc.new_payloads[rid]

    server = server_records(sdk, sc.dataset_id)
    check_server_after_first_sync(sc, server)

    again = cli.json("sync", code=EXIT_CONFLICTS)
    assert again["pushed"] == 0 and again["new_conflicts"] == 0
    assert set(conflict_rows(cli)) == sc.conflicted
    assert server_records(sdk, sc.dataset_id) == server  # not even a no-op PUT went out

    for rid in sc.same_key:
        cli.ok("resolve", rid, "--ours")
    for rid in sc.payload_gone:
        cli.ok("resolve", rid, "--theirs")
    cli.ok("sync")

    final = server_records(sdk, sc.dataset_id)
    for rid in sc.same_key:
        assert content(final[rid]["payload"], final[rid]["properties"]) == sc._with(
            rid, label=LABEL
        )
    assert not set(sc.payload_gone) & set(final)
    assert {rid: r for rid, r in final.items() if rid not in sc.same_key} == {
        rid: r for rid, r in server.items() if rid not in sc.same_key
    }
    status = cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0)
    assert local_records(cli.db, sc.dataset_id) == {
        rid: content(r["payload"], r["properties"]) for rid, r in final.items()
    }


def test_dry_run_predicts_the_scenario_and_changes_nothing(
    tmp_path: Path,
    emulator: EmulatorServer,
    api_key: str,
    sdk: Mistral,
    dataset: Callable[..., str],
) -> None:
    sc = build_scenario(tmp_path, emulator, api_key, sdk, dataset(200, seed=32))
    before_store = dump(sc.cli.db)
    before_server = server_records(sdk, sc.dataset_id)

    # conflicts are planned, so a dry run exits 3 like the real sync will
    report = sc.cli.json("sync", "--dry-run", code=EXIT_CONFLICTS)
    assert report["dry_run"] is True and report["pushed"] == 0
    assert report["planned"] == {"conflict": 7, "create": 5, "delete": 10, "push": 63}
    assert (report["new_conflicts"], report["open_conflicts"], report["pending"]) == (7, 7, 85)

    assert dump(sc.cli.db) == before_store
    assert server_records(sdk, sc.dataset_id) == before_server
    assert sc.cli.json("conflicts") == []

    real = sc.cli.json("sync", code=EXIT_CONFLICTS)  # and the prediction holds
    assert (real["created"], real["deleted"], real["updated"], real["open_conflicts"]) == (
        5,
        10,
        63,
        7,
    )
    assert set(conflict_rows(sc.cli)) == sc.conflicted


# ------------------------------------------------------------------ SIGKILL


@dataclass
class Intent:
    """What a store's pending changes must leave on the server."""

    dataset_id: str
    want: dict[str, Content]  # id -> content (existing records)
    gone: set[str]
    creates: list[Content]
    untouched: list[str] = field(default_factory=list)
    labelled: list[str] = field(default_factory=list)  # ids whose label is set locally

    def labels_on_server(self, server: EmulatorServer) -> tuple[int, int]:
        """(sent, not yet sent) of the label edits, as the server itself holds them."""
        sent = 0
        for rid in self.labelled:
            record = server.state.get_record(rid)
            if (
                record is not None
                and record["properties"].get("label") == self.want[rid]["properties"]["label"]
            ):
                sent += 1
        return sent, len(self.labelled) - sent


def prepare_mixed(
    cli: Cli, server: EmulatorServer, sdk: Mistral, seed: int, n: int = 300, creates: int = 20
) -> Intent:
    """A pulled store with a few hundred mixed pending changes, made in-process."""
    dataset_id = seed_dataset(
        server.state, n, name=f"scenario-kill-{seed}-{time.monotonic_ns()}", seed=seed
    )
    cli.ok("pull", dataset_id)
    original = {
        rid: content(r["payload"], r["properties"])
        for rid, r in server_records(sdk, dataset_id).items()
    }
    rng = random.Random(seed)
    ids = sorted(original)
    rng.shuffle(ids)
    props, payloads, both, deletes = ids[:120], ids[120:170], ids[170:190], ids[190:240]
    want = dict(original)
    with Store.open(cli.db) as store:
        for rid in props:
            value = f"s{seed}-{rng.randrange(10**6)}"
            edits.set_properties(store, rid, {"label": value, "touched": True})
            want[rid] = content(
                want[rid]["payload"], {**want[rid]["properties"], "label": value, "touched": True}
            )
        for rid in [*payloads, *both]:
            body = {"messages": [{"role": "assistant", "content": f"new text {seed}/{rid}"}]}
            edits.set_payload(store, rid, body)
            want[rid] = content(body, want[rid]["properties"])
        for rid in both:
            edits.unset_properties(store, rid, ["split"])
            props_now = {k: v for k, v in want[rid]["properties"].items() if k != "split"}
            want[rid] = content(want[rid]["payload"], props_now)
        edits.delete_records(store, deletes)
        made = []
        for i in range(creates):
            c = content(
                {"messages": [{"role": "user", "content": f"create {i} of run {seed}"}]}, {"i": i}
            )
            edits.add_record(store, dataset_id, c["payload"], c["properties"])
            made.append(c)
    for rid in deletes:
        del want[rid]
    return Intent(dataset_id, want, set(deletes), made, untouched=ids[240:], labelled=props)


def check_converged(cli: Cli, sdk: Mistral, intent: Intent) -> None:
    assert integrity(cli.db) == "ok"
    server = server_records(sdk, intent.dataset_id)
    counts = content_counts(server)
    for c in intent.creates:
        assert counts[content_key(c)] == 1, (
            f"create {c['payload']} is on the server {counts[content_key(c)]} times"
        )
    for rid, expected in intent.want.items():
        assert rid in server, f"record {rid} is gone from the server"
        assert content(server[rid]["payload"], server[rid]["properties"]) == expected, (
            f"edit of {rid} lost"
        )
    assert not intent.gone & set(server), "a deleted record is back"
    assert len(server) == len(intent.want) + len(intent.creates)
    status = cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0)
    assert local_records(cli.db, intent.dataset_id) == {
        rid: content(r["payload"], r["properties"]) for rid, r in server.items()
    }


@pytest.fixture(scope="module")
def full_sync_seconds(
    slow_emulator: EmulatorServer, api_key: str, tmp_path_factory: pytest.TempPathFactory
) -> float:
    """How long an uninterrupted sync of the mixed store takes here (also a baseline:
    without a kill it converges in one go). Kill points are spread over this span."""
    with Mistral(api_key=api_key, server_url=slow_emulator.url) as client:
        cli = Cli(tmp_path_factory.mktemp("calibrate") / "store.db", slow_emulator.url, api_key)
        intent = prepare_mixed(cli, slow_emulator, client, seed=100)
        started = time.monotonic()
        cli.ok("sync")
        elapsed = time.monotonic() - started
        check_converged(cli, client, intent)
    return elapsed


TIMED_KILLS = 6
KILL_POINTS = [
    *(f"timed-{i}" for i in range(TIMED_KILLS)),
    "creates-posted",  # the server made some creates; the store has not committed them
    "pushes-partly-sent",  # the server has some of the pushed edits, not all
]


def kill_trigger(
    kill_at: str, full_sync_seconds: float, server: EmulatorServer, intent: Intent
) -> Callable[[], Any]:
    """When to send SIGKILL: after a seeded random delay (one point in each sixth of a
    whole sync's span, +10%, early to late), or as soon as the store or the server
    reaches a state."""
    if kill_at.startswith("timed-"):
        run = int(kill_at.removeprefix("timed-"))
        delay = (
            full_sync_seconds * 1.1 * (run + random.Random(20_240_601 + run).random()) / TIMED_KILLS
        )
        deadline = time.monotonic() + delay
        return lambda: time.monotonic() >= deadline
    if kill_at == "creates-posted":
        listed = len(intent.want) + len(intent.gone)
        return lambda: server.state.records_page(intent.dataset_id, 1, 1)[0] > listed
    assert kill_at == "pushes-partly-sent"
    return lambda: intent.labels_on_server(server)[0] >= 10


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_sigkill_at_any_moment_then_sync_converges(
    kill_at: str,
    tmp_path: Path,
    slow_emulator: EmulatorServer,
    slow_sdk: Mistral,
    api_key: str,
    full_sync_seconds: float,
) -> None:
    cli = Cli(tmp_path / "store.db", slow_emulator.url, api_key)
    intent = prepare_mixed(cli, slow_emulator, slow_sdk, seed=KILL_POINTS.index(kill_at))
    # fewer requests at a time when waiting for a state: the state then lasts a while
    extra = () if kill_at.startswith("timed-") else ("--concurrency", "2")
    proc = cli.start("sync", *extra)
    trigger = kill_trigger(kill_at, full_sync_seconds, slow_emulator, intent)
    try:
        wait_for(lambda: trigger() or proc.poll() is not None, f"kill point {kill_at}")
        assert kill_at.startswith("timed-") or proc.poll() is None, (
            f"the sync ended before {kill_at}"
        )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        code, _, err = finish(proc)
    assert code in (-signal.SIGKILL, EXIT_OK), err

    assert integrity(cli.db) == "ok"
    cli.ok("sync")  # the next sync converges on its own
    check_converged(cli, slow_sdk, intent)
    assert cli.json("sync")["pushed"] == 0


# ------------------------------------------------------------------ edits during a sync


def test_edits_during_a_sync_are_not_lost_and_a_second_sync_is_refused(
    tmp_path: Path, slow_emulator: EmulatorServer, slow_sdk: Mistral, api_key: str
) -> None:
    cli = Cli(tmp_path / "store.db", slow_emulator.url, api_key)
    intent = prepare_mixed(cli, slow_emulator, slow_sdk, seed=77, creates=10)
    want, creates = intent.want, list(intent.creates)
    probe = StoreProbe(cli.db)
    # --concurrency 2 over a 20 ms-per-request server: the push phase lasts seconds
    proc = cli.start("sync", "--concurrency", "2")
    try:
        wait_for(
            lambda: probe.scalar("SELECT count(*) FROM sync_runs WHERE finished_at IS NULL"),
            "the sync to start",
        )

        # a second sync on the same store refuses (it does not wait for the lock), one line
        second = cli.run("sync")
        assert second.returncode == EXIT_ERROR
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "a sync is already running" in lines[0], second.stderr
        assert second.stdout == ""

        # wait until the server holds some of the label edits and not yet others (what
        # the store has committed of them by then is the sync's business)
        wait_for(
            lambda: intent.labels_on_server(slow_emulator)[0] >= 5, "the sync to push some labels"
        )
        label = {rid: intent.want[rid]["properties"]["label"] for rid in intent.labelled}
        states = {rid: slow_emulator.state.get_record(rid) for rid in intent.labelled}
        pushed = sorted(
            r for r, rec in states.items() if rec and rec["properties"]["label"] == label[r]
        )
        pending = sorted(set(intent.labelled) - set(pushed))
        assert len(pending) >= 20, "the sync pushed too fast: make it slower"
        with Store.open(cli.db) as store:
            # records the sync has pushed, and ones it is about to push
            for n, rid in enumerate([*pushed[:3], *pending[:6]]):
                value = f"during-sync-{n}"
                edits.set_properties(store, rid, {"label": value})
                want[rid] = content(
                    want[rid]["payload"], {**want[rid]["properties"], "label": value}
                )
            for rid in pending[6:9]:
                body = {"messages": [{"role": "user", "content": f"payload during sync {rid}"}]}
                edits.set_payload(store, rid, body)
                want[rid] = content(body, want[rid]["properties"])
            for rid in pending[9:11]:
                edits.delete_records(store, [rid])
                del want[rid]
                intent.gone.add(rid)
            for rid in intent.untouched[:5]:
                edits.set_properties(store, rid, {"edited": "during sync"})
                want[rid] = content(
                    want[rid]["payload"], {**want[rid]["properties"], "edited": "during sync"}
                )
            for i in range(3):
                c = content(
                    {"messages": [{"role": "user", "content": f"added during sync {i}"}]}, {}
                )
                edits.add_record(store, intent.dataset_id, c["payload"], c["properties"])
                creates.append(c)
        assert proc.poll() is None, "the sync ended before the edits: make it slower"
        code, _, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        probe.close()
    assert code == EXIT_OK, err

    cli.ok("sync")
    check_converged(cli, slow_sdk, Intent(intent.dataset_id, want, intent.gone, creates))


# ------------------------------------------------------------------ edits to creates in flight


def start_sync_with_creates_in_flight(
    tmp_path: Path, server: EmulatorServer, sdk: Mistral, api_key: str, creates: int = 80
) -> tuple[Cli, str, list[Content], list[str], subprocess.Popen[str]]:
    """A store with ``creates`` offline creates and a sync posting them one at a time;
    returns once some are in flight, with their provisional ids, last-posted first."""
    cli = Cli(tmp_path / "store.db", server.url, api_key)
    dataset_id = seed_dataset(server.state, 5, name=f"scenario-inflight-{time.monotonic_ns()}")
    cli.ok("pull", dataset_id)
    bodies: dict[str, Content] = {}
    with Store.open(cli.db) as store:
        for i in range(creates):
            c = content(
                {"messages": [{"role": "user", "content": f"in flight {i} {dataset_id}"}]}, {"i": i}
            )
            bodies[edits.add_record(store, dataset_id, c["payload"], c["properties"])] = c
    probe = StoreProbe(cli.db)
    proc = cli.start("sync", "--concurrency", "1")
    try:
        in_flight = wait_for(
            lambda: [
                r[0]
                for r in probe.rows(
                    "SELECT record_id FROM changes WHERE kind = 'create' AND state = 'in_flight' ORDER BY record_id DESC"
                )
            ],
            "creates in flight",
        )
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        probe.close()
    # creates go out in record-id order: the greatest ids are posted (and committed) last
    return cli, dataset_id, [bodies[r] for r in in_flight], in_flight, proc


def test_edits_to_records_whose_create_is_in_flight_are_not_lost(
    tmp_path: Path, slow_emulator: EmulatorServer, slow_sdk: Mistral, api_key: str
) -> None:
    cli, dataset_id, bodies, ids, proc = start_sync_with_creates_in_flight(
        tmp_path, slow_emulator, slow_sdk, api_key
    )
    try:
        new_payload = {"messages": [{"role": "user", "content": "edited while its POST was out"}]}
        payload_file = tmp_path / "payload.json"
        payload_file.write_text(json.dumps(new_payload), encoding="utf-8")
        # the output names the provisional id: the create was not committed yet
        assert (
            cli.ok("edit", ids[0], "--payload-file", str(payload_file))
            == f"queued payload change for {ids[0]}\n"
        )
        assert (
            cli.ok("set", ids[1], "label=set-in-flight")
            == f"queued properties change for {ids[1]}\n"
        )
        code, _, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == EXIT_OK, err
    cli.ok("sync")

    counts = content_counts(server_records(slow_sdk, dataset_id))
    edited = content(new_payload, bodies[0]["properties"])
    labelled = content(bodies[1]["payload"], {**bodies[1]["properties"], "label": "set-in-flight"})
    assert counts[content_key(edited)] == 1 and counts[content_key(labelled)] == 1
    assert counts[content_key(bodies[0])] == 0 and counts[content_key(bodies[1])] == 0
    assert sum(counts.values()) == 5 + 80
    status = cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0)


def test_rm_of_a_record_whose_create_is_in_flight_is_queued(
    tmp_path: Path, slow_emulator: EmulatorServer, slow_sdk: Mistral, api_key: str
) -> None:
    cli, dataset_id, bodies, ids, proc = start_sync_with_creates_in_flight(
        tmp_path, slow_emulator, slow_sdk, api_key
    )
    try:
        rm = cli.run("rm", ids[0])
        code, _, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == EXIT_OK, err
    assert (rm.returncode, rm.stdout, rm.stderr) == (EXIT_OK, "queued 1 delete(s)\n", "")
    cli.ok("sync")
    counts = content_counts(server_records(slow_sdk, dataset_id))
    assert counts[content_key(bodies[0])] == 0, (
        "the record deleted while being created is on the server"
    )
    assert sum(counts.values()) == 5 + 80 - 1
    status = cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0)


def test_edit_to_a_create_the_sync_is_about_to_post_is_not_lost(
    tmp_path: Path,
    emulator: EmulatorServer,
    sdk: Mistral,
    api_key: str,
    dataset: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The window is a few milliseconds wide, so the sync runs in-process and the edit (by
    another process: the CLI) is slotted in right before the transaction that marks the
    creates in flight begins."""
    import localstore.sync.run
    from localstore.api import Client
    from localstore.store import ledger

    dataset_id = dataset(3)
    cli = Cli(tmp_path / "store.db", emulator.url, api_key)
    cli.ok("pull", dataset_id)
    first = content({"messages": [{"role": "user", "content": f"v1 {dataset_id}"}]}, {})
    second = content({"messages": [{"role": "user", "content": f"v2 {dataset_id}"}]}, {})
    payload_file = tmp_path / "v2.json"
    payload_file.write_text(json.dumps(second["payload"]), encoding="utf-8")
    with Store.open(cli.db) as store:
        rid = edits.add_record(store, dataset_id, first["payload"], first["properties"])

    real_begin_create = ledger.begin_create
    edited: list[str] = []

    def edit_first(conn: sqlite3.Connection, work: Any) -> Any:
        # called in the transaction that marks the create in flight, right after it read
        # the work: step out of it, let the other process edit, step back in
        if not edited:
            conn.execute("ROLLBACK")
            edited.append(cli.ok("edit", rid, "--payload-file", str(payload_file)))
            conn.execute("BEGIN IMMEDIATE")
        return real_begin_create(conn, work)

    monkeypatch.setattr(ledger, "begin_create", edit_first)
    with Store.open(cli.db) as store, Client(emulator.url, api_key) as client:
        assert localstore.sync.run.sync(store, client).exit_code == EXIT_OK
    monkeypatch.undo()
    assert edited == [f"queued payload change for {rid}\n"]
    cli.ok("sync")

    counts = content_counts(server_records(sdk, dataset_id))
    assert counts[content_key(second)] == 1, "the edit made during the sync is lost"
    assert counts[content_key(first)] == 0
    assert sum(counts.values()) == 4
    status = cli.json("status")
    assert (status["pending"], status["conflicts"]) == (0, 0)


# ------------------------------------------------------------------ the sync report


def test_sync_report_counts_conflicts_found_while_refreshing(
    tmp_path: Path,
    emulator: EmulatorServer,
    sdk: Mistral,
    api_key: str,
    dataset: Callable[..., str],
) -> None:
    dataset_id = dataset(3)
    cli = Cli(tmp_path / "store.db", emulator.url, api_key)
    cli.ok("pull", dataset_id)
    rid = sorted(server_records(sdk, dataset_id))[0]
    cli.ok("set", rid, "label=mine", offline=True)
    sdk.beta.observability.datasets.records.delete(dataset_record_id=rid)

    planned = cli.json("sync", "--dry-run", code=EXIT_CONFLICTS)
    assert (planned["new_conflicts"], planned["open_conflicts"]) == (1, 1)
    report = cli.json("sync", code=EXIT_CONFLICTS)
    assert report["open_conflicts"] == 1
    assert report["new_conflicts"] == 1
