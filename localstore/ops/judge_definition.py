"""A judge definition (the spec's CreateJudgeRequest): read from a JSON file or a mapping
and checked field by field before anything is sent, with a UsageError naming the field."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from localstore.errors import UsageError
from localstore.ops.edits import parse_json_object_text, validate_object

REQUIRED = ("name", "description", "model_name", "output", "instructions", "tools")
REGRESSION_MAX = 1_000_000_000  # exclusive
_READ_PROBLEMS = {
    FileNotFoundError: "does not exist", IsADirectoryError: "is a directory", UnicodeDecodeError: "is not UTF-8 text"
}


def load_judge_definition(source: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    """A judge definition from a JSON file (or a mapping), checked against the spec's
    CreateJudgeRequest; a UsageError naming the field otherwise. Nothing is sent."""
    if isinstance(source, Mapping):
        what = "judge definition"
        value: Any = validate_object(dict(source), what)
    else:
        path = Path(source)
        what = f"judge definition {path}"
        try:
            text = path.read_text(encoding="utf-8-sig")  # a BOM is read like in record files
        except (OSError, UnicodeDecodeError) as exc:
            problem = _READ_PROBLEMS.get(type(exc), f"cannot be read: {getattr(exc, 'strerror', exc)}")
            raise UsageError(f"judge file {path} {problem}") from None
        value = parse_json_object_text(text, f"judge file {path}")
    validate_judge_definition(value, what)
    return value


def validate_judge_definition(value: Any, what: str = "judge definition") -> None:
    """Raise UsageError("<what>: <field> <problem>") unless ``value`` is a valid
    CreateJudgeRequest (plus: a classification has options, regression min <= max)."""

    def bad(where: str, problem: str) -> UsageError:
        return UsageError(f"{what}: {where} {problem}")

    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, not {_kind(value)}")
    for key in REQUIRED:
        if key not in value:
            raise bad(key, f"is missing (required: {', '.join(REQUIRED)})")
    _string(value, "name", bad, low=5, high=50)
    _string(value, "description", bad, high=500)
    _string(value, "model_name", bad, high=500)
    _string(value, "instructions", bad, high=10_000)
    tools = value["tools"]
    if not isinstance(tools, list):
        raise bad("tools", f"must be a list of strings, not {_kind(tools)}")
    for index, tool in enumerate(tools):
        if not isinstance(tool, str):
            raise bad(f"tools[{index}]", f"must be a string, not {_kind(tool)}")
    output = value["output"]
    if not isinstance(output, dict):
        raise bad("output", f"must be an object, not {_kind(output)}")
    kind = output.get("type")
    if kind == "CLASSIFICATION":
        _classification(output, bad)
    elif kind == "REGRESSION":
        _regression(output, bad)
    elif "type" not in output:
        raise bad("output.type", "is missing: give CLASSIFICATION or REGRESSION")
    else:
        raise bad("output.type", f"must be CLASSIFICATION or REGRESSION, not {_show(kind)}")


Bad = Callable[[str, str], UsageError]


def _string(obj: dict[str, Any], key: str, bad: Bad, *, low: int = 0, high: int) -> None:
    text = obj[key]
    if not isinstance(text, str):
        raise bad(key, f"must be a string, not {_kind(text)}")
    if not low <= len(text) <= high:
        span = f"{low} to {high}" if low else f"at most {high}"
        raise bad(key, f"must be {span} characters long, not {len(text)}")


def _classification(output: dict[str, Any], bad: Bad) -> None:
    if "options" not in output:
        raise bad("output.options", "is missing: a CLASSIFICATION judge lists its options")
    options = output["options"]
    if not isinstance(options, list):
        raise bad("output.options", f"must be a list of {{value, description}}, not {_kind(options)}")
    if not options:
        raise bad("output.options", "is empty: give at least one {value, description}")
    for index, option in enumerate(options):
        where = f"output.options[{index}]"
        if not isinstance(option, dict):
            raise bad(where, f"must be an object {{value, description}}, not {_kind(option)}")
        for key in ("value", "description"):
            if key not in option:
                raise bad(f"{where}.{key}", "is missing")
            if not isinstance(option[key], str):
                raise bad(f"{where}.{key}", f"must be a string, not {_kind(option[key])}")


def _regression(output: dict[str, Any], bad: Bad) -> None:
    for key in ("min_description", "max_description"):
        if key not in output:
            raise bad(f"output.{key}", "is missing")
        if not isinstance(output[key], str):
            raise bad(f"output.{key}", f"must be a string, not {_kind(output[key])}")
    bounds: dict[str, float] = {}
    for key, default in (("min", 0.0), ("max", 1.0)):
        number = output.get(key, default)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise bad(f"output.{key}", f"must be a number, not {_show(number)}")
        bounds[key] = float(number)
    if bounds["min"] < 0:
        raise bad("output.min", f"must be >= 0, not {_show(output['min'])}")
    if bounds["max"] >= REGRESSION_MAX:
        raise bad("output.max", f"must be < 1e9, not {_show(output['max'])}")
    if bounds["min"] > bounds["max"]:
        raise bad("output.min", f"({bounds['min']:g}) must not exceed output.max ({bounds['max']:g})")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def _show(value: Any) -> str:
    return text if len(text := repr(value)) <= 40 else text[:37] + "..."
