"""`ArgumentValidator`: plain-Python acceptance of the common schema subset must never accept what jsonschema refuses,
and must agree with jsonschema on every verdict (a refusal is always jsonschema's own)."""
import decimal
import random
from collections import OrderedDict

import jsonschema
import pytest

from agent_rl.tool_runtime.arguments import ArgumentValidator, accepts, validate_arguments
from agent_rl.tool_runtime.loader import schema_validator

KG = {"type": "object", "properties": {
    "action": {"type": "string", "enum": ["get_relations_out", "get_relations_in", "get_entities_out", "get_entities_in"],
               "description": "which look-up"},
    "entity": {"type": "string"}, "relation": {"type": "string"}}, "required": ["action", "entity"]}
BENCH = {"type": "object", "properties": {k: {"type": "integer", "minimum": 0} for k in ("group", "sample", "call")},
         "required": ["group", "sample", "call"]}
RICH = {"type": "object", "additionalProperties": False, "required": ["x"], "properties": {
    "x": {"type": ["number", "null"], "exclusiveMinimum": -1, "maximum": 10},
    "s": {"type": "string", "minLength": 1, "maxLength": 4, "format": "email"},
    "xs": {"type": "array", "items": {"type": "integer", "exclusiveMaximum": 3}, "minItems": 1, "maxItems": 3},
    "o": {"type": "object", "additionalProperties": {"type": "boolean"}, "properties": {"k": {"enum": ["a", 1, None]}}},
    "any": {}, "t": True}}

VALUES = [None, True, False, 0, 1, -1, 2, 3, 2.0, 0.5, -0.5, 10, 10.5, 11, -2, "", "a", "abcd", "abcde", "get_relations_in",
          "m", [], [0], [1, 2], [1, 2, 3, 4], [True], [2.0], [3], {}, {"k": "a"}, {"k": 1}, {"k": True}, {"z": True},
          {"z": 1}, decimal.Decimal("5"), decimal.Decimal("-3"), OrderedDict(k="a"), ("t",)]


class Sub(str):
    pass


LIKELY = {"kg": ["get_entities_out", "get_relations_in", "Paris"] * 8, "bench": [0, 1, 2, 7] * 8, "rich": [1, "ab", [1, 2]] * 4}


def instances(rng, keys, likely, n=400):
    out = []
    for _ in range(n):
        d = {k: rng.choice(VALUES + [Sub("a")] + likely) for k in keys if rng.random() < 0.8}
        if rng.random() < 0.1:
            d["extra"] = rng.choice(VALUES)
        out.append(d)
    return out


@pytest.mark.parametrize("name, schema", [("kg", KG), ("bench", BENCH), ("rich", RICH)])
def test_fast_path_agrees_with_jsonschema(name, schema):
    v = schema_validator(schema)
    fast = accepts(v)
    assert fast is not None
    av = ArgumentValidator(v)
    rng = random.Random(0)
    accepted = valid = 0
    for inst in instances(rng, list(schema["properties"]), LIKELY[name], n=2000):
        truth = v.is_valid(inst)
        valid += truth
        if fast(inst):
            assert truth, inst
            accepted += 1
        assert av.is_valid(inst) == truth
        assert validate_arguments(av, inst) == validate_arguments(v, inst)
    assert valid >= 5 and accepted > valid / 3   # the fast path does take plain valid calls


def test_common_valid_calls_take_the_fast_path():
    assert accepts(schema_validator(KG))({"action": "get_entities_out", "entity": "Paris", "relation": "capital_of"})
    assert accepts(schema_validator(BENCH))({"group": 3, "sample": 0, "call": 1})
    assert not accepts(schema_validator(BENCH))({"group": 3.0, "sample": 0, "call": 1})   # jsonschema's call
    assert schema_validator(BENCH).is_valid({"group": 3.0, "sample": 0, "call": 1})


def _random_schema(rng, depth=0):
    kind = rng.choice(["string", "integer", "number", "boolean", "null", "array", "object", None, ["string", "null"]])
    s = {} if kind is None else {"type": kind}
    if rng.random() < 0.3:
        s["enum"] = rng.sample(["a", "b", "", 1, None, True, 2.0], 3)
    for key, val in (("minimum", 0), ("maximum", 2), ("exclusiveMinimum", -1), ("exclusiveMaximum", 3),
                     ("minLength", 1), ("maxLength", 3), ("minItems", 1), ("maxItems", 2)):
        if rng.random() < 0.15:
            s[key] = val
    if depth < 2 and rng.random() < 0.4:
        s["items"] = _random_schema(rng, depth + 1)
    if depth < 2 and (kind == "object" or rng.random() < 0.2):
        s["properties"] = {k: _random_schema(rng, depth + 1) for k in rng.sample(["k", "z", "w"], 2)}
        if rng.random() < 0.5:
            s["required"] = rng.sample(list(s["properties"]), 1)
        if rng.random() < 0.5:
            s["additionalProperties"] = rng.choice([False, True, {"type": "integer"}])
    return s


def _random_value(rng, depth=0):
    r = rng.random()
    if depth < 2 and r < 0.2:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if depth < 2 and r < 0.4:
        return {rng.choice(["k", "z", "w", "q"]): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}
    return rng.choice(VALUES)


def test_random_schemas_never_accept_what_jsonschema_refuses():
    rng = random.Random(1)
    compiled = accepted = 0
    for _ in range(300):
        schema = _random_schema(rng)
        jsonschema.Draft202012Validator.check_schema(schema)
        v = schema_validator(schema)
        fast = accepts(v)
        assert fast is not None
        compiled += 1
        for _ in range(60):
            inst = _random_value(rng)
            if fast(inst):
                accepted += 1
                assert v.is_valid(inst), (schema, inst)
    assert compiled == 300 and accepted > 1000


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}},
    {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}, {"type": "integer"}]}}},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}},
    {"type": "object", "patternProperties": {"^x": {"type": "string"}}, "additionalProperties": False},
    {"type": "object", "properties": {"a": {"const": 1}}},
    {"$schema": "http://json-schema.org/draft-04/schema#", "type": "object",
     "properties": {"a": {"type": "number", "minimum": 0, "exclusiveMinimum": True}}},
])
def test_other_keywords_and_dialects_always_ask_jsonschema(schema):
    v = schema_validator(schema)
    assert accepts(v) is None
    av = ArgumentValidator(v)
    for inst in ({"a": "x"}, {"a": 0}, {"a": 1}, {"x": 2}, {}):
        assert av.is_valid(inst) == v.is_valid(inst)
