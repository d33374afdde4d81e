"""Bulk edits on a large store (issue 13): each figure next to its target.

    python bench/bulk.py [--records N] [--edits E] [--latency-ms L] [--quick] [--json OUT]

On a store holding N mirrored records (default 100,000; pulled once at 0 ms latency,
then copied for each measure), every figure is the whole `localstore` command as a
process (start-up included), unless it says "in process":

  - `sql --write "UPDATE records SET properties = json_set(…)"` touching all N rows,
    and touching 1,000 of them (a `json_extract` condition: SQLite scans all N);
  - `set --where … label=…` on 10,000 records;
  - `import` of N JSONL lines (an `export` of the store) into an empty dataset, with
    its peak RSS, and `export` of the N records;
  - `sync` of E property edits (default 10,000) made with one SQL UPDATE, at L ms of
    latency per request (default 30, as bench/run.py), then the server is checked
    (every edited record holds the new label); beside it, the official SDK's
    `update_properties` one record at a time for E records of another dataset, in the
    same run, and the ratio.

--quick: N = 5,000 and E = 500 (the targets are for the full run). Nothing asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import KEY, Emulator, _sdk_ids, cli, sdk_client  # noqa: E402

from localstore.api import Client  # noqa: E402
from localstore.ops.queries import run_sql  # noqa: E402
from localstore.store.db import Store  # noqa: E402
from localstore.sync.pull import pull  # noqa: E402

LABEL = "$.label"


@dataclass
class Figure:
    name: str
    value: float
    unit: str = "s"
    target: float | None = None  # at most
    baseline: float | None = None  # the SDK loop, where there is one
    note: str = ""

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.value <= self.target


def timed_cli(db: Path, url: str, *args: str) -> tuple[float, Any]:
    elapsed, out = cli(db, url, *args)
    return elapsed, out


def peak_rss_mb(db: Path, url: str, *args: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `localstore` process, measured by a fresh parent
    whose only child it is (RUSAGE_CHILDREN is a maximum over all waited children)."""
    probe = (
        "import resource, subprocess, sys, time;"
        "t = time.perf_counter();"
        "done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True);"
        "t = time.perf_counter() - t;"
        "assert done.returncode == 0, done.stderr;"
        "print(t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    env_args = [sys.executable, "-m", "localstore", "--db", str(db), *args]
    env = dict(os.environ, MISTRAL_API_KEY=KEY, LOCALSTORE_SERVER_URL=url)
    out = subprocess.run([sys.executable, "-c", probe, *env_args], env=env, capture_output=True, text=True, check=True)
    seconds, kib = out.stdout.split()
    return float(seconds), int(kib) / 1024


def copy(base: Path, to: Path) -> Path:
    shutil.copy(base, to)
    return to


def threshold(db: Path, count: int) -> float:
    """The score below which (inclusive) `count` records lie: a `--where` of that size."""
    with Store.open(db) as store:
        return float(store.scalar(
            "SELECT json_extract(properties, '$.score') AS s FROM records ORDER BY s LIMIT 1 OFFSET ?",
            (count - 1,),
        ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--edits", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="5,000 records, 500 edits")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    if args.quick:
        args.records, args.edits = 5_000, 500
    n, edits = args.records, args.edits
    small = min(1_000, n // 10)
    where_n = min(10_000, n // 2)
    figures: list[Figure] = []

    with tempfile.TemporaryDirectory(prefix="localstore-bulk-") as tmp_name:
        tmp = Path(tmp_name)
        emu = Emulator(0)
        try:
            dataset = emu.seed(n)
            empty = emu.seed(0)
            base = tmp / "base.db"
            started = time.perf_counter()
            with Store.open(base) as store, Client(emu.url, KEY) as client:
                pull(store, client, [dataset, empty])
            print(f"pulled {n} records in {time.perf_counter() - started:.1f} s", file=sys.stderr)

            # UPDATE through records: all rows, then ~1,000 rows chosen by a condition
            db = copy(base, tmp / "update-all.db")
            sql = f"UPDATE records SET properties = json_set(properties, '{LABEL}', 'bulk') WHERE dataset_id = '{dataset}'"
            elapsed, out = timed_cli(db, emu.url, "sql", "--write", "--json", sql)
            assert out["queued"] == {"properties": n}, out
            figures.append(Figure(f"sql --write UPDATE of {n:,} rows", elapsed, target=5.0))
            db = copy(base, tmp / "update-all-inproc.db")
            with Store.open(db) as store:
                started = time.perf_counter()
                run_sql(store, sql, write=True)
                figures.append(Figure("  same, in process", time.perf_counter() - started))

            cut = threshold(base, small)
            db = copy(base, tmp / "update-some.db")
            sql = (f"UPDATE records SET properties = json_set(properties, '{LABEL}', 'apology') "
                   f"WHERE json_extract(properties, '$.score') <= {cut!r}")
            elapsed, out = timed_cli(db, emu.url, "sql", "--write", "--json", sql)
            figures.append(Figure(f"sql --write UPDATE of {out['records']:,} of {n:,} rows", elapsed,
                                  target=0.5 if small == 1_000 else None))

            # set --where
            cut = threshold(base, where_n)
            db = copy(base, tmp / "set-where.db")
            elapsed, out = timed_cli(db, emu.url, "set", "--where", f"json_extract(properties, '$.score') <= {cut!r}",
                                     "label=reviewed")
            matched = int(str(out).split(" record(s)")[0].rsplit(" ", 1)[-1])
            figures.append(Figure(f"set --where on {matched:,} records", elapsed, target=2.0 if where_n == 10_000 else None))

            # export, then import of the export
            elapsed, _ = timed_cli(base, emu.url, "export", dataset, "-o", str(tmp / "export.jsonl"))
            lines = sum(1 for _ in (tmp / "export.jsonl").open("rb"))
            assert lines == n, lines
            size = (tmp / "export.jsonl").stat().st_size / 1e6
            figures.append(Figure(f"export of {n:,} records ({size:.0f} MB JSONL)", elapsed, target=5.0))
            db = copy(base, tmp / "import.db")
            elapsed, peak = peak_rss_mb(db, emu.url, "import", empty, str(tmp / "export.jsonl"))
            with Store.open(db) as store:
                assert store.scalar("SELECT count(*) FROM changes WHERE kind = 'create'") == n
            figures.append(Figure(f"import of {n:,} lines", elapsed, target=15.0))
            figures.append(Figure("  peak RSS of that import", peak, unit="MB", target=150.0))

            # sync of E edits made with SQL, against the SDK loop, at L ms
            cut = threshold(base, edits)
            db = copy(base, tmp / "sync.db")
            _, out = timed_cli(db, emu.url, "sql", "--write", "--json",
                               f"UPDATE records SET properties = json_set(properties, '{LABEL}', 'synced-in-bulk') "
                               f"WHERE json_extract(properties, '$.score') <= {cut!r}")
            edited = out["records"]
            sdk_dataset = emu.seed(edited)
            sdk = sdk_client(emu.url)
            targets = _sdk_ids(sdk, sdk_dataset, edited)
            emu.ask(op="configure", latency_ms=args.latency_ms)
            elapsed, report = timed_cli(db, emu.url, "sync", "--json")
            assert report["updated"] == edited and report["exit_code"] == 0, report
            on_server = emu.ask(op="count_property", dataset_id=dataset, key="label", value="synced-in-bulk")["records"]
            assert on_server == edited, (on_server, edited)
            started = time.perf_counter()
            for rid, properties in targets:
                sdk.beta.observability.datasets.records.update_properties(
                    dataset_record_id=rid, properties={**properties, "label": "synced-in-bulk"}
                )
            baseline = time.perf_counter() - started
            figures.append(Figure(f"sync of {edited:,} SQL edits @ {args.latency_ms:g} ms", elapsed,
                                  baseline=baseline, note=f"server checked: {on_server:,} records hold the edit"))
        finally:
            emu.close()

    print(f"\nlocalstore bulk bench — {n:,} records, {edits:,} edits synced at {args.latency_ms:g} ms\n")
    header = f"{'measure':46} {'localstore':>11} {'SDK loop':>10} {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for f in figures:
        value = f"{f.value:.2f} {f.unit}"
        base_text = "" if f.baseline is None else f"{f.baseline:.2f} s"
        ratio = "" if f.baseline is None else f"{f.baseline / f.value:.1f}x"
        target = "" if f.target is None else f"<= {f.target:g} {f.unit}" + ("  ok" if f.met else "  MISSED")
        print(f"{f.name:46} {value:>11} {base_text:>10} {ratio:>7}  {target}{'  ' + f.note if f.note else ''}")
    if args.json:
        args.json.write_text(json.dumps(
            {"settings": {"records": n, "edits": edits, "latency_ms": args.latency_ms},
             "figures": [asdict(f) | {"met": f.met} for f in figures]}, indent=2))
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
