"""The bad-input matrix: what a person, a file, the environment or a server can get
wrong, each run as ``python -m localstore …`` in a subprocess.

Every refused case must give a documented exit code, exactly one error line on stderr
naming the problem (no traceback, no "internal error"), nothing on stdout, and leave
the store exactly as it was: the same ``sqlite3.iterdump()`` checksum and the same bytes
for every file of the test's folder (so no -wal/-shm left behind, no file created).
test_cli_errors.py covers the cases this table does not repeat (unknown and malformed
record ids for show/fetch, server down, 401 JSON, empty key, broken page bodies, a next
link looping on page 1 or leaving the server, HTML 502, a newer user_version, a text
file as the store).

Exit codes (the CLI's contract, ``localstore.cli.app.main``):

==== ================================================================================
code meaning
==== ================================================================================
0    done (a ``sync`` whose changes the server rejected with 400/422 is done too: the
     changes are marked ``rejected`` in the log, see ``localstore log``)
1    a localstore error — bad input (ids, files, environment, SQL), an unusable store
     file, or the API failing after retries: one line ``localstore: error: …``; also
     ``judge`` when a record could not be judged
2    a command-line usage error found by click (unknown command or option, a value
     out of range, ``--db`` naming a directory): click's usage text, ending with one
     ``Error: …`` line
3    ``sync`` finished but conflicts remain
130  interrupted (Ctrl-C); ``watch`` stops cleanly on Ctrl-C and exits 0
==== ================================================================================

Decisions this file pins down:

* a record ``source`` the client does not know (``TELEMETRY_SPAN``) is stored as it is,
  for forward compatibility; an unknown ``error_code`` still gives the one-line message;
* ``add``/``edit`` of a payload over the server's 1 MiB limit is accepted locally (it is
  valid JSON); ``sync`` then marks the change rejected with the server's message, exits
  0, and keeps the whole body in the change log;
* a listing whose ``next`` is missing while ``count`` says more pages goes on by count;
* timestamps must be ISO 8601 strings with a zone (an offset is normalised to UTC);
  a date alone, no zone, words, numbers, or a year past 9999 are protocol errors.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_cli_errors import (
    DATASETS,
    Answer,
    FakeApi,
    cli_env,
    dataset_body,
    dump,
    page_body,
    record_body,
)

from localstore.api import Client
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore_emulator import EmulatorServer, seed_dataset

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

RECORDS = "/v1/observability/dataset-records"
TEMPLATE_RECORDS = 5

# ------------------------------------------------------------------ running the CLI


def localstore(
    *args: str | bytes, env: Mapping[str, str], cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "localstore", *args],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def base_env(server_url: str, api_key: str) -> dict[str, str]:
    env = cli_env(server_url, api_key, NO_COLOR="1")
    for name in ("EDITOR", "VISUAL"):
        env.pop(name, None)
    return env


def snapshot(folder: Path) -> dict[str, str]:
    """Every file (its sha256) and folder under ``folder``."""
    out: dict[str, str] = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def dump_checksum(db: Path) -> str | None:
    """sha256 of the store's SQL dump; None when it is not a readable SQLite file."""
    if not db.is_file():
        return None
    try:
        lines = dump(db)
    except sqlite3.DatabaseError:
        return None
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one line that names the problem, after the common checks."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, result.stderr
    assert "internal error" not in output, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == "", result.stdout
    if code == 2:  # click: usage text, then one "Error: …" line
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert len(errors) == 1, result.stderr
        assert result.stderr.rstrip("\n").splitlines()[-1] == errors[0]
        return errors[0]
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    line = result.stderr.rstrip("\n")
    assert line.startswith("localstore: error: "), line
    return line


# ------------------------------------------------------------------ the store every case starts from


@dataclass(frozen=True)
class Template:
    path: Path
    dataset_id: str
    record_ids: list[str]


