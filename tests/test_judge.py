"""Live judging (issue #5): judge definitions checked locally, records chosen by id or by
SQL, verdicts stored as history in judgement_runs and queryable through `judgements`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from localstore.api import Client, RetryPolicy
from localstore.errors import NotFoundLocally, TransportError, UsageError
from localstore.ops import edits
from localstore.ops.judge import judge_records, select_records
from localstore.ops.judge_definition import load_judge_definition, validate_judge_definition
from localstore.ops.queries import run_sql
from localstore.store.db import Store
from localstore.sync.pull import pull
from localstore_emulator import EmulatorServer

pytestmark = pytest.mark.slow  # end-to-end (the CLI as subprocesses, drills): the full run has them, `-m 'not slow'` does not

FAST_RETRY = RetryPolicy(attempts=8, base_delay=0.01, max_delay=0.1)
OPTIONS = ["resolved", "escalate", "unclear"]
UNKNOWN = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
Mirrored = Callable[[int], tuple[Store, str]]
Invoke = Callable[..., tuple[int, str]]


def classification(**changes: Any) -> dict[str, Any]:
    options = [{"value": v, "description": f"the ticket is {v}"} for v in OPTIONS]
    return {
        "name": "support-outcome",
        "description": "Did the assistant resolve the ticket?",
        "model_name": "mistral-small-latest",
        "output": {"type": "CLASSIFICATION", "options": options},
        "instructions": "Read the conversation and say whether the ticket was resolved.",
        "tools": [],
        **changes,
    }


def regression(**output: Any) -> dict[str, Any]:
    fields = {"type": "REGRESSION", "min_description": "rude", "max_description": "very polite", **output}
    return classification(name="politeness-score", output=fields)


def output(**fields: Any) -> dict[str, Any]:
    return classification(output=fields)


@pytest.fixture
def client(emulator: EmulatorServer, api_key: str) -> Iterator[Client]:
    with Client(emulator.url, api_key, retry=FAST_RETRY) as c:
        yield c


@pytest.fixture
def mirrored(tmp_path: Path, client: Client, dataset: Callable[..., str]) -> Iterator[Mirrored]:
    """``mirrored(n) -> (store, dataset_id)``: a fresh store holding a fresh dataset of n."""
    stores: list[Store] = []

    def make(n: int) -> tuple[Store, str]:
        dataset_id = dataset(n)
        stores.append(Store.open(tmp_path / f"store-{len(stores)}.db"))
        pull(stores[-1], client, [dataset_id])
        return stores[-1], dataset_id

    yield make
    for store in stores:
        store.close()


def ids_of(store: Store) -> list[str]:
    return [r["id"] for r in store.query("SELECT id FROM records ORDER BY created_at, id")]


def runs(store: Store) -> int:
    return store.scalar("SELECT count(*) FROM judgement_runs")


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ------------------------------------------------------------------ definitions

BAD_DEFINITIONS = [
    (classification(name="abc"), "name must be 5 to 50 characters long, not 3"),
    (classification(name="x" * 51), "name must be 5 to 50 characters"),
    (classification(name=12345), "name must be a string, not int"),
    (classification(description="d" * 501), "description must be at most 500"),
    (classification(model_name="m" * 501), "model_name must be at most 500"),
    (classification(instructions="i" * 10_001), "instructions must be at most 10000"),
    (classification(tools="web_search"), "tools must be a list of strings"),
    (classification(tools=["ok", 3]), "tools[1] must be a string"),
    (classification(output=[]), "output must be an object"),
    (output(options=[]), "output.type is missing"),
    (output(type="RANKING"), "output.type must be CLASSIFICATION or REGRESSION"),
    (output(type="CLASSIFICATION"), "output.options is missing"),
    (output(type="CLASSIFICATION", options=[]), "output.options is empty"),
    (output(type="CLASSIFICATION", options=["yes"]), "output.options[0] must be an object"),
    (output(type="CLASSIFICATION", options=[{"value": "a"}]), "output.options[0].description is missing"),
    (output(type="CLASSIFICATION", options=[{"value": 1, "description": "d"}]), "options[0].value must be a string"),
    (output(type="REGRESSION", max_description="hi"), "output.min_description is missing"),
    (regression(min_description=None), "output.min_description must be a string"),
    (regression(min=-1), "output.min must be >= 0"),
    (regression(max=1e9), "output.max must be < 1e9"),
    (regression(min="0"), "output.min must be a number"),
    (regression(max=True), "output.max must be a number"),
    (regression(min=5, max=2), "output.min (5) must not exceed output.max (2)"),
]


@pytest.mark.parametrize(("definition", "message"), BAD_DEFINITIONS)
def test_bad_definition_is_one_line_naming_the_field(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as info:
        load_judge_definition(definition)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("missing", ["name", "description", "model_name", "output", "instructions", "tools"])
def test_missing_required_field(missing: str) -> None:
    judge = classification()
    del judge[missing]
    with pytest.raises(UsageError, match=f"{missing} is missing"):
        load_judge_definition(judge)
    with pytest.raises(UsageError, match="must be a JSON object"):
        validate_judge_definition([judge])


def test_definition_files(tmp_path: Path) -> None:
    good = tmp_path / "judge.json"
    good.write_text(json.dumps(regression(min=0, max=10)))
    assert load_judge_definition(good)["output"]["max"] == 10
    assert load_judge_definition(str(good)) == load_judge_definition(regression(min=0, max=10))
    assert load_judge_definition(regression())["output"] == regression()["output"]  # min/max default
    (tmp_path / "broken.json").write_text('{"name": ')
    (tmp_path / "list.json").write_text("[]")
    for path, message in [
        (tmp_path / "nope.json", "does not exist"),
        (tmp_path / "broken.json", "is not valid JSON"),
        (tmp_path / "list.json", "must be a JSON object"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(UsageError, match=message):
            load_judge_definition(path)


# ------------------------------------------------------------------ choosing records


def test_select_by_ids_and_by_where(mirrored: Mirrored) -> None:
    store, _ = mirrored(20)
    ids = ids_of(store)
    assert select_records(store, [ids[3].upper(), ids[1], ids[3]]) == [ids[3], ids[1]]
    sql = "SELECT id FROM records WHERE json_extract(properties, '$.label') = 'escalated'"
    escalated = {r["id"] for r in store.query(sql)}
    assert escalated  # the seed draws every label
    chosen = select_records(store, where="json_extract(properties,'$.label')='escalated' -- a comment")
    assert set(chosen) == escalated
    with pytest.raises(NotFoundLocally, match="localstore fetch"):
        select_records(store, [ids[0], UNKNOWN])
    with pytest.raises(UsageError, match="not a valid record id"):
        select_records(store, ["nope"])
    with pytest.raises(UsageError, match="one of the two"):
        select_records(store, [ids[0]], where="1")


@pytest.mark.parametrize(
    "condition", ["no_such_column = 1", "((", "1); DELETE FROM mirror; --", "1) UNION SELECT 1; DROP TABLE mirror --", " "]
)
def test_bad_where_is_one_line_and_changes_nothing(mirrored: Mirrored, condition: str) -> None:
    store, _ = mirrored(3)
    with pytest.raises(UsageError) as info:
        select_records(store, where=condition)
    assert "--where" in str(info.value) and "\n" not in str(info.value)
    assert store.scalar("SELECT count(*) FROM mirror") == 3


# ------------------------------------------------------------------ judging


def test_judge_by_ids_stores_verdicts(mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(10)
    ids = ids_of(store)[:4]
    report = judge_records(store, client, classification(), ids, concurrency=2)
    assert (report.succeeded, report.failed, report.skipped, report.exit_code) == (4, [], [], 0)
    rows = store.query(
        "SELECT j.*, m.updated_at AS remote FROM judgement_runs AS j JOIN mirror AS m ON m.id = j.record_id"
    )
    assert sorted(r["record_id"] for r in rows) == sorted(ids)
    for row in rows:
        assert (row["judge_name"], row["model_name"]) == ("support-outcome", "mistral-small-latest")
        assert row["answer"] in OPTIONS and "support-outcome" in row["analysis"]
        assert row["judged_at"].endswith("Z")
        assert row["record_updated_at"] == row["remote"]
    assert sum(report.answers.values()) == 4


def test_verdicts_queryable_by_where(mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(30)
    ids = select_records(store, where="json_extract(properties,'$.label')='escalated'")
    assert judge_records(store, client, classification(), ids, concurrency=4).succeeded == len(ids)
    result = run_sql(store, "select answer, count(*) from judgements group by answer")
    assert {answer for answer, _ in result.rows} <= set(OPTIONS)
    assert sum(n for _, n in result.rows) == len(ids)
    joined = run_sql(
        store,
        """select count(*) from judgements j join records r on r.id = j.record_id
           where json_extract(r.properties, '$.label') = 'escalated'""",
    )
    assert joined.rows[0][0] == len(ids)


def test_history_is_kept_across_runs(mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(2)
    rid = ids_of(store)[0]
    judge_records(store, client, classification(), [rid])
    judge_records(store, client, classification(), [rid])
    judge_records(store, client, regression(min=1, max=5), [rid])  # another judge: its own latest
    assert store.scalar("SELECT count(*) FROM judgement_runs WHERE judge_name = 'support-outcome'") == 2
    assert store.scalar("SELECT count(*) FROM judgements WHERE judge_name = 'support-outcome'") == 1
    latest = store.query("SELECT judge_name FROM judgements WHERE record_id = ? ORDER BY 1", (rid,))
    assert [r["judge_name"] for r in latest] == ["politeness-score", "support-outcome"]
    newest = store.scalar("SELECT max(id) FROM judgement_runs WHERE judge_name = 'support-outcome'")
    assert store.scalar("SELECT judged_at FROM judgements WHERE judge_name = 'support-outcome'") == store.scalar(
        "SELECT judged_at FROM judgement_runs WHERE id = ?", (newest,)
    )
    number = store.query("SELECT answer, typeof(answer) AS t FROM judgements WHERE judge_name = 'politeness-score'")
    assert number[0]["t"] in ("integer", "real") and 1 <= number[0]["answer"] <= 5


def test_numeric_looking_classification_answers_stay_text(mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(1)
    judge_records(store, client, output(type="CLASSIFICATION", options=[{"value": "01", "description": "one"}]), ids_of(store))
    assert store.query("SELECT answer, typeof(answer) AS t FROM judgements") == [{"answer": "01", "t": "text"}]


def test_stale_records_are_skipped_unless_allowed(mirrored: Mirrored, client: Client) -> None:
    store, dataset_id = mirrored(4)
    edited, conflicted, clean, _ = ids_of(store)
    edits.set_properties(store, edited, {"label": "mine"})
    edits.set_properties(store, conflicted, {"label": "mine"})
    store.conn.execute("UPDATE working SET state = 'conflict' WHERE record_id = ?", (conflicted,))
    created = edits.add_record(store, dataset_id, {"messages": []})
    chosen = [edited, conflicted, clean, created]

    report = judge_records(store, client, classification(), chosen)
    skipped = {s["record_id"]: s["reason"] for s in report.skipped}
    assert report.succeeded == 1 and report.exit_code == 0
    assert set(skipped) == {edited, conflicted, created}
    assert "unpushed local edits" in skipped[edited] and "--allow-stale" in skipped[edited]
    assert "open conflict" in skipped[conflicted]
    assert "created offline" in skipped[created]

    report = judge_records(store, client, classification(), chosen, allow_stale=True)
    assert report.succeeded == 3
    assert [s["record_id"] for s in report.skipped] == [created]  # never on the server yet
    stored = store.query(
        "SELECT j.record_updated_at, m.updated_at FROM judgements AS j JOIN mirror AS m ON m.id = j.record_id "
        "WHERE j.record_id = ?",
        (edited,),
    )
    assert stored[0]["record_updated_at"] == stored[0]["updated_at"]  # the remote version was judged


def test_permanent_failure_is_reported_and_the_rest_stored(emulator: EmulatorServer, mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(6)
    ids = ids_of(store)
    emulator.state.delete_record(ids[2])
    report = judge_records(store, client, classification(), ids, concurrency=3)
    assert report.succeeded == 5 and report.exit_code == 1 and report.stopped is None
    assert [f["record_id"] for f in report.failed] == [ids[2]]
    assert "404" in report.failed[0]["error"]
    assert store.scalar("SELECT count(*) FROM judgements") == 5
    assert store.scalar("SELECT count(*) FROM judgements WHERE record_id = ?", (ids[2],)) == 0


def test_transient_failures_still_give_every_verdict(emulator: EmulatorServer, mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(60)
    emulator.configure(fail_rate=0.1, seed=5)
    try:
        report = judge_records(store, client, classification(), ids_of(store), concurrency=8)
    finally:
        emulator.configure(fail_rate=0)
    assert (report.succeeded, report.failed, runs(store)) == (60, [], 60)


def test_offline_is_one_line_and_stores_nothing(mirrored: Mirrored, api_key: str) -> None:
    store, _ = mirrored(5)
    retry = RetryPolicy(attempts=2, base_delay=0.01)
    with Client(closed_port_url(), api_key, retry=retry) as offline, pytest.raises(TransportError) as info:
        judge_records(store, offline, classification(), ids_of(store), concurrency=2)
    assert "cannot reach" in str(info.value) and "nothing was judged" in str(info.value)
    assert "\n" not in str(info.value) and runs(store) == 0
    with pytest.raises(UsageError, match="concurrency"):
        judge_records(store, offline, classification(), ids_of(store), concurrency=0)
    with pytest.raises(UsageError, match="name must be 5 to 50"):
        judge_records(store, offline, classification(name="abc"), ids_of(store))


def test_server_lost_mid_batch_keeps_verdicts_and_stops(mirrored: Mirrored, api_key: str) -> None:
    store, _ = mirrored(12)
    answered: list[str] = []
    mirror = {r["id"]: r for r in store.query("SELECT * FROM mirror")}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # each record is read before it is judged
            row = mirror[request.url.path.rsplit("/", 1)[-1]]
            body = {k: row[k] for k in ("id", "dataset_id", "created_at", "updated_at", "deleted_at", "source")}
            return httpx.Response(200, json={**body, "payload": json.loads(row["payload"]),
                                             "properties": json.loads(row["properties"])})
        if len(answered) >= 3:
            raise httpx.ConnectError("connection refused", request=request)
        answered.append(request.url.path)
        return httpx.Response(200, json={"answer": "resolved", "analysis": "fine"})

    transport = httpx.MockTransport(handler)
    with Client("http://127.0.0.1:9", api_key, retry=RetryPolicy.never(), transport=transport) as lost:
        report = judge_records(store, lost, classification(), ids_of(store), concurrency=1)
    assert report.succeeded == 3 and report.stopped and "cannot reach" in report.stopped
    assert (len(report.failed), len(report.not_judged), report.to_dict()["failed"]) == (1, 8, 9)
    assert report.exit_code == 1 and runs(store) == 3


def test_crash_mid_batch_keeps_what_completed(mirrored: Mirrored, client: Client) -> None:
    store, _ = mirrored(40)

    def progress(phase: str, done: int, total: int | None) -> None:
        if done == 25:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        judge_records(store, client, classification(), ids_of(store), concurrency=4, progress=progress)
    assert runs(store) == 25


# ------------------------------------------------------------------ the command


@pytest.fixture
def judge_file(tmp_path: Path) -> Path:
    path = tmp_path / "judge.json"
    path.write_text(json.dumps(classification()))
    return path


@pytest.fixture
def ls(emulator: EmulatorServer, api_key: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``ls(db, *args)``: `localstore ARGS` as a subprocess against the session emulator."""

    def run(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "MISTRAL_API_KEY": api_key, "LOCALSTORE_DB": str(db), "LOCALSTORE_SERVER_URL": emulator.url}
        argv = [sys.executable, "-c", "from localstore.cli import main; main()", *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=240)

    return run


