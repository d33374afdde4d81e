"""Issue #7, crash drill: ``localstore sync`` (a CLI subprocess) is SIGKILLed at 20
seeded moments of one long sync; after each kill the SQLite file is sound, and in the
end the server holds exactly what an uninterrupted sync of the same changes leaves.

tests/test_scenario_cli.py kills a fresh store once per run at 8 chosen points; this
drill kills the *same* sync over and over (kill, check, restart, kill again at the
next moment...), so the interrupted states pile up, and compares the final server
state (the multiset of record contents, ignoring ids and timestamps) with an
uninterrupted run on an identical dataset. A few fresh-store runs, killed once each
at a random moment, are compared the same way.

Moments are seeded: most are positions in the stream of write requests the server
receives (kill as soon as it has received that many, spread over a whole sync's writes,
its final phase of creates and the bulk delete included), a few are delays from the
process start (start-up, lock, listing). The requests go through tests/fault_proxy.py
with no faults: it counts them.

Figures beyond the common ones: ``in_flight`` — kills after which the store held creates
marked in flight (POSTed, or about to be: the ambiguous case the next sync must settle);
``resent`` — write requests beyond those of an uninterrupted sync.
"""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DrillFigures
from fault_proxy import FaultProxy
from test_drills_faults import Mix, make_mixed_changes, pull_store, server_contents, tally
from test_scenario_cli import Cli, Intent, content_key, finish, integrity, wait_for

from localstore_emulator import EmulatorServer, seed_dataset

EXIT_OK = 0
LATENCY_MS = 20
RECORDS = 1000
SEED = 7_007
MIX = Mix(props=300, payloads=100, both=50, deletes=100, creates=60)  # 660 change-log entries
KILLS = 20
TIMED_KILLS = 3  # of the 20: delays from the process start
FINAL_WRITES = 1 + MIX.creates  # the last writes out: the bulk delete and the creates
FRESH_RUNS = 3

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not


@pytest.fixture(scope="module")
def slow_server() -> Iterator[EmulatorServer]:
    """20 ms a request: with 8 at a time, an uninterrupted sync lasts a couple of seconds."""
    with EmulatorServer(latency_ms=LATENCY_MS) as server:
        yield server


@pytest.fixture(scope="module")
def tap(slow_server: EmulatorServer) -> Iterator[FaultProxy]:
    with FaultProxy(slow_server.url) as proxy:  # rate 0: counts, never faults
        yield proxy


@dataclass
class Prepared:
    cli: Cli
    intent: Intent


def prepare(
    tmp: Path, server: EmulatorServer, tap: FaultProxy, api_key: str, name: str
) -> Prepared:
    """An identical dataset each time (same seed), pulled, with the same changes queued."""
    dataset_id = seed_dataset(
        server.state, RECORDS, name=f"crash-{name}-{time.monotonic_ns()}", seed=SEED
    )
    db = tmp / "store.db"
    pull_store(db, server.url, api_key, dataset_id)
    intent = make_mixed_changes(db, server, dataset_id, MIX, seed=SEED, tag="crash")
    return Prepared(Cli(db, tap.url, api_key), intent)


@dataclass(frozen=True)
class Baseline:
    contents: Counter[str]  # the server's final record contents
    writes: int  # the write requests an uninterrupted sync sends