@pytest.fixture(scope="module")
def template(
    tmp_path_factory: pytest.TempPathFactory, emulator: EmulatorServer, api_key: str
) -> Template:
    """A store holding one dataset of 5 records pulled from the session emulator."""
    ds = seed_dataset(emulator.state, TEMPLATE_RECORDS, name="bad-input-template")
    path = tmp_path_factory.mktemp("template") / "store.db"
    with Store.open(path) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [ds])
        ids = [r[0] for r in store.conn.execute("SELECT id FROM records ORDER BY id")]
    assert not path.with_name("store.db-wal").exists()
    return Template(path, ds, ids)


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeApi]:
    api = FakeApi()
    yield api
    api.close()  # waits up to half a second for the server loop: once per module


@pytest.fixture
def fake(shared_fake: FakeApi) -> FakeApi:
    """The module's fake API, forgetting earlier requests; each test sets its route."""
    with shared_fake.lock:
        shared_fake.requests.clear()
    return shared_fake


# ------------------------------------------------------------------ server answers


def html(status: int) -> Answer:
    """An HTML error page, as a proxy or a gateway sends it (retries are immediate)."""
    return Answer(
        status, f"<html><body><h1>{status}</h1><p>nginx</p></body></html>", {"Retry-After": "0"}
    )


def rec(ds: str, n: int = 0, **over: Any) -> dict[str, Any]:
    return {**record_body(ds, n), **over}


def page(ds: str, *records: dict[str, Any], count: Any = None, next_link: Any = None) -> Answer:
    return Answer(200, page_body(list(records), len(records) if count is None else count, next_link))


def with_ts(value: Any) -> Callable[[str], dict[Any, Answer]]:
    return lambda ds: {1: page(ds, rec(ds, updated_at=value))}


def raw_page(body: bytes) -> Callable[[str], dict[Any, Answer]]:
    return lambda ds: {1: Answer(200, body)}


def _latin1_page(ds: str) -> bytes:
    text = json.dumps(page_body([rec(ds, payload={"messages": [{"role": "user", "content": "café"}]})], 1))
    return text.replace("\\u00e9", "é").encode("latin-1")


def _surrogate_page(ds: str) -> bytes:
    text = json.dumps(page_body([rec(ds, properties={"note": "SURROGATE"})], 1))
    return text.replace("SURROGATE", "\\ud800").encode()


def _looping_pages(ds: str) -> dict[Any, Answer]:
    """150 records: page 1 links to page 2, page 2 links back to page 1."""
    records = [rec(ds, n) for n in range(150)]
    link = f"{DATASETS}/{ds}/records?page={{}}&page_size=100"
    return {
        1: page(ds, *records[:100], count=150, next_link=link.format(2)),
        2: page(ds, *records[100:], count=150, next_link=link.format(1)),
    }


def route_for(table: Mapping[Any, Answer], ds: str) -> Callable[[str, dict[str, str]], Answer]:
    """``table`` keys: "meta" (GET the dataset), page numbers (its listing), "record"
    (GET any record), "datasets" (the account's datasets)."""
    missing = Answer(404, {"detail": {"message": "not found", "error_code": "NOT_FOUND"}})

    def route(path: str, query: dict[str, str]) -> Answer:
        if path == f"{DATASETS}/{ds}":
            return table.get("meta", Answer(200, dataset_body(ds)))
        if path == f"{DATASETS}/{ds}/records":
            return table.get(int(query.get("page", "1")), page(ds, count=0))
        if path == DATASETS:
            return table.get("datasets", missing)
        if path.startswith(f"{RECORDS}/"):
            return table.get("record", missing)
        return missing

    return route


# ------------------------------------------------------------------ special stores and files


def _user_version(value: int) -> Callable[[Path, Path], None]:
    def prepare(template: Path, db: Path) -> None:
        with closing(sqlite3.connect(db)) as conn:
            conn.execute(f"PRAGMA user_version = {value}")

    return prepare


def _sqlite_header_then_noise(template: Path, db: Path) -> None:
    db.write_bytes(b"SQLite format 3\x00" + random.Random(7).randbytes(8192))


