"""The API's answers as typed values (a record is ``localstore.core.record.Record``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from localstore.core.record import Record

__all__ = ["Dataset", "JudgeOutput", "Record", "RecordPage"]


@dataclass(frozen=True)
class Dataset:
    id: str
    name: str
    description: str
    created_at: str
    updated_at: str
    deleted_at: str | None
    slug: str | None
    owner_id: str
    workspace_id: str


@dataclass(frozen=True)
class RecordPage:
    page: int
    page_size: int
    count: int
    records: list[Record]
    next: str | None
    previous: str | None
    # what the listing's consumer made of the records in the thread that fetched the
    # page (Client.iter_record_pages' ``prepare``)
    prepared: Any = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class JudgeOutput:
    answer: str | float
    analysis: str
