"""Issue #7, fault drills: syncs through a loopback proxy that injects faults
(tests/fault_proxy.py) converge with no lost edit and no duplicate.

The sync runs in-process with a short read timeout and a fast retry policy; the
server's state is read directly from the emulator (no client in between). Each drill
records its figures through ``drill_figures`` (printed at the end of the run).

Figures beyond the common ones: ``unheard`` — writes the server applied whose answer
the client never got or could not read (reset after forwarding, truncated, stalled).

The mixed-change planner and the tally here are shared with the crash and concurrency
drills (tests/test_drills_crash.py, tests/test_drills_concurrency.py).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import DrillFigures
from fault_proxy import ALL_KINDS, FaultProxy, ProxyStats, creates_only
from test_scenario_cli import Content, Intent, content, content_key, integrity, local_records

from localstore.api import Client, RetryPolicy
from localstore.ops import edits
from localstore.ops import queries as views
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import SyncReport, sync
from localstore_emulator import EmulatorServer

EXIT_OK, EXIT_ERROR, EXIT_CONFLICTS = 0, 1, 3
READ_TIMEOUT = httpx.Timeout(1.0, connect=1.0)
FAST_RETRY = RetryPolicy(attempts=6, base_delay=0.01, max_delay=0.1, max_total_seconds=15.0)
MAX_SYNCS = 15

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not


# ------------------------------------------------------------------ shared by the drills


@dataclass(frozen=True)
class Mix:
    """How many records get each kind of change."""

    props: int  # label set (and a marker key)
    payloads: int  # payload replaced
    both: int  # payload replaced, a key set and another unset: two change-log entries
    deletes: int
    creates: int

    @property
    def entries(self) -> int:
        return self.props + self.payloads + 2 * self.both + self.deletes + self.creates


def server_contents(server: EmulatorServer, dataset_id: str) -> dict[str, Content]:
    """Every live record of the dataset, straight from the emulator's state."""
    return {
        r["id"]: content(r["payload"], r["properties"])
        for r in server.state.list_records(dataset_id)
    }


def pull_store(db: Path, server_url: str, api_key: str, dataset_id: str) -> None:
    with Store.open(db) as store, Client(server_url, api_key) as client:
        pull(store, client, [dataset_id])


def make_mixed_changes(
    db: Path, server: EmulatorServer, dataset_id: str, mix: Mix, seed: int, tag: str
) -> Intent:
    """Queue ``mix`` in a pulled store, in-process. Records are chosen by their position
    in creation order and the new values depend only on (seed, position, tag): the same
    call on an identical dataset (same ``seed_dataset`` seed) makes the same changes."""
    ordered = server.state.list_records(dataset_id)  # by (created_at, id): creation order
    original = {r["id"]: content(r["payload"], r["properties"]) for r in ordered}
    positions = list(range(len(ordered)))
    rng = random.Random(seed)
    rng.shuffle(positions)
    cuts = [mix.props, mix.payloads, mix.both, mix.deletes]
    assert sum(cuts) <= len(positions), "the dataset is too small for this mix"
    groups: list[list[int]] = []
    start = 0
    for size in cuts:
        groups.append(positions[start : start + size])
        start += size
    props, payloads, both, deletes = groups
    rid = [r["id"] for r in ordered]
    want = dict(original)
    with Store.open(db) as store:
        for p in props:
            value = f"{tag}-label-{seed}-{p}"
            edits.set_properties(store, rid[p], {"label": value, "drill": tag})
            c = want[rid[p]]
            want[rid[p]] = content(c["payload"], {**c["properties"], "label": value, "drill": tag})
        for p in [*payloads, *both]:
            body = {"messages": [{"role": "assistant", "content": f"{tag} rewrite {seed}/{p}"}]}
            edits.set_payload(store, rid[p], body)
            want[rid[p]] = content(body, want[rid[p]]["properties"])
        for p in both:
            current = {k: v for k, v in want[rid[p]]["properties"].items() if k != "split"}
            current["reviewed"] = p
            edits.edit_record(store, rid[p], properties=current)
            want[rid[p]] = content(want[rid[p]]["payload"], current)
        if deletes:
            edits.delete_records(store, [rid[p] for p in deletes])
        made = []
        for i in range(mix.creates):
            c = content(
                {"messages": [{"role": "user", "content": f"{tag} create {i} (seed {seed})"}]},
                {"i": i, "drill": tag},
            )
            edits.add_record(store, dataset_id, c["payload"], c["properties"])
            made.append(c)
        pending = sum(views.status(store).pending_by_kind.values())
    assert pending == mix.entries, (pending, mix)
    for p in deletes:
        del want[rid[p]]
    touched = {*props, *payloads, *both, *deletes}
    return Intent(
        dataset_id,
        want,
        {rid[p] for p in deletes},
        made,
        untouched=[rid[p] for p in positions if p not in touched],
        labelled=[rid[p] for p in props],
    )


