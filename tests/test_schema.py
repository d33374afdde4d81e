"""schema.sql is the one DDL: the sqlmodel classes agree with it column by column, the
SQL surface that DESIGN.md promises exists, and the wheel ships the file."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlmodel import SQLModel, select

from localstore.store import models
from localstore.store.db import SCHEMA_VERSION, Store

REPO = Path(__file__).resolve().parent.parent
DESIGN = REPO.parent / "shared" / "DESIGN.md"

# The names users may rely on (DESIGN.md, "SQL surface") and their columns, at least.
RECORD_COLUMNS = [
    "id", "dataset_id", "created_at", "updated_at", "deleted_at", "source", "payload", "properties",
]
SURFACE: dict[str, list[str]] = {
    "records": [*RECORD_COLUMNS, "sync_state"],
    "remote_records": RECORD_COLUMNS,
    "messages": ["record_id", "dataset_id", "idx", "role", "content"],
    "changes": [
        "id", "record_id", "kind", "body", "base_updated_at", "state", "error", "created_at",
        "pushed_at",
    ],
    "conflicts": ["record_id", "base", "local", "remote", "detected_at"],
    "datasets": ["id", "name", "tracked", "last_pulled_at"],
    "judgements": ["record_id", "judge_name", "answer", "analysis", "judged_at"],
    "sync_runs": ["started_at", "finished_at", "pushed", "pulled", "conflicts", "errors"],
}


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection on a store freshly created from schema.sql."""
    Store.open(tmp_path / "store.db").close()
    connection = sqlite3.connect(tmp_path / "store.db")
    yield connection
    connection.close()


