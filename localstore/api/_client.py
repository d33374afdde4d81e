"""A typed client for the Mistral observability datasets API (httpx, sync).

One ``Client`` holds one keep-alive connection pool and may be used from several
threads at once. Every endpoint of the spec has one method. Failures surface as
the ``localstore.errors`` hierarchy: ``TransportError`` (no usable answer after
the retries), ``HTTPStatusError`` subclasses (the server said no), and
``ProtocolError`` (the answer is not what the contract promises).

Retries: idempotent calls retry 408/429/500/502/503/504, connection errors,
timeouts and broken bodies. Calls that create things (``create_record``,
``create_dataset``, the imports) retry only when the request certainly did not
reach the server (429, connect errors, connect/pool timeouts); any other failure
is raised at once and ``outcome_unknown(exc)`` tells whether the server may
nevertheless have applied the request.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from localstore.api._decode import Reader, record_fast, short
from localstore.api._http import (
    API_KEY_ENV,
    DEFAULT_SERVER_URL,
    DEFAULT_TIMEOUT,
    SERVER_URL_ENV,
    HttpClient,
)
from localstore.api._models import Dataset, JudgeOutput, Record, RecordPage
from localstore.api._pagination import ListingIterator, check_next_link
from localstore.core.ids import parse_uuid
from localstore.errors import ProtocolError, UsageError

__all__ = ["API_KEY_ENV", "DEFAULT_SERVER_URL", "DEFAULT_TIMEOUT", "SERVER_URL_ENV", "Client"]

MAX_PAGE_SIZE = 100
BULK_DELETE_MAX = 500

DATASETS = "/v1/observability/datasets"
RECORDS = "/v1/observability/dataset-records"

_SLUG = re.compile(r"^[A-Za-z0-9_-]{1,200}$")


# -- the client ------------------------------------------------------------------


def _dataset_ref(value: str) -> str:
    """A dataset id (UUID, canonicalised) or a workspace-scoped slug."""
    text = str(value).strip()
    try:
        return parse_uuid(text, what="dataset id")
    except UsageError:
        if _SLUG.match(text):
            return text
        raise UsageError(
            f"{short(value, 60)} is not a valid dataset id: expected a UUID or a slug "
            "of letters, digits, '-' and '_'"
        ) from None


def _check_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


class Client(HttpClient):
    """The observability datasets API: one method per endpoint of the spec.
    Thread-safe; close it (or use ``with``)."""

    # -- datasets --------------------------------------------------------------------

    def list_datasets(self, q: str | None = None) -> list[Dataset]:
        """Every dataset of the account (all pages), optionally filtered by ``q``."""
        params: dict[str, Any] = {} if q is None else {"q": q}
        found: dict[str, Dataset] = {}
        for results, reader, field in self._walk(DATASETS, "datasets", params):
            for index, item in enumerate(results):
                try:
                    dataset = reader.dataset(item, f"{field}[{index}]")
                except ProtocolError as exc:
                    raise self._protocol(exc) from None
                found.setdefault(dataset.id, dataset)
        return list(found.values())

    def get_dataset(self, dataset_id: str) -> Dataset:
        ref = _dataset_ref(dataset_id)
        path = f"{DATASETS}/{ref}"
        dataset: Dataset = self._parse("GET", path, lambda body, r: r.dataset(body, ""))
        if _is_uuid(ref) and dataset.id != ref:
            raise ProtocolError(f"malformed answer to GET {path}: it holds dataset {dataset.id}")
        return dataset

    def create_dataset(self, name: str, description: str) -> Dataset:
        if not isinstance(name, str) or not 5 <= len(name) <= 50:
            raise UsageError(f"a dataset name must be 5 to 50 characters, not {short(name, 60)}")
        if not isinstance(description, str) or len(description) > 200:
            raise UsageError("a dataset description must be a string of at most 200 characters")
        return self._parse(
            "POST",
            DATASETS,
            lambda body, r: r.dataset(body, ""),
            body={"name": name, "description": description},
            idempotent=False,
            creates="dataset",
        )

    def update_dataset(
        self, dataset_id: str, *, name: str | None = None, description: str | None = None
    ) -> Dataset:
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if description is not None:
            body["description"] = description
        path = f"{DATASETS}/{_dataset_ref(dataset_id)}"
        return self._parse("PATCH", path, lambda b, r: r.dataset(b, ""), body=body)

    def delete_dataset(self, dataset_id: str) -> None:
        self._send("DELETE", f"{DATASETS}/{_dataset_ref(dataset_id)}")

    # -- records ----------------------------------------------------------------------

    def list_records_page(
        self, dataset_id: str, page: int, page_size: int = MAX_PAGE_SIZE
    ) -> RecordPage:
        """One page of a dataset's records; ``next`` is checked, records must
        belong to the dataset."""
        ref = _dataset_ref(dataset_id)
        _check_page(page, page_size)
        path = f"{DATASETS}/{ref}/records"
        body, reader, response = self._json(
            "GET", path, params={"page": page, "page_size": page_size}
        )
        try:
            envelope, results, count = reader.paginated(body, "records")
            is_uuid = _is_uuid(ref)
            known = ref if is_uuid else None  # a record of this dataset needs no second check
            records = [
                record_fast(item, known) or reader.careful_record(item, f"records.results[{i}]")
                for i, item in enumerate(results)
            ]
            if len(records) > page_size:
                raise reader.fail(
                    "records.results", f"holds {len(records)} records, page_size is {page_size}"
                )
            for record in records:
                if is_uuid and record.dataset_id != ref:
                    raise ProtocolError(
                        f"page {page} of dataset {ref} holds record {record.id} "
                        f"of dataset {record.dataset_id}"
                    )
            check_next_link(envelope.get("next"), response.request.url, page)
        except ProtocolError as exc:
            raise self._protocol(exc) from None
        return RecordPage(
            page=page,
            page_size=page_size,
            count=count,
            records=records,
            next=envelope.get("next"),
            previous=envelope.get("previous"),
        )

    def iter_record_pages(
        self, dataset_id: str, *, page_size: int = MAX_PAGE_SIZE, concurrency: int = 8,
        track_ids: bool = True, on_idle: Callable[[], None] | None = None,
        prepare: Callable[[list[Record]], Any] | None = None,
    ) -> ListingIterator:
        """Every page of a dataset, fetched ``concurrency`` at a time and yielded as
        they arrive (not in page order). After exhaustion ``.listing`` says whether
        the listing is complete (``track_ids``: see ListingIterator). Raises if any
        page fails for good. ``on_idle`` runs (on the iterating thread) whenever it
        would otherwise wait for the next page. ``prepare`` runs on each page's records in
        the thread that fetched it (work taken off the iterating thread); what it returns
        is the page's ``prepared``."""
        ref = _dataset_ref(dataset_id)
        _check_page(1, page_size)
        if not isinstance(concurrency, int) or not 1 <= concurrency <= 64:
            raise UsageError(f"concurrency must be 1..64, not {concurrency!r}")

        def fetch(page: int) -> RecordPage:
            got = self.list_records_page(ref, page, page_size)
            return got if prepare is None else dataclasses.replace(got, prepared=prepare(got.records))

        return ListingIterator(
            fetch,
            ref,
            page_size=page_size,
            concurrency=concurrency,
            track_ids=track_ids,
            on_idle=on_idle,
        )

    def create_record(
        self, dataset_id: str, payload: dict[str, Any], properties: dict[str, Any] | None = None
    ) -> Record:
        """Not idempotent: retried only when the request certainly did not reach
        the server. On any other failure check ``outcome_unknown(exc)``."""
        body: dict[str, Any] = {"payload": _check_object(payload, "payload")}
        if properties is not None:
            body["properties"] = _check_object(properties, "properties")
        path = f"{DATASETS}/{_dataset_ref(dataset_id)}/records"
        return self._parse(
            "POST",
            path,
            lambda b, r: r.record(b, ""),
            body=body,
            idempotent=False,
            creates="record",
        )

    def get_record(self, record_id: str) -> Record:
        path = f"{RECORDS}/{parse_uuid(record_id)}"
        return self._parse("GET", path, lambda b, r: r.record(b, ""))

    def put_payload(self, record_id: str, payload: dict[str, Any]) -> None:
        """Replace the whole payload (204: the new updated_at is not returned)."""
        path = f"{RECORDS}/{parse_uuid(record_id)}/payload"
        self._send("PUT", path, body={"payload": _check_object(payload, "payload")})

    def put_properties(self, record_id: str, properties: dict[str, Any]) -> None:
        """Replace the whole properties map (204)."""
        path = f"{RECORDS}/{parse_uuid(record_id)}/properties"
        self._send("PUT", path, body={"properties": _check_object(properties, "properties")})

    def delete_record(self, record_id: str) -> None:
        """A retried delete that the server had already applied answers 404
        (NotFoundError): callers should treat 404 on delete as done."""
        self._send("DELETE", f"{RECORDS}/{parse_uuid(record_id)}")

    def bulk_delete(self, record_ids: Sequence[str]) -> None:
        if isinstance(record_ids, (str, bytes)):
            raise UsageError("bulk_delete takes a list of record ids, not one string")
        ids = [parse_uuid(i) for i in record_ids]
        if not 1 <= len(ids) <= BULK_DELETE_MAX:
            raise UsageError(f"bulk_delete takes 1 to {BULK_DELETE_MAX} record ids, not {len(ids)}")
        self._send("POST", f"{RECORDS}/bulk-delete", body={"dataset_record_ids": ids})

    def judge_record(self, record_id: str, judge_definition: dict[str, Any]) -> JudgeOutput:
        path = f"{RECORDS}/{parse_uuid(record_id)}/live-judging"
        body = {"judge_definition": _check_object(judge_definition, "judge_definition")}
        return self._parse("POST", path, _judge_output, body=body)

    # -- imports, exports, tasks ---------------------------------------------------------

    def import_from_campaign(self, dataset_id: str, campaign_id: str) -> dict[str, Any]:
        body = {"campaign_id": parse_uuid(campaign_id, what="campaign id")}
        return self._import(dataset_id, "from-campaign", body)

    def import_from_explorer(
        self, dataset_id: str, completion_event_ids: Sequence[str]
    ) -> dict[str, Any]:
        ids = _strings(completion_event_ids, "completion_event_ids", 0, 500)
        return self._import(dataset_id, "from-explorer", {"completion_event_ids": ids})

    def import_from_file(self, dataset_id: str, file_id: str) -> dict[str, Any]:
        if not isinstance(file_id, str) or not file_id.strip():
            raise UsageError("file_id must be a non-empty string")
        return self._import(dataset_id, "from-file", {"file_id": file_id})

    def import_from_playground(
        self, dataset_id: str, conversation_ids: Sequence[str]
    ) -> dict[str, Any]:
        ids = _strings(conversation_ids, "conversation_ids", 0, None)
        return self._import(dataset_id, "from-playground", {"conversation_ids": ids})

    def import_from_dataset(
        self, dataset_id: str, dataset_record_ids: Sequence[str]
    ) -> dict[str, Any]:
        ids = [parse_uuid(i) for i in _strings(dataset_record_ids, "dataset_record_ids", 1, 10000)]
        return self._import(dataset_id, "from-dataset", {"dataset_record_ids": ids})

    def _import(self, dataset_id: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        path = f"{DATASETS}/{_dataset_ref(dataset_id)}/imports/{kind}"
        return self._parse(
            "POST", path, lambda b, r: r.task(b, ""), body=body, idempotent=False, creates="import"
        )

    def list_tasks(self, dataset_id: str) -> list[dict[str, Any]]:
        """Every import task of the dataset (all pages)."""
        path = f"{DATASETS}/{_dataset_ref(dataset_id)}/tasks"
        tasks: dict[str, dict[str, Any]] = {}
        for results, reader, field in self._walk(path, "tasks", {}):
            for index, item in enumerate(results):
                try:
                    task = reader.task(item, f"{field}[{index}]")
                except ProtocolError as exc:
                    raise self._protocol(exc) from None
                tasks.setdefault(task["id"], task)
        return list(tasks.values())

    def get_task(self, dataset_id: str, task_id: str) -> dict[str, Any]:
        path = f"{DATASETS}/{_dataset_ref(dataset_id)}/tasks/{parse_uuid(task_id, what='task id')}"
        return self._parse("GET", path, lambda b, r: r.task(b, ""))

    def export_to_jsonl(self, dataset_id: str) -> str:
        """A presigned URL to a JSONL file of the dataset."""
        path = f"{DATASETS}/{_dataset_ref(dataset_id)}/exports/to-jsonl"
        return self._parse("GET", path, lambda b, r: r.string(r.obj(b, ""), "file_url", ""))

    def _walk(
        self, path: str, key: str, params: dict[str, Any]
    ) -> Iterator[tuple[list[Any], Reader, str]]:
        """Sequential pages of a small listing (datasets, tasks): yields
        (results, reader, field) until a short or empty page."""
        page, cap = 1, None
        while True:
            body, reader, response = self._json(
                "GET", path, params={**params, "page": page, "page_size": MAX_PAGE_SIZE}
            )
            try:
                envelope, results, count = reader.paginated(body, key)
                check_next_link(envelope.get("next"), response.request.url, page)
            except ProtocolError as exc:
                raise self._protocol(exc) from None
            yield results, reader, f"{key}.results"
            if cap is None:
                cap = math.ceil(count / MAX_PAGE_SIZE) + 1000
            if len(results) < MAX_PAGE_SIZE:
                return
            page += 1
            if page > cap:
                raise ProtocolError(f"{path} still had full pages after page {cap}: giving up")


def _is_uuid(value: str) -> bool:
    try:
        parse_uuid(value)
    except UsageError:
        return False
    return True


def _check_page(page: int, page_size: int) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise UsageError(f"page must be an int >= 1, not {page!r}")
    if (
        isinstance(page_size, bool)
        or not isinstance(page_size, int)
        or not 1 <= page_size <= MAX_PAGE_SIZE
    ):
        raise UsageError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size!r}")


def _strings(values: Sequence[str], what: str, low: int, high: int | None) -> list[str]:
    if isinstance(values, (str, bytes)) or not all(isinstance(v, str) for v in values):
        raise UsageError(f"{what} must be a list of strings")
    items = list(values)
    if len(items) < low or (high is not None and len(items) > high):
        raise UsageError(f"{what} takes {low} to {high or 'any number of'} ids, not {len(items)}")
    return items


def _judge_output(body: Any, reader: Reader) -> JudgeOutput:
    obj = reader.obj(body, "")
    answer = reader.get(obj, "answer", "")
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
        raise reader.fail("answer", f"is {short(answer, 40)}, expected a string or a number")
    if isinstance(answer, float) and not math.isfinite(answer):
        raise reader.fail("answer", "is not a finite number")
    return JudgeOutput(
        answer=answer if isinstance(answer, str) else float(answer),
        analysis=reader.string(obj, "analysis", ""),
    )