@dataclass
class Tally:
    """How the server's state differs from what the changes intended."""

    lost: list[str] = field(default_factory=list)  # one line per lost edit
    duplicated: list[str] = field(default_factory=list)  # one line per extra record

    def check(self) -> None:
        assert not self.lost, f"{len(self.lost)} edit(s) lost: {self.lost[:5]}"
        assert not self.duplicated, f"{len(self.duplicated)} duplicate(s): {self.duplicated[:5]}"


def tally(server: dict[str, Content], intent: Intent) -> Tally:
    t = Tally()
    for rid, expected in intent.want.items():
        if rid not in server:
            t.lost.append(f"record {rid} is gone from the server")
        elif server[rid] != expected:
            t.lost.append(f"record {rid} holds {server[rid]}, expected {expected}")
    for rid in intent.gone & set(server):
        t.lost.append(f"deleted record {rid} is on the server")
    wanted_creates = Counter(content_key(c) for c in intent.creates)
    extra = Counter(
        content_key(c)
        for rid, c in server.items()
        if rid not in intent.want and rid not in intent.gone
    )
    for key, n in wanted_creates.items():
        if extra[key] < n:
            t.lost.append(f"create {key[:80]} is not on the server")
        elif extra[key] > n:
            t.duplicated.append(f"create {key[:80]} is on the server {extra[key]} times")
    for key, n in extra.items():
        if key not in wanted_creates:
            t.duplicated.extend([f"unexpected record {key[:80]}"] * n)
    return t


def record_proxy_figures(figures: DrillFigures, stats: ProxyStats) -> None:
    figures.record(
        requests=stats.requests,
        faults=stats.faults,
        unheard=stats.applied_unheard,
    )


# ------------------------------------------------------------------ the fault drills


@pytest.fixture
def proxy(emulator: EmulatorServer) -> Iterator[FaultProxy]:
    with FaultProxy(emulator.url, seed=7, stall_seconds=5.0) as p:
        yield p


def sync_through_faults(db: Path, url: str, api_key: str) -> list[SyncReport]:
    """Sync until one exits 0, at most MAX_SYNCS times (the caller checks the last). A
    sync may fail (exit 1: what failed stays pending); none may flag a conflict: nobody
    else edits the server."""
    reports: list[SyncReport] = []
    with (
        Store.open(db) as store,
        Client(url, api_key, timeout=READ_TIMEOUT, retry=FAST_RETRY) as client,
    ):
        for _ in range(MAX_SYNCS):
            report = sync(store, client)
            reports.append(report)
            assert report.exit_code != EXIT_CONFLICTS, (
                f"a false conflict after faults: {report.to_dict()}"
            )
            if report.exit_code == EXIT_OK:
                break
    return reports


def check_store(db: Path, server: dict[str, Content], dataset_id: str) -> None:
    assert integrity(db) == "ok"
    with Store.open(db) as store:
        status = views.status(store)
    assert (status.pending, status.conflicts, status.rejected) == (0, 0, 0), status
    assert local_records(db, dataset_id) == server, "the store does not mirror the server"


def run_drill(
    *,
    tmp_path: Path,
    emulator: EmulatorServer,
    proxy: FaultProxy,
    api_key: str,
    dataset: Callable[..., str],
    figures: DrillFigures,
    records: int,
    mix: Mix,
    seed: int,
) -> tuple[list[SyncReport], ProxyStats]:
    """Pull (no faults), queue ``mix``, sync through the proxy until clean, then check
    the server, the store, and that one more sync without faults has nothing to do."""
    dataset_id = dataset(records, seed=seed)
    db = tmp_path / "store.db"
    pull_store(db, emulator.url, api_key, dataset_id)
    intent = make_mixed_changes(db, emulator, dataset_id, mix, seed=seed, tag=f"faults{seed}")
    proxy.reset_stats()

    reports = sync_through_faults(db, proxy.url, api_key)
    stats = proxy.stats()
    server = server_contents(emulator, dataset_id)
    t = tally(server, intent)
    record_proxy_figures(figures, stats)
    figures.record(
        changes=mix.entries,
        syncs=len(reports),
        kills=0,
        lost=len(t.lost),
        duplicated=len(t.duplicated),
    )
    assert reports[-1].exit_code == EXIT_OK, (
        f"no clean sync in {MAX_SYNCS}; last errors: {reports[-1].errors[:3]}"
    )
    t.check()
    assert len(server) == len(intent.want) + len(intent.creates)
    check_store(db, server, dataset_id)

    proxy.configure(rate=0.0)
    with Store.open(db) as store, Client(proxy.url, api_key) as client:
        again = sync(store, client)
    assert (again.exit_code, again.pushed) == (EXIT_OK, 0), again.to_dict()
    assert server_contents(emulator, dataset_id) == server
    return reports, stats


