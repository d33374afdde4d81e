"""Validate requests and responses against the official OpenAPI spec in ../shared/api.

The spec is read from beside the clone (CI puts ../shared next to it); it is never
copied into the project. Where it is absent, ``Contract.load_or_skip()`` skips the
calling test with that reason.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEC_PATH = Path(
    os.environ.get(
        "LOCALSTORE_SPEC",
        REPO_ROOT.parent / "shared" / "api" / "observability-datasets.openapi.yaml",
    )
)
SPEC_URI = "urn:localstore:openapi"

# Statuses the spec does not list but a server may always send (auth, throttling,
# outages); their bodies are still held to the ObservabilityError shape when JSON.
UNDECLARED_ERROR_STATUSES = {401, 403, 405, 429, 500, 502, 503, 504}


class ContractViolation(AssertionError):
    pass


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    spec: dict[str, Any]


def _format_checker() -> jsonschema.FormatChecker:
    # "date-time" needs rfc3339-validator installed (a dev dependency) to be checked
    return jsonschema.FormatChecker()


class Contract:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        resource = Resource.from_contents(spec, default_specification=DRAFT202012)
        self.registry: Registry = Registry().with_resource(SPEC_URI, resource)
        self.operations: list[Operation] = []
        for template, item in spec["paths"].items():
            pattern = "^" + re.sub(r"\{[^}]+\}", r"(?P<\g<0>>[^/]+)", template) + "$"
            pattern = pattern.replace("(?P<{", "(?P<").replace("}>", ">")
            for method, op in item.items():
                if method in {"get", "post", "put", "patch", "delete"}:
                    self.operations.append(
                        Operation(method.upper(), template, re.compile(pattern), op)
                    )
        # literal segments win over parameters: /bulk-delete before /{id}
        self.operations.sort(key=lambda op: op.template.count("{"))

    @classmethod
    def load(cls, path: Path = SPEC_PATH) -> Contract:
        with open(path, encoding="utf-8") as handle:
            return cls(yaml.safe_load(handle))

    @classmethod
    def load_or_skip(cls) -> Contract:
        import pytest

        if not SPEC_PATH.exists():
            pytest.skip(f"API spec not found at {SPEC_PATH} (CI puts ../shared beside the clone)")
        return cls.load()

    def paths(self) -> list[tuple[str, str]]:
        return [(op.method, op.template) for op in self.operations]

    def find(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        for op in self.operations:
            if op.method != method.upper():
                continue
            match = op.regex.match(path)
            if match:
                return op, match.groupdict()
        raise ContractViolation(f"{method} {path} is not an operation of the spec")

    def _validate(self, instance: Any, schema: dict[str, Any], what: str) -> None:
        wrapped = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
        validator = jsonschema.Draft202012Validator(
            wrapped, registry=self.registry, format_checker=_format_checker()
        )
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.absolute_path) or "(root)"
            raise ContractViolation(f"{what}: {where}: {first.message}")

    def _schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Rewrite local refs so they resolve against the registered spec."""
        if isinstance(schema, dict):
            return {
                k: (SPEC_URI + v if k == "$ref" and v.startswith("#") else self._schema(v))
                for k, v in schema.items()
            }
        if isinstance(schema, list):
            return [self._schema(v) for v in schema]
        return schema

    def validate_request(
        self, method: str, url: str, body: Any = None, *, has_body: bool | None = None
    ) -> Operation:
        parts = urlsplit(url)
        op, path_params = self.find(method, parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        for param in op.spec.get("parameters", []):
            name, location = param["name"], param["in"]
            source = path_params if location == "path" else query if location == "query" else None
            if source is None:
                continue
            if name not in source:
                if param.get("required"):
                    raise ContractViolation(f"{method} {url}: missing {location} parameter {name}")
                continue
            raw = source[name]
            schema = param.get("schema", {})
            value: Any = raw
            if schema.get("type") == "integer":
                try:
                    value = int(raw)
                except ValueError:
                    raise ContractViolation(f"{method} {url}: {name}={raw!r} is not an integer") from None
            self._validate(value, self._schema(schema), f"{method} {url} parameter {name}")
            if schema.get("format") == "uuid":
                import uuid

                try:
                    uuid.UUID(raw)
                except ValueError:
                    raise ContractViolation(f"{method} {url}: {name}={raw!r} is not a uuid") from None
        request_body = op.spec.get("requestBody")
        sent_body = body is not None if has_body is None else has_body
        if request_body:
            if not sent_body:
                if request_body.get("required"):
                    raise ContractViolation(f"{method} {url}: request body required")
            else:
                schema = request_body["content"]["application/json"]["schema"]
                self._validate(body, self._schema(schema), f"{method} {url} request body")
        elif sent_body:
            raise ContractViolation(f"{method} {url}: the spec takes no request body")
        return op

    def validate_response(self, method: str, url: str, status: int, body: Any = None, *, empty: bool | None = None) -> None:
        parts = urlsplit(url)
        op, _ = self.find(method, parts.path)
        responses = op.spec["responses"]
        declared = responses.get(str(status))
        is_empty = (body is None) if empty is None else empty
        if declared is None:
            if status in UNDECLARED_ERROR_STATUSES:
                if not is_empty:
                    error_schema = {"$ref": "#/components/schemas/ObservabilityError"}
                    self._validate(body, self._schema(error_schema), f"{method} {url} {status}")
                return
            raise ContractViolation(
                f"{method} {url}: status {status} is not declared (declared: {sorted(responses)})"
            )
        content = declared.get("content")
        if not content:
            if not is_empty:
                raise ContractViolation(f"{method} {url}: {status} must have no body, got {body!r:.80}")
            return
        if is_empty:
            raise ContractViolation(f"{method} {url}: {status} must have a JSON body")
        schema = content["application/json"]["schema"]
        self._validate(body, self._schema(schema), f"{method} {url} {status} body")
