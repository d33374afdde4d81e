"""What `status` and `sync --dry-run` print for a person: the records behind the counts,
what to run next, and empty results said in words. No logic of the product lives here."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from localstore.cli.output import stdout_is_terminal
from localstore.core.timestamps import ago

if TYPE_CHECKING:
    from localstore.ops.queries import Status
    from localstore.ops.resolve import Resolution

SHOWN = 20  # records listed per section of `status` (--json lists them all)


def _fit(line: str) -> str:
    """One line, cut with "…" to the terminal's width (a pipe gets it whole)."""
    if not stdout_is_terminal():
        return line
    width = shutil.get_terminal_size().columns
    return line if len(line) <= width else line[: max(width - 1, 0)] + "…"


def _parts_text(parts: list[str]) -> str:
    """``/payload``, ``/properties/a`` … as "payload, properties: a, b"."""
    from localstore.core.merge import PAYLOAD, property_key

    keys = [k for k in (property_key(p) for p in parts) if k is not None]
    text = ["payload"] if PAYLOAD in parts else []
    if keys:
        text.append("properties: " + ", ".join(keys))
    others = [p for p in parts if p != PAYLOAD and property_key(p) is None]
    return ", ".join(text + others)


def next_steps(st: Status) -> list[dict[str, str]]:
    """The commands to run next, each with why."""
    steps = []
    if st.pending:
        steps.append({"command": "localstore sync",
                      "why": f"push {st.pending} record(s) with changes (`sync --dry-run` shows what it would do)"})
    if st.conflicts:
        steps.append({"command": "localstore conflicts",
                      "why": f"see the {st.conflicts} conflict(s), then `localstore resolve ID [PART] "
                             "--ours|--theirs|--edit` settles each"})
    if st.rejected:
        steps.append({"command": "localstore log --record ID",
                      "why": "see why the server rejected a change; edit again, or `localstore revert ID` to drop it"})
    if not st.records and not st.tracked_datasets:
        steps.append({"command": "localstore pull DATASET_ID",
                      "why": "mirror a dataset (`localstore datasets --remote` lists them)"})
    elif st.last_attempt is not None and not st.pending:
        steps.append({"command": "localstore sync", "why": "the latest sync did not finish: run it again"})
    return steps


def say_status(st: Status) -> None:
    """`status` like `git status`: the records with changes, conflicts and rejections,
    the last successful sync as a relative time, and what to run next."""
    last = f"last sync {ago(st.last_sync)}" if st.last_sync else "never synced"
    click.echo(f"{st.records} records in {st.tracked_datasets} tracked dataset(s); {last}")
    attempt = st.last_attempt
    if attempt is not None:
        if attempt["status"] == "running":
            click.echo(f"the latest sync, started {ago(attempt['started_at'])}, did not finish "
                       "(it is running, or was killed)")
        else:
            why = f": {attempt['message']}" if attempt.get("message") else ""
            click.echo(_fit(f"the latest sync failed {ago(attempt['finished_at'])}{why}"))

    click.echo()
    _section(st.changes, st.pending, "changes not pushed yet", "no changes to push",
             lambda c: f"{c['kind']:<7} {_parts_text(c['parts'])}" + (" (being sent)" if c["sending"] else ""))
    _section(st.conflicted, st.conflicts, "conflicts", "no conflicts", lambda c: _parts_text(c["parts"]))
    _section(st.rejections, st.rejected, "rejected by the server", "no rejected changes",
             lambda r: f"{r['kind']:<10} {r['error'] or ''}", unit="change(s)")
    steps = next_steps(st)
    click.echo()
    if not steps:
        click.echo("nothing to do: no changes, no conflicts")
        return
    click.echo("next:")
    width = max(len(s["command"]) for s in steps)
    for step in steps:
        click.echo(f"  {step['command']:<{width}}  {step['why']}")


