"""The API key stays secret, the store stays private, and ``sql`` stays read-only.

* Every command of ``localstore --help`` runs with a marker key (``sk-MARKER-<uuid>``),
  succeeding and failing, and the marker appears nowhere: stdout, stderr, the store
  file and its -wal/-shm, the lock file, a checkout folder, the demo's store.
* A server that echoes the Authorization header back (in an error message, an error
  code, a redirect, a malformed field, a 422 the sync stores in the change log) gets it
  redacted, whole or cut short.
* Python ``logging`` at DEBUG (httpx and httpcore log every request) never shows it.
* Plain http to anything but a loopback address is refused before any connection.
* The store file, its -wal/-shm and the sync lock are 0600 whatever the umask.
* ``sql`` without ``--write`` is read-only by SQLite's own mechanism (``mode=ro`` plus
  ``query_only``, and an authorizer refusing ATTACH, which VACUUM INTO relies on): no
  statement changes the store file or creates another file. Temporary tables are
  refused too (``query_only``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, suppress
from pathlib import Path

import httpx
import pytest
from test_bad_input import base_env, localstore, snapshot
from test_cli_errors import (
    DATASETS,
    Answer,
    FakeApi,
    _Handler,
    dataset_body,
    dump,
    page_body,
    record_body,
)
from test_files import wait_until

from localstore.api import Client
from localstore.cli import cli
from localstore.errors import LocalstoreError, UsageError
from localstore.ops import edits
from localstore.ops.judge import judge_records
from localstore.ops.queries import run_sql
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore.sync.run import sync
from localstore_emulator import EmulatorServer, seed_dataset

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

RECORDS = "/v1/observability/dataset-records"
JUDGE = {
    "name": "politeness",
    "description": "is the answer polite",
    "model_name": "mistral-small-latest",
    "output": {"type": "REGRESSION", "min_description": "rude", "max_description": "polite"},
    "instructions": "rate the politeness",
    "tools": [],
}
WAIT = 30.0


# ------------------------------------------------------------------ the marker


class Marker:
    """A key nobody else uses; ``leaks(text)`` also catches a part of it (its random
    half cut anywhere leaves an 8-character piece of either end)."""

    def __init__(self) -> None:
        self.secret = uuid.uuid4().hex
        self.key = f"sk-MARKER-{self.secret}"

    def leaks(self, data: str | bytes) -> bool:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        return any(piece in text for piece in (self.key, self.secret[:8], self.secret[-8:]))

    def assert_absent(self, data: str | bytes, where: str) -> None:
        assert not self.leaks(data), f"the API key shows in {where}"


@pytest.fixture
def marker() -> Marker:
    return Marker()


def files_under(folder: Path) -> Iterator[Path]:
    return (p for p in sorted(folder.rglob("*")) if p.is_file())


def assert_no_file_leaks(marker: Marker, folder: Path) -> int:
    count = 0
    for path in files_under(folder):
        marker.assert_absent(path.read_bytes(), str(path))
        count += 1
    return count


# ------------------------------------------------------------------ a server that echoes the key


class _EchoHandler(_Handler):
    """test_cli_errors' handler for every method: the body is read, the method goes to
    the route as the query parameter ``_method``."""

    def _any_method(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.path += ("&" if "?" in self.path else "?") + f"_method={self.command}"
        self.do_GET()

    do_POST = do_PUT = do_PATCH = do_DELETE = _any_method


@pytest.fixture
def echo() -> Iterator[FakeApi]:
    api = FakeApi()
    api._server.RequestHandlerClass = _EchoHandler
    yield api
    api.close()


def last_authorization(api: FakeApi) -> str:
    with api.lock:
        return api.requests[-1][1]


def echo_401(api: FakeApi) -> Callable[[str, dict[str, str]], Answer]:
    def route(path: str, query: dict[str, str]) -> Answer:
        auth = last_authorization(api)
        return Answer(401, {"detail": {"message": f"invalid credentials: {auth}", "error_code": "AUTH_FAILED"}})

    return route


# ------------------------------------------------------------------ every command


def test_every_command_keeps_the_key_out_of_output_and_files(
    tmp_path: Path, emulator: EmulatorServer, echo: FakeApi, marker: Marker
) -> None:
    ds = seed_dataset(emulator.state, 6, name="secrets-every-command")
    rids = [r["id"] for r in emulator.state.list_records(ds)]
    db = tmp_path / "store.db"
    folder = tmp_path / "checkout"
    (tmp_path / "p.json").write_text(json.dumps({"messages": [{"role": "user", "content": "new"}]}))
    (tmp_path / "q.json").write_text(json.dumps({"label": "fresh"}))
    (tmp_path / "j.json").write_text(json.dumps(JUDGE))
    env = base_env(emulator.url, marker.key)
    outputs: list[tuple[str, str]] = []
    covered: set[str] = set()

    def run(*args: str, code: int = 0, server: str | None = None, store: Path = db) -> str:
        run_env = env if server is None else {**env, "LOCALSTORE_SERVER_URL": server}
        result = localstore("--db", str(store), *args, env=run_env, cwd=tmp_path)
        outputs.append((" ".join(args), result.stdout + result.stderr))
        assert result.returncode == code, (args, result.returncode, result.stderr)
        covered.add(args[0])
        return result.stdout

    run("pull", ds, "--json")
    run("datasets", "--json")
    run("datasets", "--remote", "--json")
    run("records", "--json")
    run("show", rids[0], "--json")
    run("fetch", rids[0], "--json")
    run("set", rids[0], "label=reviewed", "score=0.9")
    run("unset", rids[0], "score")
    run("edit", rids[1], "--payload-file", "p.json")
    run("add", ds, "--payload-file", "p.json", "--properties-file", "q.json", "--json")
    run("rm", rids[2])
    run("status", "--json")
    run("diff")
    run("log", "--json")
    run("sync", "--dry-run", "--json")
    run("sync", "--json")
    run("set", rids[3], "label=mine")
    emulator.state.update_properties(rids[3], {"label": "theirs"})
    run("sync", "--json", code=3)
    run("conflicts", "--json")
    run("resolve", rids[3], "--ours")
    run("set", rids[4], "label=undo-me")
    run("revert", rids[4])
    run("sync")
    run("sql", "--json", "select id, properties from records")
    run("sql", "--csv", "select * from changes")
    run("export", ds, "-o", "export.jsonl")
    run("import", ds, "export.jsonl", "--dedupe", "--json")  # every line is already there
    run("judge", rids[0], "--judge-file", "j.json", "--json")
    run("checkout", str(folder), "--json")
    run("search", "new OR fresh OR reviewed", "--json")
    run("search", "new", "--limit", "1")
    _browse_briefly(tmp_path, db, env, outputs)
    covered.add("browse")
    _watch_briefly(tmp_path, db, folder, env, emulator, rids[5], marker, outputs)
    covered.add("watch")
    _emulator_briefly(tmp_path, env, marker, outputs)
    covered.add("emulator")
    run("demo", store=tmp_path / "demo.db")
    # failing invocations
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        run("pull", ds, code=1, server=f"http://127.0.0.1:{closed.getsockname()[1]}")
    run("show", "not-a-record", code=1)
    run("set", rids[0], code=2)
    echo.route = echo_401(echo)
    for args in (["pull", ds], ["datasets", "--remote"], ["fetch", rids[0]], ["judge", rids[0], "--judge-file", "j.json"]):
        run(*args, code=1, server=echo.url)
    run("set", rids[0], "label=offline")
    run("sync", code=1, server=echo.url)  # its sync_runs row keeps the (redacted) message
    assert len(echo.requests) >= 5 and all(auth == f"Bearer {marker.key}" for _, auth in echo.requests)

    assert covered == set(cli.commands), "a command is not exercised here"
    for what, text in outputs:
        marker.assert_absent(text, f"the output of `localstore {what}`")
    assert any("***" in text for _, text in outputs[-6:]), "the echoed key was redacted, not dropped"
    assert assert_no_file_leaks(marker, tmp_path) >= 8  # store, lock, checkout files, demo store


def _watch_briefly(
    tmp: Path, db: Path, folder: Path, env: dict[str, str], emulator: EmulatorServer,
    rid: str, marker: Marker, outputs: list[tuple[str, str]],
) -> None:
    """`watch --sync-every` until an edited file reached the server; the store's -wal and
    -shm are read while it runs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstore", "--db", str(db), "watch", str(folder), "--sync-every", "0.2"],
        env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("watching" in line for line in lines), "the watcher to start", WAIT)
        path = next(folder.rglob(f"{rid}.json"))
        record = json.loads(path.read_text())
        record["properties"]["label"] = "edited-in-a-file"
        path.write_text(json.dumps(record, indent=2))
        wait_until(
            lambda: (emulator.state.get_record(rid) or {}).get("properties", {}).get("label") == "edited-in-a-file",
            "the watcher to push the edit", WAIT,
        )
        for suffix in ("-wal", "-shm"):  # the watcher holds the store open: they exist
            side = db.with_name(db.name + suffix)
            marker.assert_absent(side.read_bytes(), side.name)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
        reader.join(WAIT)
    stderr = proc.stderr.read() if proc.stderr else ""
    outputs.append(("watch", "".join(lines) + stderr))
    assert proc.returncode == 0, stderr