def _truncated(template: Path, db: Path) -> None:
    data = template.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def _foreign_sqlite(template: Path, db: Path) -> None:
    db.unlink()
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT INTO notes (text) VALUES ('mine, not localstore''s')")
        conn.commit()


def _a_directory(template: Path, db: Path) -> None:
    db.unlink()
    db.mkdir()


JUDGE = {
    "name": "judge one",
    "description": "is the answer polite",
    "model_name": "mistral-small-latest",
    "output": {"type": "REGRESSION", "min_description": "rude", "max_description": "polite"},
    "instructions": "rate the politeness",
    "tools": [],
}
EDITOR_WRITES_GARBAGE = b'#!/bin/sh\nprintf \'{"payload": {\' > "$1"\n'
GOOD_PAYLOAD = b'{"messages": [{"role": "user", "content": "hi"}]}'


# ------------------------------------------------------------------ the table


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str | bytes, ...]  # "{ds}", "{rid}", "{rid2}", "{unknown}", "{tmp}" filled in
    phrase: str  # what the error line must say (case-insensitive)
    code: int = 1
    env: Mapping[str, str] = field(default_factory=dict)  # formatted like args
    files: Mapping[str, bytes] = field(default_factory=dict)  # written under tmp; "x/" is a folder
    server: Callable[[str], Mapping[Any, Answer]] | None = None  # the fake API's answers
    store: Callable[[Path, Path], None] | None = None  # (template, db): a special store file
    db: str | None = "{tmp}/store.db"  # --db; None: no flag


