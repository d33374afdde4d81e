"""The command line's failures, end to end in a subprocess: exit 1, exactly one line
``localstore: error: ...`` on stderr, no traceback, and the store exactly as it was.

What the emulator cannot do (401s, broken bodies, broken pagination, HTML error pages)
comes from a small fake API on 127.0.0.1 serving crafted answers.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from localstore.api import Client
from localstore.store.db import SCHEMA_VERSION, Store
from localstore.sync.pull import pull
from localstore_emulator import EmulatorServer

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

DATASETS = "/v1/observability/datasets"
RECORDS = "/v1/observability/dataset-records"
RUN_CLI = "from localstore.cli import main; main()"
TS = "2026-03-01T12:00:00.000000Z"


# ------------------------------------------------------------------ running the CLI


def cli_env(server_url: str | None, api_key: str | None, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LOCALSTORE_", "MISTRAL_")) and "proxy" not in k.lower()
    }
    if server_url is not None:
        env["LOCALSTORE_SERVER_URL"] = server_url
    if api_key is not None:
        env["MISTRAL_API_KEY"] = api_key
    env.update(extra)
    return env


def run_cli(
    db: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, "--db", str(db), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        cwd=db.parent,
        timeout=timeout,
    )


def dump(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


def assert_refused(
    result: subprocess.CompletedProcess[str], db: Path, before: list[str], *needles: str
) -> str:
    """Exit 1, one error line on stderr naming ``needles``, the store unchanged."""
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    line = result.stderr.rstrip("\n")
    assert line.startswith("localstore: error: "), line
    for needle in needles:
        assert needle.lower() in line.lower(), (needle, line)
    assert result.stdout == ""
    assert dump(db) == before
    return line


# ------------------------------------------------------------------ a fake API


@dataclass
class Answer:
    status: int = 200
    body: Any = None  # bytes/str sent as they are; anything else as JSON
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, "application/octet-stream"
        if isinstance(self.body, str):
            return self.body.encode(), "text/html; charset=utf-8"
        return json.dumps(self.body).encode(), "application/json"


Route = Callable[[str, dict[str, str]], Answer]


class _Handler(BaseHTTPRequestHandler):
    server: _FakeHTTPServer

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        fake = self.server.fake
        with fake.lock:
            fake.requests.append((self.path, self.headers.get("Authorization", "")))
        answer = fake.route(parts.path, query)
        body, kind = answer.encode()
        self.send_response(answer.status)
        headers = {"Content-Type": kind, **answer.headers, "Content-Length": str(len(body))}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeApi


class FakeApi:
    """An HTTP server on 127.0.0.1 answering GETs with ``route(path, query)``."""

    def __init__(self) -> None:
        self.route: Route = lambda path, query: Answer(404, {"detail": f"no route for {path}"})
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self._server = _FakeHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve_dataset(
        self, dataset: dict[str, Any], pages: dict[int, Answer], records: dict[str, Any] | None = None
    ) -> None:
        """The dataset's metadata, these answers for its record pages, and ``records``
        (id -> body) for GETs of single records; any other path is a 404."""
        ds = dataset["id"]
        by_id = records or {}

        def route(path: str, query: dict[str, str]) -> Answer:
            if path == f"{DATASETS}/{ds}":
                return Answer(200, dataset)
            if path == f"{DATASETS}/{ds}/records":
                return pages.get(int(query.get("page", "1")), Answer(200, page_body([], 0)))
            rid = path.rpartition("/")[2]
            if path == f"{RECORDS}/{rid}" and rid in by_id:
                return Answer(200, by_id[rid])
            return Answer(404, {"detail": {"message": "not found", "error_code": "NOT_FOUND"}})

        self.route = route

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def dataset_body(dataset_id: str | None = None) -> dict[str, Any]:
    return {
        "id": dataset_id or str(uuid.uuid4()),
        "name": "fake dataset",
        "description": "served by the fake API",
        "created_at": TS,
        "updated_at": TS,
        "deleted_at": None,
        "slug": None,
        "owner_id": "owner",
        "workspace_id": "workspace",
    }


def record_body(dataset_id: str, n: int, *, text: str = "hello") -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=n + 1)),
        "dataset_id": dataset_id,
        "created_at": TS,
        "updated_at": TS,
        "deleted_at": None,
        "source": "DIRECT_INPUT",
        "payload": {"messages": [{"role": "user", "content": f"{text} {n}"}]},
        "properties": {"n": n},
    }


def page_body(records: list[dict[str, Any]], count: int, next_link: Any = None) -> dict[str, Any]:
    return {"records": {"count": count, "results": records, "next": next_link, "previous": None}}


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    fake = FakeApi()
    yield fake
    fake.close()


# ------------------------------------------------------------------ stores


@pytest.fixture
def filled(tmp_path: Path, emulator: EmulatorServer, dataset: Callable[..., str], api_key: str) -> tuple[Path, str]:
    """A store holding one dataset of 30 records pulled from the emulator: (path, id)."""
    ds = dataset(30)
    db = tmp_path / "store.db"
    with Store.open(db) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
    return db, ds


@pytest.fixture
def env(emulator: EmulatorServer, api_key: str) -> dict[str, str]:
    return cli_env(emulator.url, api_key)


# ------------------------------------------------------------------ ids


@pytest.mark.parametrize("command", ["show", "fetch"])
def test_an_unknown_record_id(command: str, filled: tuple[Path, str], env: dict[str, str]) -> None:
    db, _ = filled
    before = dump(db)
    unknown = str(uuid.uuid4())
    result = run_cli(db, command, unknown, env=env)
    assert_refused(result, db, before, unknown)


@pytest.mark.parametrize("command", ["show", "fetch"])
@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "'; drop table mirror; --"])
def test_a_malformed_record_id(
    command: str, bad: str, filled: tuple[Path, str], env: dict[str, str]
) -> None:
    db, _ = filled
    before = dump(db)
    result = run_cli(db, command, bad, env=env)
    assert_refused(result, db, before, "not a valid record id")


# ------------------------------------------------------------------ pull against broken servers


def test_pull_with_the_server_down(filled: tuple[Path, str], api_key: str) -> None:
    db, ds = filled
    before = dump(db)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        result = run_cli(db, "pull", ds, env=cli_env(f"http://127.0.0.1:{port}", api_key))
    assert_refused(result, db, before, "cannot reach", "connection refused")


def test_pull_with_a_wrong_key(filled: tuple[Path, str], fake_api: FakeApi) -> None:
    db, ds = filled
    before = dump(db)
    fake_api.route = lambda path, query: Answer(
        401,
        {"detail": {"message": "invalid API key", "error_code": "AUTH_UNAUTHORIZED"}},
        {"WWW-Authenticate": "Bearer"},
    )
    key = "sk-wrong-0123456789"
    result = run_cli(db, "pull", ds, env=cli_env(fake_api.url, key))
    line = assert_refused(result, db, before, "401", "MISTRAL_API_KEY")
    assert key not in line
    assert fake_api.requests and fake_api.requests[0][1] == f"Bearer {key}"


@pytest.mark.parametrize("key", ["", "   "])
def test_pull_with_an_empty_key_sends_nothing(
    key: str, filled: tuple[Path, str], fake_api: FakeApi
) -> None:
    db, ds = filled
    before = dump(db)
    result = run_cli(db, "pull", ds, env=cli_env(fake_api.url, key))
    assert_refused(result, db, before, "MISTRAL_API_KEY")
    assert fake_api.requests == []


def test_pull_without_mistral_api_key(filled: tuple[Path, str], emulator: EmulatorServer) -> None:
    db, ds = filled
    before = dump(db)
    result = run_cli(db, "pull", ds, env=cli_env(emulator.url, None))
    assert_refused(result, db, before, "MISTRAL_API_KEY")


def _bad_dataset_answers(ds: str) -> dict[str, tuple[Answer, dict[int, Answer], str]]:
    """name -> (dataset answer, page answers, a word the error must hold)."""
    good = Answer(200, dataset_body(ds))
    one = [record_body(ds, n) for n in range(3)]
    return {
        "dataset not JSON": (Answer(200, b"hello, not json"), {}, "non-JSON"),
        "page not JSON": (good, {1: Answer(200, b"\x00\xff garbage")}, "non-JSON"),
        "page truncated JSON": (good, {1: Answer(200, b'{"records": {"count": 3, "resu')}, "non-JSON"),
        "next is a number": (good, {1: Answer(200, page_body(one, 3, next_link=42))}, "next"),
        "next loops to page 1": (
            good,
            {1: Answer(200, page_body(one, 3, next_link=f"{DATASETS}/{ds}/records?page=1&page_size=100"))},
            "next link",
        ),
        "next to another server": (
            good,
            {1: Answer(200, page_body(one, 3, next_link="https://elsewhere.invalid/x?page=2"))},
            "next link",
        ),
        "page is a list": (good, {1: Answer(200, [1, 2, 3])}, "malformed"),
        "record without id": (
            good,
            {1: Answer(200, page_body([{k: v for k, v in one[0].items() if k != "id"}], 1))},
            "malformed",
        ),
        "record of another dataset": (
            good,
            {1: Answer(200, page_body([record_body(str(uuid.uuid4()), 0)], 1))},
            "of dataset",
        ),
        "HTML 502 page": (
            good,
            {1: Answer(502, "<html><body><h1>502 Bad Gateway</h1></body></html>", {"Retry-After": "0"})},
            "502",
        ),
        "HTML 502 for the dataset": (
            Answer(502, "<html><body><h1>502 Bad Gateway</h1>\n<p>nginx</p></body></html>", {"Retry-After": "0"}),
            {},
            "502",
        ),
    }


BROKEN = sorted(_bad_dataset_answers(str(uuid.UUID(int=0))))


@pytest.mark.parametrize("case", BROKEN)
def test_pull_of_a_new_dataset_from_a_broken_server(
    case: str, filled: tuple[Path, str], fake_api: FakeApi, api_key: str
) -> None:
    db, _ = filled
    before = dump(db)
    ds = str(uuid.uuid4())
    metadata, pages, word = _bad_dataset_answers(ds)[case]
    fake_api.route = lambda path, query: (
        metadata if path == f"{DATASETS}/{ds}" else pages.get(int(query.get("page", "1")), Answer(404, {}))
    )
    result = run_cli(db, "pull", ds, env=cli_env(fake_api.url, api_key))
    assert_refused(result, db, before, word)


def _pull_then_change_server(
    tmp_path: Path, emulator: EmulatorServer, ds: str, api_key: str
) -> tuple[Path, list[dict[str, Any]], list[dict[str, Any]]]:
    """Pull ``ds`` (150 records) from the emulator into a new store; return the store,
    the emulator's records, and page 1 of a changed listing (100 records changed,
    30 gone: count 120)."""
    db = tmp_path / "store.db"
    good = run_cli(db, "pull", ds, env=cli_env(emulator.url, api_key))
    assert good.returncode == 0, good.stderr
    remote = emulator.state.list_records(ds)
    changed = [
        {**r, "updated_at": "2030-01-01T00:00:00.000000Z", "payload": {"messages": []}}
        for r in remote[:100]
    ]
    return db, remote, changed


def _next_page(ds: str, page: int) -> str:
    return f"{DATASETS}/{ds}/records?page={page}&page_size=100"


@pytest.mark.parametrize(
    "broken", ["not JSON", "HTML 502", "next is garbage", "record of another dataset"]
)
def test_a_pull_whose_second_page_breaks_leaves_no_partial_mirror(
    broken: str,
    tmp_path: Path,
    emulator: EmulatorServer,
    dataset: Callable[..., str],
    fake_api: FakeApi,
    api_key: str,
) -> None:
    ds = dataset(150)
    db, remote, changed = _pull_then_change_server(tmp_path, emulator, ds, api_key)
    before = dump(db)
    second = {
        "not JSON": Answer(200, b"<<not json>>"),
        "HTML 502": Answer(502, "<html><h1>Bad Gateway</h1></html>", {"Retry-After": "0"}),
        "next is garbage": Answer(200, page_body(remote[100:120], 120, next_link={"page": 3})),
        "record of another dataset": Answer(
            200, page_body([record_body(str(uuid.uuid4()), 7)], 120)
        ),
    }[broken]
    fake_api.serve_dataset(
        emulator.state.get_dataset(ds) or {},
        {1: Answer(200, page_body(changed, 120, _next_page(ds, 2))), 2: second},
    )
    result = run_cli(db, "pull", env=cli_env(fake_api.url, api_key))
    assert_refused(result, db, before)
    page_two = [path for path, _ in fake_api.requests if "page=2" in path]
    assert len(page_two) > 1 if broken == "HTML 502" else len(page_two) == 1


@pytest.mark.parametrize("still_there", [True, False])
def test_records_missing_from_a_listing_are_removed_only_on_a_404(
    tmp_path: Path,
    emulator: EmulatorServer,
    dataset: Callable[..., str],
    fake_api: FakeApi,
    api_key: str,
    still_there: bool,
) -> None:
    """The count moves between pages (records slid between pages while they were read):
    the listing is applied, and each record it did not show is looked up; only a 404
    removes it."""
    ds = dataset(150)
    db, remote, changed = _pull_then_change_server(tmp_path, emulator, ds, api_key)
    missing = remote[120:150]
    fake_api.serve_dataset(
        emulator.state.get_dataset(ds) or {},
        {
            1: Answer(200, page_body(changed, 120, _next_page(ds, 2))),
            2: Answer(200, page_body(remote[100:120], 121)),
        },
        {r["id"]: r for r in missing} if still_there else {},
    )
    result = run_cli(db, "pull", env=cli_env(fake_api.url, api_key))
    assert result.returncode == 0, result.stderr
    assert f"removed {0 if still_there else 30}," in result.stdout
    looked_up = {path.rpartition("/")[2] for path, _ in fake_api.requests if path.startswith(RECORDS)}
    assert looked_up == {r["id"] for r in missing}
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM records").fetchone()[0] == (150 if still_there else 120)
        assert conn.execute(
            "SELECT count(*) FROM records WHERE updated_at = '2030-01-01T00:00:00.000000Z'"
        ).fetchone()[0] == 100


# ------------------------------------------------------------------ local refusals


def test_sql_write_without_write_flag(filled: tuple[Path, str], env: dict[str, str]) -> None:
    db, _ = filled
    before = dump(db)
    for query in ("delete from records", "with x as (select 1) delete from mirror"):
        result = run_cli(db, "sql", query, env=env)
        assert_refused(result, db, before, "--write")
    refused = run_cli(db, "sql", "--write", "update datasets set name = 'renamed'", env=env)
    assert_refused(refused, db, before, "only through the `records` view")
    written = run_cli(db, "sql", "--write", "update records set properties = json_set(properties, '$.x', 1)", env=env)
    assert written.returncode == 0, written.stderr
    assert dump(db) != before


def test_http_to_a_remote_host_is_refused_before_connecting(
    filled: tuple[Path, str], api_key: str
) -> None:
    """A proxy trap on loopback: had the CLI tried to connect anywhere, the proxy
    settings would have sent the connection here."""
    db, ds = filled
    before = dump(db)
    with socket.socket() as trap:
        trap.bind(("127.0.0.1", 0))
        trap.listen(8)
        trap.setblocking(False)
        proxy = f"http://127.0.0.1:{trap.getsockname()[1]}"
        env = cli_env(
            None, api_key, HTTP_PROXY=proxy, HTTPS_PROXY=proxy, ALL_PROXY=proxy, http_proxy=proxy
        )
        result = run_cli(db, "--server-url", "http://example.com", "pull", ds, env=env)
        with pytest.raises(BlockingIOError):
            trap.accept()
    line = assert_refused(result, db, before, "example.com", "https")
    assert api_key not in line


def test_a_store_written_by_a_newer_localstore(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "store.db"
    Store.open(db).close()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before_bytes = db.read_bytes()
    before = dump(db)
    for args in (["records"], ["sql", "select 1"], ["status"]):
        result = run_cli(db, *args, env=env)
        assert_refused(result, db, before, "upgrade")
        assert db.read_bytes() == before_bytes


def test_a_file_that_is_not_a_store(tmp_path: Path, env: dict[str, str]) -> None:
    db = tmp_path / "notes.db"
    db.write_bytes(b"not a database at all\n" * 100)
    before = db.read_bytes()
    result = run_cli(db, "records", env=env)
    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("localstore: error: ")
    assert db.read_bytes() == before
