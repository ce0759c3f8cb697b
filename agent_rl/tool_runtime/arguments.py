"""Parse a tool call's arguments (raw JSON text or a dict) and check them against the tool's schema."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Tuple

import jsonschema


class ArgumentError(ValueError):
    """The message is written for the model: it names the failing field and why."""


def parse_arguments(raw: Any) -> Dict[str, Any]:
    """str (JSON object text; empty = {}) or dict -> dict. Raises ArgumentError."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ArgumentError("arguments are not valid UTF-8 text") from None
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ArgumentError(f"arguments are not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        if not isinstance(value, dict):
            raise ArgumentError(f"arguments must be a JSON object, got {_json_type(value)}")
        return value
    raise ArgumentError(f"arguments must be a JSON object, got {type(raw).__name__}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {list: "array", str: "string", int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _field(error: jsonschema.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(error.absolute_path))
    return path or "(root)"


def describe_errors(validator, arguments: Dict[str, Any], limit: int = 3) -> List[str]:
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    out: List[str] = []
    for e in errors[:limit]:
        if e.validator == "required" or e.validator == "additionalProperties" or not e.absolute_path:
            out.append(e.message if not e.absolute_path else f"field '{_field(e)}': {e.message}")
        else:
            out.append(f"field '{_field(e)}': {_short(e.message)}")
    if len(errors) > limit:
        out.append(f"... and {len(errors) - limit} more")
    return out


def _short(msg: str, n: int = 200) -> str:
    return msg if len(msg) <= n else msg[: n - 3] + "..."


def validate_arguments(validator, arguments: Dict[str, Any]) -> Tuple[bool, str]:
    """(True, "") or (False, "field 'x': 'foo' is not one of [...]; ...")."""
    if validator.is_valid(arguments):
        return True, ""
    return False, "; ".join(describe_errors(validator, arguments))
