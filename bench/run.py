"""localstore against the official SDK used the obvious way, side by side in one run.

    python bench/run.py [--records N] [--latency-ms L] [--edits E] [--json OUT]
                        [--local-records M] [--skip-local] [--timestamp-format F]
                        [--scale N ...]

The emulator runs in a process of its own with L ms of latency per request. Measured:
  (a) pull N records: localstore.sync.pull vs the SDK paging sequentially into SQLite
      (also at 0 ms latency, where client CPU is the cost), once per timestamp form
      the emulator writes (ms ….974Z, us ….974123Z, offset ….974123+00:00; all three
      unless --timestamp-format picks one)
  (b) E property edits: the whole `localstore sync` command (start-up, conflict checks,
      pushes, pull) vs SDK update_properties one by one (which checks nothing)
  (c) E deletes: `localstore sync` vs SDK records.delete one by one
  (d) the floor of each: pull = a bare concurrent httpx listing measured in the same run
      with the same number of connections; (b) = that listing + E / concurrency x
      latency; (c) = that listing + ceil(E / 500) x latency
  (e) client CPU (user+sys of the process) per 1,000 records pulled at 0 ms, against
      the SDK loop's in a process of its own
  (f) local: `localstore set` and `localstore status` as processes on an M-record
      store, a messages group-by over M records, and peak RSS of pulling M records
  (g) with --scale N…: pulls of each size (time per 1k records, peak RSS, size on
      disk), `status`/`set`/`show` on the largest, and the requests of a sync with
      nothing to push
Each contender runs once untimed before the first row, and the in-process rows start on
a settled heap (gc.collect + gc.freeze), so that the order of the rows does not decide
their figures. A pull row is the median of 5 pulls and its floor the median of 5
listings, taken in turn (one pull varied by ±15 % on the reference machine); an edit or
delete row is the median of 3 syncs, each of a dataset of its own. Peak RSS is the
measured process's own VmHWM.
Figures are printed as one table and written as JSON; nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localstore.api import Client
from localstore.ops import edits
from localstore.store.db import Store
from localstore.sync.pull import pull

HERE = Path(__file__).resolve().parent
KEY = "bench-key"
FORMS = ("ms", "us", "offset")  # the emulator's timestamp forms
CONCURRENCY = 16
REPEATS = 5  # pulls and floors measured per row: the median is reported (this machine is noisy)
SYNC_REPEATS = 3  # syncs of edits and of deletes measured: the median is reported


@dataclass
class Row:
    name: str
    localstore: float
    baseline: float | None = None
    floor: float | None = None
    unit: str = "s"
    target: str = ""
    met: bool | None = None

    @property
    def speedup(self) -> float | None:
        return None if self.baseline is None or not self.localstore else self.baseline / self.localstore

    @property
    def vs_floor(self) -> float | None:
        return None if not self.floor else self.localstore / self.floor


class Emulator:
    """The emulator process and its control channel."""

    def __init__(self, latency_ms: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "emulator_proc.py"), str(latency_ms)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.url = self._read()["url"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        return json.loads(self.proc.stdout.readline())

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def seed(self, records: int) -> str:
        return self.ask(op="seed", records=records)["dataset_id"]

    def cpu(self) -> float:
        return self.ask(op="cpu")["cpu_seconds"]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def cli(db: Path, url: str, *args: str) -> tuple[float, dict[str, Any] | str]:
    """Run the CLI as a process; returns (seconds, parsed --json output or text)."""
    env = dict(os.environ, MISTRAL_API_KEY=KEY, LOCALSTORE_SERVER_URL=url)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstore", "--db", str(db), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 3):
        raise SystemExit(f"localstore {' '.join(args)} failed ({proc.returncode}): {err.strip()}")
    try:
        return elapsed, json.loads(out)
    except json.JSONDecodeError:
        return elapsed, out


def sdk_client(url: str) -> Any:
    from mistralai.client import Mistral

    return Mistral(api_key=KEY, server_url=url)


# ------------------------------------------------------------------ (a) pull


def settle_heap() -> None:
    """Before each in-process measurement: what earlier ones left alive (the SDK's modules,
    ~75,000 objects) is frozen out of the garbage collector's scans, so that the order of
    the rows does not decide their figures (a pull run after the SDK was imported took
    ~15 % longer, whatever its timestamp form)."""
    gc.collect()
    gc.freeze()


def warm_up(emu: Emulator, dataset_id: str, records: int, tmp: Path) -> None:
    """One untimed pass of each contender, so that the first row does not pay for what is
    done once per process (first requests, first store, lazily built code paths): the
    first measured pull ran ~25 % slower than the same pull right after it."""
    with Store.open(tmp / "warm-up.db") as store, Client(emu.url, KEY) as client:
        pull(store, client, [dataset_id], concurrency=CONCURRENCY)
    sdk_client(emu.url).beta.observability.datasets.list_records(dataset_id=dataset_id, page=1, page_size=100)
    measured_floor(emu.url, dataset_id, records)


def bench_pull(
    emu: Emulator, dataset_id: str, records: int, latency: float, tmp: Path, form: str = "ms"
) -> tuple[Row, float]:
    """The median of REPEATS pulls (each into a new store) and of REPEATS floors,
    alternating; the SDK loop once (it takes ten times as long: its noise is small)."""
    emu.ask(op="configure", timestamp_format=form)
    ours, floors = [], []
    for repeat in range(REPEATS):
        store_path = tmp / f"pull-{latency}-{form}-{repeat}.db"
        settle_heap()
        with Store.open(store_path) as store, Client(emu.url, KEY) as client:
            started = time.perf_counter()
            pull(store, client, [dataset_id], concurrency=CONCURRENCY)
            ours.append(time.perf_counter() - started)
            assert store.scalar("SELECT count(*) FROM records") == records
        for leftover in tmp.glob(f"{store_path.name}*"):
            leftover.unlink()
        settle_heap()
        floors.append(measured_floor(emu.url, dataset_id, records))
    settle_heap()
    baseline = sdk_pull(emu.url, dataset_id, tmp / f"sdk-pull-{latency}-{form}.db", records)
    floor = statistics.median(floors)
    name = f"pull {records} records @ {latency:g} ms ({form} stamps)"
    return Row(name, statistics.median(ours), baseline, floor), floor


CPU_REPEATS = 3


def bench_pull_cpu(emu: Emulator, dataset_id: str, records: int, tmp: Path) -> Row:
    """Client CPU (user+sys of the process) per 1,000 records pulled at 0 ms latency:
    `localstore pull` and the SDK loop, each a process of its own, the median of
    CPU_REPEATS of each."""
    import resource

    def child_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    mine, sdk = [], []
    for repeat in range(CPU_REPEATS):  # in turn; the median of each (one process varies by ~10 %)
        before = child_cpu()
        cli(tmp / f"cpu-pull-{repeat}.db", emu.url, "pull", dataset_id, "--concurrency", str(CONCURRENCY))
        mine.append(child_cpu() - before)
        before = child_cpu()
        subprocess.run(
            [sys.executable, __file__, "--sdk-pull-child", emu.url, dataset_id, str(tmp / f"cpu-sdk-{repeat}.db"),
             str(records)],
            check=True,
        )
        sdk.append(child_cpu() - before)
    ours, theirs = statistics.median(mine), statistics.median(sdk)
    per = 1000 / records
    row = Row("client CPU per 1k records pulled @ 0 ms", ours * per, theirs * per, unit="s")
    row.target, row.met = "<= 0.5x SDK", ours <= 0.5 * theirs
    return row


def measured_floor(url: str, dataset_id: str, records: int) -> float:
    """A bare concurrent listing: httpx fetching every page with the same number of
    connections as localstore, reading the bytes and nothing else."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    pages = max(1, math.ceil(records / 100))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, limits=limits) as http, \
            ThreadPoolExecutor(CONCURRENCY) as pool:
        path = f"/v1/observability/datasets/{dataset_id}/records"
        started = time.perf_counter()
        sizes = list(pool.map(
            lambda page: len(http.get(path, params={"page": page, "page_size": 100}).content),
            range(1, pages + 1),
        ))
        elapsed = time.perf_counter() - started
    assert all(sizes)
    return elapsed


