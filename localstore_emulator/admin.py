"""The adversary over HTTP, under ``/_emulator/`` (never ``/v1/``), for tests that run
the CLI in a subprocess against an emulator they cannot reach in-process.

==========================================  ===================================================
``POST   /_emulator/rules``                 arm a rule (JSON like ``Rule``; ``before``/``after``
                                            are action objects, below) → 201, the rule
``GET    /_emulator/rules[/{id}]``          rules with their counters (seen, fired, held, ...)
``POST   /_emulator/rules/{id}/wait``       ``?timeout=S``: until a request is held/entered →
                                            ``{"entered": bool, "rule": {...}}``
``POST   /_emulator/rules/{id}/release``    let its held requests go on
``DELETE /_emulator/rules/{id}``            release and remove it
``POST   /_emulator/reset``                 ``Adversary.reset()``
``GET|PUT /_emulator/clock``                ``{"timestamp_format", "clock_resolution_ms",
                                            "freeze_updated_at"}`` (PUT: any of them)
``POST   /_emulator/actions``               run an action now
``GET    /_emulator/writes``                the journal: ``?record_id=&dataset_id=&op=&after=``
==========================================  ===================================================

An action object is ``{"kind": K, ...}`` with K one of ``delete_first`` (``n``, the
first n live records of ``dataset_id``), ``create_records`` (``n``), ``delete_records``
(``record_ids``), ``update_properties`` (``record_id``, ``properties``) and
``delete_dataset``; inside a rule, ``dataset_id`` defaults to the rule's.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from localstore_emulator import adversary as adv
from localstore_emulator.adversary import Action, Adversary, Effect, Rule
from localstore_emulator.clock import TimestampFormat
from localstore_emulator.journal import WriteOp
from localstore_emulator.model import EmulatorError, dumps

PREFIX = "/_emulator"


class ActionSpec(BaseModel):
    kind: Literal["delete_first", "create_records", "delete_records", "update_properties", "delete_dataset"]
    dataset_id: str | None = None
    n: int = Field(default=1, ge=1)
    record_ids: list[str] = Field(default_factory=list)
    record_id: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)

    def build(self, default_dataset: str | None = None) -> Action:
        dataset_id = self.dataset_id or default_dataset
        if self.kind == "delete_records":
            return adv.delete_records(self.record_ids)
        if self.kind == "update_properties":
            if self.record_id is None:
                raise _invalid("update_properties needs record_id")
            return adv.update_properties(self.record_id, self.properties)
        if dataset_id is None:
            raise _invalid(f"{self.kind} needs dataset_id")
        if self.kind == "delete_first":
            return adv.delete_first(dataset_id, self.n)
        if self.kind == "create_records":
            return adv.create_records(dataset_id, self.n)
        return adv.delete_dataset(dataset_id)


class RuleSpec(BaseModel):
    method: str | None = None
    path: str | list[str] | None = None
    record_id: str | None = None
    dataset_id: str | None = None
    page: int | None = Field(default=None, ge=1)
    skip: int = Field(default=0, ge=0)
    times: int | None = Field(default=1, ge=1)
    effect: Effect = "pass"
    status: int = 500
    retry_after: float | None = Field(default=None, ge=0)
    hold: bool = False
    before: ActionSpec | None = None
    after: ActionSpec | None = None


class ClockSpec(BaseModel):
    timestamp_format: TimestampFormat | None = None
    clock_resolution_ms: int | None = Field(default=None, ge=0)
    freeze_updated_at: bool | None = None


def _invalid(message: str) -> EmulatorError:
    return EmulatorError(422, message, "VALIDATION_ERROR")


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def _adversary(request: Request) -> Adversary:
    return request.app.state.adversary


def _rule(request: Request, rule_id: int) -> Rule:
    rule = _adversary(request).rule(rule_id)
    if rule is None:
        raise EmulatorError(404, f"no emulator rule {rule_id}", None)
    return rule


def _clock(request: Request) -> dict[str, Any]:
    clock = _adversary(request).state.clock
    return {
        "timestamp_format": clock.format,
        "clock_resolution_ms": clock.resolution_ms,
        "freeze_updated_at": clock.freeze_updated_at,
    }


def admin_router() -> APIRouter:
    router = APIRouter(prefix=PREFIX)

    @router.post("/rules")
    async def add_rule(request: Request, spec: RuleSpec) -> Response:
        try:
            rule = Rule(
                method=spec.method,
                path=spec.path,
                record_id=spec.record_id,
                dataset_id=spec.dataset_id,
                page=spec.page,
                skip=spec.skip,
                times=spec.times,
                effect=spec.effect,
                status=spec.status,
                retry_after=spec.retry_after,
                hold=spec.hold,
                before=spec.before.build(spec.dataset_id) if spec.before else None,
                after=spec.after.build(spec.dataset_id) if spec.after else None,
            )
            _adversary(request).add(rule)
        except (ValueError, ValidationError) as exc:
            raise _invalid(str(exc)) from None
        return _json(rule.to_dict(), 201)

    @router.get("/rules")
    async def list_rules(request: Request) -> Response:
        return _json({"rules": [r.to_dict() for r in _adversary(request).rules]})

    @router.get("/rules/{rule_id}")
    async def get_rule(request: Request, rule_id: int) -> Response:
        return _json(_rule(request, rule_id).to_dict())

    @router.post("/rules/{rule_id}/wait")
    async def wait_rule(request: Request, rule_id: int, timeout: float = 10.0) -> Response:
        rule = _rule(request, rule_id)
        entered = await asyncio.to_thread(rule.entered.wait, max(0.0, min(timeout, 120.0)))
        return _json({"entered": entered, "rule": rule.to_dict()})

    @router.post("/rules/{rule_id}/release")
    async def release_rule(request: Request, rule_id: int) -> Response:
        rule = _rule(request, rule_id)
        rule.release()
        return _json(rule.to_dict())

    @router.delete("/rules/{rule_id}")
    async def remove_rule(request: Request, rule_id: int) -> Response:
        _adversary(request).remove(_rule(request, rule_id))
        return Response(status_code=204)

    @router.post("/reset")
    async def reset(request: Request) -> Response:
        _adversary(request).reset()
        return Response(status_code=204)

    @router.get("/clock")
    async def get_clock(request: Request) -> Response:
        return _json(_clock(request))

    @router.put("/clock")
    async def set_clock(request: Request, spec: ClockSpec) -> Response:
        adversary = _adversary(request)
        if spec.timestamp_format is not None:
            adversary.state.timestamp_format = spec.timestamp_format
        adversary.set_clock(freeze_updated_at=spec.freeze_updated_at, resolution_ms=spec.clock_resolution_ms)
        return _json(_clock(request))

    @router.post("/actions")
    async def run_action(request: Request, spec: ActionSpec) -> Response:
        spec.build()(_adversary(request).state)
        return _json({"ok": True})

    @router.get("/writes")
    async def writes(
        request: Request,
        record_id: str | None = None,
        dataset_id: str | None = None,
        op: WriteOp | None = None,
        after: int = 0,
    ) -> Response:
        found = _adversary(request).writes(record_id=record_id, dataset_id=dataset_id, op=op, after=after)
        return _json({"writes": [w.to_dict() for w in found]})

    return router
