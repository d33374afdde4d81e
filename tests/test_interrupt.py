"""Issue 12, point 6 — Ctrl-C. SIGINT during ``pull``, ``sync`` or ``judge`` stops at once:
requests in flight are abandoned (their outcome is unknown and the next sync settles
them), queued pushes are not started, what was done is reported, and the exit code is
130. Nothing is lost: SIGINT at seeded random moments of a sync, then a normal sync
converges on exactly what was meant.

The CLI runs as a subprocess (``python -m localstore``), piped and under a
pseudo-terminal, against a real emulator whose requests take a while; the server is read
back with the official SDK. Times are measured and reported in the drill figures, never
asserted: "at once" is checked causally — the process is gone while the requests it had
sent are still waiting in the server.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ptyrun import run_in_pty
from support.cli import (
    EXIT_OK,
    Cli,
    content,
    content_counts,
    content_key,
    integrity,
    server_records,
)
from support.wait import wait_until

from localstore.api import Client
from localstore.errors import Interrupted
from localstore.ops import edits
from localstore.store.db import Store
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer, seed_dataset
from localstore_emulator.adversary import PROPERTIES, Rule

pytest.importorskip("mistralai.client")
from mistralai.client import Mistral

EXIT_INTERRUPTED = 130
WAIT = 60.0
LATENCY_MS = 20  # every request: a sync of a few hundred changes lasts a few seconds
SLOW_MS = 3000  # requests that are surely still in flight when the process is gone


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    return wait_until(predicate, what, timeout, interval=0.005)


@pytest.fixture(scope="module")
def server() -> Iterator[EmulatorServer]:
    with EmulatorServer(latency_ms=LATENCY_MS) as running:
        yield running


@pytest.fixture
def latency(server: EmulatorServer) -> Iterator[Callable[[float], None]]:
    """Change the server's latency for this test; afterwards the requests still waiting
    in it are let through and the latency restored."""
    yield lambda ms: server.configure(latency_ms=ms)
    wait_for(lambda: server.faults.in_flight == 0, "abandoned requests to reach the server")
    server.configure(latency_ms=LATENCY_MS)


@pytest.fixture
def sdk(server: EmulatorServer, api_key: str) -> Iterator[Mistral]:
    with Mistral(api_key=api_key, server_url=server.url) as client:
        yield client


@dataclass
class Intent:
    """What a store's pending changes must leave on the server."""

    dataset_id: str
    want: dict[str, dict[str, Any]]  # id -> content
    gone: set[str]
    creates: list[dict[str, Any]]
    labelled: list[str]
    rewritten: list[str]  # payload edits

    def labels_sent(self, server: EmulatorServer) -> int:
        return sum(1 for rid in self.labelled if _props(server, rid).get("label") == self.want[rid]["properties"]["label"])

    def done_on_server(self, sdk: Mistral) -> dict[str, int]:
        """What of the intent the server holds now, counted as a sync report counts."""
        held = server_records(sdk, self.dataset_id)
        updated = sum(1 for rid in self.labelled + self.rewritten
                      if rid in held and content(held[rid]["payload"], held[rid]["properties"]) == self.want[rid])
        counts = content_counts(held)
        created = sum(1 for c in self.creates if counts[content_key(c)])
        return {"updated": updated, "created": created, "deleted": len(self.gone - set(held))}


def _props(server: EmulatorServer, rid: str) -> dict[str, Any]:
    return dict((server.state.get_record(rid) or {}).get("properties") or {})


