"""The observability datasets API client (httpx): typed calls, retries, listings.

    from localstore.api import Client

    with Client.from_env() as client:          # MISTRAL_API_KEY, LOCALSTORE_SERVER_URL
        for page in client.iter_record_pages(dataset_id):
            ...

Failures are ``localstore.errors.ApiError`` subclasses; ``outcome_unknown(exc)`` (or
``exc.outcome_unknown``) says whether a failed write may have been applied anyway.
The modules behind this ``__init__`` are private: import from ``localstore.api``.
"""

from localstore.api._client import (
    API_KEY_ENV,
    DEFAULT_SERVER_URL,
    DEFAULT_TIMEOUT,
    SERVER_URL_ENV,
    Client,
)
from localstore.api._models import Dataset, JudgeOutput, Record, RecordPage
from localstore.api._pagination import Listing, ListingIterator
from localstore.api._retry import RetryPolicy
from localstore.errors import outcome_unknown

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_SERVER_URL",
    "DEFAULT_TIMEOUT",
    "SERVER_URL_ENV",
    "Client",
    "Dataset",
    "JudgeOutput",
    "Listing",
    "ListingIterator",
    "Record",
    "RecordPage",
    "RetryPolicy",
    "outcome_unknown",
]