C = Case
CASES: list[Case] = [
    # -- server answers: error pages ------------------------------------------------------
    C("HTML 401 page", ("pull", "{ds}"), "refused the API key", server=lambda ds: {"meta": html(401)}),
    C("HTML 403 page", ("pull", "{ds}"), "403", server=lambda ds: {"meta": html(403)}),
    C("HTML 404 page", ("pull", "{ds}"), "does not exist on the server", server=lambda ds: {"meta": html(404)}),
    C("HTML 429 page", ("pull", "{ds}"), "429", server=lambda ds: {1: html(429)}),
    C("HTML 500 page", ("pull", "{ds}"), "500", server=lambda ds: {"meta": html(500)}),
    C("HTML 503 page on a listing", ("pull", "{ds}"), "503", server=lambda ds: {1: html(503)}),
    C("HTML 200 captive portal", ("pull", "{ds}"), "non-JSON body (text/html)",
      server=lambda ds: {"meta": Answer(200, "<html><form>Log in to the Wi-Fi</form></html>")}),
    C("302 to a login page", ("pull", "{ds}"), "redirect to https://login.example.com",
      server=lambda ds: {"meta": Answer(302, "", {"Location": "https://login.example.com/sso"})}),
    C("empty 200 body", ("pull", "{ds}"), "non-JSON", server=lambda ds: {1: Answer(200, b"")}),
    C("unknown error_code", ("pull", "{ds}"), "quota exceeded for this workspace [QUOTA_2031]",
      server=lambda ds: {"meta": Answer(400, {"detail": {"message": "quota exceeded for this workspace", "error_code": "QUOTA_2031"}})}),
    C("non-UTF-8 error body", ("pull", "{ds}"), "500",
      server=lambda ds: {"meta": Answer(500, "Erreur interne: défaillance".encode("latin-1"), {"Retry-After": "0"})}),
    # -- server answers: wrong JSON types and values -----------------------------------------
    C("count as a string", ("pull", "{ds}"), "records.count is '1'",
      server=lambda ds: {1: page(ds, rec(ds), count="1")}),
    C("results as an object", ("pull", "{ds}"), "records.results is {",
      server=lambda ds: {1: Answer(200, {"records": {"count": 1, "results": {"0": rec(ds)}, "next": None}})}),
    C("payload as a list", ("pull", "{ds}"), "payload is [",
      server=lambda ds: {1: page(ds, rec(ds, payload=[{"role": "user"}]))}),
    C("properties as a string", ("pull", "{ds}"), "properties is 'label=good'",
      server=lambda ds: {1: page(ds, rec(ds, properties="label=good"))}),
    C("id not a UUID", ("pull", "{ds}"), "id is 'rec_0001', expected a UUID",
      server=lambda ds: {1: page(ds, rec(ds, id="rec_0001"))}),
    C("dataset_id not a UUID", ("pull", "{ds}"), "dataset_id is 'support', expected a UUID",
      server=lambda ds: {1: page(ds, rec(ds, dataset_id="support"))}),
    C("the dataset asked for answered by another", ("pull", "{ds}"), "holds dataset",
      server=lambda ds: {"meta": Answer(200, dataset_body(str(uuid.UUID(int=77))))}),
    C("the record asked for answered by another", ("fetch", "{rid}"), "with record 00000000-0000-0000-0000-000000000008",
      server=lambda ds: {"record": Answer(200, rec(ds, 7))}),
    C("a listed dataset without workspace_id", ("datasets", "--remote"), "workspace_id is missing",
      server=lambda ds: {"datasets": Answer(200, {"datasets": {"count": 1, "results": [
          {k: v for k, v in dataset_body(ds).items() if k != "workspace_id"}], "next": None}})}),
    C("non-UTF-8 page body", ("pull", "{ds}"), "non-JSON", server=lambda ds: raw_page(_latin1_page(ds))(ds)),
    C("a lone surrogate escape", ("pull", "{ds}"), "lone surrogate", server=lambda ds: raw_page(_surrogate_page(ds))(ds)),
    C("NaN in a page", ("pull", "{ds}"), "non-JSON",
      server=lambda ds: raw_page(json.dumps(page_body([rec(ds, properties={"score": float("nan")})], 1)).encode())(ds)),
    C("next on page 2 loops back to page 1", ("pull", "{ds}"), "loops back", server=_looping_pages),
    # -- server answers: timestamps ----------------------------------------------------------
    C("timestamp without a zone", ("pull", "{ds}"), "without a time zone", server=with_ts("2026-03-01T12:00:00")),
    C("timestamp a date only", ("pull", "{ds}"), "'2026-03-01' without a time zone", server=with_ts("2026-03-01")),
    C("timestamp 'yesterday'", ("pull", "{ds}"), "'yesterday', not an ISO 8601 timestamp", server=with_ts("yesterday")),
    C("timestamp in year 10000", ("pull", "{ds}"), "not an ISO 8601 timestamp", server=with_ts("10000-01-01T00:00:00Z")),
    C("timestamp past 9999 in UTC", ("pull", "{ds}"), "out of range", server=with_ts("9999-12-31T23:59:59-01:00")),
    C("timestamp as epoch seconds", ("pull", "{ds}"), "1772366400, expected an ISO 8601 string", server=with_ts(1772366400)),
    # -- files --------------------------------------------------------------------------------
    C("payload file not UTF-8", ("edit", "{rid}", "--payload-file", "p.json"), "is not UTF-8 text",
      files={"p.json": '{"messages": [{"role": "user", "content": "café"}]}'.encode("latin-1")}),
    C("payload file with a lone surrogate", ("edit", "{rid}", "--payload-file", "p.json"), "not valid Unicode",
      files={"p.json": b'{"messages": [{"role": "user", "content": "\\udc80"}]}'}),
    C("payload file a JSON array", ("edit", "{rid}", "--payload-file", "p.json"), "must be a JSON object, got list",
      files={"p.json": b'[{"role": "user", "content": "hi"}]'}),
    C("payload file null", ("edit", "{rid}", "--payload-file", "p.json"), "must be a JSON object, got null",
      files={"p.json": b"null"}),
    C("payload file with NaN", ("edit", "{rid}", "--payload-file", "p.json"), "NaN is not allowed",
      files={"p.json": b'{"messages": [], "score": NaN}'}),
    C("payload file empty", ("edit", "{rid}", "--payload-file", "p.json"), "is not valid JSON: Expecting value",
      files={"p.json": b""}),
    C("payload file a folder", ("edit", "{rid}", "--payload-file", "p.json"), "cannot read payload file p.json",
      files={"p.json/": b""}),
    C("payload file missing", ("add", "{ds}", "--payload-file", "nope.json"), "payload file nope.json does not exist"),
    C("properties file missing", ("add", "{ds}", "--payload-file", "p.json", "--properties-file", "nope.json"),
      "properties file nope.json does not exist", files={"p.json": GOOD_PAYLOAD}),
    C("properties file a JSON string", ("add", "{ds}", "--payload-file", "p.json", "--properties-file", "q.json"),
      "must be a JSON object, got str", files={"p.json": GOOD_PAYLOAD, "q.json": b'"label=good"'}),
    C("judge file missing a field", ("judge", "{rid}", "--judge-file", "j.json"), "output is missing",
      files={"j.json": json.dumps({k: v for k, v in JUDGE.items() if k != "output"}).encode()}),
    C("judge file with a bad output type", ("judge", "{rid}", "--judge-file", "j.json"),
      "output.type must be CLASSIFICATION or REGRESSION, not 'SCORE'",
      files={"j.json": json.dumps({**JUDGE, "output": {"type": "SCORE"}}).encode()}),
    C("judge file not JSON", ("judge", "{rid}", "--judge-file", "j.json"), "judge file j.json is not valid JSON",
      files={"j.json": b"name: polite\n"}),
    C("merged file for resolve missing", ("resolve", "{rid}", "--file", "m.json"), "merged file m.json does not exist"),
    # -- arguments ------------------------------------------------------------------------------
    C("KEY=VALUE without '='", ("set", "{rid}", "label"), "'label' is not KEY=VALUE"),
    C("KEY=VALUE without a key", ("set", "{rid}", "=good"), "'=good' is not KEY=VALUE"),
    C("KEY=VALUE not UTF-8", ("set", "{rid}", b"label=\xff"), "not valid Unicode"),
    C("unset a property the record lacks", ("unset", "{rid}", "no_such_key"), "has no property no_such_key"),
    C("set on an unknown record", ("set", "{unknown}", "label=good"), "{unknown} is not in the store"),
    C("rm of a known and an unknown record", ("rm", "{rid}", "{unknown}"), "{unknown} is not in the store"),
    C("rm of a malformed id", ("rm", "{rid}", "rec_0001"), "'rec_0001' is not a valid record id"),
    C("revert a record without changes", ("revert", "{rid}"), "has no local changes"),
    C("judge an unknown record", ("judge", "{unknown}", "--judge-file", "j.json"), "{unknown} is not in the store",
      files={"j.json": json.dumps(JUDGE).encode()}),
    C("pull a malformed dataset id", ("pull", "support/../x"), "is not a valid dataset id"),
    C("records of a malformed dataset id", ("records", "--dataset", "5f0"), "'5f0' is not a valid dataset id"),
    C("records of a dataset prefix nothing starts with", ("records", "--dataset", "5f0c"),
      "no dataset id in the store starts with '5f0c'"),
    C("show a record prefix nothing starts with", ("show", "0bad"), "no record id in the store starts with '0bad'"),
    C("add to a malformed dataset id", ("add", "not a dataset", "--payload-file", "p.json"),
      "is not a valid dataset id", files={"p.json": GOOD_PAYLOAD}),
    C("add to a dataset never pulled", ("add", "{unknown}", "--payload-file", "p.json"),
      "run `localstore pull {unknown}` first", files={"p.json": GOOD_PAYLOAD}),
    C("judge --where empty", ("judge", "--where", " ", "--judge-file", "j.json"), "--where is empty",
      files={"j.json": json.dumps(JUDGE).encode()}),
    C("judge --where smuggling a statement", ("judge", "--where", "1); delete from mirror; --", "--judge-file", "j.json"),
      "one statement at a time", files={"j.json": json.dumps(JUDGE).encode()}),
    C("judge ids and --where", ("judge", "{rid}", "--where", "1", "--judge-file", "j.json"), "not both",
      files={"j.json": json.dumps(JUDGE).encode()}),
    C("resolve without a choice", ("resolve", "{rid}"), "give exactly one of --ours, --theirs, --edit or --file"),
    C("resolve --ours --theirs", ("resolve", "{rid}", "--ours", "--theirs"), "give exactly one of --ours, --theirs"),
    C("resolve --theirs --file", ("resolve", "{rid}", "--theirs", "--file", "m.json"), "give exactly one of",
      files={"m.json": b"{}"}),
    C("resolve a record without a conflict", ("resolve", "{rid}", "--ours"), "has no open conflict"),
    C("sql with two statements", ("sql", "select 1; select 2"), "one statement at a time"),
    C("sql syntax error", ("sql", "selec count(*) from records"), 'near "selec": syntax error'),
    C("sql --json --csv", ("sql", "--json", "--csv", "select 1"), "give --json or --csv, not both"),
    C("sql empty", ("sql", "   "), "the query is empty"),
    C("sql not UTF-8", ("sql", b"select '\xff'"), "not UTF-8"),
    C("sql VACUUM INTO behind a comment", ("sql", "/* x */ VACUUM INTO 'copy.db'"), "read-only unless you pass --write"),
    C("sql --write that fails", ("sql", "--write", "update records_typo set x = 1"), "no such table: records_typo"),
    C("edit with $EDITOR missing", ("edit", "{rid}"), "Editing failed", env={"EDITOR": "{tmp}/no-such-editor"}),
    C("edit with $EDITOR writing garbage", ("edit", "{rid}"), "nothing was queued",
      env={"EDITOR": "{tmp}/ed.sh"}, files={"ed.sh": EDITOR_WRITES_GARBAGE}),
    C("checkout under a file", ("checkout", "{tmp}/afile/co"), "cannot create the folder", files={"afile": b"x"}),
    C("watch a folder that is not a checkout", ("watch", "{tmp}/plain"), "is not a checkout", files={"plain/": b""}),
    # -- click usage errors (exit 2) --------------------------------------------------------------
    C("pull --concurrency 0", ("pull", "--concurrency", "0", "{ds}"), "0 is not in the range 1<=x<=32", code=2),
    C("sync --concurrency 0", ("sync", "--concurrency", "0"), "0 is not in the range 1<=x<=32", code=2),
    C("records --limit -1", ("records", "--limit", "-1"), "-1 is not in the range x>=0", code=2),
    C("an unknown command", ("pul", "{ds}"), "No such command 'pul'", code=2),
    C("an unknown option", ("records", "--datset", "{ds}"), "No such option '--datset'", code=2),
    C("checkout into a file", ("checkout", "{tmp}/afile"), "is a file", code=2, files={"afile": b"x"}),
    C("--db a directory", ("status",), "is a directory", code=2, store=_a_directory),
    C("LOCALSTORE_DB a directory", ("status",), "is a directory", code=2, store=_a_directory,
      db=None, env={"LOCALSTORE_DB": "{tmp}/store.db"}),
    # -- the store file -------------------------------------------------------------------------
    C("--db under a regular file", ("status",), "afile is not a directory", files={"afile": b"x"},
      db="{tmp}/afile/store.db"),
    C("--db where nothing may be created", ("status",), "cannot create the store", db="/proc/localstore.db"),
    C("--db in a folder that does not exist", ("status",), "the folder {tmp}/nope does not exist",
      db="{tmp}/nope/store.db"),
    C("LOCALSTORE_DB in a folder that does not exist", ("status",), "the folder {tmp}/nope does not exist",
      db=None, env={"LOCALSTORE_DB": "{tmp}/nope/store.db"}),
    C("negative user_version", ("records",), "unknown schema version -1", store=_user_version(-1)),
    C("user_version far in the future", ("sql", "select 1"), "upgrade localstore", store=_user_version(2**31 - 1)),
    C("SQLite header, then noise", ("records",), "is not a localstore file", store=_sqlite_header_then_noise),
    C("a store cut in half", ("status",), "is not a localstore file", store=_truncated),
    C("another program's SQLite file", ("records",), "an SQLite file but not a localstore store", store=_foreign_sqlite),
    # -- environment ------------------------------------------------------------------------------
    C("LOCALSTORE_SERVER_URL with another scheme", ("datasets", "--remote"), "malformed server URL 'ftp://",
      env={"LOCALSTORE_SERVER_URL": "ftp://api.mistral.ai"}),
    C("LOCALSTORE_SERVER_URL with a bad port", ("datasets", "--remote"), "malformed server URL",
      env={"LOCALSTORE_SERVER_URL": "https://api.mistral.ai:99999"}),
    C("LOCALSTORE_SERVER_URL with credentials", ("datasets", "--remote"), "must not carry credentials",
      env={"LOCALSTORE_SERVER_URL": "https://me:secret@api.mistral.ai"}),
    C("LOCALSTORE_SERVER_URL not a URL", ("pull", "{ds}"), "malformed server URL",
      env={"LOCALSTORE_SERVER_URL": "api mistral ai"}),
    C("MISTRAL_API_KEY with a carriage return", ("pull", "{ds}"), "spaces or control characters",
      env={"MISTRAL_API_KEY": "sk-0123456789\r"}),
    C("MISTRAL_API_KEY with a leading space", ("datasets", "--remote"), "spaces or control characters",
      env={"MISTRAL_API_KEY": " sk-0123456789"}),
    C("MISTRAL_API_KEY empty for sync", ("sync",), "MISTRAL_API_KEY is not set", env={"MISTRAL_API_KEY": ""}),
    C("MISTRAL_API_KEY blank for judge", ("judge", "{rid}", "--judge-file", "j.json"), "MISTRAL_API_KEY is not set",
      env={"MISTRAL_API_KEY": " \t "}, files={"j.json": json.dumps(JUDGE).encode()}),
]