def prepare(cli: Cli, server: EmulatorServer, sdk: Mistral, seed: int, n: int = 240) -> Intent:
    """A pulled store with a few hundred mixed pending changes (made in-process)."""
    dataset_id = seed_dataset(server.state, n, name=f"interrupt-{seed}-{time.monotonic_ns()}", seed=seed)
    cli.ok("pull", dataset_id)
    want = {rid: content(r["payload"], r["properties"]) for rid, r in server_records(sdk, dataset_id).items()}
    rng = random.Random(seed)
    ids = sorted(want)
    rng.shuffle(ids)
    labelled, payloads, deletes = ids[:120], ids[120:160], ids[160:190]
    with Store.open(cli.db) as store:
        for rid in labelled:
            label = f"i{seed}-{rng.randrange(10**6)}"
            edits.set_properties(store, rid, {"label": label})
            want[rid] = content(want[rid]["payload"], {**want[rid]["properties"], "label": label})
        for rid in payloads:
            body = {"messages": [{"role": "assistant", "content": f"rewritten {seed}/{rid}"}]}
            edits.set_payload(store, rid, body)
            want[rid] = content(body, want[rid]["properties"])
        edits.delete_records(store, deletes)
        creates = []
        for i in range(15):
            made = content({"messages": [{"role": "user", "content": f"new {i} of {seed}"}]}, {"i": i})
            edits.add_record(store, dataset_id, made["payload"], made["properties"])
            creates.append(made)
    for rid in deletes:
        del want[rid]
    return Intent(dataset_id, want, set(deletes), creates, labelled, payloads)


def check_converged(cli: Cli, sdk: Mistral, intent: Intent) -> None:
    """Every edit is on the server, each create exactly once, no delete undone, and
    the store agrees with the server with nothing left to do."""
    assert integrity(cli.db) == "ok"
    held = server_records(sdk, intent.dataset_id)
    counts = content_counts(held)
    assert all(counts[content_key(c)] == 1 for c in intent.creates), "a create is missing or doubled"
    for rid, expected in intent.want.items():
        assert rid in held, f"record {rid} is gone from the server"
        assert content(held[rid]["payload"], held[rid]["properties"]) == expected, f"edit of {rid} lost"
    assert not intent.gone & set(held), "a deleted record is back"
    assert len(held) == len(intent.want) + len(intent.creates)
    status = cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0), status


def reported_is_on_server(report: dict[str, Any], intent: Intent, sdk: Mistral) -> None:
    """Whatever a report counts as pushed, the server holds (it may hold more: the
    requests abandoned in flight may have landed)."""
    held = intent.done_on_server(sdk)
    for what in ("updated", "created", "deleted"):
        assert report[what] <= held[what], (what, report, held)


def in_flight_entries(db: Path) -> int:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM changes WHERE state = 'in_flight'").fetchone()[0])
    finally:
        conn.close()