@pytest.fixture(scope="module")
def uninterrupted(
    slow_server: EmulatorServer,
    tap: FaultProxy,
    api_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Baseline:
    """The final server state after one uninterrupted sync of the changes."""
    run = prepare(tmp_path_factory.mktemp("uninterrupted"), slow_server, tap, api_key, "base")
    before = tap.stats().writes_forwarded
    run.cli.ok("sync")  # converges in one go
    writes = tap.stats().writes_forwarded - before
    server = server_contents(slow_server, run.intent.dataset_id)
    tally(server, run.intent).check()
    return Baseline(Counter(content_key(c) for c in server.values()), writes)


Moment = tuple[str, float]


def plan_moments(rng: random.Random, writes: int) -> list[Moment]:
    """KILLS moments, in order: ("writes", n) kills once the server has received n
    write requests of the drill (positions spread over a whole sync's writes, two in
    its final phase, where creates and the bulk delete go out); ("delay", s) kills s
    seconds after the process starts (start-up, lock, listing). The last position
    leaves room for the writes a kill overshoots by (those already on their way)."""
    final = writes - FINAL_WRITES
    positions = sorted(
        [rng.randrange(1, final) for _ in range(KILLS - TIMED_KILLS - 2)]
        + [rng.randrange(final, writes - 30) for _ in range(2)]
    )
    moments: list[Moment] = [("writes", float(p)) for p in positions]
    for _ in range(TIMED_KILLS):  # in the first third, while much is left to do
        moments.insert(rng.randrange(0, KILLS // 3), ("delay", round(rng.uniform(0.0, 0.6), 3)))
    return moments


def trigger_for(moment: Moment, tap: FaultProxy) -> Callable[[], bool]:
    kind, value = moment
    if kind == "delay":
        deadline = time.monotonic() + value
        return lambda: time.monotonic() >= deadline
    # a position an earlier kill already passed: this run's first write
    target = max(int(value), tap.stats().writes_forwarded + 1)
    return lambda: tap.stats().writes_forwarded >= target


def creates_in_flight(db: Path) -> int:
    """Creates a killed sync left marked in flight (POSTed or about to be)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(
            conn.execute(
                "SELECT count(*) FROM changes WHERE kind = 'create' AND state = 'in_flight'"
            ).fetchone()[0]
        )
    finally:
        conn.close()


def kill_at(cli: Cli, moment: Moment, tap: FaultProxy) -> bool:
    """Start a sync, SIGKILL it at ``moment``; True if it was killed (False: it ended
    first). The file must be sound afterwards."""
    proc = cli.start("sync")
    trigger = trigger_for(moment, tap)
    try:
        wait_for(lambda: trigger() or proc.poll() is not None, f"kill moment {moment}")
    finally:
        killed = proc.poll() is None
        if killed:
            proc.send_signal(signal.SIGKILL)
        code, _, err = finish(proc)
    assert code in (-signal.SIGKILL, EXIT_OK), f"the sync failed before its kill: {err}"
    assert integrity(cli.db) == "ok", f"integrity_check after the kill at {moment}"
    return killed and code == -signal.SIGKILL


def converge(cli: Cli) -> int:
    """A new sync, or two, converges; returns how many it took."""
    for n in (1, 2):
        done = cli.run("sync")
        if done.returncode == EXIT_OK:
            return n
        assert n < 2 and done.returncode == 1, (
            f"sync after the kills exited {done.returncode}: {done.stderr}"
        )
    raise AssertionError("unreachable")


def check_like_uninterrupted(
    server: EmulatorServer, run: Prepared, expected: Baseline
) -> tuple[int, int]:
    """Returns (lost, duplicated) after asserting there are none."""
    assert integrity(run.cli.db) == "ok"
    contents = server_contents(server, run.intent.dataset_id)
    t = tally(contents, run.intent)
    got = Counter(content_key(c) for c in contents.values())
    t.check()
    assert got == expected.contents, (
        f"the server differs from an uninterrupted run: {sum((got - expected.contents).values())} "
        f"extra, {sum((expected.contents - got).values())} missing record contents"
    )
    status = run.cli.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (0, 0, 0), status
    again = run.cli.json("sync")
    assert (again["exit_code"], again["pushed"]) == (EXIT_OK, 0), again
    return len(t.lost), len(t.duplicated)


def test_one_sync_killed_twenty_times_converges_like_an_uninterrupted_one(
    tmp_path: Path,
    slow_server: EmulatorServer,
    tap: FaultProxy,
    api_key: str,
    uninterrupted: Baseline,
    drill_figures: DrillFigures,
) -> None:
    run = prepare(tmp_path, slow_server, tap, api_key, "repeat")
    moments = plan_moments(random.Random(SEED), uninterrupted.writes)
    tap.reset_stats()
    kills, at, in_flight = 0, [], 0
    for moment in moments:
        at.append(tap.stats().writes_forwarded)
        kills += kill_at(run.cli, moment, tap)
        in_flight += creates_in_flight(run.cli.db) > 0
    syncs = len(moments) + converge(run.cli)
    lost, duplicated = check_like_uninterrupted(slow_server, run, uninterrupted)
    drill_figures.record(
        requests=tap.stats().requests,
        changes=MIX.entries,
        syncs=syncs,
        kills=kills,
        lost=lost,
        duplicated=duplicated,
        in_flight=in_flight,
        resent=tap.stats().writes_forwarded - uninterrupted.writes,
    )
    assert kills == KILLS, f"only {kills} of the syncs were killed mid-way (writes at start: {at})"
    # the kills spread over the whole sync: from nothing sent to its final phase
    assert at[0] == 0 and max(at) >= uninterrupted.writes - FINAL_WRITES, at
    assert in_flight > 0, "no kill left a create in flight: the ambiguous case was not drilled"


@pytest.mark.parametrize("run_no", range(FRESH_RUNS))
def test_a_fresh_store_killed_once_converges_like_an_uninterrupted_one(
    run_no: int,
    tmp_path: Path,
    slow_server: EmulatorServer,
    tap: FaultProxy,
    api_key: str,
    uninterrupted: Baseline,
    drill_figures: DrillFigures,
) -> None:
    run = prepare(tmp_path, slow_server, tap, api_key, f"fresh{run_no}")
    rng = random.Random(SEED + 1 + run_no)
    moment = ("writes", float(rng.randrange(1, uninterrupted.writes - 5)))
    tap.reset_stats()
    killed = kill_at(run.cli, moment, tap)
    in_flight = creates_in_flight(run.cli.db)
    syncs = 1 + converge(run.cli)
    lost, duplicated = check_like_uninterrupted(slow_server, run, uninterrupted)
    drill_figures.record(
        requests=tap.stats().requests,
        changes=MIX.entries,
        syncs=syncs,
        kills=int(killed),
        lost=lost,
        duplicated=duplicated,
        kill_at=int(moment[1]),
        in_flight=int(in_flight > 0),
        resent=tap.stats().writes_forwarded - uninterrupted.writes,
    )
    assert killed, f"the sync ended before its kill at {moment}"
