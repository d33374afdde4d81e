"""The README's Performance table from the JSON of a `bench/run.py --json` run:

    python bench/report.py RUN.json [MORE.json ...]

The first run gives the figures; with more runs, a last column gives each figure's range
over all of them (the same measure, by name). Prints Markdown.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def load(path: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(Path(path).read_text(encoding="utf-8"))["rows"]}


def figure(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "s":
        return f"{value:.3f} s" if value < 0.1 else f"{value:.2f} s"
    if unit == "×":
        return f"{value:.2f}×"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:,.0f}"


def spread(rows: list[dict[str, Any]]) -> str:
    """The range of a measure over the runs: its own figure, and its ratio to the floor
    (or the speed-up) where it has one."""
    if len(rows) < 2:
        return ""
    unit = rows[0]["unit"]
    values = [r["localstore"] for r in rows]
    low, high = figure(min(values), unit), figure(max(values), unit)
    suffix = f" {unit}" if unit and low.endswith(f" {unit}") else ""
    text = f"{low.removesuffix(suffix)}–{high}"
    floors = [r["vs_floor"] for r in rows if r.get("vs_floor") and r.get("baseline") is not None]
    if floors and "floor" in rows[0]["target"]:
        text += f", {min(floors):.2f}–{max(floors):.2f}× floor"
    speedups = [r["speedup"] for r in rows if r.get("speedup")]
    if speedups and "SDK" in rows[0]["target"] and "floor" not in rows[0]["target"]:
        text += f", {min(speedups):.1f}–{max(speedups):.1f}×"
    return text


def main() -> None:
    runs = [load(path) for path in sys.argv[1:]]
    if not runs:
        raise SystemExit(__doc__)
    several = len(runs) > 1
    header = "| measure | localstore | SDK loop | speed-up | floor | × floor | target | met |"
    if several:
        header += f" {len(runs)} runs |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for name, row in runs[0].items():
        unit = row["unit"]
        speedup = f"{row['speedup']:.1f}×" if row.get("speedup") else ""
        vs_floor = f"{row['vs_floor']:.2f}" if row.get("vs_floor") else ""
        met = {True: "✓", False: "missed", None: ""}[row.get("met")]
        cells = [name, figure(row["localstore"], unit), figure(row.get("baseline"), "s"), speedup,
                 figure(row.get("floor"), "s"), vs_floor, row["target"].replace(">=", "≥").replace("<=", "≤").replace("x SDK", "× SDK").replace("x floor", "× floor"), met]
        if several:
            cells.append(spread([run[name] for run in runs if name in run]))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
