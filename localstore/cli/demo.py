"""`localstore demo`: the whole loop against an embedded emulator — no key, no network.

Each step prints the command a user would type and calls the same Python function that
command calls. The tour always runs in a fresh store in a new temporary folder, whatever
--db or LOCALSTORE_DB say: the user's store is never opened, so its tracked datasets and
pending edits never meet the demo's emulator.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import click

from localstore.api import Client
from localstore.cli.output import emit_table
from localstore.ops import edits
from localstore.ops import queries as views
from localstore.ops.resolve import resolve
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer, seed_dataset

DEMO_KEY = "demo-key-not-a-secret"


def _step(title: str) -> None:
    click.echo()
    click.secho(f"== {title}", bold=True)


def _cmd(text: str) -> None:
    click.secho(f"$ localstore {text}", fg="cyan")


def _query(store: Store, sql: str) -> None:
    _cmd(f'sql "{sql}"')
    result = views.run_sql(store, sql)
    emit_table(result.columns, result.rows)


def run_demo(*, records: int = 200, keep: bool = False) -> Path:
    """Run the guided tour in a fresh store in a new temporary folder, never in the
    user's store. The folder is removed at the end unless ``keep``; returns the store's
    path."""
    tmp = Path(tempfile.mkdtemp(prefix="localstore-demo-"))
    path = tmp / "demo.db"
    try:
        with EmulatorServer() as server:
            click.secho(f"localstore demo — emulator on {server.url}, a fresh store in {path}", bold=True)
            dataset_id = seed_dataset(server.state, records, name="support-conversations")
            with Store.open(path) as store, Client(server.url, DEMO_KEY) as client:
                _tour(store, client, dataset_id)
    finally:
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    click.echo()
    if keep:
        click.echo(f"The demo store stays in {path}: `localstore --db {path} records` reads it.")
    else:
        click.echo(f"The demo store {path} was removed (`localstore demo --keep` keeps it).")
    return path


def _tour(store: Store, client: Client, dataset_id: str) -> None:
    _step("1. Mirror a dataset into one SQLite file")
    _cmd(f"pull {dataset_id}")
    result = pull(store, client, [dataset_id])[0]
    click.echo(f"pulled {result.records} records")
    _query(store, "select role, count(*) as messages from messages group by role order by 2 desc")

    _step("2. Edit offline: properties, a payload, a delete, a new record")
    ids = [r["id"] for r in views.list_records(store, dataset_id, limit=6)]
    same_key, other_key, clean, payload_edit, removed = ids[:5]
    for rid in (same_key, other_key, clean):
        _cmd(f"set {rid} label=reviewed")
        edits.set_properties(store, rid, {"label": "reviewed"})
    new_payload = {"messages": [{"role": "user", "content": "Where is my parcel?"},
                                {"role": "assistant", "content": "Let me check the tracking number."}]}
    _cmd(f"edit {payload_edit} --payload-file fixed.json")
    edits.set_payload(store, payload_edit, new_payload)
    _cmd(f"rm {removed}")
    edits.delete_records(store, [removed])
    _cmd(f"add {dataset_id} --payload-file new.json")
    created = edits.add_record(store, dataset_id, new_payload, {"label": "new"})
    click.echo(f"provisional id {created}")
    _cmd("status")
    click.echo(json.dumps(views.status(store).to_dict()))

    _step("3. Meanwhile a teammate edits some of the same records on the server")
    teammate_label = dict(client.get_record(same_key).properties, label="needs-work")
    client.put_properties(same_key, teammate_label)
    click.echo(f"teammate: label=needs-work on {same_key}   (same key as ours: a conflict)")
    other = dict(client.get_record(other_key).properties, reviewer="sam")
    client.put_properties(other_key, other)
    click.echo(f"teammate: reviewer=sam on {other_key}   (another key: merges cleanly)")
    client.delete_record(payload_edit)
    click.echo(f"teammate: deleted {payload_edit}   (we edited it: a conflict)")

    _step("4. Sync: clean changes go out, the rest is flagged, nothing is overwritten")
    _cmd("sync")
    report = sync(store, client)
    click.echo(f"pushed {report.pushed}, conflicts {report.open_conflicts} -> exit {report.exit_code}")
    _cmd("conflicts")
    rows = views.conflict_list(store)
    emit_table(["record_id", "parts"], [[r["record_id"], r["parts"]] for r in rows])
    merged = client.get_record(other_key).properties
    click.echo(f"{other_key} on the server now has label={merged['label']!r} and reviewer={merged['reviewer']!r}")

    _step("5. Resolve: keep ours for the label, accept the teammate's delete")
    _cmd(f"resolve {same_key} --ours")
    resolve(store, same_key, "ours")
    _cmd(f"resolve {payload_edit} --theirs")
    resolve(store, payload_edit, "theirs")
    _cmd("sync")
    report = sync(store, client)
    click.echo(f"pushed {report.pushed}, conflicts {report.open_conflicts} -> exit {report.exit_code}")

    _step("6. Query the result with SQL")
    _query(
        store,
        "select json_extract(properties, '$.label') as label, count(*) as n "
        "from records group by label order by n desc",
    )
    click.echo()
    click.echo("Next: `localstore emulator --seed-records 1000` in one terminal, then")
    click.echo("`MISTRAL_API_KEY=any localstore --server-url http://127.0.0.1:8000 pull DATASET_ID`.")