def sdk_pull(url: str, dataset_id: str, path: Path, records: int) -> float:
    """The obvious loop: list_records page after page, each page inserted into SQLite."""
    sdk = sdk_client(url)
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE records (id TEXT PRIMARY KEY, dataset_id TEXT, updated_at TEXT, payload TEXT, properties TEXT)")
    started = time.perf_counter()
    page = 1
    while True:
        answer = sdk.beta.observability.datasets.list_records(dataset_id=dataset_id, page=page, page_size=100)
        rows = answer.records.results or []
        db.executemany(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
            [(r.id, r.dataset_id, r.updated_at.isoformat(), json.dumps(r.payload), json.dumps(r.properties)) for r in rows],
        )
        db.commit()
        if not answer.records.next or not rows:
            break
        page += 1
    elapsed = time.perf_counter() - started
    assert db.execute("SELECT count(*) FROM records").fetchone()[0] == records
    db.close()
    return elapsed


# ------------------------------------------------------------------ (b), (c) push


def prepared_store(emu: Emulator, dataset_id: str, path: Path) -> tuple[Store, list[str]]:
    store = Store.open(path)
    with Client(emu.url, KEY) as client:
        pull(store, client, [dataset_id])
    ids = [r[0] for r in store.conn.execute("SELECT id FROM records ORDER BY created_at, id")]
    return store, ids


