"""The owner of local record state: every write to the working copy (``working``) and
the change log (``changes``) is one of the named transitions below, each run inside
the caller's transaction. No other module writes those two tables.

A record's local state, in one place:

- **parts** ``payload`` and ``properties``: a local value when edited (NULL: the record
  shows the mirror's), and a **base per part** — the remote value the user saw when they
  edited that part (or deleted the record), kept until that part is settled;
- ``deleted`` (a queued delete), ``is_create`` (an offline create), ``state``
  (``pending`` or ``conflict``);
- change-log entries, one pending entry per kind at most (a newer edit supersedes the
  older one); entries a sync is sending are ``in_flight`` and their ids are captured
  then, in an :class:`InFlight`, so an outcome settles exactly what was sent.

Transitions: user edits (:func:`edit`, :func:`delete`, :func:`create`, :func:`revert`),
sync (:func:`recover`, :func:`begin_push`, :func:`push_done`, :func:`begin_delete`,
:func:`delete_done` — and :func:`begin_deletes`/:func:`deletes_done` for many records —,
:func:`begin_create`, :func:`create_landed`, :func:`create_rejected`,
:func:`create_not_landed`, :func:`settle`, :func:`conflict`, :func:`remote_gone`),
and resolution (:func:`resolve_theirs`, :func:`restart`, :func:`recreate`,
:func:`narrow_conflict`).
"""

from localstore.store.ledger.edits import (
    create,
    create_body,
    current,
    delete,
    discard_dataset,
    edit,
    revert,
)
from localstore.store.ledger.push import (
    begin_create,
    begin_delete,
    begin_deletes,
    begin_push,
    conflict,
    create_landed,
    create_not_landed,
    create_rejected,
    create_unconfirmed,
    dataset_gone,
    delete_done,
    deletes_done,
    push_done,
    recover,
    remote_gone,
    settle,
)
from localstore.store.ledger.resolution import (
    narrow_conflict,
    recreate,
    resolve_theirs,
    restart,
)
from localstore.store.ledger.state import (
    CREATE_UNCONFIRMED,
    OPEN,
    PARTS,
    ChangeState,
    DeleteResult,
    InFlight,
    Kind,
    PartOutcome,
    RecordState,
    close_entries,
    conflict_count,
    creates_in_flight,
    datasets_creating,
    drop_if_idle,
    load_work,
    log_change,
    mark_entries,
    mirror_set_part,
    open_change_kinds,
    pending_count,
    records_to_check,
    remote_of_mirror,
    working_row,
)

__all__ = [
    "CREATE_UNCONFIRMED",
    "OPEN",
    "PARTS",
    "ChangeState",
    "DeleteResult",
    "InFlight",
    "Kind",
    "PartOutcome",
    "RecordState",
    "begin_create",
    "begin_delete",
    "begin_deletes",
    "begin_push",
    "close_entries",
    "conflict",
    "conflict_count",
    "create",
    "create_body",
    "create_landed",
    "create_not_landed",
    "create_rejected",
    "create_unconfirmed",
    "creates_in_flight",
    "current",
    "dataset_gone",
    "datasets_creating",
    "delete",
    "delete_done",
    "deletes_done",
    "discard_dataset",
    "drop_if_idle",
    "edit",
    "load_work",
    "log_change",
    "mark_entries",
    "mirror_set_part",
    "narrow_conflict",
    "open_change_kinds",
    "pending_count",
    "push_done",
    "records_to_check",
    "recover",
    "recreate",
    "remote_gone",
    "remote_of_mirror",
    "resolve_theirs",
    "restart",
    "revert",
    "settle",
    "working_row",
]
