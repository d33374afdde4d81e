"""The one shape of a record, as the API sends it and as the mirror keeps it: the API
client decodes answers into it, the store writes it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Record:
    """A record as the server sent it (timestamps normalized). Not frozen: pages of
    them are built by the thousand, and a frozen dataclass costs three times as much."""

    id: str
    dataset_id: str
    created_at: str
    updated_at: str
    deleted_at: str | None
    source: str
    payload: dict[str, Any]
    properties: dict[str, Any]