def median_sync(
    emu: Emulator, records: int, count: int, tmp: Path, kind: str, edit: Callable[[Store, list[str]], object]
) -> float:
    """The median of SYNC_REPEATS `localstore sync` processes, each of its own dataset
    with ``edit`` applied to ``count`` of its records spread over its pages; the sync's
    report must count each of them under ``kind``."""
    times = []
    for repeat in range(SYNC_REPEATS):
        path = tmp / f"{kind}-{repeat}.db"
        store, ids = prepared_store(emu, emu.seed(records), path)
        edit(store, ids[:: max(1, len(ids) // count)][:count])
        store.close()
        elapsed, report = cli(path, emu.url, "sync", "--json")
        assert isinstance(report, dict) and report[kind] == count and report["exit_code"] == 0, report
        times.append(elapsed)
    return statistics.median(times)


def _set_label(store: Store, ids: list[str]) -> None:
    for rid in ids:
        edits.set_properties(store, rid, {"label": "benchmarked"})


def bench_property_edits(emu: Emulator, records: int, count: int, latency: float, listing_floor: float, tmp: Path) -> Row:
    """`localstore sync` (median_sync) against the SDK's update_properties loop, once."""
    elapsed = median_sync(emu, records, count, tmp, "updated", _set_label)
    sdk = sdk_client(emu.url)
    targets = _sdk_ids(sdk, emu.seed(records), count)
    started = time.perf_counter()
    for rid, properties in targets:
        sdk.beta.observability.datasets.records.update_properties(
            dataset_record_id=rid, properties={**properties, "label": "benchmarked"}
        )
    baseline = time.perf_counter() - started
    floor = listing_floor + count / CONCURRENCY * latency / 1000
    return Row(f"sync {count} property edits", elapsed, baseline, floor)


def bench_deletes(emu: Emulator, records: int, count: int, latency: float, listing_floor: float, tmp: Path) -> Row:
    """`localstore sync` (median_sync) against the SDK's delete loop, once."""
    elapsed = median_sync(emu, records, count, tmp, "deleted", edits.delete_records)
    sdk = sdk_client(emu.url)
    targets = _sdk_ids(sdk, emu.seed(records), count)
    started = time.perf_counter()
    for rid, _ in targets:
        sdk.beta.observability.datasets.records.delete(dataset_record_id=rid)
    baseline = time.perf_counter() - started
    floor = listing_floor + math.ceil(count / 500) * latency / 1000
    return Row(f"sync {count} deletes", elapsed, baseline, floor)


def _sdk_ids(sdk: Any, dataset_id: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    """The ids and properties the SDK user already has (a listing, not timed)."""
    found: list[tuple[str, dict[str, Any]]] = []
    page = 1
    while True:
        answer = sdk.beta.observability.datasets.list_records(dataset_id=dataset_id, page=page, page_size=100)
        found += [(r.id, dict(r.properties)) for r in answer.records.results or []]
        if not answer.records.next:
            break
        page += 1
    return found[:: max(1, len(found) // count)][:count]


# ------------------------------------------------------------------ (e) local


def bench_local(emu: Emulator, records: int, tmp: Path) -> list[Row]:
    emu.ask(op="configure", latency_ms=0)
    dataset_id = emu.seed(records)
    path = tmp / "local.db"
    # this process's own peak (RUSAGE_CHILDREN would be the largest child so far: the SDK's)
    elapsed, peak_mb, _ = measured_cli(path, emu.url, "pull", dataset_id)
    with Store.open(path) as store:
        rid = store.scalar("SELECT id FROM records ORDER BY id LIMIT 1 OFFSET 777")
    set_times = [cli(path, emu.url, "set", rid, f"label=run-{i}")[0] for i in range(5)]
    status_times = [cli(path, emu.url, "status", "--json")[0] for _ in range(5)]
    query = "select role, count(*) as n from messages group by role"
    sql_times = [cli(path, emu.url, "sql", "--json", query)[0] for _ in range(3)]
    with Store.open(path) as store:
        started = time.perf_counter()
        store.query(query)
        in_process = time.perf_counter() - started
        started = time.perf_counter()
        store.query("SELECT count(*) FROM records WHERE json_extract(properties, '$.label') = 'escalated'")
        by_property = time.perf_counter() - started
    return [
        Row(f"pull {records} records @ 0 ms (process)", elapsed, target="-"),
        Row(f"peak RSS pulling {records}", peak_mb, unit="MB", target="<= 150 MB", met=peak_mb <= 150),
        Row(f"`set` on {records} records", statistics.median(set_times), target="<= 0.3 s", met=statistics.median(set_times) <= 0.3),
        Row(f"`status` on {records} records", statistics.median(status_times), target="<= 0.3 s", met=statistics.median(status_times) <= 0.3),
        Row(f"messages group-by, {records} records", in_process, target="<= 1 s", met=in_process <= 1.0),
        Row("  same, as `localstore sql`", statistics.median(sql_times), target="-"),
        Row(f"records by a property, {records} records", by_property, target="-"),
    ]


# ------------------------------------------------------------------ (f) scale


# The peak is VmHWM, this process's own high-water mark: getrusage's ru_maxrss would
# carry over the bench's (the parent's) resident size at fork time on Linux.
MEASURED_CLI = """
import runpy, sys
sys.argv = ["localstore", *sys.argv[1:]]
try:
    runpy.run_module("localstore", run_name="__main__")
finally:
    with open("/proc/self/status") as status:
        peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    print("peak-rss-kib", peak, file=sys.stderr)
"""


def measured_cli(db: Path, url: str, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout) of one `localstore` process."""
    env = dict(os.environ, MISTRAL_API_KEY=KEY, LOCALSTORE_SERVER_URL=url)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED_CLI, "--db", str(db), *args],
                          env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 3):
        raise SystemExit(f"localstore {' '.join(args)} failed: {done.stderr.strip()}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak-rss-kib"))
    return elapsed, peak / 1024, done.stdout


SCALE_REPEATS = 3  # pulls of each size up to SCALE_REPEAT_UP_TO, the median reported
SCALE_REPEAT_UP_TO = 200_000
LINEAR_WITHIN = 1.15  # time per record at the largest size over the smallest: linear, give or take the noise


def bench_scale(emu: Emulator, sizes: list[int], tmp: Path) -> list[Row]:
    """Pull datasets of each size (~1 KB records, 0 ms latency) in a process of its own:
    time per 1,000 records (linear means flat), peak RSS, the store's size; then
    `status`, `set` and `show` on the largest, and a sync with nothing to push."""
    emu.ask(op="configure", latency_ms=0)
    rows: list[Row] = []
    largest: tuple[Path, str] | None = None
    per_1k: dict[int, float] = {}
    for n in sizes:
        dataset_id = emu.seed(n)
        path = tmp / f"scale-{n}.db"
        pulls = []
        for _ in range(SCALE_REPEATS if n <= SCALE_REPEAT_UP_TO else 1):  # a fresh store each time
            for f in tmp.glob(f"scale-{n}.db*"):
                f.unlink()
            pulls.append(measured_cli(path, emu.url, "pull", dataset_id, "--concurrency", str(CONCURRENCY)))
        elapsed = statistics.median(took for took, _, _ in pulls)
        peak = max(rss for _, rss, _ in pulls)
        size_mb = sum(f.stat().st_size for f in tmp.glob(f"scale-{n}.db*")) / 2**20
        floor = measured_floor(emu.url, dataset_id, n)  # the bare listing of the same dataset
        per_1k[n] = elapsed * 1000 / n
        rows += [
            Row(f"pull {n} records: time per 1k", per_1k[n], floor=floor * 1000 / n, target="flat as N grows"),
            Row(f"pull {n} records: whole", elapsed, target="-"),
            Row(f"pull {n} records: peak RSS", peak, unit="MB", target="<= 200 MB", met=peak <= 200),
            Row(f"store of {n} records: size on disk", size_mb, unit="MB", target="-"),
        ]
        largest = (path, dataset_id)
    assert largest is not None
    if len(sizes) > 1:
        growth = per_1k[sizes[-1]] / per_1k[sizes[0]]
        rows.append(Row(f"time per record, {sizes[-1]} vs {sizes[0]}", growth, unit="×",
                        target=f"<= {LINEAR_WITHIN}x (linear)", met=growth <= LINEAR_WITHIN))
    path, dataset_id = largest
    with Store.open(path) as store:
        rid = store.scalar("SELECT id FROM mirror ORDER BY id LIMIT 1 OFFSET 4242")
    for name, args in (("status", ("status", "--json")), ("set", ("set", rid, "label=scaled")),
                       ("show", ("show", rid, "--json"))):
        took = statistics.median(measured_cli(path, emu.url, *args)[0] for _ in range(3))
        rows.append(Row(f"`{name}` on {sizes[-1]} records", took, target="<= 0.3 s", met=took <= 0.3))
    cli(path, emu.url, "sync")  # sends the one `set` above
    emu.ask(op="requests")
    cli(path, emu.url, "sync")
    requests = emu.ask(op="requests")["requests"]
    listing = requests.pop("GET /v1/observability/datasets/{dataset_id}/records", 0)
    # one listing: every page, plus one empty page after a full last one (how a listing
    # knows it has seen everything when count is a multiple of the page size)
    pages = math.ceil(sizes[-1] / 100) + (1 if sizes[-1] % 100 == 0 else 0)
    others = sum(requests.values())
    met = listing == pages and others == 0
    seen = "" if met else f"; seen {listing} listing pages" + "".join(f", {n} {k}" for k, n in requests.items())
    rows.append(Row(f"sync with nothing to push, {sizes[-1]} records: requests", listing + others, unit="",
                    target=f"one listing ({pages} pages){seen}", met=met))
    return rows


# ------------------------------------------------------------------ report


def judge(rows: list[Row]) -> None:
    for row in rows:
        if row.target:  # judged where it was measured
            continue
        if row.name.startswith("pull") and "@ 0 ms" in row.name:
            row.target, row.met = "no slower than SDK", row.speedup is not None and row.speedup >= 1
        elif row.name.startswith("pull"):
            row.target = ">= 6x SDK, <= 1.5x floor"
            row.met = (row.speedup or 0) >= 6 and (row.vs_floor or 99) <= 1.5
        elif "property" in row.name:
            row.target = ">= 10x SDK"
            row.met = (row.speedup or 0) >= 10
        elif "deletes" in row.name:
            row.target = ">= 25x SDK"
            row.met = (row.speedup or 0) >= 25


def print_table(rows: list[Row], args: argparse.Namespace) -> None:
    print(f"\nlocalstore bench — {args.records} records, {args.latency_ms:g} ms latency, concurrency {CONCURRENCY}")
    header = f"{'measure':42} {'localstore':>11} {'SDK loop':>10} {'speed-up':>9} {'floor':>8} {'x floor':>8}  target"
    print(header)
    print("-" * len(header))
    for r in rows:
        def fmt(v: float | None, unit: str = "s") -> str:
            return "" if v is None else f"{v:.2f} {unit}" if unit else f"{v:.2f}"
        mark = "" if r.met is None else ("  ok" if r.met else "  MISSED")
        speed = "" if r.speedup is None else f"{r.speedup:.1f}x"
        vs = "" if r.vs_floor is None else f"{r.vs_floor:.2f}"
        print(f"{r.name:42} {fmt(r.localstore, r.unit):>11} {fmt(r.baseline):>10} {speed:>9} {fmt(r.floor):>8} {vs:>8}  {r.target}{mark}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--edits", type=int, default=1_000)
    parser.add_argument("--local-records", type=int, default=100_000)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--scale", type=int, nargs="*", default=[],
                        help="also pull datasets of these sizes (e.g. 100000 1000000) and measure on the largest")
    parser.add_argument("--sdk-pull-child", nargs=4, metavar=("URL", "DATASET", "DB", "N"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--timestamp-format", choices=[*FORMS, "all"], default="all",
        help="the emulator's timestamp form for the pull figures (default: each of them)",
    )
    args = parser.parse_args()
    if args.sdk_pull_child:
        url, dataset_id, db, n = args.sdk_pull_child
        sdk_pull(url, dataset_id, Path(db), int(n))
        return
    forms = list(FORMS) if args.timestamp_format == "all" else [args.timestamp_format]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="localstore-bench-") as tmp_name:
        tmp = Path(tmp_name)
        emu = Emulator(args.latency_ms)
        try:
            pull_ds = emu.seed(args.records)
            warm_up(emu, pull_ds, args.records, tmp)
            floors = []
            for form in forms:
                row, floor = bench_pull(emu, pull_ds, args.records, args.latency_ms, tmp, form)
                rows.append(row)
                floors.append(floor)
            listing_floor = floors[0]  # edits and deletes run in the first form
            emu.ask(op="configure", timestamp_format=forms[0])
            rows.append(bench_property_edits(emu, args.records, args.edits, args.latency_ms, listing_floor, tmp))
            rows.append(bench_deletes(emu, args.records, args.edits, args.latency_ms, listing_floor, tmp))
            emu.ask(op="configure", latency_ms=0)
            rows += [bench_pull(emu, pull_ds, args.records, 0, tmp, form)[0] for form in forms]
            emu.ask(op="configure", timestamp_format=forms[0])
            rows.append(bench_pull_cpu(emu, pull_ds, args.records, tmp))
            if not args.skip_local:
                rows += bench_local(emu, args.local_records, tmp)
            if args.scale:
                rows += bench_scale(emu, sorted(args.scale), tmp)
        finally:
            emu.close()
    judge(rows)
    print_table(rows, args)
    if args.json:
        args.json.write_text(json.dumps(
            {"settings": vars(args) | {"json": str(args.json), "concurrency": CONCURRENCY},
             "rows": [asdict(r) | {"speedup": r.speedup, "vs_floor": r.vs_floor} for r in rows]},
            indent=2,
        ))
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