def _browse_briefly(tmp: Path, db: Path, env: dict[str, str], outputs: list[tuple[str, str]]) -> None:
    """`localstore browse` on a free port: its pages and what it printed are checked too."""
    pytest.importorskip("datasette")
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstore", "--db", str(db), "browse", "--port", "0"],
        env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("read-only at" in line for line in lines), "browse to start", WAIT)
        url = next(line for line in lines if "read-only at" in line).split("read-only at ")[1].split()[0]
        with httpx.Client(base_url=url, timeout=WAIT) as http:
            for page in ("/", f"/{db.stem}", f"/{db.stem}/records", "/-/metadata.json", "/-/settings.json",
                         "/-/versions.json", f"/{db.stem}/search?q=new", "/-/conversation/nope"):
                outputs.append((f"browse: GET {page}", http.get(page).text))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
        reader.join(WAIT)
    outputs.append(("browse", "".join(lines)))


def _emulator_briefly(tmp: Path, env: dict[str, str], marker: Marker, outputs: list[tuple[str, str]]) -> None:
    """`localstore emulator` on a free port, one pull against it with the marker key,
    then Ctrl-C; what it printed is checked too."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "localstore", "emulator", "--port", "0", "--seed-records", "3"],
        env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any("listening on" in line for line in lines), "the emulator to start", WAIT)
        url = next(line for line in lines if "listening on" in line).split("listening on ")[1].split()[0]
        seeded = next(line for line in lines if line.startswith("seeded dataset ")).split()[2]
        pulled = localstore("--db", str(tmp / "emulator-client.db"), "pull", seeded, env={**env, "LOCALSTORE_SERVER_URL": url}, cwd=tmp)
        outputs.append(("pull (from `localstore emulator`)", pulled.stdout + pulled.stderr))
        assert pulled.returncode == 0, pulled.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(WAIT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
        reader.join(WAIT)
    outputs.append(("emulator", "".join(lines)))


# ------------------------------------------------------------------ servers echoing the key


def _echo_answers(ds: str) -> dict[str, Callable[[str], Answer]]:
    """name -> (Authorization header -> the answer to every request)."""
    long = "x" * 260  # the 300-character cut of a message falls in the middle of the key
    return {
        "401 message": lambda auth: Answer(401, {"detail": {"message": f"bad key {auth}"}}),
        "403 plain detail": lambda auth: Answer(403, {"detail": f"{auth} may not read {ds}"}),
        "error_code": lambda auth: Answer(400, {"detail": {"message": "no", "error_code": auth}}),
        "validation list": lambda auth: Answer(
            422, {"detail": [{"loc": ["header", auth], "msg": f"invalid {auth}", "input": auth}]}
        ),
        "message cut mid-key": lambda auth: Answer(400, {"message": f"{long} {auth} {long}"}),
        "redirect location": lambda auth: Answer(
            302, "", {"Location": f"https://login.example.com/?token={auth.split()[-1]}"}
        ),
        "a field holding the key": lambda auth: Answer(200, page_body([{**record_body(ds, 0), "id": auth}], 1)),
        "a next link holding the key": lambda auth: Answer(
            200, page_body([record_body(ds, 0)], 1, next_link=f"https://elsewhere/{auth}")
        ),
        "content type": lambda auth: Answer(200, b"<html/>", {"Content-Type": auth.split()[-1]}),
    }


ECHO_CASES = sorted(_echo_answers(str(uuid.UUID(int=0))))


@pytest.mark.parametrize("case", ECHO_CASES)
def test_a_key_echoed_by_the_server_is_redacted(
    case: str, tmp_path: Path, echo: FakeApi, marker: Marker
) -> None:
    ds = str(uuid.uuid4())
    answer = _echo_answers(ds)[case]

    def route(path: str, query: dict[str, str]) -> Answer:
        if path == f"{DATASETS}/{ds}" and case in ("a field holding the key", "a next link holding the key"):
            return Answer(200, dataset_body(ds))
        return answer(last_authorization(echo))

    echo.route = route
    db = tmp_path / "store.db"
    Store.open(db).close()
    before = dump(db)
    result = localstore("--db", str(db), "pull", ds, env=base_env(echo.url, marker.key), cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("localstore: error: ")
    marker.assert_absent(result.stderr, "the error line")
    assert echo.requests and echo.requests[0][1] == f"Bearer {marker.key}"
    assert dump(db) == before


def test_rejections_echoing_the_key_are_redacted_in_the_change_log(
    tmp_path: Path, echo: FakeApi, marker: Marker
) -> None:
    """A 422 whose message holds the key: the sync stores the message in the change log
    (and the run in sync_runs) with the key redacted."""
    ds = str(uuid.uuid4())
    records = [record_body(ds, n) for n in range(3)]

    def route(path: str, query: dict[str, str]) -> Answer:
        method = query.get("_method", "GET")
        if method != "GET":
            auth = last_authorization(echo)
            return Answer(422, {"detail": {"message": f"rejected for {auth}", "error_code": "INVALID"}})
        if path == f"{DATASETS}/{ds}":
            return Answer(200, dataset_body(ds))
        if path == f"{DATASETS}/{ds}/records":
            return Answer(200, page_body(records if query.get("page") == "1" else [], 3))
        return Answer(404, {"detail": "not found"})

    echo.route = route
    env = base_env(echo.url, marker.key)
    db = tmp_path / "store.db"
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps({"messages": [{"role": "user", "content": "new"}]}))
    for args in (
        ["pull", ds],
        ["set", records[0]["id"], "label=mine"],
        ["add", ds, "--payload-file", str(payload)],
    ):
        assert localstore("--db", str(db), *args, env=env, cwd=tmp_path).returncode == 0
    synced = localstore("--db", str(db), "sync", env=env, cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    assert "rejected 2" in synced.stdout
    log = localstore("--db", str(db), "log", "--json", env=env, cwd=tmp_path)
    errors = [entry["error"] for entry in json.loads(log.stdout) if entry["state"] == "rejected"]
    assert errors == ["rejected for Bearer ***"] * 2
    for text in (synced.stdout, synced.stderr, log.stdout):
        marker.assert_absent(text, "the sync's output")
    assert_no_file_leaks(marker, tmp_path)
    methods = {path.rsplit("_method=", 1)[-1] for path, _ in echo.requests if "_method=" in path}
    assert methods == {"POST", "PUT"}


# ------------------------------------------------------------------ logging


def test_logging_at_debug_never_shows_the_key(
    tmp_path: Path,
    emulator: EmulatorServer,
    echo: FakeApi,
    marker: Marker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    ds = seed_dataset(emulator.state, 120, name="secrets-logging")
    with Store.open(tmp_path / "store.db") as store, Client(emulator.url, marker.key) as client:
        pull(store, client, [ds])
        rid = store.scalar("SELECT id FROM records ORDER BY id LIMIT 1")
        edits.set_properties(store, rid, {"label": "logged"})
        edits.add_record(store, ds, {"messages": []}, {"n": 1})
        report = sync(store, client)
        assert report.exit_code == 0 and report.updated == 1 and report.created == 1
        judged = judge_records(store, client, JUDGE, [rid])
        assert judged.succeeded == 1
        echo.route = echo_401(echo)
        with Client(echo.url, marker.key) as bad, pytest.raises(LocalstoreError) as refused:
            pull(store, bad, [ds])
        marker.assert_absent(str(refused.value), "the exception")
    text = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in text and "send_request_headers" in text  # httpx and httpcore spoke
    marker.assert_absent(text, "the log")
    assert not any(marker.leaks(repr(r.args)) for r in caplog.records)


# ------------------------------------------------------------------ plain http


REMOTE_COMMANDS: dict[str, list[str]] = {
    "pull": ["pull", "{ds}"],
    "fetch": ["fetch", "{rid}"],
    "datasets --remote": ["datasets", "--remote"],
    "sync": ["sync"],
    "judge": ["judge", "{rid}", "--judge-file", "{tmp}/j.json"],
    "watch --sync-every": ["watch", "{tmp}/checkout", "--sync-every", "1"],
}
PLAIN_HTTP = [
    ("pull", "http://10.0.0.7:8000"),
    ("fetch", "http://example.com"),
    ("datasets --remote", "http://api.mistral.ai"),
    ("sync", "http://[2001:db8::1]:8080"),
    ("judge", "http://192.168.1.20"),
    ("watch --sync-every", "http://example.com:80"),
    ("pull", "http://evil.localhost:8000"),  # resolved by DNS, not necessarily loopback
    ("pull", "http://[::ffff:8.8.8.8]:8000"),
    ("pull", "http://0.0.0.0:8000"),
]


@pytest.fixture
def small_store(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> tuple[Path, str, str]:
    ds = seed_dataset(emulator.state, 3, name="secrets-plain-http")
    db = tmp_path / "store.db"
    with Store.open(db) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        rid = store.scalar("SELECT id FROM records ORDER BY id LIMIT 1")
    return db, ds, rid


@pytest.mark.parametrize(("command", "url"), PLAIN_HTTP, ids=[f"{c} {u}" for c, u in PLAIN_HTTP])
def test_plain_http_to_a_remote_host_is_refused_before_connecting(
    command: str, url: str, tmp_path: Path, small_store: tuple[Path, str, str], marker: Marker
) -> None:
    db, ds, rid = small_store
    (tmp_path / "j.json").write_text(json.dumps(JUDGE))
    env = base_env(url, marker.key)
    if command.startswith("watch"):
        assert localstore("--db", str(db), "checkout", str(tmp_path / "checkout"), env=env, cwd=tmp_path).returncode == 0
    args = [
        a.replace("{ds}", ds).replace("{rid}", rid).replace("{tmp}", str(tmp_path))
        for a in REMOTE_COMMANDS[command]
    ]
    before, files_before = dump(db), snapshot(tmp_path)
    with socket.socket() as trap:  # any connection, direct or through a proxy, lands here
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.setblocking(False)
        proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
        env.update(HTTP_PROXY=proxy, HTTPS_PROXY=proxy, ALL_PROXY=proxy, http_proxy=proxy, https_proxy=proxy)
        result = localstore("--db", str(db), *args, env=env, cwd=tmp_path)
        with pytest.raises(BlockingIOError):
            trap.accept()
    assert result.returncode == 1 and result.stdout == "", result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("localstore: error: refusing to send the API key over plain http")
    marker.assert_absent(result.stderr, "the error line")
    assert dump(db) == before and snapshot(tmp_path) == files_before


# ------------------------------------------------------------------ file modes


MODES_SCRIPT = """
import json, os, stat, sys
os.umask(0)
from localstore.store.db import Store
path = sys.argv[1]
with Store.open(path) as store:
    with store.transaction() as conn:
        conn.execute("INSERT INTO datasets (id, name) VALUES ('d', 'written while open')")
    with store.sync_lock():
        modes = {name: stat.S_IMODE(os.stat(path + name).st_mode) for name in ("", "-wal", "-shm", ".lock")}
