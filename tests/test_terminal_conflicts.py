"""Issue 12, points 3 and 5 — conflicts a person can act on, and `status` like git
status. The CLI runs as a subprocess, piped and under a pseudo-terminal, against the
session emulator.

3. `conflicts` shows each conflicting part with its base, ours and theirs values (cut to
   the terminal; --json keeps everything); `diff ID` of a conflict shows base → ours and
   base → theirs; `resolve ID PART --ours|--theirs` settles one part at a time, `--edit`
   merges in $EDITOR with the three versions between markers; every resolve says what
   happens next (nothing is pushed by it).
5. `status` lists the records with changes (kind, keys), conflicts and rejections and
   the next command; the last *successful* sync as a relative time; `sync --dry-run`
   names the records it would push and the conflicts it foresees; empty results say so.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ptyrun import run_in_pty, strip_ansi

from localstore.api import Client
from localstore.ops import edits
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer, seed_dataset

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

OFFLINE_URL = "http://127.0.0.1:9"
HUGE = {"messages": [{"role": "user", "content": "x" * (1100 * 1024)}]}  # over the server's 1 MiB: rejected
OURS_PAYLOAD = {"messages": [{"role": "user", "content": "our rewrite"}]}
THEIR_PAYLOAD = {"messages": [{"role": "user", "content": "their rewrite"}]}
ODD_KEY = "a/b~c"  # its part name escapes "/" and "~": /properties/a~1b~0c

# An $EDITOR that keeps the "theirs" version of every conflict block (or, with
# "--break", saves the buffer as it was, markers and all).
EDITOR_SCRIPT = '''
import sys
path = sys.argv[-1]
lines = open(path, encoding="utf-8").read().splitlines()
if "--break" in sys.argv:
    out = lines + [""]
else:
    out, keep = [], True
    for line in lines:
        if line.startswith(("<<<<<<<", "|||||||")):
            keep = False
        elif line.startswith(("=======", ">>>>>>>")):
            keep = True
        elif keep:
            out.append(line)
open(path, "w", encoding="utf-8").write("\\n".join(out) + "\\n")
'''


@dataclass
class Conflicted:
    """A store after a sync that met a teammate's changes (exit 3), then more edits."""

    db: Path
    env: dict[str, str]
    dataset_id: str
    a: str  # payload, label and score conflict; its local key "mine" does not
    b: str  # label conflict
    c: str  # deleted here, edited there: delete-vs-edit
    d: str  # edited here, deleted there: edit-vs-delete
    e: str  # the key "a/b~c" conflicts
    pending: str  # a label edit made after the sync
    rejected: str  # a payload edit the server rejected
    created: str  # an offline create made after the sync
    base_label: dict[str, Any]  # the seeded labels
    untouched: str

    def run(self, *args: str, offline: bool = False, **env: str) -> subprocess.CompletedProcess[str]:
        full = {**self.env, **env}
        if offline:
            full["LOCALSTORE_SERVER_URL"] = OFFLINE_URL
        return subprocess.run([sys.executable, "-m", "localstore", *args], capture_output=True, text=True,
                              env=full, stdin=subprocess.DEVNULL, timeout=120)

    def ok(self, *args: str, code: int = 0, **env: str) -> str:
        done = self.run(*args, **env)
        assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.ok(*args, "--json", code=code))

    def pty(self, *args: str, columns: int = 100, **env: str) -> Any:
        return run_in_pty(list(args), env={**self.env, **env}, columns=columns)