def _ids(template: Template, tmp: Path) -> dict[str, str]:
    return {
        "ds": template.dataset_id,
        "rid": template.record_ids[0],
        "rid2": template.record_ids[1],
        "unknown": "0badc0de-0000-4000-8000-000000000001",
        "tmp": str(tmp),
    }


def fill(text: str, ids: Mapping[str, str]) -> str:
    for key, value in ids.items():
        text = text.replace("{" + key + "}", value)
    return text


def _write_files(tmp: Path, files: Mapping[str, bytes]) -> None:
    for name, data in files.items():
        path = tmp / name
        if name.endswith("/"):
            path.mkdir(parents=True)
            continue
        path.write_bytes(data)
        if name.endswith(".sh"):
            path.chmod(0o755)


def test_the_table_is_large_and_names_are_unique() -> None:
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(
    case: Case,
    template: Template,
    tmp_path: Path,
    emulator: EmulatorServer,
    api_key: str,
    fake: FakeApi,
) -> None:
    if case.db is not None and case.db.startswith("/proc/") and not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc, where no file can be created")
    ids = _ids(template, tmp_path)
    db = tmp_path / "store.db"
    shutil.copyfile(template.path, db)
    if case.store is not None:
        case.store(template.path, db)
    _write_files(tmp_path, case.files)
    env = base_env(emulator.url, api_key)
    # temporary files (a kept $EDITOR buffer) go beside tmp_path, not into /tmp
    env["TMPDIR"] = str(tmp_path.parent / f"{tmp_path.name}-tmpdir")
    Path(env["TMPDIR"]).mkdir()
    if case.server is not None:
        fake.route = route_for(case.server(template.dataset_id), template.dataset_id)
        env["LOCALSTORE_SERVER_URL"] = fake.url
    env.update({k: fill(v, ids) for k, v in case.env.items()})
    args = [fill(a, ids) if isinstance(a, str) else a for a in case.args]
    if case.db is not None:
        args = ["--db", fill(case.db, ids), *args]
    files_before, dump_before = snapshot(tmp_path), dump_checksum(db)

    result = localstore(*args, env=env, cwd=tmp_path)

    line = error_line(result, case.code)
    phrase = fill(case.phrase, ids)
    assert phrase.lower() in line.lower(), (phrase, line)
    assert snapshot(tmp_path) == files_before
    assert dump_checksum(db) == dump_before
    if case.server is not None:
        assert fake.requests, "the fake API was not asked"


