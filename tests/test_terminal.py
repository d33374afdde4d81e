"""The terminal experience (issue 12, points 1, 2, 4, 7, and SQL blobs): the CLI run as a
subprocess, piped and under a pseudo-terminal."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from ptyrun import run_in_pty, strip_ansi

from localstore.api import Client
from localstore.cli import cli
from localstore.cli.ids import complete_ids
from localstore.errors import UsageError
from localstore.ops import edits
from localstore.ops.idprefix import candidates, canonical_prefix, resolve_id
from localstore.ops.queries import get_record
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer, seed_dataset

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first line of the question\nsecond line of the question"},
        {
            "role": "assistant",
            "content": "Here is the fix:\n\n```python\nx = compute()\nprint(x)\n```\n\n- check the log\n- retry",
        },
    ]
}


def base_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("LOCALSTORE_", "MISTRAL_", "_LOCALSTORE")) and "proxy" not in k.lower()
        and k not in ("EDITOR", "VISUAL", "PAGER", "LESS", "NO_COLOR")
    }
    env.update(extra)
    return env


def localstore(*args: str, env: dict[str, str], cwd: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI with stdout a pipe (not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "localstore", *args], capture_output=True, text=True, env=env,
        cwd=cwd, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, timeout=120,
    )


@dataclass
class Filled:
    path: Path
    dataset_id: str
    ids: list[str]  # every record id, sorted
    conversation: str  # the record holding CONVERSATION
    conflicted: str  # a record with an open conflict
    pending: str  # a record with a pending properties edit


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorServer, api_key: str) -> Filled:
    """A store with 6 records of one dataset: one conversation, one conflict, one pending edit."""
    ds = seed_dataset(emulator.state, 5, name="terminal-experience")
    conversation = emulator.state.create_record(ds, CONVERSATION, {"label": "demo", "note": "two\nlines"})["id"]
    path = tmp_path_factory.mktemp("terminal") / "store.db"
    with Store.open(path) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        ids = sorted(r[0] for r in store.conn.execute("SELECT id FROM records"))
        others = [i for i in ids if i != conversation]
        edits.set_properties(store, others[0], {"label": "mine"})
        emulator.state.update_properties(others[0], {"label": "theirs"})
        assert sync(store, client).open_conflicts == 1
        edits.set_properties(store, others[1], {"label": "pending"})
    return Filled(path, ds, ids, conversation, others[0], others[1])


@pytest.fixture
def store_copy(filled: Filled, tmp_path: Path) -> Path:
    """A copy of the filled store that a test may change."""
    copy = tmp_path / "store.db"
    shutil.copyfile(filled.path, copy)
    return copy


def db_env(path: Path, **extra: str) -> dict[str, str]:
    return base_env(LOCALSTORE_DB=str(path), **extra)


# ------------------------------------------------------------------ 2. ids whole, piped formats

LISTINGS = {
    "records": ["id", "dataset_id", "sync_state", "updated_at", "properties"],
    "datasets": ["id", "name", "tracked", "records", "last_pulled_at"],
    "log": ["id", "created_at", "record_id", "kind", "state", "error"],
    "conflicts": ["record_id", "part", "base", "ours", "theirs"],
}


def test_piped_listings_are_tab_separated_rows_with_whole_ids(filled: Filled) -> None:
    env = db_env(filled.path)
    records = localstore("records", env=env)
    assert records.returncode == 0, records.stderr
    rows = [line.split("\t") for line in records.stdout.splitlines()]
    assert sorted(r[0] for r in rows) == filled.ids  # no header, every id whole
    assert all(len(r) == 5 and r[1] == filled.dataset_id for r in rows)
    by_id = {r[0]: r for r in rows}
    assert by_id[filled.pending][2] == "pending"
    assert json.loads(by_id[filled.pending][4])["label"] == "pending"
    # a newline inside a value does not split the row
    assert json.loads(by_id[filled.conversation][4])["note"] == "two\nlines"

    datasets = localstore("datasets", env=env).stdout.splitlines()
    assert [line.split("\t")[:4] for line in datasets] == [[filled.dataset_id, "terminal-experience", "1", "6"]]

    log = [line.split("\t") for line in localstore("log", env=env).stdout.splitlines()]
    assert {r[2] for r in log} >= {filled.pending, filled.conflicted}
    assert all(len(r) == 6 for r in log)

    conflicts = [line.split("\t") for line in localstore("conflicts", env=env).stdout.splitlines()]
    assert [r[0] for r in conflicts] == [filled.conflicted]
    assert conflicts[0][1] == "/properties/label" and conflicts[0][3:] == ['"mine"', '"theirs"']


def test_the_ids_of_a_pipe_feed_the_next_command(store_copy: Path, filled: Filled) -> None:
    env = db_env(store_copy)
    ls = f"{sys.executable} -m localstore"
    pipeline = f"{ls} records | grep -v conflict | cut -f1 | head -2 | xargs {ls} rm"
    removed = subprocess.run(["sh", "-c", pipeline], capture_output=True, text=True, env=env, timeout=120)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines()[-1] == "queued 2 delete(s)"
    assert len(json.loads(localstore("records", "--json", env=env).stdout)) == len(filled.ids) - 2


@pytest.mark.parametrize("command", sorted(LISTINGS))
def test_listings_take_csv_and_json(command: str, filled: Filled) -> None:
    env = db_env(filled.path)
    as_csv = localstore(command, "--csv", env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    table = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert table[0] == LISTINGS[command]
    as_json = localstore(command, "--json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert isinstance(rows, list) and len(rows) == len(table) - 1 >= 1
    key = LISTINGS[command][0]
    assert [str(r[key]) for r in rows] == [row[0] for row in table[1:]]
    both = localstore(command, "--csv", "--json", env=env)
    assert both.returncode == 1 and "give --json or --csv, not both" in both.stderr


def test_an_empty_listing_says_so_on_stderr(tmp_path: Path) -> None:
    env = db_env(tmp_path / "empty.db")
    for command, message in (("records", "no records in the store"), ("conflicts", "no conflicts"),
                             ("log", "the change log is empty"), ("datasets", "no datasets in the store")):
        result = localstore(command, env=env)
        assert (result.returncode, result.stdout) == (0, ""), command
        assert message in result.stderr
        assert localstore(command, "--json", env=env).stdout == "[]\n"


@pytest.mark.parametrize("columns", [60, 120])
def test_terminal_tables_never_cut_an_id(columns: int, filled: Filled) -> None:
    env = db_env(filled.path)
    for command, ids in (("records", filled.ids), ("conflicts", [filled.conflicted]),
                         ("log", [filled.pending]), ("datasets", [filled.dataset_id])):
        result = run_in_pty([command], env=env, columns=columns)
        assert result.returncode == 0, result.stderr
        text = strip_ansi(result.output)
        assert "\t" not in text, "a terminal gets a table"
        for rid in ids:
            assert rid in text, (command, columns, text)


def test_terminal_table_uses_the_width_it_has(filled: Filled) -> None:
    """At 200 columns the properties are shown whole; at 100 they are cut with "…"."""
    env = db_env(filled.path)
    wide = strip_ansi(run_in_pty(["records"], env=env, columns=200).output)
    narrow = strip_ansi(run_in_pty(["records"], env=env, columns=100).output)
    label_line = next(line for line in wide.splitlines() if filled.pending in line)
    assert '"label": "pending"' in label_line and not label_line.rstrip().endswith("…")
    assert f"dataset {filled.dataset_id}" in wide  # one dataset: named once, above
    assert all(len(line) <= 100 for line in narrow.splitlines())
    assert any(line.rstrip().endswith("…") for line in narrow.splitlines())


# ------------------------------------------------------------------ 2. id prefixes


def test_commands_take_a_unique_prefix(store_copy: Path, filled: Filled) -> None:
    env = db_env(store_copy)
    rid = filled.pending
    shown = localstore("show", rid[:8], env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == rid
    assert json.loads(localstore("show", rid[:13].upper(), env=env).stdout)["id"] == rid  # "1D5E0683-F4A0"
    assert json.loads(localstore("show", rid[:8] + rid[9:11], env=env).stdout)["id"] == rid  # hyphen left out
    done = localstore("set", rid[:6], "score=1", env=env)
    assert done.stdout == f"queued properties change for {rid}\n", done.stderr
    log = json.loads(localstore("log", "--record", rid[:5], "--json", env=env).stdout)
    assert log and {e["record_id"] for e in log} == {rid}
    assert rid in localstore("diff", rid[:7], env=env).stdout
    rows = localstore("records", "--dataset", filled.dataset_id[:6], "--json", env=env)
    assert len(json.loads(rows.stdout)) == len(filled.ids), rows.stderr
    assert localstore("revert", rid[:8], env=env).stdout == f"reverted {rid}\n"


def test_an_unknown_whole_id_keeps_its_message(filled: Filled) -> None:
    unknown = str(uuid.uuid4())
    result = localstore("show", unknown, env=db_env(filled.path))
    assert result.returncode == 1
    assert result.stderr == f"localstore: error: record {unknown} is not in the store; `localstore fetch {unknown}` mirrors it\n"


@dataclass
class FakeRecord:
    id: str
    dataset_id: str
    payload: dict[str, Any]
    properties: dict[str, Any]
    created_at: str = "2026-01-01T00:00:00.000000Z"
    updated_at: str = "2026-01-01T00:00:00.000000Z"
    deleted_at: str | None = None
    source: str = "DIRECT_INPUT"


AMBIGUOUS = ["abcd0000-0000-4000-8000-000000000001", "abcd0000-0000-4000-8000-000000000002", "abce0000-0000-4000-8000-000000000003"]
DATASETS = ["dddd0000-0000-4000-8000-000000000001", "dddd1111-0000-4000-8000-000000000002"]


@pytest.fixture
def crafted(tmp_path: Path) -> Iterator[Store]:
    """A store whose ids share prefixes on purpose."""
    with Store.open(tmp_path / "crafted.db") as store:
        with store.transaction():
            store.upsert_dataset({"id": DATASETS[0], "name": "alpha"}, tracked=True)
            store.upsert_dataset({"id": DATASETS[1], "name": "beta"}, tracked=True)
            store.upsert_mirror(FakeRecord(i, DATASETS[0], {"messages": []}, {}) for i in AMBIGUOUS)
        yield store


def test_an_ambiguous_prefix_lists_the_candidates(crafted: Store) -> None:
    env = db_env(crafted.path)
    result = localstore("show", "abcd", env=env)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "'abcd' is an ambiguous record id prefix" in result.stderr
    assert AMBIGUOUS[0] in result.stderr and AMBIGUOUS[1] in result.stderr and AMBIGUOUS[2] not in result.stderr
    assert json.loads(localstore("show", "abce", env=env).stdout)["id"] == AMBIGUOUS[2]
    assert json.loads(localstore("show", "abcd0000-0000-4000-8000-000000000002", env=env).stdout)["id"] == AMBIGUOUS[1]
    ambiguous_dataset = localstore("records", "--dataset", "dddd", env=env)
    assert "ambiguous dataset id prefix" in ambiguous_dataset.stderr and DATASETS[1] in ambiguous_dataset.stderr
    too_short = localstore("show", "abc", env=env)
    assert "'abc' is not a valid record id" in too_short.stderr and "at least 4" in too_short.stderr


def test_resolve_id_in_python(crafted: Store) -> None:
    conn = crafted.conn
    assert canonical_prefix("ABCD0000000040") == "abcd0000-0000-40"
    assert canonical_prefix("abcd0000-") == "abcd0000-"
    assert canonical_prefix("not hex") is None
    assert resolve_id(conn, "abce") == AMBIGUOUS[2]
    assert resolve_id(conn, "dddd1", "dataset") == DATASETS[1]
    unknown = str(uuid.uuid4())
    assert resolve_id(conn, unknown) == unknown  # whole ids pass through, known or not
    with pytest.raises(UsageError, match="ambiguous"):
        resolve_id(conn, "abcd0000")
    with pytest.raises(UsageError, match="no record id in the store starts with 'ffff'"):
        resolve_id(conn, "ffff")
    # a provisional id of a pushed create answers to its prefix
    conn.execute("INSERT INTO id_map VALUES ('eeee0000-0000-4000-8000-000000000009', ?, 'now')", (AMBIGUOUS[2],))
    assert resolve_id(conn, "eeee") == "eeee0000-0000-4000-8000-000000000009"
    assert candidates(conn, "", "dataset") == DATASETS


def test_prefix_lookups_walk_an_index(crafted: Store) -> None:
    """A prefix costs a range search, not a scan of 100k ids."""
    from localstore.ops import idprefix

    for kind, sources in idprefix._SOURCES.items():
        for table, column in sources:
            plan = crafted.conn.execute(
                f"EXPLAIN QUERY PLAN SELECT {column} FROM {table} WHERE {column} >= ? AND {column} < ? "
                f"ORDER BY {column} LIMIT 11", ("abcd", "abce"),
            ).fetchall()
            details = [row[3] for row in plan]
            assert any(d.startswith("SEARCH") for d in details), (kind, table, details)
            # the only scan allowed is over the records view's (already searched) rows
            assert all(d == "SCAN records" for d in details if d.startswith("SCAN")), (kind, table, details)


# ------------------------------------------------------------------ 2. shell completion


def test_completion_callback_reads_the_store(crafted: Store, tmp_path: Path) -> None:
    assert [c.value for c in complete_ids(crafted.path, "record", "abcd")] == AMBIGUOUS[:2]
    assert [c.value for c in complete_ids(crafted.path, "record", "ABCE")] == AMBIGUOUS[2:]
    assert [c.value for c in complete_ids(crafted.path, "record", "zz")] == []
    items = complete_ids(crafted.path, "dataset", "")
    assert [(c.value, c.help) for c in items] == [(DATASETS[0], "alpha"), (DATASETS[1], "beta")]
    missing = tmp_path / "no-store.db"
    assert complete_ids(missing, "record", "ab") == []
    assert not missing.exists(), "completion never creates a store"


def test_bash_completion_completes_ids(crafted: Store) -> None:
    env = db_env(crafted.path, _LOCALSTORE_COMPLETE="bash_complete", COMP_WORDS="localstore show abc", COMP_CWORD="2")
    result = localstore(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"plain,{i}" for i in AMBIGUOUS]
    env = base_env(_LOCALSTORE_COMPLETE="bash_complete", COMP_CWORD="5",
                   COMP_WORDS=f"localstore --db {crafted.path} records --dataset dddd1")
    assert localstore(env=env).stdout.splitlines() == [f"plain,{DATASETS[1]}"]
    script = localstore(env=base_env(_LOCALSTORE_COMPLETE="bash_source"))
    assert "_localstore_completion" in script.stdout and "complete -o" in script.stdout


# ------------------------------------------------------------------ 4. show


def test_show_in_a_terminal_renders_the_conversation(filled: Filled) -> None:
    result = run_in_pty(["show", filled.conversation[:8]], env=db_env(filled.path, PAGER="false"), columns=100, rows=60)
    assert result.returncode == 0, result.stderr
    text = strip_ansi(result.output)
    lines = [line.rstrip() for line in text.splitlines()]
    for role in ("system", "user", "assistant"):
        assert any(line.startswith(f"{role} ─") for line in lines), (role, text)
    # the content's own line breaks are real lines, not escapes
    assert "first line of the question" in lines
    assert "second line of the question" in lines
    assert "\\n" not in text
    assert any(line.strip() == "x = compute()" for line in lines)
    assert any(line.strip() == "print(x)" for line in lines)
    assert "```" not in text  # the code block is rendered, not shown as markdown
    assert any(line.startswith("id") and filled.conversation in line for line in lines)
    assert any(line.startswith("label") and line.endswith("demo") for line in lines)
    assert all(len(line) <= 100 for line in lines)


def test_show_piped_or_with_json_prints_json(filled: Filled) -> None:
    piped = localstore("show", filled.conversation, env=db_env(filled.path))
    assert piped.returncode == 0, piped.stderr
    record = json.loads(piped.stdout)
    assert record["payload"] == CONVERSATION and record["properties"]["label"] == "demo"
    in_terminal = run_in_pty(["show", "--json", filled.conversation], env=db_env(filled.path))
    assert json.loads(strip_ansi(in_terminal.output)) == record


def test_a_long_record_goes_through_the_pager(tmp_path: Path, filled: Filled) -> None:
    pager = tmp_path / "pager.sh"
    pager.write_text("#!/bin/sh\necho PAGER-START\ncat\n")
    pager.chmod(0o755)
    env = db_env(filled.path, PAGER=str(pager))
    short = run_in_pty(["show", filled.conversation], env=env, columns=100, rows=60)
    assert "PAGER-START" not in short.output and "second line of the question" in short.output
    tall = run_in_pty(["show", filled.conversation], env=env, columns=100, rows=10)
    assert tall.returncode == 0, tall.stderr
    text = strip_ansi(tall.output)
    assert text.startswith("PAGER-START") and "second line of the question" in text


def test_render_keeps_line_breaks_outside_code() -> None:
    from localstore.cli.render import hard_breaks

    assert hard_breaks("a\nb\n\nc") == "a  \nb\n\nc"
    assert hard_breaks("```\nx\ny\n```\nz") == "```\nx\ny\n```\nz"


# ------------------------------------------------------------------ 1. the demo


@pytest.mark.slow
@pytest.mark.parametrize("how", ["env", "flag"])
def test_the_demo_never_touches_the_users_store(how: str, tmp_path: Path, emulator: EmulatorServer, api_key: str) -> None:
    """A user store holding a tracked dataset and a pending edit is byte-identical after
    `localstore demo`, whether LOCALSTORE_DB or --db names it."""
    ds = seed_dataset(emulator.state, 3, name="users-own")
    folder = tmp_path / "user"
    folder.mkdir()
    user_db = folder / "store.db"
    with Store.open(user_db) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        rid = store.scalar("SELECT id FROM records LIMIT 1")
        edits.set_properties(store, rid, {"label": "my real edit"})
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    if how == "env":
        env, args = base_env(LOCALSTORE_DB=str(user_db), TMPDIR=str(scratch)), ["demo"]
    else:
        env, args = base_env(TMPDIR=str(scratch)), ["--db", str(user_db), "demo", "--keep"]

    result = localstore(*args, env=env)

    assert result.returncode == 0, result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    named = "LOCALSTORE_DB" if how == "env" else "--db"
    assert f"the demo ignores {named} ({user_db})" in result.stderr
    demo_db = Path(result.stdout.split("a fresh store in ", 1)[1].split()[0])
    assert demo_db.parent.parent == scratch and demo_db.name == "demo.db"
    if how == "env":
        assert not demo_db.parent.exists(), "the temporary store is removed"
        assert "was removed" in result.stdout
    else:
        assert demo_db.is_file() and f"stays in {demo_db}" in result.stdout
        with closing(sqlite3.connect(demo_db)) as conn:
            assert conn.execute("SELECT name FROM datasets").fetchall() == [("support-conversations",)]
    with Store.open(user_db) as store:
        assert get_record(store, rid)["pending"] == ["properties"]


# ------------------------------------------------------------------ 7. small things


def test_no_arguments_prints_the_help_and_succeeds() -> None:
    result = localstore(env=base_env())
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.startswith("Usage: localstore")
    start = result.stdout.split("Start with:", 1)[1].split("\n\n", 1)[0]
    assert [line.split()[1] for line in start.strip().splitlines()] == ["demo", "pull", "records"]


def test_every_command_help_has_an_example() -> None:
    for name, command in cli.commands.items():
        with click.Context(command, info_name=name) as ctx:
            text = command.get_help(ctx)
        assert "Example" in text and f"localstore {name}" in text.split("Example", 1)[1], name
    one = localstore("sql", "--help", env=base_env())
    assert one.returncode == 0 and "Examples:\n    localstore sql" in one.stdout


def test_json_only_where_it_means_something(filled: Filled) -> None:
    env = db_env(filled.path)
    refused = localstore("edit", filled.pending, "--json", env=env)
    assert refused.returncode == 2 and "No such option '--json'" in refused.stderr
    assert localstore("show", "--json", filled.pending, env=env).returncode == 0


def test_missing_key_speaks_of_the_cli(filled: Filled) -> None:
    result = localstore("pull", filled.dataset_id, env=db_env(filled.path, LOCALSTORE_SERVER_URL="http://127.0.0.1:9"))
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith("localstore: error: MISTRAL_API_KEY is not set")
    assert "api_key=" not in line and "export" in line and "localstore demo" in line


EDITOR = """import sys, os
path = sys.argv[1]
open(path, "w").write(os.environ["EDIT_TEXT"])
"""


def test_an_invalid_edit_is_kept_and_can_be_queued_later(store_copy: Path, filled: Filled, tmp_path: Path) -> None:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    wrapper = tmp_path / "editor.sh"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    wrapper.chmod(0o755)
    kept_dir = tmp_path / "tmp"
    kept_dir.mkdir()
    rid = filled.conversation
    broken = '{"payload": {"messages": []}, "properties": {"label": "fixed",}}\n'
    env = db_env(store_copy, EDITOR=str(wrapper), EDIT_TEXT=broken, TMPDIR=str(kept_dir))

    result = localstore("edit", rid[:8], env=env)

    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "not valid JSON" in result.stderr
    kept = list(kept_dir.glob("localstore-edit-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == broken
    assert f"kept in {kept[0]}" in result.stderr and f"localstore edit {rid} --file {kept[0]}" in result.stderr
    assert kept[0].stat().st_mode & 0o077 == 0
    assert json.loads(localstore("show", rid, env=env).stdout)["pending"] == []

    kept[0].write_text(broken.replace('"fixed",', '"fixed"'))
    done = localstore("edit", rid, "--file", str(kept[0]), env=env)
    assert done.stdout == f"queued payload and properties change for {rid}\n", done.stderr
    record = json.loads(localstore("show", rid, env=env).stdout)
    assert record["payload"] == {"messages": []} and record["properties"] == {"label": "fixed"}


def test_db_in_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    result = localstore("--db", str(tmp_path / "typo" / "store.db"), "records", env=base_env())
    assert result.returncode == 1
    assert result.stderr == (
        f"localstore: error: cannot open the store {tmp_path}/typo/store.db: the folder {tmp_path}/typo "
        "does not exist (create it, or fix --db / LOCALSTORE_DB)\n"
    )
    assert not (tmp_path / "typo").exists()


# ------------------------------------------------------------------ SQL output of blobs


def test_sql_prints_blobs_as_hex_and_base64(filled: Filled) -> None:
    env = db_env(filled.path)
    query = "select x'00ff10' as b, 'text' as t, null as n"
    piped = localstore("sql", query, env=env)
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, "00ff10\ttext\t\n", "")
    assert localstore("sql", "--csv", query, env=env).stdout == "b,t,n\n00ff10,text,\n"
    as_json = localstore("sql", "--json", query, env=env)
    assert json.loads(as_json.stdout) == [{"b": {"$base64": "AP8Q"}, "t": "text", "n": None}]
    table = strip_ansi(run_in_pty(["sql", query], env=env).output)
    assert "00ff10" in table and "text" in table


def test_sql_pragma_that_would_write_says_read_only(store_copy: Path) -> None:
    before = store_copy.read_bytes()
    result = localstore("sql", "pragma journal_mode(delete)", env=db_env(store_copy))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "opened read-only" in result.stderr and "--write" in result.stderr
    assert "disk I/O" not in result.stderr
    assert store_copy.read_bytes() == before
    mode = localstore("sql", "pragma journal_mode", env=db_env(store_copy))
    assert mode.stdout == "wal\n"
