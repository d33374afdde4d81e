"""Pull: mirror the server's records into the store — the ``pull`` and ``fetch`` commands
and ``pull_dataset``, which lists a dataset (localstore.sync.listing, the pipeline ``sync``
shares), confirms what the listing did not show and recognises lost creates.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from localstore.core.ids import parse_uuid
from localstore.errors import Interrupted, NotFoundError, UsageError
from localstore.store.db import Store
from localstore.store.mirror import upsert_mirror_rows
from localstore.sync.listing import (
    Progress,
    confirm_creates,
    confirm_missing,
    dataset_gone,
    get_record_checked,
    list_dataset,
)

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.core.record import Record


@dataclass
class PullResult:
    dataset_id: str
    records: int = 0
    removed: int = 0
    conflicts: int = 0
    adopted: int = 0
    complete: bool = True
    gone: bool = False  # the dataset itself no longer exists on the server
    problems: list[str] = field(default_factory=list)  # how the listing did not add up
    errors: list[str] = field(default_factory=list)  # what could not be confirmed


def pull_dataset(
    store: Store,
    client: Client,
    dataset_id: str,
    *,
    concurrency: int = 16,
    progress: Progress | None = None,
    dataset: Any = None,
) -> PullResult:
    """List into the mirror, confirm what the listing did not show, recognise lost creates."""
    try:
        listed = list_dataset(store, client, dataset_id, concurrency=concurrency, progress=progress,
                              dataset=dataset, sole_writer=True)
    except NotFoundError:
        if dataset is None and dataset_gone(store, client, dataset_id):
            return PullResult(dataset_id, complete=False, gone=True)
        raise
    result = PullResult(dataset_id, records=listed.records, removed=listed.removed,
                        conflicts=listed.conflicts, adopted=len(listed.adopted),
                        complete=listed.complete, problems=list(listed.problems))
    removed, conflicts, errors = confirm_missing(store, client, listed.missing, concurrency=concurrency)
    result.removed += removed
    result.conflicts += conflicts
    result.errors += errors
    adopted, errors = confirm_creates(store, client, dataset_id, listed, concurrency=concurrency)
    result.adopted += adopted
    result.errors += errors
    return result


def pull(
    store: Store,
    client: Client,
    dataset_ids: Sequence[str] = (),
    *,
    concurrency: int = 16,
    progress: Progress | None = None,
) -> list[PullResult]:
    """Mirror the given datasets (and track them); none given: every tracked dataset.
    What a failed pull wrote stays (each record as the server sent it); nothing is
    removed unless the whole listing was read. A tracked dataset deleted on the server
    does not stop the others. Ctrl-C raises :class:`Interrupted` with the results of the datasets
    pulled by then (what was applied stays; the dataset being pulled is as it was, or
    applied but not yet confirmed)."""
    metadata: dict[str, Any] = {}
    results: list[PullResult] = []
    lookups = ThreadPoolExecutor(max_workers=4, thread_name_prefix="localstore-datasets")
    try:
        if dataset_ids:
            wanted = [parse_uuid(d, what="dataset id") for d in dataset_ids]
            asked = {d: lookups.submit(client.get_dataset, d) for d in wanted}
            # every dataset named is known before anything is written; the first one's
            # answer is awaited by its first write instead (its listing starts meanwhile,
            # and 404s too if it does not exist)
            for dataset_id in wanted[1:]:
                metadata[dataset_id] = _known(asked[dataset_id], dataset_id)
            first = wanted[0]
            metadata[first] = partial(_known, asked[first], first)
        else:
            wanted = store.tracked_dataset_ids()
            if not wanted:
                raise UsageError("no tracked datasets yet: `localstore pull DATASET_ID` mirrors one")
        for d in wanted:
            try:
                results.append(pull_dataset(
                    store, client, d, concurrency=concurrency, progress=progress, dataset=metadata.get(d)
                ))
            except NotFoundError:
                if callable(metadata.get(d)):
                    metadata[d]()  # the UsageError of an unknown dataset, if that is why
                raise
    except KeyboardInterrupt:
        if store.conn.in_transaction:  # interrupted just before a COMMIT: dropped, as by a crash
            store.conn.execute("ROLLBACK")
        raise Interrupted(results) from None
    finally:
        lookups.shutdown(wait=False, cancel_futures=True)
    return results


def _known(answer: Future[Any], dataset_id: str) -> Any:
    """The dataset's metadata, or the error of an unknown dataset."""
    try:
        return answer.result()
    except NotFoundError:
        raise UsageError(f"dataset {dataset_id} does not exist on the server") from None


def fetch(store: Store, client: Client, record_ids: Sequence[str]) -> list[Record]:
    """Mirror single records by id. An unknown id is an error and nothing is written."""
    ids = [parse_uuid(r) for r in record_ids]
    if not ids:
        raise UsageError("give at least one RECORD_ID to fetch")
    fetched = []
    for rid in ids:
        try:
            fetched.append(get_record_checked(client, rid))
        except NotFoundError:
            raise UsageError(f"record {rid} does not exist on the server") from None
    with store.transaction() as conn:
        for record in fetched:
            store.ensure_dataset(record.dataset_id)
        upsert_mirror_rows(conn, fetched)
    return fetched
