"""Shared fixtures: one emulator per test session, the spec contract, fresh datasets."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

# `import openapi_contract` from this folder; `import localstore` from the checkout
TESTS_DIR = Path(__file__).resolve().parent
for _path in (TESTS_DIR.parent, TESTS_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from openapi_contract import Contract  # noqa: E402

from localstore.emulator import EmulatorServer, seed_dataset  # noqa: E402

DatasetFactory = Callable[..., str]


@pytest.fixture(scope="session")
def api_key() -> str:
    return "test-key-localstore"


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    """The session's emulator on 127.0.0.1 (no latency, no faults). Tests that change
    its faults must restore them; most should create their own data via ``dataset``."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture(scope="session")
def contract() -> Contract:
    return Contract.load_or_skip()


@pytest.fixture
def emulator_http(emulator: EmulatorServer, api_key: str) -> Iterator[httpx.Client]:
    """A plain httpx client on the session emulator, authenticated."""
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=emulator.url, headers=headers, timeout=30) as client:
        yield client


@pytest.fixture
def dataset(emulator: EmulatorServer, request: pytest.FixtureRequest) -> DatasetFactory:
    """``dataset(n=0, name=None, seed=0) -> dataset_id``: a fresh dataset on the session
    emulator holding ``n`` generated records (see ``localstore.emulator.seed``)."""
    counter = iter(range(1_000_000))

    def make(n: int = 0, name: str | None = None, seed: int = 0) -> str:
        label = name or f"{request.node.name[:40]}-{next(counter)}".ljust(5, "-")
        return seed_dataset(emulator.state, n, name=label, seed=seed)

    return make
