"""Every valid form of a server timestamp is read on one fast path and stored in the one
canonical µs form; the emulator writes each form it offers."""

from __future__ import annotations

import re
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localstore.api import Client
from localstore.api._decode import Reader, record_fast
from localstore.core import timestamps as timeutil
from localstore.core.timestamps import fast_ts, format_ts, normalize_ts, parse_ts
from localstore.errors import ProtocolError
from localstore_emulator import EmulatorServer, EmulatorState
from localstore_emulator.clock import Clock

FORMS = {
    "ms": "2025-10-07T20:56:01.974Z",  # the API reference's example
    "us": "2025-10-07T20:56:01.974000Z",
    "offset": "2025-10-07T20:56:01.974000+00:00",
}
CANONICAL = "2025-10-07T20:56:01.974000Z"


def record_body(created: str, updated: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "dataset_id": str(uuid.uuid4()),
        "created_at": created,
        "updated_at": updated,
        "deleted_at": None,
        "source": "DIRECT_INPUT",
        "payload": {"messages": []},
        "properties": {},
    }


@pytest.fixture
def no_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full parser is off limits: a timestamp that needs it fails the test."""

    def refuse(value: object, *, field: str = "timestamp") -> datetime:
        raise AssertionError(f"{field}={value!r} took the slow path")

    monkeypatch.setattr(timeutil, "parse_ts", refuse)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_is_read_on_the_fast_path(form: str, no_slow_path: None) -> None:
    stamp = FORMS[form]
    body = record_body(stamp, stamp)
    fast = record_fast(body)
    assert fast is not None, f"the {form} form fell off the fast path"
    assert (fast.created_at, fast.updated_at) == (CANONICAL, CANONICAL)
    assert Reader("test").record(body, "record").updated_at == CANONICAL
    assert normalize_ts(stamp) == CANONICAL
    with pytest.raises(AssertionError, match="slow path"):  # the fixture does refuse it
        normalize_ts("2025-10-07T22:56:01.974+02:00")


def test_other_offsets_and_leap_days_take_the_full_parser_and_agree() -> None:
    assert fast_ts("2025-10-07T22:56:01.974+02:00") is None
    assert normalize_ts("2025-10-07T22:56:01.974+02:00") == CANONICAL
    assert record_fast(record_body("2025-10-07T22:56:01.974+02:00", CANONICAL)) is None
    assert fast_ts("2024-02-29T00:00:00Z") is None
    assert normalize_ts("2024-02-29T00:00:00Z") == "2024-02-29T00:00:00.000000Z"
    for bad in ("2025-02-29T00:00:00Z", "2025-04-31T00:00:00Z", "2025-13-01T00:00:00Z",
                "2025-10-07T24:00:00Z", "2025-10-07T20:56:01.974", "0000-01-01T00:00:00Z"):
        assert fast_ts(bad) is None, bad
        with pytest.raises(ProtocolError):
            normalize_ts(bad)


@pytest.fixture
def stamps_in(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    before = emulator.state.timestamp_format
    yield emulator
    emulator.state.timestamp_format = before


@pytest.mark.parametrize("form", sorted(FORMS))
def test_a_listing_in_each_form_is_read_without_the_full_parser(
    form: str, stamps_in: EmulatorServer, dataset: Any, api_key: str, no_slow_path: None
) -> None:
    emulator = stamps_in
    dataset_id = dataset(30)
    emulator.state.timestamp_format = form  # type: ignore[assignment]
    served = {r["id"]: r for r in emulator.state.list_records(dataset_id)}
    pattern = {"ms": r"\.\d{3}Z$", "us": r"\.\d{6}Z$", "offset": r"(\.\d{6})?\+00:00$"}[form]
    assert all(re.search(pattern, r["updated_at"]) for r in served.values())
    with Client(emulator.url, api_key) as client:
        page = client.list_records_page(dataset_id, 1, 100)
    assert len(page.records) == 30
    for record in page.records:
        assert record.updated_at == format_ts(datetime.fromisoformat(served[record.id]["updated_at"]))
        assert record.created_at.endswith("Z") and len(record.created_at) == 27


utc_moments = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31, 23, 59, 59), timezones=st.just(UTC)
)


@given(utc_moments)
def test_the_three_renderings_of_an_instant_normalise_alike(moment: datetime) -> None:
    at_ms = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    renderings = [
        at_ms.isoformat(timespec="milliseconds").replace("+00:00", "Z"),  # ms, Z
        at_ms.isoformat(timespec="microseconds").replace("+00:00", "Z"),  # µs, Z
        at_ms.isoformat(),  # Python's own: µs (none when zero), +00:00
    ]
    normalised = {normalize_ts(r) for r in renderings}
    assert normalised == {format_ts(at_ms)}
    assert all(fast_ts(r) is not None or at_ms.strftime("%m-%d") == "02-29" for r in renderings)
    assert len({parse_ts(r) for r in renderings}) == 1
    # the emulator renders its clock's stamps the same way
    internal = format_ts(moment)
    assert {normalize_ts(Clock(form).render(internal)) for form in ("us", "offset")} == {internal}  # type: ignore[arg-type]
    assert normalize_ts(Clock("ms").render(internal)) == format_ts(at_ms)


@given(utc_moments, st.integers(min_value=-14 * 60, max_value=14 * 60))
def test_any_offset_normalises_to_the_same_utc_instant(moment: datetime, minutes: int) -> None:
    text = moment.astimezone(timezone(timedelta(minutes=minutes))).isoformat()
    assert normalize_ts(text) == format_ts(moment)


@given(st.from_regex(r"\A\d{4}-[01]\d-[0-3]\dT[0-2]\d:[0-5]\d:[0-6]\d(\.\d{1,9})?(Z|\+00:00)\Z"))
def test_the_fast_path_accepts_only_what_the_parser_accepts(text: str) -> None:
    fast = fast_ts(text)
    try:
        slow = format_ts(datetime.fromisoformat(text))
    except ValueError:
        assert fast is None, text
        return
    assert fast is None or fast == slow


# ---- the emulator's forms -----------------------------------------------------------


def test_the_emulator_writes_the_documented_ms_form_by_default() -> None:
    state = EmulatorState()
    dataset = state.create_dataset("stamps set")
    record = state.create_record(dataset["id"], {"a": 1})
    for stamp in (dataset["created_at"], record["created_at"], record["updated_at"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", stamp), stamp
    task = state.import_from_dataset(dataset["id"], [record["id"]])
    assert re.fullmatch(r".*\.\d{3}Z", task["created_at"])


@pytest.mark.parametrize("stored_form", ["ms", "us", "offset"])
def test_a_state_file_reloads_whatever_form_it_holds(tmp_path: Any, stored_form: str) -> None:
    db = tmp_path / "emulator.sqlite"
    first = EmulatorState(db, timestamp_format="us")
    dataset_id = first.create_dataset("reloaded set")["id"]
    made = [first.create_record(dataset_id, {"n": n}) for n in range(3)]
    internal = {r["id"]: first._records[r["id"]].created_at for r in made}
    first.close()
    # a file holding the stamps in another form (as another writer might have left it)
    render = Clock(stored_form).render  # type: ignore[arg-type]
    with sqlite3.connect(db) as raw:
        rows = raw.execute("SELECT id, created_at, updated_at FROM records").fetchall()
        for rid, created, updated in rows:
            raw.execute(
                "UPDATE records SET created_at = ?, updated_at = ? WHERE id = ?",
                (render(created), render(updated), rid),
            )
    second = EmulatorState(db, timestamp_format="offset")
    reloaded = second.list_records(dataset_id)
    # the listing order survives, except among records the stored form no longer tells apart
    order = sorted(made, key=lambda r: (normalize_ts(render(internal[r["id"]])), r["id"]))
    assert [r["id"] for r in reloaded] == [r["id"] for r in order]
    if stored_form != "ms":
        assert order == made
    for before, after in zip(made, reloaded, strict=True):
        expected = before["updated_at"] if stored_form != "ms" else before["updated_at"][:23] + "Z"
        assert normalize_ts(after["updated_at"]) == normalize_ts(expected)
        assert after["updated_at"].endswith("+00:00")
    newer = second.create_record(dataset_id, {"n": 9})
    assert parse_ts(newer["created_at"]) > max(parse_ts(r["updated_at"]) for r in made)
    second.close()


def test_the_cli_emulator_command_takes_a_timestamp_format() -> None:
    from click.testing import CliRunner

    from localstore.cli import cli

    result = CliRunner().invoke(cli, ["emulator", "--help"])
    assert "--timestamp-format [ms|us|offset]" in result.output
    bad = CliRunner().invoke(cli, ["emulator", "--timestamp-format", "seconds"])
    assert bad.exit_code == 2 and "seconds" in bad.output


def test_a_known_dataset_id_only_spares_the_check_of_an_equal_one() -> None:
    """A page's records are read knowing the (checked) dataset id they should carry: one
    that equals it needs no second check; any other is still checked."""
    body = record_body(CANONICAL, CANONICAL)
    assert record_fast(body, body["dataset_id"]) == record_fast(body)
    assert record_fast(body, str(uuid.uuid4())) == record_fast(body)
    assert record_fast({**body, "dataset_id": "NOT-A-UUID"}, str(uuid.uuid4())) is None
