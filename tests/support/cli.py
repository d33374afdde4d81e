"""``localstore`` as a subprocess (``python -m localstore``), and the official SDK as an
independent client of the same API (a teammate, and the read-back of the server)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from localstore.store.jsontext import canonical

EXIT_OK, EXIT_ERROR, EXIT_CONFLICTS = 0, 1, 3
OFFLINE_URL = "http://127.0.0.1:9"  # nothing listens there: offline edits must not need it
CLI_TIMEOUT = 120.0

Content = dict[str, Any]  # {"payload": {...}, "properties": {...}}


class Cli:
    """``localstore --db DB …`` as a subprocess, with the key and server in the env."""

    def __init__(self, db: Path, server_url: str, api_key: str) -> None:
        self.db = db
        self.server_url = server_url
        self.api_key = api_key

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "localstore", "--db", str(self.db), *args]

    def env(self, *, offline: bool = False) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALSTORE_")}
        env["MISTRAL_API_KEY"] = self.api_key
        env["LOCALSTORE_SERVER_URL"] = OFFLINE_URL if offline else self.server_url
        return env

    def run(self, *args: str, offline: bool = False, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            env=self.env(offline=offline),
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
            check=False,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )

    def ok(self, *args: str, offline: bool = False, code: int = EXIT_OK, stdin: str | None = None) -> str:
        done = self.run(*args, offline=offline, stdin=stdin)
        assert done.returncode == code, (
            f"`localstore {' '.join(args)}` exited {done.returncode}, expected {code}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
        assert "Traceback" not in done.stderr, done.stderr
        return done.stdout

    def json(self, *args: str, offline: bool = False, code: int = EXIT_OK) -> Any:
        return json.loads(self.ok(*args, "--json", offline=offline, code=code))

    def sql(self, query: str) -> list[dict[str, Any]]:
        return list(self.json("sql", query))

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            env=self.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def content(payload: Any, properties: Any) -> Content:
    return {"payload": dict(payload), "properties": dict(properties)}


def content_key(c: Content) -> str:
    return canonical({"payload": c["payload"], "properties": c["properties"]})


def server_records(sdk: Any, dataset_id: str) -> dict[str, dict[str, Any]]:
    """Every live record of a dataset as the server lists it (all pages, read with the
    official SDK), by id, with ``updated_at`` as an ISO string."""
    out: dict[str, dict[str, Any]] = {}
    page = 1
    while True:
        listing = sdk.beta.observability.datasets.list_records(
            dataset_id=dataset_id, page=page, page_size=100
        ).records
        for r in listing.results:
            assert r.id not in out, f"record {r.id} listed twice"
            out[r.id] = {**content(r.payload, r.properties), "updated_at": r.updated_at.isoformat()}
        if not listing.next or not listing.results:
            break
        page += 1
    assert len(out) == listing.count, "the listing's pages do not add up to its count"
    return out


def content_counts(records: dict[str, dict[str, Any]]) -> Counter[str]:
    return Counter(content_key(r) for r in records.values())


def integrity(db: Path) -> str:
    """SQLite's own check of a store file: "ok" when it is sound."""
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
