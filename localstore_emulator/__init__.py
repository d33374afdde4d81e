"""A local stand-in for the Mistral observability datasets API (FastAPI + uvicorn).

    with EmulatorServer() as server:        # a real HTTP server on 127.0.0.1:<free port>
        dataset_id = seed_dataset(server.state, 1000)
        ...  # point any client at server.url with any bearer key

Timestamps are rendered as the API reference shows them, ``2025-10-07T20:56:01.974Z``;
``timestamp_format="us"`` (``….974123Z``) or ``"offset"`` (``….974123+00:00``) on
``EmulatorState`` / ``EmulatorServer`` / ``create_app`` (or ``--timestamp-format``)
select the other valid forms. The clock itself counts microseconds (``clock``).

Knobs, beside ``server.configure(latency_ms=…, fail_rate=…)`` (random 429/5xx):

``server.adversary`` (an ``Adversary``; see ``adversary`` for the details)
    ``add(Rule(method, path_template, record_id=…, dataset_id=…, page=…, skip=K,
    times=N, effect=…, status=…, hold=…, before=…, after=…))`` with effect one of
    ``pass``, ``fail_before`` (429/500/502/503/504, not applied), ``drop_before``
    (connection closed, not applied), ``apply_then_fail``, ``apply_then_drop``;
    ``hold=True`` blocks the request before it is applied until ``rule.release()``
    (``rule.entered.wait(t)`` first). ``on_page(dataset_id, after_page, action)`` runs
    an action between the pages of a listing (``delete_first``, ``create_records``,
    ``delete_records``, ``update_properties``, ``delete_dataset`` build them).
    ``set_clock(freeze_updated_at=…, resolution_ms=…)``: PUTs that keep
    ``updated_at``; a coarse clock. ``writes(record_id=…, dataset_id=…, op=…)``: the
    writes applied through the API with the answer each client got (``journal``).
    ``reset()``: no rules, an empty journal, the normal clock.
``/_emulator/...`` (``admin``)
    the same over HTTP, for a CLI subprocess: rules, wait, release, reset, clock,
    actions, writes.
"""

from localstore_emulator.adversary import Adversary, Rule
from localstore_emulator.app import create_app
from localstore_emulator.journal import AppliedWrite
from localstore_emulator.seed import make_record, seed_dataset
from localstore_emulator.server import EmulatorServer, RefusedHost, serve
from localstore_emulator.state import EmulatorError, EmulatorState

__all__ = [
    "Adversary",
    "AppliedWrite",
    "EmulatorError",
    "EmulatorServer",
    "EmulatorState",
    "RefusedHost",
    "Rule",
    "create_app",
    "make_record",
    "seed_dataset",
    "serve",
]
