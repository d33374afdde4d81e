"""What a sync did: the counts, errors and plan it reports (and its exit code)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncReport:
    dry_run: bool = False
    created: int = 0
    updated: int = 0
    deleted: int = 0
    settled: int = 0
    adopted: int = 0  # creates of an earlier sync whose answer was lost, found on the server
    new_conflicts: int = 0
    open_conflicts: int = 0
    rejected: int = 0
    pulled: int = 0
    pending: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    gone_datasets: list[str] = field(default_factory=list)
    planned: dict[str, int] = field(default_factory=dict)
    # the records behind ``planned``: {"record_id", "action"} (+ "parts" for a conflict)
    planned_records: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False  # Ctrl-C stopped it
    abandoned: int = 0  # requests in flight at Ctrl-C: their outcome is unknown

    @property
    def pushed(self) -> int:
        return self.created + self.updated + self.deleted

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        if self.errors:
            return 1
        return 3 if self.open_conflicts else 0

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["pushed"] = self.pushed
        data["exit_code"] = self.exit_code
        return data
