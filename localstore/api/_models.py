"""The API's answers as typed values (a record is ``localstore.core.record.Record``)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class JudgeOutput:
    answer: str | float
    analysis: str
