"""The acceptance path, end to end: the CLI (a subprocess) pulls a dataset of the
session emulator and the SQL surface shows exactly what the server holds."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.cli import Cli

from localstore.api import Client
from localstore.core.timestamps import normalize_ts
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore_emulator import EmulatorServer

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not


def _messages(records: list[dict[str, Any]]) -> set[tuple[str, int, str, str]]:
    return {
        (r["id"], i, m["role"], m["content"])
        for r in records
        for i, m in enumerate(r["payload"]["messages"])
    }


def test_pull_1000_records_then_query_them(
    cli: Cli, emulator: EmulatorServer, dataset: Callable[..., str]
) -> None:
    ds = dataset(1000)
    out = cli.ok("pull", ds)
    assert f"pulled 1000 records of {ds}" in out

    assert cli.sql("select count(*) as n from records") == [{"n": 1000}]
    # the exact text, as the issue quotes it (one row object per line, like sqlite-utils)
    assert cli.ok("sql", "--json", "select count(*) as n from records") == '[{"n": 1000}]\n'
    remote = emulator.state.list_records(ds)
    expected = sum(len(r["payload"]["messages"]) for r in remote)
    rows = cli.sql("select record_id, idx, role, content from messages")
    assert len(rows) == expected
    assert {(r["record_id"], r["idx"], r["role"], r["content"]) for r in rows} == _messages(remote)
    assert cli.sql(
        f"select count(*) as n from messages where dataset_id = '{ds}'"
    ) == [{"n": expected}]
    assert cli.sql("select count(*) as n from records where sync_state != 'synced'") == [{"n": 0}]

    (tracked,) = cli.json("datasets")
    assert (tracked["id"], tracked["tracked"], tracked["records"]) == (ds, 1, 1000)
    assert tracked["last_pulled_at"]
    assert tracked["name"] == emulator.state.get_dataset(ds)["name"]  # type: ignore[index]


def test_records_show_and_sql_csv(cli: Cli, emulator: EmulatorServer, dataset: Callable[..., str]) -> None:
    ds = dataset(120)
    cli.ok("pull", ds)
    remote = {r["id"]: r for r in emulator.state.list_records(ds)}

    listed = cli.json("records")
    assert {r["id"] for r in listed} == set(remote)
    for row in listed:
        assert row["payload"] == remote[row["id"]]["payload"]
        assert row["properties"] == remote[row["id"]]["properties"]
        assert row["sync_state"] == "synced"
    assert len(cli.json("records", "--dataset", ds, "--limit", "7")) == 7

    rid = next(iter(remote))
    shown = cli.json("show", rid)
    for key in ("id", "dataset_id", "payload", "properties", "source"):
        assert shown[key] == remote[rid][key], key
    for key in ("created_at", "updated_at"):  # the server's ms form, kept as canonical µs
        assert shown[key] == normalize_ts(remote[rid][key]), key
    assert shown["pending"] == []

    text = cli.ok(
        "sql", "--csv", "select id, json_extract(properties, '$.label') as label from records order by id"
    )
    header, *rows = list(csv.reader(io.StringIO(text)))
    assert header == ["id", "label"]
    assert rows == [[i, remote[i]["properties"]["label"]] for i in sorted(remote)]


def test_a_bare_pull_refreshes_tracked_datasets(
    cli: Cli, emulator: EmulatorServer, dataset: Callable[..., str]
) -> None:
    first, second = dataset(150), dataset(40)
    cli.ok("pull", first)
    cli.ok("pull", second)
    assert {d["id"] for d in cli.json("datasets") if d["tracked"]} == {first, second}

    state = emulator.state
    gone = [r["id"] for r in state.list_records(first)[:25]]
    for rid in gone:
        state.delete_record(rid)
    edited = state.list_records(second)[0]["id"]
    state.update_properties(edited, {"label": "changed on the server"})
    added = state.add_records(second, [{"payload": {"messages": [{"role": "user", "content": "new"}]}}])

    out = cli.ok("pull")
    assert f"pulled 125 records of {first}; removed 25" in out
    assert f"pulled 41 records of {second}" in out
    counts = cli.sql("select dataset_id, count(*) as n from records group by dataset_id")
    assert {r["dataset_id"]: r["n"] for r in counts} == {first: 125, second: 41}
    assert cli.sql(
        "select count(*) as n from records where id in ({})".format(",".join(f"'{g}'" for g in gone))
    ) == [{"n": 0}]
    assert cli.json("show", edited)["properties"] == {"label": "changed on the server"}
    assert cli.json("show", added[0]["id"])["payload"]["messages"][0]["content"] == "new"
    shown = cli.run("show", gone[0])
    assert shown.returncode == 1 and "not in the store" in shown.stderr


@pytest.mark.slow
def test_pull_10000_records_in_process(
    tmp_path: Path, emulator: EmulatorServer, dataset: Callable[..., str], api_key: str
) -> None:
    ds = dataset(10_000)
    remote = emulator.state.list_records(ds)
    with Store.open(tmp_path / "store.db") as store, Client(emulator.url, api_key) as client:
        (result,) = pull(store, client, [ds])
        assert (result.records, result.removed, result.complete) == (10_000, 0, True)
        assert store.scalar("SELECT count(*) FROM records WHERE dataset_id = ?", (ds,)) == 10_000
        assert store.scalar("SELECT count(DISTINCT id) FROM mirror") == 10_000
        assert store.scalar("SELECT count(*) FROM messages") == sum(
            len(r["payload"]["messages"]) for r in remote
        )
        assert {r[0] for r in store.conn.execute("SELECT id FROM records")} == {r["id"] for r in remote}
        (again,) = pull(store, client)  # nothing changed: the same state
        assert (again.records, again.removed) == (10_000, 0)
        assert store.scalar("SELECT count(*) FROM records") == 10_000