# ------------------------------------------------------------------ accepted as they are


ACCEPTED: list[tuple[str, Callable[[str], Mapping[Any, Answer]], str, Any]] = [
    (
        "unknown source passes through",
        lambda ds: {1: page(ds, rec(ds, source="TELEMETRY_SPAN"))},
        "SELECT source FROM records",
        "TELEMETRY_SPAN",
    ),
    (
        "a zone offset is normalised to UTC",
        lambda ds: {1: page(ds, rec(ds, updated_at="2026-03-01T14:00:00+02:00"))},
        "SELECT updated_at FROM records",
        "2026-03-01T12:00:00.000000Z",
    ),
    (
        "fields the client does not know are ignored",
        lambda ds: {1: page(ds, {**rec(ds), "labels": ["new"], "version": 3})},
        "SELECT count(*) FROM records",
        1,
    ),
    (
        "no next link, but count says two pages",
        lambda ds: {
            1: page(ds, *[rec(ds, n) for n in range(100)], count=150),
            2: page(ds, *[rec(ds, n) for n in range(100, 150)], count=150),
        },
        "SELECT count(*) FROM records",
        150,
    ),
]


@pytest.mark.parametrize(
    ("answers", "query", "expected"),
    [a[1:] for a in ACCEPTED],
    ids=[a[0] for a in ACCEPTED],
)
def test_accepted_server_answers(
    answers: Callable[[str], Mapping[Any, Answer]],
    query: str,
    expected: Any,
    tmp_path: Path,
    fake: FakeApi,
    api_key: str,
) -> None:
    ds = str(uuid.uuid4())
    fake.route = route_for(answers(ds), ds)
    env = base_env(fake.url, api_key)
    db = tmp_path / "store.db"
    result = localstore("--db", str(db), "pull", ds, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "listing incomplete" not in result.stdout
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute(query).fetchall() == [(expected,)]


def test_a_payload_over_the_server_limit_is_queued_then_rejected_and_kept(
    template: Template, tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """> 1 MiB: valid JSON, so `add` and `edit` queue it; the server answers 422, sync
    marks both changes rejected with its message, exits 0, and the log keeps the bodies."""
    db = tmp_path / "store.db"
    shutil.copyfile(template.path, db)
    rid = template.record_ids[0]
    huge = {"messages": [{"role": "user", "content": "x" * (1100 * 1024)}]}
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    env = base_env(emulator.url, api_key)
    server_before = emulator.state.get_record(rid)

    added = localstore("--db", str(db), "add", template.dataset_id, "--payload-file", "huge.json", env=env, cwd=tmp_path)
    edited = localstore("--db", str(db), "edit", rid, "--payload-file", "huge.json", env=env, cwd=tmp_path)
    assert added.returncode == 0 and edited.returncode == 0, added.stderr + edited.stderr
    synced = localstore("--db", str(db), "sync", env=env, cwd=tmp_path)

    assert synced.returncode == 0, synced.stderr
    assert "rejected 2" in synced.stdout and synced.stderr == ""
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT kind, state, error, body FROM changes ORDER BY id").fetchall()
        assert [(kind, state) for kind, state, _, _ in rows] == [("create", "rejected"), ("payload", "rejected")]
        for _, _, error, body in rows:
            assert "1 MiB" in error
            assert huge in (json.loads(body), json.loads(body).get("payload"))
        shown = conn.execute("SELECT payload FROM records WHERE id = ?", (rid,)).fetchone()[0]
        assert json.loads(shown) == server_before["payload"]  # the record shows the remote value
    assert emulator.state.get_record(rid) == server_before
    assert len(emulator.state.list_records(template.dataset_id)) == TEMPLATE_RECORDS
    status = json.loads(localstore("--db", str(db), "status", "--json", env=env, cwd=tmp_path).stdout)
    assert (status["pending"], status["rejected"]) == (0, 2)

