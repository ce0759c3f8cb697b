"""Parse a tool call's arguments (raw JSON text or a dict) and check them against the tool's schema."""
from __future__ import annotations

import json
import math
import numbers
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


# --------------------------------------------------------------------------------------------- fast acceptance
# jsonschema's `is_valid` costs ~30 us for a three-field schema (its keyword dispatch and type checker, per value).
# `accepts(schema)` compiles the common subset of tool schemas (types, properties, required, additionalProperties,
# string enums, numeric bounds, string / array lengths, items) into plain Python checks that say True only for
# arguments the schema certainly accepts; everything else (a False, or a schema using any other keyword) goes to
# jsonschema, which also writes every error message. Types are matched exactly (`type(v) is int`), so whatever
# jsonschema would judge more subtly (2.0 as an integer, True against a numeric enum) is left to it.

_ANNOTATIONS = frozenset({"description", "title", "default", "examples", "$comment", "deprecated", "readOnly",
                          "writeOnly", "format"})   # `format` asserts nothing without a format checker (none is set)
_TYPES = {"string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "object": (dict,),
          "array": (list,), "null": (type(None),)}
_DIALECTS = ("Draft202012Validator", "Draft201909Validator", "Draft7Validator", "Draft6Validator")


def _compile(schema: Any):
    """A predicate `ok(value) -> bool` (True: `schema` accepts value) or None (a keyword outside the subset)."""
    if schema is True:
        return lambda v: True
    if not isinstance(schema, dict):
        return None
    if any(k not in _KEYWORDS and k not in _ANNOTATIONS for k in schema):
        return None
    checks = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not names or any(n not in _TYPES for n in names):
            return None
        types = tuple(t for n in names for t in _TYPES[n])
        checks.append(lambda v: type(v) in types)
    for key in schema:
        if key in _KEYWORDS and key != "type":
            check = _KEYWORDS[key](schema)
            if check is None:
                return None
            if check is not True:
                checks.append(check)
    if not checks:
        return lambda v: True
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


def _number(v) -> bool:
    return type(v) is int or type(v) is float


def _is_number(v) -> bool:   # jsonschema's "number" (bool is not one)
    return isinstance(v, numbers.Number) and not isinstance(v, bool)


def _on(exact, family, check):
    """`check` on values of the exact type(s) `exact`; True where the keyword does not apply (jsonschema ignores it for
    values outside `family`, its own type test); False (ask jsonschema) for other members of the family (subclasses,
    Decimal, ...)."""
    def ok(v):
        if type(v) in exact:
            return check(v)
        return not family(v)
    return ok


_STR = ((str,), lambda v: isinstance(v, str))
_DICT = ((dict,), lambda v: isinstance(v, dict))
_LIST = ((list,), lambda v: isinstance(v, list))
_NUM = ((int, float), _is_number)


def _bound(key: str):
    def make(schema):
        limit = schema[key]
        if not _number(limit):
            return None
        check = {"minimum": lambda v: not v < limit, "maximum": lambda v: not v > limit,
                 "exclusiveMinimum": lambda v: not v <= limit, "exclusiveMaximum": lambda v: not v >= limit}[key]
        return _on(*_NUM, check)
    return make


def _length(key: str, kind):
    def make(schema):
        n = schema[key]
        if type(n) is not int:
            return None
        return _on(*kind, (lambda v: len(v) >= n) if key.startswith("min") else (lambda v: len(v) <= n))
    return make


def _enum(schema):
    values = schema["enum"]
    if not isinstance(values, list):
        return None
    strings = frozenset(x for x in values if type(x) is str)
    return lambda v: type(v) is str and v in strings   # anything but a listed string: jsonschema decides


def _properties(schema):
    props = schema["properties"]
    if not isinstance(props, dict):
        return None
    compiled = {}
    for name, sub in props.items():
        c = _compile(sub)
        if c is None:
            return None
        compiled[name] = c
    return _on(*_DICT, lambda v: all(c(v[k]) for k, c in compiled.items() if k in v))


def _required(schema):
    names = schema["required"]
    if not isinstance(names, list) or not all(type(n) is str for n in names):
        return None
    return _on(*_DICT, lambda v: all(n in v for n in names))


def _additional(schema):
    extra = schema["additionalProperties"]
    props = schema.get("properties") or {}
    if not isinstance(props, dict):
        return None
    known = frozenset(props)
    if extra is True:
        return True
    if extra is False:
        return _on(*_DICT, lambda v: all(k in known for k in v))
    c = _compile(extra)
    if c is None:
        return None
    return _on(*_DICT, lambda v: all(c(x) for k, x in v.items() if k not in known))


def _items(schema):
    c = _compile(schema["items"])   # a list (Draft 7 tuple form) is not compiled
    if c is None:
        return None
    return _on(*_LIST, lambda v: all(c(x) for x in v))


_KEYWORDS = {"type": None, "properties": _properties, "required": _required, "additionalProperties": _additional,
             "enum": _enum, "items": _items,
             **{k: _bound(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")},
             "minLength": _length("minLength", _STR), "maxLength": _length("maxLength", _STR),
             "minItems": _length("minItems", _LIST), "maxItems": _length("maxItems", _LIST)}


def accepts(validator):
    """The fast acceptance predicate of a jsonschema `validator`'s schema, or None (every call asks jsonschema)."""
    if type(validator).__name__ not in _DIALECTS:
        return None
    schema = validator.schema
    if isinstance(schema, dict) and "$schema" in schema:
        schema = {k: v for k, v in schema.items() if k != "$schema"}
    try:
        return _compile(schema)
    except Exception:  # noqa: BLE001 - an unusual schema: jsonschema does all the work
        return None


class ArgumentValidator:
    """A jsonschema validator whose `is_valid` first tries `accepts`' plain checks; `iter_errors` (the messages) and
    every other attribute are the validator's."""

    def __init__(self, validator):
        self.validator = validator
        self.fast = accepts(validator)

    def is_valid(self, instance) -> bool:
        if self.fast is not None and self.fast(instance):
            return True
        return self.validator.is_valid(instance)

    def iter_errors(self, instance):
        return self.validator.iter_errors(instance)

    def __getattr__(self, name):
        return getattr(self.validator, name)


def validate_arguments(validator, arguments: Dict[str, Any]) -> Tuple[bool, str]:
    """(True, "") or (False, "field 'x': 'foo' is not one of [...]; ...")."""
    if validator.is_valid(arguments):
        return True, ""
    return False, "; ".join(describe_errors(validator, arguments))
