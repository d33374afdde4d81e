"""Which datasets the store follows: ``pull ID`` starts tracking one; ``untrack`` stops."""

from __future__ import annotations

from dataclasses import dataclass

from localstore.core.ids import parse_uuid
from localstore.errors import UsageError
from localstore.store import ledger
from localstore.store.db import Store


@dataclass(frozen=True)
class Untracked:
    dataset_id: str
    records: int  # mirrored records dropped from the store
    discarded: int  # records whose local changes were thrown away


def untrack(store: Store, dataset_id: str, *, discard: bool = False) -> Untracked:
    """Stop tracking a dataset and drop its records from the store. Refused while it has
    local changes (pending, in conflict or rejected), unless ``discard``."""
    ds = parse_uuid(dataset_id, what="dataset id")
    with store.sync_lock(), store.transaction() as conn:
        if conn.execute("SELECT 1 FROM datasets WHERE id = ?", (ds,)).fetchone() is None:
            raise UsageError(f"dataset {ds} is not in the store; `localstore datasets` lists them")
        local = conn.execute(
            """SELECT count(*) FROM (SELECT record_id FROM working WHERE dataset_id = :ds
               UNION SELECT record_id FROM changes WHERE dataset_id = :ds
                     AND state IN ('pending', 'in_flight', 'rejected'))""",
            {"ds": ds},
        ).fetchone()[0]
        if local and not discard:
            raise UsageError(
                f"dataset {ds} has local changes on {local} record(s); sync them first, or "
                f"`localstore datasets --untrack {ds} --discard` throws them away"
            )
        discarded = ledger.discard_dataset(conn, ds) if local else 0
        records = conn.execute("DELETE FROM mirror WHERE dataset_id = ?", (ds,)).rowcount
        conn.execute("DELETE FROM datasets WHERE id = ?", (ds,))
    return Untracked(ds, records, discarded)
