"""Full-text search and `localstore browse` on a big store (issue #14).

    python bench/search.py [--records N] [--pull-records P] [--latency-ms L] [--runs R]
                           [--small] [--json OUT]

Measured, with the targets beside them:
  (a) building the index for an existing N-record store: the FTS migration that runs
      when a store made before the index is opened (target <= 20 s at 100,000 records)
  (b) `search` of a word on that store, in-process (median over words and runs) and as
      a `localstore search` process (target <= 0.2 s)
  (c) a conversation page served by `localstore browse` on that store (median of 30
      records; target <= 0.3 s)
  (d) a pull of P records from the emulator (in a process of its own, L ms of latency)
      into a fresh store, then the indexing its first reader does (a pull defers it),
      against the pull with the index's triggers dropped, alternating, R runs each
      (target: with <= 1.3x without)
The N-record store is written directly (emulator-generated content, ~5 messages a
record); nothing here asserts anything. --small: N=5,000, P=2,000, R=2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

import httpx

from localstore.api import Client
from localstore.ops.search import catch_up, search
from localstore.store.db import MIGRATIONS, Store
from localstore.store.jsontext import canonical
from localstore.store.migrations import FTS_MIGRATION
from localstore.sync.pull import pull
from localstore_emulator.seed import make_record

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import KEY, Emulator  # noqa: E402

REPO = HERE.parent
DATASET = "5f0c6b2e-8a51-4a8e-9d3c-1f2b3c4d5e6f"
TS = "2026-01-01T00:00:00.000Z"
FTS_SECTION = "-- ================================================================ full-text search"
WORDS = ["refund", "password", "webhook", "escalated", "invoice", "tomorrow", "customer"]
Figures = list[tuple[str, float, str, bool | None]]  # (measure, seconds, target, met)


def pre_index_store(path: Path, records: int) -> None:
    """A store as it was before the index (schema.sql less its search section), holding
    ``records`` generated conversations."""
    (from_version,) = [v for v, sql in MIGRATIONS.items() if sql is FTS_MIGRATION]
    schema = (REPO / "schema.sql").read_text(encoding="utf-8").split(FTS_SECTION)[0]
    schema = re.sub(r"PRAGMA user_version = \d+;", f"PRAGMA user_version = {from_version};", schema)
    rng = random.Random(14)
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA page_size = 16384")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(schema)
        with conn:
            conn.execute("INSERT INTO datasets (id, name, tracked) VALUES (?, 'bench', 1)", (DATASET,))
            for start in range(0, records, 10_000):
                rows = []
                for i in range(start, min(records, start + 10_000)):
                    r = make_record(i, rng)
                    rid = f"00000000-0000-4000-8000-{i:012d}"
                    rows.append((rid, DATASET, TS, TS, None, "DIRECT_INPUT",
                                 canonical(r["payload"]), canonical(r["properties"])))
                conn.executemany("INSERT INTO mirror VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def bench_build(path: Path, records: int) -> Figures:
    pre_index_store(path, records)
    started = time.perf_counter()
    with Store.open(path) as store:  # runs the FTS migration
        elapsed = time.perf_counter() - started
        docs = store.scalar("SELECT count(*) FROM search_docs")
    print(f"  indexed {records} records, {docs} messages in {elapsed:.2f} s", file=sys.stderr)
    return [(f"build the index, {records} records ({docs} messages)", elapsed, "<= 20 s", elapsed <= 20)]


def bench_search(path: Path, records: int) -> Figures:
    times: list[float] = []
    with Store.open(path) as store:
        for _ in range(3):
            for word in WORDS:
                started = time.perf_counter()
                search(store, word, limit=20)
                times.append(time.perf_counter() - started)
        counts = {w: store.scalar("SELECT count(*) FROM search_fts WHERE search_fts MATCH ?", (w,)) for w in WORDS}
    worst_word = max(WORDS, key=lambda w: counts[w])
    process: list[float] = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "localstore", "--db", str(path), "search", "refund"],
                       check=True, capture_output=True)
        process.append(time.perf_counter() - started)
    median, worst = statistics.median(times), max(times)
    return [
        (f"search a word, {records} records (median)", median, "<= 0.2 s", median <= 0.2),
        (f"  slowest ({worst_word!r}, {counts[worst_word]} matches)", worst, "<= 0.2 s", worst <= 0.2),
        ("  as a `localstore search` process", statistics.median(process), "-", None),
    ]


def bench_browse(path: Path, records: int) -> Figures:
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstore", "--db", str(path), "browse", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = re.search(r"http://\S+/", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        rng = random.Random(3)
        ids = [f"00000000-0000-4000-8000-{rng.randrange(records):012d}" for _ in range(30)]
        db = path.stem
        pages: dict[str, list[float]] = {"conversation": [], "records": [], "search": []}
        with httpx.Client(base_url=url, timeout=60) as http:
            http.get(f"-/conversation/{ids[0]}").raise_for_status()  # first request starts Datasette
            for rid in ids:
                started = time.perf_counter()
                http.get(f"-/conversation/{rid}").raise_for_status()
                pages["conversation"].append(time.perf_counter() - started)
            for _ in range(3):
                for name, page in (("records", f"{db}/records"), ("search", f"{db}/search?q=refund")):
                    started = time.perf_counter()
                    http.get(page).raise_for_status()
                    pages[name].append(time.perf_counter() - started)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    conversation = statistics.median(pages["conversation"])
    return [
        (f"conversation page, {records} records (median)", conversation, "<= 0.3 s", conversation <= 0.3),
        ("  slowest of 30", max(pages["conversation"]), "-", None),
        ("  records table page (with 4 facets)", statistics.median(pages["records"]), "-", None),
        ("  search query page", statistics.median(pages["search"]), "-", None),
    ]


def _pull_once(emu: Emulator, dataset_id: str, path: Path, *, index: bool) -> float:
    with Store.open(path) as store:
        if not index:
            with store.transaction() as conn:
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'search\\_%' ESCAPE '\\'"
                ).fetchall():
                    conn.execute(f"DROP TRIGGER {name}")
        with Client(emu.url, KEY) as client:
            started = time.perf_counter()
            pull(store, client, [dataset_id])
            if index:  # a pull defers the index to its first reader, who pays for it here
                catch_up(store)
            elapsed = time.perf_counter() - started
        indexed = store.scalar("SELECT count(*) FROM search_docs")
        assert (indexed > 0) == index
    return elapsed


def bench_pull(records: int, latency: float, runs: int, tmp: Path) -> Figures:
    emu = Emulator(latency)
    try:
        dataset_id = emu.seed(records)
        with_index: list[float] = []
        without: list[float] = []
        for run in range(runs):
            for index, times in ((True, with_index), (False, without)):
                path = tmp / f"pull-{run}-{int(index)}.db"
                times.append(_pull_once(emu, dataset_id, path, index=index))
    finally:
        emu.close()
    a, b = statistics.median(with_index), statistics.median(without)
    return [
        (f"pull {records} records @ {latency:g} ms, then index them", a, "-", None),
        (f"pull {records} records @ {latency:g} ms, no index", b, "-", None),
        ("  ratio (median of runs)", a / b, "<= 1.3x", a / b <= 1.3),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--pull-records", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="5,000 records, pull 2,000, 2 runs")
    parser.add_argument("--skip-pull", action="store_true")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.small:
        args.records, args.pull_records, args.runs = 5_000, 2_000, 2
    figures: Figures = []
    with tempfile.TemporaryDirectory(prefix="localstore-bench-search-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "big.db"
        figures += bench_build(path, args.records)
        figures += bench_search(path, args.records)
        figures += bench_browse(path, args.records)
        if not args.skip_pull:
            for latency in dict.fromkeys([args.latency_ms, 0.0]):
                figures += bench_pull(args.pull_records, latency, args.runs, tmp)
    print(f"\nlocalstore search bench — {os.cpu_count()} cores")
    print(f"{'measure':58} {'figure':>9}  target")
    for name, value, target, met in figures:
        shown = f"{value:.2f}x" if name.strip().startswith("ratio") else f"{value:.3f} s"
        mark = "" if met is None else ("  ok" if met else "  MISSED")
        print(f"{name:58} {shown:>9}  {target}{mark}")
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("measure", "value", "target", "met"), f, strict=True)) for f in figures], indent=2))
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
