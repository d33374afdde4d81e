"""``import localstore`` / ``localstore.open(path)``: the small Python facade. It stays
lean (offline work imports neither httpx nor SQLAlchemy), its methods reach the same
operations as the command line, and ``localstore.models`` gives typed reads."""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlmodel import select

import localstore
from localstore.models import ChangeRow, ConflictRow, MirrorRow, RecordRow, WorkingRow
from localstore.store import models as store_models

HEAVY = ("httpx", "httpcore", "sqlalchemy", "sqlmodel", "fastapi", "starlette", "uvicorn", "pydantic", "click")

PROBE = """
import json, sys
import localstore
after_import = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
with localstore.open(sys.argv[1]) as store:
    store.store.ensure_dataset("3fa85f64-5717-4562-b3fc-2c963f66afa6")
    rid = store.add("3fa85f64-5717-4562-b3fc-2c963f66afa6", {"messages": []}, {"a": 1})
    store.set(rid, {"label": "x"})
    store.unset(rid, "a")
    status = store.status().to_dict()
    rows = store.query("select count(*) from records").rows
after_edits = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.argv[2])))
print(json.dumps({"import": after_import, "edits": after_edits, "pending": status["pending"], "rows": rows}))
"""


def test_import_and_offline_edits_stay_lean(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path / "s.db"), json.dumps(HEAVY)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["import"] == [] and out["edits"] == [], out
    assert out["pending"] == 1 and out["rows"] == [[1]]


def test_the_models_docstring_runs() -> None:
    result = doctest.testmod(store_models, raise_on_error=False)
    assert result.attempted >= 6 and result.failed == 0


def test_typed_reads_with_select(tmp_path: Path) -> None:
    ds = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    with localstore.open(tmp_path / "s.db") as store:
        store.store.ensure_dataset(ds)
        made = [store.add(ds, {"messages": [{"role": "user", "content": f"q{i}"}]}, {"n": i}) for i in range(3)]
        store.set(made[1], {"label": "keep"})
        with store.session() as s:
            kinds = s.exec(select(ChangeRow.kind).where(ChangeRow.state == "pending")).all()
            labelled = s.exec(select(WorkingRow).where(WorkingRow.record_id == made[1])).one()
            mirrored = s.exec(select(MirrorRow)).all()
    assert sorted(kinds) == ["create"] * 3  # the edit of an unsent create folds into it
    assert labelled.properties == {"n": 1, "label": "keep"} and labelled.payload is not None
    assert mirrored == []  # nothing pulled yet


def test_the_facade_pulls_edits_and_syncs(emulator: Any, dataset: Any, api_key: str, tmp_path: Path) -> None:
    ds = dataset(3)
    with localstore.open(tmp_path / "s.db", server_url=emulator.url, api_key=api_key) as store:
        (pulled,) = store.pull(ds)
        assert pulled.records == 3 and pulled.complete
        first = store.records(ds)[0]["id"]
        assert store.set(first, {"label": "reviewed"}).kinds == ("properties",)
        assert "reviewed" in store.diff(first)
        report = store.sync()
        assert report.exit_code == 0, report
        assert store.status().pending == 0
        assert emulator.state.get_record(first)["properties"]["label"] == "reviewed"
        assert store.get(first)["properties"]["label"] == "reviewed"
        assert store.conflicts() == [] and store.log(first)[0]["state"] == "pushed"


def test_records_and_conflicts_views_read_with_select(
    emulator: Any, dataset: Any, api_key: str, tmp_path: Path
) -> None:
    """RecordRow and ConflictRow map the `records` and `conflicts` views: a record edited
    on both sides reads as a conflict with its three sides, the others as they are."""
    ds = dataset(3)
    with localstore.open(tmp_path / "s.db", server_url=emulator.url, api_key=api_key) as store:
        store.pull(ds)
        first, second, _ = (r["id"] for r in store.records(ds))
        store.set(first, {"label": "mine"})
        store.set(second, {"label": "reviewed"})
        theirs = {**emulator.state.get_record(first)["properties"], "label": "theirs"}
        emulator.state.update_properties(first, theirs)
        assert store.sync().exit_code == 3
        with store.session() as s:
            (conflict,) = s.exec(select(ConflictRow).where(ConflictRow.dataset_id == ds)).all()
            states = dict(s.exec(select(RecordRow.id, RecordRow.sync_state)).all())
            reviewed = s.exec(select(RecordRow).where(RecordRow.id == second)).one()
    assert conflict.record_id == first and conflict.parts == ["/properties/label"]
    assert conflict.local is not None and conflict.local["properties"]["label"] == "mine"
    assert conflict.remote is not None and conflict.remote["properties"]["label"] == "theirs"
    assert conflict.base is not None and conflict.base["properties"]["label"] not in ("mine", "theirs")
    assert states[first] == "conflict" and states[second] == "synced" and len(states) == 3
    assert reviewed.properties is not None and reviewed.properties["label"] == "reviewed"
    assert reviewed.updated_at is not None and reviewed.payload is not None


def test_localstore_open_with_no_store_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-store.db").write_text("hello")
    try:
        localstore.open(tmp_path / "not-a-store.db")
    except localstore.errors.StoreError as exc:
        assert "not" in str(exc)
    else:
        raise AssertionError("a file that is not a store was opened")