def test_mixed_faults_drill(
    tmp_path: Path,
    emulator: EmulatorServer,
    proxy: FaultProxy,
    api_key: str,
    dataset: Callable[..., str],
    drill_figures: DrillFigures,
) -> None:
    """1,050 pending changes on 1,500 records, 20% of requests faulty, every kind."""
    proxy.configure(rate=0.2, kinds=ALL_KINDS)
    mix = Mix(props=450, payloads=200, both=100, deletes=150, creates=50)
    reports, stats = run_drill(
        tmp_path=tmp_path,
        emulator=emulator,
        proxy=proxy,
        api_key=api_key,
        dataset=dataset,
        figures=drill_figures,
        records=1500,
        mix=mix,
        seed=71,
    )
    assert set(stats.faults) == set(ALL_KINDS), f"not every kind was injected: {stats.faults}"
    assert stats.applied_unheard > 0
    assert stats.upstream_errors == 0
    assert sum(r.created for r in reports) <= mix.creates


@pytest.mark.parametrize(
    "kinds",
    [("reset_after",), ("reset_before", "reset_after", "truncate", "stall_after")],
    ids=["reset-after", "made-or-not"],
)
def test_ambiguous_creates_drill(
    kinds: tuple[str, ...],
    tmp_path: Path,
    emulator: EmulatorServer,
    proxy: FaultProxy,
    api_key: str,
    dataset: Callable[..., str],
    drill_figures: DrillFigures,
) -> None:
    """Only creates fail, in ways the client cannot tell apart: the connection reset
    after the server made the record (``reset-after``), or — mixed with it — reset
    before it was forwarded, the answer cut short, no answer until the read timeout."""
    proxy.configure(rate=0.5, kinds=kinds, match=creates_only)
    mix = Mix(props=20, payloads=10, both=5, deletes=10, creates=80)
    _, stats = run_drill(
        tmp_path=tmp_path,
        emulator=emulator,
        proxy=proxy,
        api_key=api_key,
        dataset=dataset,
        figures=drill_figures,
        records=100,
        mix=mix,
        seed=72,
    )
    assert set(stats.faults) == set(kinds), stats.faults
    assert stats.faults_total >= 20 and stats.applied_unheard >= 10, stats


def test_truncated_answers_drill(
    tmp_path: Path,
    emulator: EmulatorServer,
    proxy: FaultProxy,
    api_key: str,
    dataset: Callable[..., str],
    drill_figures: DrillFigures,
) -> None:
    """Every kind of request, 25% of answers cut short (Content-Length promises more)."""
    proxy.configure(rate=0.25, kinds=["truncate"])
    mix = Mix(props=120, payloads=40, both=20, deletes=30, creates=30)
    _, stats = run_drill(
        tmp_path=tmp_path,
        emulator=emulator,
        proxy=proxy,
        api_key=api_key,
        dataset=dataset,
        figures=drill_figures,
        records=400,
        mix=mix,
        seed=73,
    )
    assert stats.faults.get("truncate", 0) >= 20, stats.faults


def test_stalls_drill(
    tmp_path: Path,
    emulator: EmulatorServer,
    proxy: FaultProxy,
    api_key: str,
    dataset: Callable[..., str],
    drill_figures: DrillFigures,
) -> None:
    """15% of requests get no answer until the client's read timeout (1 s), half of
    them after the server applied them."""
    proxy.configure(rate=0.15, kinds=["stall_before", "stall_after"])
    mix = Mix(props=60, payloads=20, both=10, deletes=20, creates=20)
    _, stats = run_drill(
        tmp_path=tmp_path,
        emulator=emulator,
        proxy=proxy,
        api_key=api_key,
        dataset=dataset,
        figures=drill_figures,
        records=200,
        mix=mix,
        seed=74,
    )
    assert stats.faults.get("stall_before", 0) + stats.faults.get("stall_after", 0) >= 10


