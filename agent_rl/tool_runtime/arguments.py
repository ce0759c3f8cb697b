"""Parse a tool call's arguments (raw JSON text or a dict) and check them against the tool's schema."""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Optional, Tuple

import jsonschema


class ArgumentError(ValueError):
    """The message is written for the model: it names the failing field and why."""


def parse_arguments(raw: Any) -> Dict[str, Any]:
    """str (JSON object text; empty = {}) or dict -> dict. Raises ArgumentError, also for a number that is not
    finite (`1e400`, which Python's json reads as inf, and NaN / Infinity): a tool never sees inf or nan."""
    if raw is None:
        return {}
    if isinstance(raw, dict):
        _check_finite(raw, None)
        return raw
    if isinstance(raw, (bytes, bytearray)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise ArgumentError("arguments are not valid UTF-8 text") from None
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        literals: List[str] = []   # the text of every non-finite number, in document order

        def number(text: str) -> float:
            value = float(text)
            if not math.isfinite(value):
                literals.append(text)
            return value

        def constant(text: str) -> float:   # NaN, Infinity, -Infinity: not JSON, but Python's json reads them
            literals.append(text)
            return float(text)

        try:
            value = json.loads(raw, parse_float=number, parse_constant=constant)
        except json.JSONDecodeError as e:
            raise ArgumentError(f"arguments are not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        if not isinstance(value, dict):
            raise ArgumentError(f"arguments must be a JSON object, got {_json_type(value)}")
        _check_finite(value, literals[0] if literals else None)
        return value
    raise ArgumentError(f"arguments must be a JSON object, got {type(raw).__name__}")


def _first_non_finite(value: Any, path: Tuple[Any, ...] = ()) -> Optional[Tuple[Any, ...]]:
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _first_non_finite(v, path + (k,))
        if found is not None:
            return found
    return None


def _check_finite(value: Dict[str, Any], literal: Optional[str]) -> None:
    path = _first_non_finite(value)
    if path is None:
        return
    where = f"field '{_path_text(path)}': " if path else ""
    what = f"{literal} is not" if literal is not None else "not"
    raise ArgumentError(f"{where}{what} a finite number (out of range, NaN or Infinity); "
                        "use a number between -1.7e308 and 1.7e308")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return {list: "array", str: "string", int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _path_text(path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(path))


def _field(error: jsonschema.ValidationError) -> str:
    return _path_text(error.absolute_path) or "(root)"


def json_spelling(value: Any) -> str:
    """A value as the model wrote it: true / false / null, JSON arrays and objects; strings keep the quotes of the
    messages around them ('mile'). Python's spelling (True, None) would be foreign to the model."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(json_spelling(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json_spelling(k)}: {json_spelling(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _message(error: jsonschema.ValidationError) -> str:
    """jsonschema's message with the instance and the schema value in JSON spelling (`true is not of type 'number'`,
    `null is not one of [1, 2]`) instead of Python's (`True`, `None`)."""
    msg = error.message
    for value in (error.instance, error.validator_value):
        try:
            python, js = repr(value), json_spelling(value)
        except Exception:  # noqa: BLE001 - an exotic value: keep jsonschema's text
            continue
        if python != js and python in msg:
            msg = msg.replace(python, js, 1)
    return msg


def describe_errors(validator, arguments: Dict[str, Any], limit: int = 3) -> List[str]:
    errors = sorted(validator.iter_errors(arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    out: List[str] = []
    for e in errors[:limit]:
        if e.validator == "required" or e.validator == "additionalProperties" or not e.absolute_path:
            out.append(_message(e) if not e.absolute_path else f"field '{_field(e)}': {_message(e)}")
        else:
            out.append(f"field '{_field(e)}': {_short(_message(e))}")
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