def judge_calls(emulator: EmulatorServer) -> int:
    counts = emulator.state.request_counts.items()
    return sum(n for (_, path), n in counts if path.endswith("/live-judging"))


def test_cli_acceptance_500_records(
    emulator: EmulatorServer, dataset: Callable[..., str], tmp_path: Path, judge_file: Path, ls: Any
) -> None:
    dataset_id = dataset(500)
    for name, fail_rate in (("clean", 0.0), ("flaky", 0.1)):
        db = tmp_path / f"{name}.db"
        assert ls(db, "pull", dataset_id).returncode == 0
        before = judge_calls(emulator)
        emulator.configure(fail_rate=fail_rate, seed=11)
        try:
            where = f"dataset_id = '{dataset_id}'"
            judged = ls(db, "judge", "--where", where, "--judge-file", str(judge_file), "--concurrency", "8")
        finally:
            emulator.configure(fail_rate=0)
        assert judged.returncode == 0, judged.stderr
        assert "500 succeeded, 0 failed, 0 skipped" in judged.stdout
        calls = judge_calls(emulator) - before
        assert calls == 500 if fail_rate == 0 else calls > 500  # the flaky run did retry
        answers = ls(db, "sql", "--json", "select answer, count(*) as n from judgements group by answer")
        rows = json.loads(answers.stdout)
        assert {r["answer"] for r in rows} <= set(OPTIONS)
        assert sum(r["n"] for r in rows) == 500
        assert json.loads(ls(db, "sql", "--json", "select count(*) as n from judgement_runs").stdout) == [{"n": 500}]