def test_a_part_whose_endpoint_is_down_stays_pending(
    tmp_path: Path,
    emulator: EmulatorServer,
    proxy: FaultProxy,
    api_key: str,
    dataset: Callable[..., str],
    drill_figures: DrillFigures,
) -> None:
    """An outage of one endpoint (every properties PUT answers 503) while records carry
    payload and properties changes: the sync exits 1, the properties changes stay
    pending, and once the endpoint is back the next sync pushes them."""
    dataset_id = dataset(20, seed=75)
    db = tmp_path / "store.db"
    pull_store(db, emulator.url, api_key, dataset_id)
    mix = Mix(props=0, payloads=0, both=5, deletes=0, creates=0)
    intent = make_mixed_changes(db, emulator, dataset_id, mix, seed=75, tag="outage")
    proxy.configure(
        rate=1.0, kinds=["503"], match=lambda m, p: m == "PUT" and p.endswith("/properties")
    )
    proxy.reset_stats()
    with Store.open(db) as store, Client(proxy.url, api_key, retry=FAST_RETRY) as client:
        first = sync(store, client)
        pending_after_outage = views.status(store).pending_by_kind
        proxy.configure(rate=0.0)
        second = sync(store, client)
    t = tally(server_contents(emulator, dataset_id), intent)
    record_proxy_figures(drill_figures, proxy.stats())
    drill_figures.record(
        changes=mix.entries, syncs=2, kills=0, lost=len(t.lost), duplicated=len(t.duplicated)
    )
    assert first.exit_code == EXIT_ERROR
    assert pending_after_outage == {"properties": 5}, (
        f"after the outage the store holds {pending_after_outage} pending"
    )
    assert second.exit_code == EXIT_OK
    t.check()


# ------------------------------------------------------------------ the proxy itself


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_the_proxy_injects_each_kind_as_documented(
    kind: str, emulator: EmulatorServer, api_key: str, dataset: Callable[..., str]
) -> None:
    """One create per kind on a keep-alive connection: what the client sees, and
    whether the server made the record."""
    dataset_id = dataset(0)
    with (
        FaultProxy(emulator.url, rate=1.0, kinds=[kind], stall_seconds=5.0) as p,
        httpx.Client(
            base_url=p.url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(0.5),
        ) as http,
    ):
        path = f"/v1/observability/datasets/{dataset_id}/records"
        outcome: Any
        try:
            answer = http.post(path, json={"payload": {"kind": kind}})
            outcome = (answer.status_code, answer.headers.get("retry-after"))
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        made = len(emulator.state.list_records(dataset_id))
        p.configure(rate=0.0)
        # the same connection (or a fresh one after a reset) serves the next requests
        for _ in range(3):
            assert http.get(path).status_code == 200
        stats = p.stats()
    expected: dict[str, Any] = {
        "429": ((429, "0.05"), 0),
        "500": ((500, None), 0),
        "502": ((502, None), 0),
        "503": ((503, "0.05"), 0),
        "reset_before": ("ReadError", 0),
        "reset_after": ("ReadError", 1),
        "truncate": ("RemoteProtocolError", 1),
        "stall_before": ("ReadTimeout", 0),
        "stall_after": ("ReadTimeout", 1),
    }
    assert (outcome, made) == expected[kind]
    assert stats.requests == 4 and stats.faults == {kind: 1}
    assert stats.applied_unheard == made


def test_the_proxy_passes_keep_alive_traffic_untouched(
    emulator: EmulatorServer, api_key: str, dataset: Callable[..., str]
) -> None:
    dataset_id = dataset(5)
    with FaultProxy(emulator.url) as p, Client(p.url, api_key, max_connections=1) as client:
        ids = [
            r.id for page in client.iter_record_pages(dataset_id, page_size=2) for r in page.records
        ]
        for n, rid in enumerate(ids):
            client.put_properties(rid, {"n": n})
        direct = server_contents(emulator, dataset_id)
        stats = p.stats()
    assert sorted(direct[rid]["properties"]["n"] for rid in ids) == list(range(5))
    assert stats.faults == {} and stats.forwarded == stats.requests == 3 + 5
    assert stats.by_route == {
        "GET /v1/observability/datasets/{id}/records": 3,
        "PUT /v1/observability/dataset-records/{id}/properties": 5,
    }
