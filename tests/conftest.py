"""Shared fixtures: one emulator per test session, the spec contract, fresh datasets."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# `import openapi_contract` from this folder; `import localstore` from the checkout
TESTS_DIR = Path(__file__).resolve().parent
for _path in (TESTS_DIR.parent, TESTS_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from openapi_contract import Contract  # noqa: E402
from support.cli import Cli  # noqa: E402

from localstore_emulator import EmulatorServer, seed_dataset  # noqa: E402

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


@pytest.fixture
def us_stamps(emulator: EmulatorServer) -> Iterator[None]:
    """The session emulator renders µs stamps (``…:01.974123Z``, strictly increasing on
    every write) during this test, instead of its default ms form (where two writes in
    one millisecond share a stamp)."""
    before = emulator.state.timestamp_format
    emulator.state.timestamp_format = "us"
    yield
    emulator.state.timestamp_format = before


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
    emulator holding ``n`` generated records (see ``localstore_emulator.seed``)."""
    counter = iter(range(1_000_000))

    def make(n: int = 0, name: str | None = None, seed: int = 0) -> str:
        label = name or f"{request.node.name[:40]}-{next(counter)}".ljust(5, "-")
        return seed_dataset(emulator.state, n, name=label, seed=seed)

    return make


@pytest.fixture
def cli(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> Cli:
    """``localstore --db <tmp>/store.db …`` as a subprocess against the session emulator."""
    return Cli(tmp_path / "store.db", emulator.url, api_key)


@pytest.fixture
def sdk(emulator: EmulatorServer, api_key: str) -> Iterator[Any]:
    """The official SDK (``mistralai``) on the session emulator: a teammate, and an
    independent read-back of the server."""
    client_module = pytest.importorskip("mistralai.client")
    with client_module.Mistral(api_key=api_key, server_url=emulator.url) as client:
        yield client


# ------------------------------------------------------------------ drill figures (issue #7)

DRILL_COLUMNS = ("requests", "faults", "changes", "syncs", "kills", "lost", "duplicated")
# the figures travel on the test's reports (user_properties), so they reach the table
# from pytest-xdist's workers as well
_FIGURES_PROPERTY = "drill_figures"


class DrillFigures:
    """What one drill checked, for the table printed at the end of the run.

    ``record(requests=…, faults={"503": 4, …}, changes=…, syncs=…, kills=…, lost=0,
    duplicated=0)``; later calls add to earlier ones (numbers and per-kind counts add
    up), so a drill may record as it goes."""

    def __init__(self, figures: dict[str, Any]) -> None:
        self.figures = figures

    def record(self, **figures: Any) -> None:
        for key, value in figures.items():
            old = self.figures.get(key)
            if isinstance(value, dict):
                merged = dict(old or {})
                for kind, n in value.items():
                    merged[kind] = merged.get(kind, 0) + n
                self.figures[key] = merged
            elif isinstance(value, int) and isinstance(old, int):
                self.figures[key] = old + value
            else:
                self.figures[key] = value


@pytest.fixture
def drill_figures(request: pytest.FixtureRequest) -> DrillFigures:
    figures: dict[str, Any] = {}
    request.node.user_properties.append((_FIGURES_PROPERTY, figures))
    return DrillFigures(figures)


def _figure_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):  # by kind: the total here, the breakdown on its own line
        return str(sum(value.values()))
    return str(value)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """The drills' figures as one table (printed under -q too)."""
    table: dict[str, dict[str, Any]] = {}
    outcomes: dict[str, str] = {}
    for outcome in ("passed", "failed", "xfailed", "xpassed", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", None)
            if nodeid and (outcome == "error" or getattr(report, "when", "call") == "call"):
                outcomes.setdefault(nodeid, outcome)
                for name, value in getattr(report, "user_properties", ()):
                    if name == _FIGURES_PROPERTY and value:
                        table[nodeid] = value
    if not table:
        return
    extra = sorted({k for figures in table.values() for k in figures} - set(DRILL_COLUMNS))
    columns = ["drill", "outcome", *DRILL_COLUMNS, *extra]
    rows = [
        [
            nodeid.rpartition("::")[2],
            outcomes.get(nodeid, "?"),
            *(_figure_cell(figures.get(c)) for c in columns[2:]),
        ]
        for nodeid, figures in table.items()
    ]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    terminalreporter.section("drill figures")
    terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row, figures in zip(rows, table.values(), strict=True):
        terminalreporter.write_line(
            "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        )
        for key, value in figures.items():
            if isinstance(value, dict) and value:
                kinds = " ".join(f"{k}:{n}" for k, n in sorted(value.items()))
                terminalreporter.write_line(f"    {key} by kind: {kinds}")