def test_cli_failure_is_named_with_exit_1(emulator: EmulatorServer, mirrored: Mirrored, judge_file: Path, ls: Any) -> None:
    store, _ = mirrored(3)
    ids = ids_of(store)
    emulator.state.delete_record(ids[0])
    result = ls(store.path, "judge", *ids, "--judge-file", str(judge_file))
    assert result.returncode == 1
    assert "2 succeeded, 1 failed, 0 skipped" in result.stdout
    assert f"failed {ids[0]}: server answered 404" in result.stdout
    as_json = ls(store.path, "judge", *ids, "--judge-file", str(judge_file), "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and (report["succeeded"], report["failed"]) == (2, 1)
    assert report["failures"][0]["record_id"] == ids[0]


def test_cli_stale_warning_and_allow_stale(mirrored: Mirrored, judge_file: Path, ls: Any) -> None:
    store, _ = mirrored(2)
    rid = ids_of(store)[0]
    edits.set_properties(store, rid, {"label": "mine"})
    skipped = ls(store.path, "judge", rid, "--judge-file", str(judge_file))
    assert skipped.returncode == 0 and "0 succeeded, 0 failed, 1 skipped" in skipped.stdout
    assert f"warning: skipped {rid}" in skipped.stderr and "--allow-stale" in skipped.stderr
    allowed = ls(store.path, "judge", rid, "--judge-file", str(judge_file), "--allow-stale")
    assert allowed.returncode == 0 and "1 succeeded" in allowed.stdout


def test_cli_judges_the_servers_version_of_a_record_changed_since_the_pull(
    mirrored: Mirrored, judge_file: Path, ls: Any, emulator: EmulatorServer, api_key: str
) -> None:
    """Issue 16, 7: a verdict is filed under the version the server judged."""
    from mistralai.client import Mistral

    store, _ = mirrored(2)
    changed, same = ids_of(store)
    pulled_at = store.scalar("SELECT updated_at FROM mirror WHERE id = ?", (changed,))
    with Mistral(api_key=api_key, server_url=emulator.url) as sdk:  # a teammate, after our pull
        sdk.beta.observability.datasets.records.update_properties(
            dataset_record_id=changed, properties={"label": "relabelled by a teammate"}
        )
    done = ls(store.path, "judge", changed, same, "--judge-file", str(judge_file))
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"localstore: warning: {changed} changed on the server since the pull: its server version was "
        "judged, and the store now mirrors it"
    ]
    server = emulator.state.get_record(changed)
    rows = dict(store.conn.execute("SELECT record_id, record_updated_at FROM judgements").fetchall())
    mirror = dict(store.conn.execute("SELECT id, updated_at FROM mirror").fetchall())
    assert rows[changed] == mirror[changed] != pulled_at  # filed under the judged version, now mirrored
    assert store.scalar("SELECT json_extract(properties, '$.label') FROM records WHERE id = ?", (changed,)) == (
        server["properties"]["label"]
    )
    assert rows[same] == mirror[same]