def _tables(conn: sqlite3.Connection) -> set[str]:
    """Tables, less SQLite's own and the FTS5 virtual tables with their shadow tables."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    virtual = [name for name, sql in rows if sql.upper().startswith("CREATE VIRTUAL TABLE")]
    return {name for name, _ in rows if not any(name.startswith(v) for v in virtual)}


def _model_views() -> dict[str, sa.Table]:
    return {m.__tablename__: m.__table__ for m in models.VIEWS}  # type: ignore[attr-defined]


def _model_tables() -> dict[str, sa.Table]:
    return {name: t for name, t in SQLModel.metadata.tables.items() if name not in _model_views()}


# ------------------------------------------------------------------ models vs schema.sql


def test_the_same_tables_both_ways(conn: sqlite3.Connection) -> None:
    assert _tables(conn) == set(_model_tables())
    assert {m.__tablename__ for m in models.TABLES} == set(_model_tables())  # type: ignore[attr-defined]


@pytest.mark.parametrize("view", sorted(_model_views()))
def test_view_models_name_the_views_columns(conn: sqlite3.Connection, view: str) -> None:
    assert conn.execute("SELECT type FROM sqlite_master WHERE name = ?", (view,)).fetchone() == ("view",)
    actual = [name for _, name, *_ in conn.execute(f"PRAGMA table_info({view})")]
    assert actual == [c.name for c in _model_views()[view].columns]


def _expected_column(column: sa.Column[Any]) -> tuple[str, str, int, Any, int]:
    """What PRAGMA table_info reports for a column declared as the model says.
    SQLite reports notnull = 0 for a PRIMARY KEY column not spelled NOT NULL
    (INTEGER PRIMARY KEY is the rowid; TEXT PRIMARY KEY allows NULL, an old quirk)."""
    kind = column.type.compile(dialect=sqlite_dialect.dialect())
    notnull = int(not column.nullable and not column.primary_key)
    default = column.server_default.arg.text if column.server_default is not None else None  # type: ignore[attr-defined]
    return (column.name, kind, notnull, default, int(column.primary_key))


@pytest.mark.parametrize("table", sorted(_model_tables()))
def test_columns_agree(conn: sqlite3.Connection, table: str) -> None:
    actual = [
        (name, kind, notnull, default, pk)
        for _, name, kind, notnull, default, pk in conn.execute(f"PRAGMA table_info({table})")
    ]
    expected = [_expected_column(c) for c in _model_tables()[table].columns]
    assert actual == expected


@pytest.mark.parametrize("table", sorted(_model_tables()))
def test_keys_agree(conn: sqlite3.Connection, table: str) -> None:
    model = _model_tables()[table]
    foreign = {
        (row[3], row[2], row[4]) for row in conn.execute(f"PRAGMA foreign_key_list({table})")
    }
    assert foreign == {
        (fk.parent.name, fk.column.table.name, fk.column.name) for fk in model.foreign_keys
    }
    unique = set()
    for _, index, is_unique, origin, _partial in conn.execute(f"PRAGMA index_list({table})"):
        if is_unique and origin == "u":
            unique.add(tuple(r[2] for r in conn.execute(f"PRAGMA index_info({index})")))
    assert unique == {(c.name,) for c in model.columns if c.unique}
    autoincrement = bool(
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE name = ? AND sql LIKE '%AUTOINCREMENT%'", (table,)
        ).fetchone()
    )
    assert autoincrement == bool(model.dialect_options["sqlite"]["autoincrement"])


def test_schema_sql_sets_the_current_version() -> None:
    text = (REPO / "schema.sql").read_text(encoding="utf-8")
    versions = re.findall(r"PRAGMA\s+user_version\s*=\s*(\d+)", text, re.IGNORECASE)
    assert versions == [str(SCHEMA_VERSION)]


def test_models_read_a_store_and_cannot_write_it(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store.open(path) as store, store.transaction() as db:
        store.upsert_dataset({"id": "d-1", "name": "demo"}, tracked=True)
        db.execute(
            """INSERT INTO mirror VALUES ('r-1', 'd-1', '2026-01-01T00:00:00.000000Z',
               '2026-01-02T00:00:00.000000Z', NULL, 'DIRECT_INPUT',
               '{"messages":[{"role":"user","content":"hi"}]}', '{"label":"x"}')"""
        )
        db.execute(
            """INSERT INTO judgement_runs (record_id, judge_name, model_name, answer, analysis,
               judged_at) VALUES ('r-1', 'j', 'm', 0.5, 'ok', '2026-01-03T00:00:00.000000Z')"""
        )
    with models.session(path) as session:
        dataset = session.exec(select(models.DatasetRow)).one()
        assert (dataset.id, dataset.name, dataset.tracked) == ("d-1", "demo", True)
        record = session.exec(
            select(models.MirrorRow).where(models.MirrorRow.dataset_id == "d-1")
        ).one()
        assert record.payload["messages"][0]["content"] == "hi"
        assert record.properties == {"label": "x"}
        assert session.exec(select(models.JudgementRunRow.answer)).one() == 0.5
        session.add(models.DatasetRow(id="d-2"))
        with pytest.raises(sa.exc.OperationalError, match="readonly"):
            session.commit()
    with Store.open(path) as store:
        assert store.scalar("SELECT count(*) FROM datasets") == 1
        with models.session(store) as session:
            assert session.exec(select(models.MirrorRow.id)).all() == ["r-1"]


def test_the_cli_does_not_import_sqlalchemy(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from localstore.cli import main\n"
        "try:\n"
        f"    main(['--db', {str(tmp_path / 's.db')!r}, 'sql', 'select 1'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'sqlmodel'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ the SQL surface


@pytest.mark.parametrize("name", sorted(SURFACE))
def test_sql_surface_exists(conn: sqlite3.Connection, name: str) -> None:
    columns = [row[1] for row in conn.execute(f"PRAGMA table_info({name})")]
    assert columns, f"{name} is missing"
    missing = [c for c in SURFACE[name] if c not in columns]
    assert not missing, f"{name} lacks {missing}"
    conn.execute(f"SELECT {', '.join(SURFACE[name])} FROM {name}").fetchall()


def test_design_doc_lists_no_more_than_the_surface_checked_here() -> None:
    """When DESIGN.md sits beside the clone, its table is what SURFACE encodes."""
    if not DESIGN.exists():
        pytest.skip(f"{DESIGN} is not beside this checkout")
    text = DESIGN.read_text(encoding="utf-8")
    section = text.split("## SQL surface", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not re.fullmatch(r"`\w+`", cells[0]):
            continue
        name = cells[0].strip("`")
        listed = re.match(r"`([^`]+)`", cells[2])
        if listed:
            documented[name] = [c.strip() for c in listed.group(1).split(",")]
        elif cells[2].startswith("same"):
            documented[name] = [c for c in documented["records"] if c != "sync_state"]
    assert set(documented) == set(SURFACE)
    for name, columns in documented.items():
        assert set(columns) <= set(SURFACE[name]), name


# ------------------------------------------------------------------ packaging


@pytest.mark.slow
def test_the_wheel_ships_schema_sql(tmp_path: Path) -> None:
    """Built offline: without build isolation when hatchling is importable, else pip
    fetches the backend from its configured index."""
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path)]
    if importlib.util.find_spec("hatchling") is not None:
        command.append("--no-build-isolation")
    subprocess.run([*command, str(REPO)], check=True, capture_output=True, timeout=120)
    (wheel,) = tmp_path.glob("localstore-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("localstore/schema.sql").decode("utf-8")
        names = archive.namelist()
    assert shipped == (REPO / "schema.sql").read_text(encoding="utf-8")
    assert "localstore/models.py" in names
    assert not [n for n in names if n.startswith("tests/")]
