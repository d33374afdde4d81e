"""``localstore.models``: the sqlmodel classes for typed reads (``localstore.store.models``;
importing it imports SQLAlchemy)."""

from localstore.store.models import *  # noqa: F403
from localstore.store.models import __all__ as __all__