def interrupt(proc: subprocess.Popen[str]) -> tuple[int, str, str, float]:
    """SIGINT (what Ctrl-C sends), then wait for the process: (code, stdout, stderr,
    seconds from the signal to its exit — measured, not asserted)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"still running {WAIT:.0f} s after SIGINT: {err}") from None
    return proc.returncode, out, err, time.monotonic() - sent


# ------------------------------------------------------------------ in-process


def test_an_interrupted_sync_commits_what_arrived_and_unsent_pushes_go_back_to_pending(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """KeyboardInterrupt right after the first push outcomes are committed: sync raises
    Interrupted with its report; the pushes queued but never started are pending again,
    only those really in flight stay in flight; the run counts as failed; the next sync
    sends the rest. The server holds every PUT after the first two, so that the others
    are still queued or on the wire when the interrupt comes (outcomes are committed a
    batch at a time: a fast server could otherwise answer all 30 before the first commit)."""
    dataset_id = seed_dataset(emulator.state, 30, name=f"interrupt-inprocess-{time.monotonic_ns()}")
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        from localstore.sync.pull import pull

        pull(store, client, [dataset_id])
        ids = [r[0] for r in store.conn.execute("SELECT id FROM mirror ORDER BY id")]
        for rid in ids:
            edits.set_properties(store, rid, {"label": f"sent-{rid[:8]}"})

        def stop_at_first_push(phase: str, done: int, total: int | None) -> None:
            if phase == "push":
                raise KeyboardInterrupt

        held = emulator.adversary.add(Rule("PUT", PROPERTIES, dataset_id=dataset_id, skip=2, times=None, hold=True))
        try:
            with pytest.raises(Interrupted) as caught:
                sync(store, client, concurrency=2, progress=stop_at_first_push)
        finally:
            held.release()
            emulator.adversary.remove(held)
        report = caught.value.done
        assert report.interrupted and report.exit_code == EXIT_INTERRUPTED
        assert 1 <= report.updated < len(ids)
        in_flight = store.scalar("SELECT count(*) FROM changes WHERE state = 'in_flight'")
        assert in_flight == report.abandoned <= 2  # never more than the requests running
        pending = store.scalar("SELECT count(*) FROM changes WHERE state = 'pending'")
        assert pending + in_flight + report.updated == len(ids)
        assert store.scalar("SELECT status || ' ' || message FROM sync_runs ORDER BY id DESC LIMIT 1") == (
            "failed interrupted (Ctrl-C)"
        )

        again = sync(store, client)
        assert again.exit_code == EXIT_OK and again.pending == 0
        held = {rid: client.get_record(rid).properties.get("label") for rid in ids}
        assert held == {rid: f"sent-{rid[:8]}" for rid in ids}


# ------------------------------------------------------------------ the process


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sync", "pull", "judge"])
def test_ctrl_c_exits_130_at_once_leaving_its_requests_in_flight(
    command: str, tmp_path: Path, server: EmulatorServer, sdk: Mistral, api_key: str,
    latency: Callable[[float], None], drill_figures: Any,
) -> None:
    """The server holds every request for 3 s; SIGINT arrives while some are waiting
    there. The process is gone while they still wait (it did not wait for them), exits
    130 and says it was interrupted; the store is sound and the command, run again,
    finishes the job."""
    cli = Cli(tmp_path / "store.db", server.url, api_key)
    intent = prepare(cli, server, sdk, seed=7)
    pending = cli.json("status")["pending"]
    judge_file = tmp_path / "judge.json"
    judge_file.write_text(json.dumps(JUDGE))
    args = {"sync": ["sync"], "pull": ["pull", intent.dataset_id],
            "judge": ["judge", "--where", "1", "--allow-stale", "--judge-file", str(judge_file), "--json"]}[command]
    latency(SLOW_MS)
    proc = cli.start(*args)
    # for sync: a push in flight (before them, its requests read the server)
    pushing = (lambda: in_flight_entries(cli.db) > 0) if command == "sync" else (lambda: True)
    wait_for(lambda: (server.faults.in_flight > 0 and pushing()) or proc.poll() is not None, "a request in flight")
    code, out, err, seconds = interrupt(proc)
    still_waiting = server.faults.in_flight
    drill_figures.record(**{"sigint→exit ms": round(seconds * 1000)})
    assert code == EXIT_INTERRUPTED, err
    assert still_waiting > 0, "the process waited for its requests before exiting"
    assert "localstore: interrupted" in err and "Traceback" not in err
    assert integrity(cli.db) == "ok"
    if command == "judge":
        report = json.loads(out)
        assert report["interrupted"] and report["succeeded"] == 0
        assert len(report["not_judged"]) == report["selected"] - len(report["skips"])
    latency(0)
    wait_for(lambda: server.faults.in_flight == 0, "the abandoned requests to land")
    if command == "sync":
        assert in_flight_entries(cli.db) > 0  # what was being sent is unknown until the next sync
        cli.ok("sync")
        check_converged(cli, sdk, intent)
    else:  # nothing of the local work was touched
        assert cli.json("status")["pending"] == pending
    if command == "pull":
        cli.ok("pull", intent.dataset_id)
        cli.ok("sync")
        check_converged(cli, sdk, intent)


JUDGE = {
    "name": "support-outcome",
    "description": "Did the assistant resolve the ticket?",
    "model_name": "mistral-small-latest",
    "output": {"type": "CLASSIFICATION", "options": [{"value": "yes", "description": "solved"},
                                                      {"value": "no", "description": "not solved"}]},
    "instructions": "Say whether the ticket was resolved.",
    "tools": [],
}


def full_sync_seconds(cli: Cli, server: EmulatorServer, sdk: Mistral) -> float:
    intent = prepare(cli, server, sdk, seed=1000)
    started = time.monotonic()
    cli.ok("sync")
    elapsed = time.monotonic() - started
    check_converged(cli, sdk, intent)
    return elapsed


@pytest.fixture(scope="module")
def sync_span(tmp_path_factory: pytest.TempPathFactory, server: EmulatorServer, api_key: str) -> float:
    """How long an uninterrupted sync of a prepared store takes here: the SIGINTs are
    spread over this span."""
    with Mistral(api_key=api_key, server_url=server.url) as client:
        return full_sync_seconds(Cli(tmp_path_factory.mktemp("span") / "s.db", server.url, api_key), server, client)


ROUNDS = 6


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_sigint_at_a_random_moment_then_sync_converges(
    round_: int, tmp_path: Path, server: EmulatorServer, sdk: Mistral, api_key: str,
    sync_span: float, drill_figures: Any,
) -> None:
    """SIGINT after a seeded random delay (one in each sixth of a whole sync, early to
    late): exit 130 (0 if the sync had finished), nothing reported as pushed is missing
    from the server, and the next sync converges on every edit, each create once."""
    cli = Cli(tmp_path / "store.db", server.url, api_key)
    intent = prepare(cli, server, sdk, seed=round_)
    delay = sync_span * (round_ + random.Random(20_260_112 + round_).random()) / ROUNDS
    proc = cli.start("sync", "--json")
    deadline = time.monotonic() + delay
    wait_for(lambda: time.monotonic() >= deadline or proc.poll() is not None, "the moment to interrupt")
    code, out, err, seconds = interrupt(proc)
    if code == -signal.SIGINT:
        # before Python handles SIGINT (the first milliseconds of the process) or once it
        # no longer does (tearing down after its work): the signal's default action ends it
        if out:  # the sync had finished and reported
            assert not json.loads(out)["interrupted"], out
            code = EXIT_OK
        else:
            assert err.strip() in ("", "localstore: interrupted"), err
            code = EXIT_INTERRUPTED
    assert code in (EXIT_INTERRUPTED, EXIT_OK), err
    if code == EXIT_INTERRUPTED:
        drill_figures.record(kills=1, **{"sigint→exit ms": round(seconds * 1000)})
    if not out:  # interrupted while starting, before the sync began: nothing to report
        assert code == EXIT_INTERRUPTED and err.strip() in ("", "localstore: interrupted"), err
    report = json.loads(out or '{"interrupted": true, "updated": 0, "created": 0, "deleted": 0}')
    assert report["interrupted"] == (code == EXIT_INTERRUPTED)
    wait_for(lambda: server.faults.in_flight == 0, "the abandoned requests to land")
    reported_is_on_server(report, intent, sdk)
    assert integrity(cli.db) == "ok"
    cli.ok("sync")
    check_converged(cli, sdk, intent)
    drill_figures.record(lost=0, duplicated=0)


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_reports_what_was_pushed(
    tmp_path: Path, server: EmulatorServer, sdk: Mistral, api_key: str, drill_figures: Any
) -> None:
    """Under a pseudo-terminal, SIGINT once the server holds some of the edits: the
    terminal shows what was pushed, stderr that it was interrupted and what happens
    next; exit 130; the next sync converges."""
    cli = Cli(tmp_path / "store.db", server.url, api_key)
    intent = prepare(cli, server, sdk, seed=42)
    sent: list[float] = []

    def ctrl_c_once_some_are_sent(proc: subprocess.Popen[bytes]) -> None:
        if not sent and intent.labels_sent(server) >= 10:
            sent.append(time.monotonic())
            proc.send_signal(signal.SIGINT)

    env = cli.env()
    done = run_in_pty([*cli.argv("sync")[3:]], env=env, poll=ctrl_c_once_some_are_sent, timeout=WAIT)
    assert sent, "the sync finished before 10 edits were sent"
    assert done.returncode == EXIT_INTERRUPTED, done.stderr
    assert "pushed " in done.output and "Traceback" not in done.output + done.stderr
    assert "localstore: interrupted:" in done.stderr and "`localstore sync` goes on" in done.stderr
    numbers = done.output.split("pushed ")[1].split(")")[0]  # "N (created C, updated U, deleted D"
    report = {k: int(numbers.split(f"{k} ")[1].split(",")[0]) for k in ("created", "updated", "deleted")}
    assert report["updated"] >= 10 - 8  # at most `concurrency` were in flight
    wait_for(lambda: server.faults.in_flight == 0, "the abandoned requests to land")
    reported_is_on_server(report, intent, sdk)
    drill_figures.record(**{"sigint→exit ms": round((time.monotonic() - sent[0]) * 1000)})
    cli.ok("sync")
    check_converged(cli, sdk, intent)
