"""Record and dataset ids are UUIDs; they are validated before they reach a URL,
a SQL statement or a file path."""

from __future__ import annotations

import re
import uuid

from localstore.errors import UsageError

_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_uuid(value: str, *, what: str = "record id") -> str:
    """Return the canonical lowercase form of ``value`` or raise UsageError."""
    if isinstance(value, str) and _CANONICAL.fullmatch(value):
        return value
    try:
        parsed = uuid.UUID(str(value).strip())
    except ValueError:
        raise UsageError(
            f"{value!r} is not a valid {what}: expected a UUID such as "
            "3fa85f64-5717-4562-b3fc-2c963f66afa6"
        ) from None
    return str(parsed)


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def new_provisional_id() -> str:
    """Offline creates get a random UUID until the server assigns the real one."""
    return str(uuid.uuid4())
