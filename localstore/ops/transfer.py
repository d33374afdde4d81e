"""Datasets in and out as files: ``export`` (JSONL or CSV) and ``import`` (JSONL).

Export reads the ``records`` view (what the user sees now, pending edits applied) on a
read-only connection and streams: each JSONL line is spliced from the stored JSON text,
never parsed. Import streams too: each line is parsed, checked and handed to the change
log's owner (:func:`localstore.store.ledger.bulk.create_many`) as it is read, all in one
transaction — a bad line rolls the whole file back.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from localstore.core.ids import parse_uuid
from localstore.errors import NotFoundLocally, UsageError
from localstore.ops.edits import validate_object
from localstore.store.db import Store, connect_readonly
from localstore.store.jsontext import canonical, has_long_number, loads
from localstore.store.ledger import bulk as ledger_bulk
from localstore.store.ledger.bulk import Queued

Format = Literal["jsonl", "csv"]
Progress = Callable[[str, int, "int | None"], None]

EXPORT_COLUMNS = ("id", "dataset_id", "created_at", "updated_at", "payload", "properties")
_FETCH = 1000
_PROGRESS_EVERY = 2000  # lines

# keys of a line with a payload: what `export` writes, plus the other columns of `records`
LINE_KEYS = frozenset({
    "payload", "properties", "id", "dataset_id", "created_at", "updated_at", "deleted_at", "source",
    "sync_state",
})


# ------------------------------------------------------------------ export


def _known_datasets(conn: sqlite3.Connection, dataset_ids: Sequence[str]) -> list[str]:
    wanted = [parse_uuid(d, what="dataset id") for d in dataset_ids]
    for ds in wanted:
        if conn.execute("SELECT 1 FROM datasets WHERE id = ?", (ds,)).fetchone() is None:
            raise NotFoundLocally(f"dataset {ds} is not in the store; run `localstore pull {ds}` first")
    return list(dict.fromkeys(wanted))


def _export_query(dataset_ids: Sequence[str], where: str | None) -> tuple[str, list[Any]]:
    sql = f"SELECT {', '.join(EXPORT_COLUMNS)} FROM records"
    conditions: list[str] = []
    params: list[Any] = list(dataset_ids)
    if dataset_ids:
        conditions.append(f"dataset_id IN ({','.join('?' * len(dataset_ids))})")
    if where is not None:
        if not where.strip():
            raise UsageError("--where is empty: give an SQL condition on the records view")
        conditions.append(f"(\n{where}\n)")
    if conditions:
        sql += " WHERE " + " AND ".join(conditions)
    return sql + " ORDER BY dataset_id, created_at, id", params


def _jsonl_line(row: tuple[Any, ...]) -> str:
    rid, ds, created, updated, payload, properties = row
    head = orjson.dumps({"id": rid, "dataset_id": ds, "created_at": created, "updated_at": updated}).decode()
    return f'{head[:-1]},"payload":{payload},"properties":{properties}}}\n'


def export_records(
    store: Store,
    out: IO[str],
    dataset_ids: Sequence[str] = (),
    *,
    where: str | None = None,
    fmt: Format = "jsonl",
) -> int:
    """Write the records of ``dataset_ids`` (none: all) matching ``where`` to ``out``;
    returns how many. JSONL: one object per line, payload and properties as JSON values.
    CSV: a header, then payload and properties as JSON text."""
    conn = connect_readonly(store.path)
    try:
        datasets = _known_datasets(conn, dataset_ids)
        sql, params = _export_query(datasets, where)
        try:
            cursor = conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise UsageError(f"bad --where condition: SQL error: {exc}") from None
        writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_COLUMNS)
        count = 0
        while batch := cursor.fetchmany(_FETCH):
            if writer is not None:
                writer.writerows(["" if v is None else v for v in row] for row in batch)
            else:
                out.write("".join(_jsonl_line(row) for row in batch))
            count += len(batch)
        return count
    finally:
        conn.close()


@contextlib.contextmanager
def output_file(path: str | None) -> Iterator[IO[str]]:
    """stdout, or ``path`` written whole or not at all (a temporary file beside it,
    renamed when complete)."""
    if path is None or path == "-":
        yield sys.stdout
        return
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path} is a directory; give -o a file path")
    if not target.parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {target.parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ------------------------------------------------------------------ import


@dataclass
class ImportResult:
    dataset_id: str
    lines: int = 0  # lines holding a record
    skipped: int = 0  # --dedupe: equal to a record already in the dataset
    queued: Queued = field(default_factory=Queued)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id, "lines": self.lines, "skipped": self.skipped,
            "created": self.queued.records, "created_ids": list(self.queued.created_ids),
        }


class _LineError(Exception):
    pass


def parse_line(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(payload, properties) of one JSONL line, or _LineError with a message."""
    try:
        if has_long_number(raw):
            raise ValueError("the standard library parses long integers exactly")
        value = orjson.loads(raw)
        checked = True  # orjson refuses NaN, Infinity and lone surrogates itself
    except ValueError:
        try:
            value = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise _LineError("not UTF-8 text") from None
        except ValueError as exc:
            raise _LineError(f"not JSON: {getattr(exc, 'msg', exc)}") from None
        checked = False
    if not isinstance(value, dict):
        raise _LineError(f"expected a JSON object, got {_kind(value)}")
    if "payload" in value:
        extra = sorted(set(value) - LINE_KEYS)
        if extra:
            raise _LineError(
                f"unexpected key {extra[0]!r}: a line holds \"payload\" and \"properties\" "
                "(as `localstore export` writes them) or is a chat {\"messages\": […]}"
            )
        payload, properties = value["payload"], value.get("properties", {})
        for what, part in (("payload", payload), ("properties", properties)):
            if not isinstance(part, dict):
                raise _LineError(f"{what} must be a JSON object, got {_kind(part)}")
    elif "messages" in value:
        if not isinstance(value["messages"], list):
            raise _LineError(f"messages must be a list, got {_kind(value['messages'])}")
        payload, properties = value, {}
    else:
        raise _LineError(
            "expected {\"payload\": {…}, \"properties\": {…}} or a chat line {\"messages\": […]}"
        )
    if not checked:
        try:
            validate_object(payload, "payload")
            validate_object(properties, "properties")
        except UsageError as exc:
            raise _LineError(str(exc)) from None
    return payload, properties


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def _normal(value: Any) -> Any:
    """A value whose canonical text is equal for JSON-equal values (1.0 -> 1)."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _key(payload: Any, properties: Any) -> bytes:
    text = canonical([_normal(payload), _normal(properties)])
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _existing_keys(conn: sqlite3.Connection, dataset_id: str) -> set[bytes]:
    keys: set[bytes] = set()
    cursor = conn.execute("SELECT payload, properties FROM records WHERE dataset_id = ?", (dataset_id,))
    while batch := cursor.fetchmany(_FETCH):
        keys.update(_key(loads(p), loads(q)) for p, q in batch)
    return keys


def _lines(handle: IO[bytes]) -> Iterable[bytes]:
    return iter(handle.readline, b"")


def import_records(
    store: Store,
    dataset_id: str,
    source: str,
    *,
    dedupe: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Queue a create for each line of the JSONL file ``source`` ('-': stdin) in
    ``dataset_id``: lines with ``payload`` (and optional ``properties``; other columns
    of an export, such as ``id``, are ignored), or bare chat lines ``{"messages": […]}``
    (the whole line is the payload). One transaction: a bad line raises
    ``UsageError("FILE:LINE: …")`` and nothing is queued."""
    dataset_id = parse_uuid(dataset_id, what="dataset id")
    name = "<stdin>" if source == "-" else source
    result = ImportResult(dataset_id)
    with contextlib.ExitStack() as stack:
        if source == "-":
            handle: IO[bytes] = sys.stdin.buffer
            total = None
        else:
            try:
                handle = stack.enter_context(open(source, "rb"))
            except FileNotFoundError:
                raise UsageError(f"{source} does not exist") from None
            except IsADirectoryError:
                raise UsageError(f"{source} is a directory, not a JSONL file") from None
            except OSError as exc:
                raise UsageError(f"cannot read {source}: {exc.strerror}") from None
            total = os.fstat(handle.fileno()).st_size
        with store.transaction() as conn:
            if conn.execute("SELECT 1 FROM datasets WHERE id = ?", (dataset_id,)).fetchone() is None:
                raise NotFoundLocally(
                    f"dataset {dataset_id} is not in the store; run `localstore pull {dataset_id}` first"
                )
            seen = _existing_keys(conn, dataset_id) if dedupe else None

            def rows() -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
                done = 0
                for number, raw in enumerate(_lines(handle), start=1):
                    done += len(raw)
                    if progress is not None and number % _PROGRESS_EVERY == 0:
                        progress("importing (bytes)", done, total)
                    if not raw.strip():
                        continue
                    try:
                        payload, properties = parse_line(raw)
                    except _LineError as exc:
                        raise UsageError(f"{name}:{number}: {exc}; nothing was queued") from None
                    result.lines += 1
                    if seen is not None:
                        key = _key(payload, properties)
                        if key in seen:
                            result.skipped += 1
                            continue
                        seen.add(key)
                    yield dataset_id, payload, properties
                if progress is not None:
                    progress("importing (bytes)", done, total if total is not None else done)

            result.queued = ledger_bulk.create_many(conn, rows())
    return result