print(json.dumps(modes))
"""


@pytest.mark.parametrize("umask", ["0", "the test's own"])
def test_the_store_and_its_side_files_are_0600(tmp_path: Path, umask: str) -> None:
    script = MODES_SCRIPT if umask == "0" else MODES_SCRIPT.replace("os.umask(0)", "")
    db = tmp_path / "deep" / "store.db"
    result = subprocess.run(
        [sys.executable, "-c", script, str(db)], capture_output=True, text=True, timeout=60, check=True
    )
    modes = json.loads(result.stdout)
    assert modes == {"": 0o600, "-wal": 0o600, "-shm": 0o600, ".lock": 0o600}, {k: oct(v) for k, v in modes.items()}
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


# ------------------------------------------------------------------ read-only SQL


REFUSED_SQL = [
    "DELETE FROM mirror",
    "WITH doomed AS (SELECT id FROM mirror) DELETE FROM mirror WHERE id IN (SELECT id FROM doomed)",
    "/* looks like a comment */ DELETE FROM mirror",
    "/**/ UPDATE mirror SET payload = '{}'",
    "/**/ INSERT INTO datasets (id) VALUES ('smuggled')",
    "/**/ REPLACE INTO datasets (id) VALUES ('smuggled')",
    "/**/ DELETE FROM records",
    "/**/ DROP VIEW records",
    "/**/ CREATE TABLE t (x)",
    "/**/ CREATE TEMP TABLE scratch (x)",
    "CREATE TEMP TABLE scratch (x)",
    "PRAGMA writable_schema = ON",
    "/**/ PRAGMA user_version = 99",
    "PRAGMA user_version(99)",
    "/**/ PRAGMA incremental_vacuum",
    "ATTACH DATABASE '{tmp}/attached.db' AS evil",
    "/**/ ATTACH DATABASE '{tmp}/attached.db' AS evil",
    "VACUUM INTO '{tmp}/copy.db'",
    "/**/ VACUUM INTO '{tmp}/copy.db'",
    "-- a comment line\nVACUUM INTO '{tmp}/copy.db'",
    "/**/ VACUUM INTO 'file:{tmp}/copy.db?mode=rwc'",
    "/**/ VACUUM",
    "/**/ REINDEX",
    "/**/ ANALYZE",
    "/**/ BEGIN IMMEDIATE",
]
HARMLESS_SQL = [  # may run, may fail: either way nothing changes
    "/**/ PRAGMA writable_schema(1)",
    "/**/ PRAGMA query_only(0)",
    "/**/ PRAGMA journal_mode(DELETE)",
    "/**/ PRAGMA wal_checkpoint(TRUNCATE)",
    "/**/ PRAGMA optimize",
    "/**/ PRAGMA locking_mode = EXCLUSIVE",
    "SELECT load_extension('/tmp/nothing')",
    "SELECT * FROM pragma_table_info('mirror')",
]


@pytest.fixture
def open_store(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> Iterator[Store]:
    ds = seed_dataset(emulator.state, 4, name="secrets-readonly-sql")
    with Store.open(tmp_path / "store.db") as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        yield store


def _state(store: Store, folder: Path) -> tuple[str, list[str], dict[str, str]]:
    return (
        hashlib.sha256(store.path.read_bytes()).hexdigest(),
        dump(store.path),
        {k: v for k, v in snapshot(folder).items() if not k.startswith("store.db")},
    )


@pytest.mark.parametrize("query", REFUSED_SQL)
def test_sql_without_write_is_refused_by_sqlite(query: str, open_store: Store, tmp_path: Path) -> None:
    before = _state(open_store, tmp_path)
    with pytest.raises(UsageError, match="read-only unless you pass --write"):
        run_sql(open_store, query.replace("{tmp}", str(tmp_path)))
    assert _state(open_store, tmp_path) == before
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "attached.db").exists()


@pytest.mark.parametrize("query", HARMLESS_SQL)
def test_sql_without_write_changes_nothing_whatever_it_runs(query: str, open_store: Store, tmp_path: Path) -> None:
    before = _state(open_store, tmp_path)
    with suppress(UsageError):
        run_sql(open_store, query)
    assert _state(open_store, tmp_path) == before
    # and the store's own connection still writes normally
    with open_store.transaction() as conn:
        conn.execute("UPDATE datasets SET name = 'renamed'")
    assert _state(open_store, tmp_path)[1] != before[1]


def test_sql_with_write_does_write(open_store: Store, tmp_path: Path) -> None:
    """The control: the same machinery with --write changes the store (through the
    records view, the only thing --write lets SQL change)."""
    before = _state(open_store, tmp_path)
    run_sql(open_store, "UPDATE records SET properties = json_set(properties, '$.by', 'write')", write=True)
    assert _state(open_store, tmp_path)[1] != before[1]
    with closing(sqlite3.connect(open_store.path)) as conn:
        assert conn.execute("SELECT count(*) FROM changes WHERE state = 'pending'").fetchall() == [(4,)]


def test_the_key_never_reaches_the_store_or_a_repr(
    tmp_path: Path, emulator: EmulatorServer, marker: Marker
) -> None:
    ds = seed_dataset(emulator.state, 2, name="secrets-repr")
    with Client(emulator.url, marker.key) as client:
        marker.assert_absent(repr(client), "repr(client)")
        marker.assert_absent(repr(vars(client)), "vars(client)")
        with Store.open(tmp_path / "store.db") as store:
            pull(store, client, [ds])
            text = "\n".join(dump(store.path))
    marker.assert_absent(text, "the store's SQL dump")
    assert_no_file_leaks(marker, tmp_path)