def _section(rows: list[dict[str, Any]], total: int, title: str, empty: str,
             describe: Callable[[dict[str, Any]], str],
             unit: str = "record(s)") -> None:
    if not total:
        click.echo(empty)
        return
    click.echo(f"{title}: {total} {unit}")
    for row in rows[:SHOWN]:
        click.echo(_fit(f"  {row['record_id']}  {describe(row)}".rstrip()))
    if total > min(len(rows), SHOWN):
        click.echo(f"  … and {total - min(len(rows), SHOWN)} more (`localstore status --json` lists them all)")


def say_plan(planned: list[dict[str, Any]], limit: int = 50) -> None:
    """`sync --dry-run`: the records it would push, then the conflicts it foresees (a
    terminal sees the first ``limit`` of each; a pipe or --json all of them)."""
    shown = limit if stdout_is_terminal() else None
    verbs = {"push": "update", "delete": "delete", "create": "create"}
    groups = [
        ("would push", [p for p in planned if p["action"] in verbs], "nothing to push"),
        ("would settle (the server already holds them)", [p for p in planned if p["action"] == "settle"], ""),
        ("would conflict", [p for p in planned if p["action"] == "conflict"], "no conflicts foreseen"),
    ]
    for title, rows, empty in groups:
        if not rows:
            if empty:
                click.echo(empty)
            continue
        click.echo(f"{title}: {len(rows)} record(s)")
        for row in rows[:shown]:
            what = _parts_text(row["parts"]) if "parts" in row else verbs.get(row["action"], "")
            click.echo(_fit(f"  {row['record_id']}  {what}".rstrip()))
        if shown is not None and len(rows) > shown:
            click.echo(f"  … and {len(rows) - shown} more (`localstore sync --dry-run --json` lists them all)")


# ------------------------------------------------------------------ conflicts


def conflict_rows(conflicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per conflicting part: record_id, part, base, ours, theirs as compact JSON
    (a side without the part says why: absent, deleted, …)."""
    from localstore.cli.output import to_json

    rows = []
    for conflict in conflicts:
        for detail in conflict["details"]:
            row = {"record_id": conflict["record_id"], "part": detail["part"]}
            for side in ("base", "ours", "theirs"):  # JSON: the string "3" is not the number 3
                row[side] = to_json(detail[side]) if side in detail else _missing(detail["part"], side)
            rows.append(row)
    return rows


def _missing(part: str, side: str) -> str:
    from localstore.core.merge import property_key

    if part == "create-unconfirmed":
        return "(new here)" if side == "base" else "(unknown: it may have landed)"
    return "(absent)" if property_key(part) is not None else "(deleted)"


def say_resolution(res: Resolution) -> None:
    """What a resolve did and what happens next (nothing is ever pushed by resolve)."""
    rid = res.record_id
    settled = f"{', '.join(res.parts)} of {res.old_id}" if res.parts else res.old_id
    how = f" --{res.choice}" if res.choice != "file" else ""
    if res.outcome == "conflict":
        click.echo(f"resolved {settled}{how}; still in conflict: {', '.join(res.remaining)}")
        click.echo(f"nothing is pushed until those are settled too: `localstore resolve {rid} PART "
                   "--ours|--theirs` (`localstore conflicts` shows them)")
    elif res.outcome == "landed":
        click.echo(f"resolved {settled} --theirs: the create is taken as landed on the server and dropped "
                   "here; nothing will be sent (`localstore pull` brings in the server's record)")
    elif res.outcome == "resend":
        click.echo(f"resolved {settled}{how}: the create is queued again; `localstore sync` sends it")
    elif res.outcome == "recreated":
        click.echo(f"resolved {settled}{how}: it was deleted on the server, so your version becomes a new "
                   f"record {rid}; `localstore sync` creates it")
    elif res.outcome == "settled":
        what = ("your local changes were dropped (they stay in `localstore log`); "
                if res.choice == "theirs" else "")
        click.echo(f"resolved {settled}{how}: {what}the record is what the server has; nothing to push")
    else:
        kinds = " and ".join(res.queued)
        click.echo(f"resolved {settled}{how}: {kinds} change queued; `localstore sync` pushes it")