def test_cli_where_selecting_nothing_is_exit_0_and_a_bom_is_read(
    mirrored: Mirrored, judge_file: Path, ls: Any
) -> None:
    """Issue 16, 7: the README's incremental run, once everything is judged; a BOM."""
    store, _ = mirrored(2)
    judge_file.write_bytes(b"\xef\xbb\xbf" + judge_file.read_bytes())
    incremental = "id not in (select record_id from judgements where judge_name = 'support-outcome')"
    first = ls(store.path, "judge", "--where", incremental, "--judge-file", str(judge_file))
    assert first.returncode == 0 and "2 succeeded" in first.stdout, first.stderr
    again = ls(store.path, "judge", "--where", incremental, "--judge-file", str(judge_file))
    assert (again.returncode, again.stdout, again.stderr) == (0, "no record matches --where: nothing to judge\n", "")
    as_json = ls(store.path, "judge", "--where", incremental, "--judge-file", str(judge_file), "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["selected"] == 0


@pytest.fixture
def invoke(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, api_key: str) -> Invoke:
    """``invoke(db, url, *args) -> (exit code, stdout + stderr)``: in-process, through main."""
    from localstore.cli import main

    def run(db: Path, url: str, *args: str) -> tuple[int, str]:
        for name, value in (("MISTRAL_API_KEY", api_key), ("LOCALSTORE_DB", str(db)), ("LOCALSTORE_SERVER_URL", url)):
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        out, err = capsys.readouterr()
        return int(exited.value.code or 0), out + err

    return run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--where", "1", "--judge-file", "MISSING"], "does not exist"),
        (["--where", "no_such_column", "--judge-file", "JUDGE"], "bad --where condition: SQL error: no such column"),
        (["--judge-file", "JUDGE"], "give RECORD_IDs or --where"),
        ([UNKNOWN, "--where", "1", "--judge-file", "JUDGE"], "not both"),
        ([UNKNOWN, "--judge-file", "JUDGE"], "is not in the store"),
    ],
)
def test_cli_usage_errors_are_one_line_before_any_call(
    tmp_path: Path, invoke: Invoke, judge_file: Path, args: list[str], message: str
) -> None:
    argv = [a.replace("MISSING", str(tmp_path / "missing.json")).replace("JUDGE", str(judge_file)) for a in args]
    code, output = invoke(tmp_path / "s.db", closed_port_url(), "judge", *argv)
    assert code == 1 and message in output and len(output.strip().splitlines()) == 1


def test_cli_offline_message(
    mirrored: Mirrored, invoke: Invoke, api_key: str, judge_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from localstore.cli import app as cli_module

    store, _ = mirrored(3)
    url = closed_port_url()
    fast = RetryPolicy(attempts=2, base_delay=0.01)
    monkeypatch.setattr(cli_module.Context, "client", lambda self: Client(url, api_key, retry=fast))
    code, output = invoke(store.path, url, "judge", "--where", "1", "--judge-file", str(judge_file))
    lines = output.strip().splitlines()
    assert code == 1 and len(lines) == 1
    assert "cannot reach" in lines[0] and "nothing was judged" in lines[0]
    assert runs(store) == 0