def cli_env(db: Path, server_url: str, api_key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LOCALSTORE_", "MISTRAL_")) and k not in ("EDITOR", "VISUAL", "PAGER")}
    return {**env, "LOCALSTORE_DB": str(db), "LOCALSTORE_SERVER_URL": server_url, "MISTRAL_API_KEY": api_key}


@pytest.fixture
def conflicted(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> Conflicted:
    state = emulator.state
    ds = seed_dataset(state, 10, name=f"conflicts-{time.monotonic_ns()}")
    db = tmp_path / "store.db"
    with Store.open(db) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        a, b, c, d, e, pending, rejected, untouched = sorted(r[0] for r in store.conn.execute("SELECT id FROM records"))[:8]
        labels = {rid: state.get_record(rid)["properties"]["label"] for rid in (a, b, c, d, e)}
        edits.set_properties(store, a, {"label": "ours", "score": 3, "mine": 1})
        edits.set_payload(store, a, OURS_PAYLOAD)
        edits.set_properties(store, b, {"label": "ours"})
        edits.delete_records(store, [c])
        edits.set_properties(store, d, {"label": "ours"})
        edits.set_properties(store, e, {ODD_KEY: 1})
        edits.set_payload(store, rejected, HUGE)
        # a teammate meanwhile
        state.update_properties(a, {**state.get_record(a)["properties"], "label": "theirs", "score": 4,
                                    "theirs_only": True})
        state.update_payload(a, THEIR_PAYLOAD)
        state.update_properties(b, {**state.get_record(b)["properties"], "label": "theirs"})
        state.update_properties(c, {**state.get_record(c)["properties"], "label": "edited there"})
        state.delete_record(d)
        state.update_properties(e, {**state.get_record(e)["properties"], ODD_KEY: 2})
        report = sync(store, client)
        assert (report.open_conflicts, report.rejected) == (5, 1), report
        edits.set_properties(store, pending, {"label": "pending"})
        created = edits.add_record(store, ds, {"messages": [{"role": "user", "content": "new"}]}, {"new": True})
    return Conflicted(db, cli_env(db, emulator.url, api_key), ds, a, b, c, d, e, pending, rejected, created,
                      labels, untouched)


def tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


# ------------------------------------------------------------------ 3. conflicts


def test_conflicts_piped_is_one_row_per_part_with_base_ours_and_theirs(conflicted: Conflicted) -> None:
    k = conflicted
    rows = {(r[0], r[1]): tuple(r[2:]) for r in tsv(k.ok("conflicts"))}
    assert {rid for rid, _ in rows} == {k.a, k.b, k.c, k.d, k.e}
    assert rows[(k.a, "/properties/label")] == (json.dumps(k.base_label[k.a]), '"ours"', '"theirs"')
    assert rows[(k.a, "/properties/score")][1:] == ("3", "4")
    assert json.loads(rows[(k.a, "/payload")][1]) == OURS_PAYLOAD
    assert json.loads(rows[(k.a, "/payload")][2]) == THEIR_PAYLOAD
    assert (k.a, "/properties/mine") not in rows  # a local change nobody else made is no conflict
    assert rows[(k.b, "/properties/label")] == (json.dumps(k.base_label[k.b]), '"ours"', '"theirs"')
    assert rows[(k.c, "delete-vs-edit")][1] == "(deleted)"
    assert json.loads(rows[(k.c, "delete-vs-edit")][2])["properties"]["label"] == "edited there"
    assert rows[(k.d, "edit-vs-delete")][2] == "(deleted)"
    assert rows[(k.e, "/properties/a~1b~0c")] == ("(absent)", "1", "2")


def test_conflicts_json_keeps_everything(conflicted: Conflicted) -> None:
    k = conflicted
    found = {c["record_id"]: c for c in k.json("conflicts")}
    a = found[k.a]
    assert a["parts"] == ["/payload", "/properties/label", "/properties/score"]
    assert a["local"]["payload"] == OURS_PAYLOAD and a["remote"]["payload"] == THEIR_PAYLOAD
    assert a["local"]["properties"]["mine"] == 1 and a["remote"]["properties"]["theirs_only"] is True
    assert {d["part"]: (d.get("base"), d["ours"], d["theirs"]) for d in a["details"]}["/properties/score"][1:] == (3, 4)
    assert found[k.d]["remote"] is None and "theirs" not in found[k.d]["details"][0]
    assert "base" not in found[k.e]["details"][0]  # the key did not exist


@pytest.mark.parametrize("columns", [100, 160])
def test_conflicts_in_a_terminal_is_a_table_cut_to_its_width(conflicted: Conflicted, columns: int) -> None:
    k = conflicted
    shown = k.pty("conflicts", columns=columns)
    assert shown.returncode == 0, shown.stderr
    lines = strip_ansi(shown.output).splitlines()
    assert all(len(line) <= columns for line in lines), "\n".join(lines)
    assert "5 record(s) in conflict" in lines[0]
    for rid in (k.a, k.b, k.c, k.d, k.e):
        assert rid in shown.output  # ids whole
    part_lines = [line for line in lines if k.a in line]
    assert [next(p for p in ("/payload", "/properties/label", "/properties/score") if p in line)
            for line in part_lines] == ["/payload", "/properties/label", "/properties/score"]  # parts whole
    assert any("…" in line for line in part_lines)  # the payloads are cut
    assert "localstore resolve ID PART --ours|--theirs" in shown.output


def test_no_conflicts_says_so(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> None:
    env = cli_env(tmp_path / "empty.db", emulator.url, api_key)
    piped = subprocess.run([sys.executable, "-m", "localstore", "conflicts"], capture_output=True, text=True,
                           env=env, timeout=120)
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "", "no conflicts\n")
    shown = run_in_pty(["conflicts"], env=env)
    assert shown.returncode == 0 and "no conflicts" in shown.stderr


def test_diff_of_a_conflict_shows_base_to_ours_and_base_to_theirs(conflicted: Conflicted) -> None:
    k = conflicted
    text = k.ok("diff", k.a)
    ours, theirs = text.split(f"--- a/{k.a} (base", 2)[1:]
    assert f"+++ b/{k.a} (ours: your version)" in ours
    assert '+    "label": "ours",' in ours and '+    "mine": 1,' in ours and "our rewrite" in ours
    assert f"+++ b/{k.a} (theirs: the server's now" in theirs
    assert '+    "label": "theirs",' in theirs and '"theirs_only": true' in theirs and "their rewrite" in theirs
    deleted_there = k.ok("diff", k.d)
    assert deleted_there.count(f"--- a/{k.d} (base") == 2 and "+++ /dev/null" in deleted_there
    # a record without a conflict keeps the one diff: base → local
    assert k.ok("diff", k.pending).count("--- a/") == 1


def test_resolve_part_by_part_then_sync_pushes_the_merge(conflicted: Conflicted, emulator: EmulatorServer) -> None:
    k = conflicted
    said = k.ok("resolve", k.a, "/properties/label", "--theirs")
    assert "still in conflict: /payload, /properties/score" in said and "nothing is pushed" in said
    assert [c["parts"] for c in k.json("conflicts") if c["record_id"] == k.a] == [["/payload", "/properties/score"]]
    assert "still in conflict: /payload" in k.ok("resolve", k.a[:8], "/properties/score", "--ours")
    said = k.ok("resolve", k.a, "/payload", "--theirs")
    assert said.strip() == (f"resolved /payload of {k.a} --theirs: properties change queued; "
                            "`localstore sync` pushes it")
    said = k.ok("resolve", k.e, "/properties/a~1b~0c", "--ours")
    assert "properties change queued" in said
    changes = {c["record_id"]: c for c in k.json("status")["changes"]}
    assert changes[k.a]["parts"] == ["/properties/mine", "/properties/score"]
    assert emulator.state.get_record(k.a)["properties"]["score"] == 4  # resolve pushed nothing

    k.ok("sync", code=3)  # b, c and d still conflict
    held = emulator.state.get_record(k.a)
    assert held["payload"] == THEIR_PAYLOAD
    assert {key: held["properties"][key] for key in ("label", "score", "mine", "theirs_only")} == {
        "label": "theirs", "score": 3, "mine": 1, "theirs_only": True}
    assert emulator.state.get_record(k.e)["properties"][ODD_KEY] == 1
    assert {c["record_id"] for c in k.json("conflicts")} == {k.b, k.c, k.d}


def test_resolve_whole_records_say_what_happens(conflicted: Conflicted, emulator: EmulatorServer) -> None:
    k = conflicted
    said = k.ok("resolve", k.b, "--theirs")
    assert said.strip() == (f"resolved {k.b} --theirs: your local changes were dropped (they stay in "
                            "`localstore log`); the record is what the server has; nothing to push")
    assert "delete change queued; `localstore sync` pushes it" in k.ok("resolve", k.c, "delete-vs-edit", "--ours")
    said = k.ok("resolve", k.d, "--ours")
    new_id = said.split("becomes a new record ")[1].split(";")[0]
    assert new_id != k.d and "`localstore sync` creates it" in said
    status = k.json("status")
    assert status["conflicts"] == 2 and k.b not in {c["record_id"] for c in status["changes"]}
    assert {c["record_id"]: c["kind"] for c in status["changes"]}[new_id] == "create"


def test_resolve_usage_errors_change_nothing(conflicted: Conflicted) -> None:
    k = conflicted
    before = k.json("conflicts")
    for args, message in (
        ((k.a, "/properties/nope", "--theirs"),
         f"record {k.a} has no conflict on /properties/nope; its conflicting parts: /payload, "
         "/properties/label, /properties/score"),
        ((k.a, "/payload", "--edit"), "PART goes with --ours or --theirs"),
        ((k.a, "--ours", "--theirs"), "give exactly one of --ours, --theirs, --edit or --file F"),
        ((k.pending, "--ours"), f"record {k.pending} has no open conflict"),
    ):
        done = k.run("resolve", *args)
        assert done.returncode == 1 and done.stdout == "", args
        assert done.stderr.startswith(f"localstore: error: {message}") and done.stderr.count("\n") == 1, done.stderr
    assert k.json("conflicts") == before


def test_resolve_edit_merges_in_the_editor(conflicted: Conflicted, tmp_path: Path) -> None:
    """Under a terminal, $EDITOR gets ours, base and theirs between markers; the editor
    keeps theirs everywhere: the local key nobody else touched stays, and is queued."""
    k = conflicted
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR_SCRIPT)
    done = k.pty("resolve", k.a, "--edit", EDITOR=f"{sys.executable} {editor}")
    assert done.returncode == 0, done.stderr
    assert "properties change queued; `localstore sync` pushes it" in done.output
    record = json.loads(k.ok("show", k.a, "--json"))
    assert record["payload"] == THEIR_PAYLOAD
    assert {key: record["properties"][key] for key in ("label", "score", "mine", "theirs_only")} == {
        "label": "theirs", "score": 4, "mine": 1, "theirs_only": True}


def test_resolve_edit_keeps_a_buffer_it_cannot_use(conflicted: Conflicted, tmp_path: Path) -> None:
    """Saved with its markers: nothing resolved, the buffer kept; fixed, `--file` takes it."""
    k = conflicted
    editor = tmp_path / "editor.py"
    editor.write_text(EDITOR_SCRIPT)
    broken = k.run("resolve", k.b, "--edit", EDITOR=f"{sys.executable} {editor} --break")
    assert broken.returncode == 1 and broken.stderr.count("\n") == 1, broken.stderr
    assert "still has conflict markers" in broken.stderr and "nothing was resolved" in broken.stderr
    kept = Path(broken.stderr.split("kept in ")[1].split(":")[0])
    assert "<<<<<<< ours" in kept.read_text() and k.b in {c["record_id"] for c in k.json("conflicts")}
    subprocess.run([sys.executable, str(editor), str(kept)], check=True, timeout=60)
    said = k.ok("resolve", k.b, "--file", str(kept))
    assert f"resolved {k.b}: the record is what the server has; nothing to push" in said


# ------------------------------------------------------------------ 5. status and dry run


def test_status_lists_the_records_and_what_to_run_next(conflicted: Conflicted) -> None:
    k = conflicted
    text = k.ok("status")
    lines = text.splitlines()
    assert re.fullmatch(r"9 records in 1 tracked dataset\(s\); last sync (just now|\d+ s ago)", lines[0]), lines[0]

    def line_of(rid: str) -> str:
        return next(line for line in lines if rid in line)

    assert "changes not pushed yet: 2 record(s)" in text
    assert line_of(k.pending).split() == [k.pending, "update", "properties:", "label"]
    assert line_of(k.created).split() == [k.created, "create"]
    assert "conflicts: 5 record(s)" in text
    assert line_of(k.a).split(None, 1)[1] == "payload, properties: label, score"
    assert line_of(k.e).split(None, 1)[1] == f"properties: {ODD_KEY}"
    assert line_of(k.c).split(None, 1)[1] == "delete-vs-edit"
    assert "rejected by the server: 1 change(s)" in text and "1 MiB" in line_of(k.rejected)
    steps = lines[lines.index("next:") + 1:]
    assert [s.split("  ")[1] for s in steps] == ["localstore sync", "localstore conflicts",
                                                  "localstore log --record ID"]

    status = k.json("status")
    assert (status["pending"], status["conflicts"], status["rejected"]) == (2, 5, 1)
    assert {c["record_id"]: (c["kind"], c["parts"]) for c in status["changes"]} == {
        k.pending: ("update", ["/properties/label"]), k.created: ("create", [])}
    assert {c["record_id"] for c in status["conflicted"]} == {k.a, k.b, k.c, k.d, k.e}
    assert [r["record_id"] for r in status["rejections"]] == [k.rejected]
    assert [s["command"] for s in status["next"]] == ["localstore sync", "localstore conflicts",
                                                     "localstore log --record ID"]


def test_status_in_a_terminal_fits_it(conflicted: Conflicted) -> None:
    k = conflicted
    shown = k.pty("status", columns=72)
    assert shown.returncode == 0, shown.stderr
    lines = strip_ansi(shown.output).splitlines()
    listed = lines[:lines.index("next:")]
    assert all(len(line) <= 72 for line in listed), "\n".join(listed)
    rejected = next(line for line in listed if k.rejected in line)
    assert rejected.endswith("…")  # the server's long message, cut
    assert k.a in shown.output and "localstore conflicts" in shown.output


@pytest.mark.slow
def test_a_failed_or_offline_sync_is_not_the_last_sync(conflicted: Conflicted) -> None:
    k = conflicted
    before = k.json("status")
    assert before["last_sync"] is not None and before["last_attempt"] is None
    assert k.run("sync", offline=True).returncode == 1
    after = k.json("status")
    assert after["last_sync"] == before["last_sync"]
    assert after["last_attempt"]["status"] == "failed" and "cannot reach" in after["last_attempt"]["message"]
    text = k.ok("status")
    assert "the latest sync failed just now: cannot reach" in text
    k.ok("sync", code=3)  # conflicts remain: still a successful sync
    again = k.json("status")
    assert again["last_sync"] > before["last_sync"] and again["last_attempt"] is None


def test_status_of_an_empty_store_says_so(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> None:
    env = cli_env(tmp_path / "empty.db", emulator.url, api_key)
    for shown in (run_in_pty(["status"], env=env).output,
                  subprocess.run([sys.executable, "-m", "localstore", "status"], capture_output=True,
                                 text=True, env=env, timeout=120).stdout):
        text = strip_ansi(shown)
        assert "0 records in 0 tracked dataset(s); never synced" in text
        for empty in ("no changes to push", "no conflicts", "no rejected changes"):
            assert empty in text
        assert "localstore pull DATASET_ID" in text


@pytest.mark.slow
def test_dry_run_names_the_records_and_the_conflicts_it_foresees(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    state = emulator.state
    ds = seed_dataset(state, 6, name=f"dry-run-{time.monotonic_ns()}")
    db = tmp_path / "store.db"
    with Store.open(db) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        update, gone, clash = sorted(r[0] for r in store.conn.execute("SELECT id FROM records"))[:3]
        edits.set_properties(store, update, {"label": "mine"})
        edits.delete_records(store, [gone])
        edits.set_properties(store, clash, {"label": "mine", "score": 1})
        created = edits.add_record(store, ds, {"messages": [{"role": "user", "content": "hi"}]}, {})
    state.update_properties(clash, {**state.get_record(clash)["properties"], "label": "theirs", "score": 1})
    env = cli_env(db, emulator.url, api_key)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "localstore", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    before = json.loads(run("status", "--json").stdout)
    piped = run("sync", "--dry-run")
    assert piped.returncode == 3, piped.stderr
    lines = piped.stdout.splitlines()
    assert lines[0] == "would push: 3 record(s)"
    assert sorted(lines[1:4]) == sorted([f"  {gone}  delete", f"  {update}  update", f"  {created}  create"])
    assert lines[4:] == ["would conflict: 1 record(s)", f"  {clash}  properties: label"]
    planned = json.loads(run("sync", "--dry-run", "--json").stdout)["planned_records"]
    assert {(p["record_id"], p["action"]) for p in planned} == {
        (update, "push"), (gone, "delete"), (created, "create"), (clash, "conflict")}
    assert next(p for p in planned if p["action"] == "conflict")["parts"] == ["/properties/label"]
    shown = run_in_pty(["sync", "--dry-run"], env=env, columns=60)
    assert shown.returncode == 3 and "would conflict: 1 record(s)" in shown.output
    after = json.loads(run("status", "--json").stdout)
    assert after == before  # a dry run changes nothing

    assert run("sync").returncode == 3
    nothing = run("sync", "--dry-run")
    assert nothing.stdout.splitlines() == ["nothing to push", "no conflicts foreseen",
                                          "1 conflict(s) already open: `localstore conflicts` shows them, "
                                          "`localstore resolve` settles them"]


# ------------------------------------------------------------------ the pieces


def test_a_merged_buffer_forgives_comments_and_trailing_commas_but_not_markers() -> None:
    from localstore.cli.mergebuffer import parse_merged
    from localstore.errors import UsageError

    text = '# a comment\n{"payload": {"x": "a, }", "y": [1, 2,],},\n  # another\n "properties": {"k": "v",},\n}\n'
    assert parse_merged(text, "t") == {"payload": {"x": "a, }", "y": [1, 2]}, "properties": {"k": "v"}}
    with pytest.raises(UsageError, match=r"t still has conflict markers \(<<<<<<< on line 2"):
        parse_merged('{"payload": {},\n<<<<<<< ours\n"properties": {}}', "t")


def test_relative_times() -> None:
    from datetime import UTC, datetime, timedelta

    from localstore.core.timestamps import ago

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    stamp = "2026-01-01T12:00:00.000000Z"
    assert [ago(stamp, now + timedelta(seconds=s)) for s in (-30, 4, 42, 180, 3599, 7300, 2 * 86400 + 5)] == [
        "just now", "just now", "42 s ago", "3 min ago", "59 min ago", "2 h ago", "2 days ago"]


def test_settling_parts_one_by_one_in_any_order_gives_each_part_the_chosen_side(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """Random edits on both sides of 12 records; every conflicting part is settled alone,
    in a random order, --ours or --theirs at random. Each resolve takes exactly that part
    out of the conflict; after the sync the server holds, key by key, the chosen side
    where both sides changed, and the one side's change everywhere else."""
    from localstore.core.merge import MISSING, property_part
    from localstore.ops.resolve import resolve_conflict

    rng = random.Random(12)
    state = emulator.state
    ds = seed_dataset(state, 12, name=f"parts-{time.monotonic_ns()}")
    keys = ["k0", "k1", "k2", "k3", "k4/x"]
    with Store.open(tmp_path / "s.db") as store, Client(emulator.url, api_key) as client:
        ids = sorted(r["id"] for r in state.list_records(ds))
        for rid in ids:
            state.update_properties(rid, {k: rng.randrange(3) for k in keys})
        pull(store, client, [ds])
        expected: dict[str, dict[str, Any]] = {}
        sides: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}

        def changed(props: dict[str, Any]) -> dict[str, Any]:
            out = dict(props)
            for key in rng.sample(keys, 3):
                if rng.random() < 0.2:
                    out.pop(key, None)
                else:
                    out[key] = rng.randrange(3, 6)
            return out

        for rid in ids:
            base = dict(state.get_record(rid)["properties"])
            local, remote = changed(base), changed(base)
            edits.edit_record(store, rid, properties=local)  # the whole map: removals too
            state.update_properties(rid, remote)
            sides[rid] = (local, remote)
            expected[rid] = {}
            for key in keys:
                b, mine, theirs = (p.get(key, MISSING) for p in (base, local, remote))
                expected[rid][key] = theirs if mine == b else mine  # a conflict is decided below
        sync(store, client)
        parts = [(c["record_id"], p) for c in store.query("SELECT record_id, parts FROM conflicts")
                 for p in json.loads(c["parts"])]
        assert len(parts) >= 10, "too few conflicts to mean anything"
        rng.shuffle(parts)
        for rid, part in parts:
            choice = rng.choice(["ours", "theirs"])
            before = set(json.loads(store.scalar("SELECT conflict_parts FROM working WHERE record_id = ?", (rid,))))
            done = resolve_conflict(store, rid, choice, parts=(part,))
            assert set(done.remaining) == before - {part}
            assert done.outcome == ("conflict" if done.remaining else "pending" if done.queued else "settled")
            key = next(k for k in keys if property_part(k) == part)
            expected[rid][key] = sides[rid][0 if choice == "ours" else 1].get(key, MISSING)
        assert sync(store, client).open_conflicts == 0
    for rid in ids:
        held = state.get_record(rid)["properties"]
        assert held == {k: v for k, v in expected[rid].items() if v is not MISSING}, rid


def test_a_create_that_may_have_landed_is_shown_and_settled_in_words(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """A create whose answer was lost while new records appeared (create-unconfirmed):
    `conflicts` says its base is new and theirs unknown; --theirs takes it as landed and
    sends nothing, --ours queues it again."""
    from localstore.core.plan import LocalWork
    from localstore.store import ledger

    ds = seed_dataset(emulator.state, 2, name=f"unconfirmed-{time.monotonic_ns()}")
    db = tmp_path / "store.db"
    with Store.open(db) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        made = [edits.add_record(store, ds, {"messages": [{"role": "user", "content": f"c{i}"}]}, {}) for i in (1, 2)]
        with store.transaction() as conn:  # POSTed, answer lost, then the listing was ambiguous
            for rid in made:
                ledger.begin_create(conn, LocalWork(rid, ds, "create", {}, {}, None, None, ()))
                ledger.create_unconfirmed(conn, rid)
    env = cli_env(db, emulator.url, api_key)

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "localstore", *args], capture_output=True, text=True,
                              env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    rows = {r[0]: r[1:] for r in tsv(run("conflicts"))}
    assert rows[made[0]][0] == "create-unconfirmed" and rows[made[0]][1] == "(new here)"
    assert json.loads(rows[made[0]][2])["payload"]["messages"][0]["content"] == "c1"
    assert rows[made[0]][3] == "(unknown: it may have landed)"
    assert "taken as landed on the server and dropped here; nothing will be sent" in run("resolve", made[0], "--theirs")
    assert "the create is queued again; `localstore sync` sends it" in run("resolve", made[1], "--ours")
    assert [(c["record_id"], c["kind"]) for c in json.loads(run("status", "--json"))["changes"]] == [(made[1], "create")]
