"""Argument errors as the model wrote the values (JSON: true / false / null), and non-finite numbers refused."""
import json
import math

import pytest

from agent_rl.tool_runtime.arguments import ArgumentError, json_spelling, parse_arguments
from agent_rl.tool_runtime.runtime import ToolRuntime
from tool_fakes import ScriptedTool, fn_schema

SCHEMA = fn_schema("t", {
    "x": {"type": "number"},
    "flag": {"type": "boolean"},
    "unit": {"enum": ["m", "km", None]},
    "opts": {"type": "object", "properties": {"on": {"type": "boolean"}}},
    "xs": {"type": "array", "items": {"type": "number"}},
    "exact": {"const": False},
}, required=[])


async def call(arguments):
    tool = ScriptedTool("t", schema=SCHEMA)
    rt = ToolRuntime([tool])
    async with rt.session("traj", {}) as s:
        rec = await s.call("t", arguments)
    return rec, tool


@pytest.mark.parametrize("args, message", [
    ('{"x": true}', "field 'x': true is not of type 'number'"),
    ('{"x": false}', "field 'x': false is not of type 'number'"),
    ('{"x": null}', "field 'x': null is not of type 'number'"),
    ('{"flag": "yes"}', "field 'flag': 'yes' is not of type 'boolean'"),
    ('{"unit": true}', "field 'unit': true is not one of ['m', 'km', null]"),
    ('{"opts": {"on": null}}', "field 'opts.on': null is not of type 'boolean'"),
    ('{"xs": [1, true]}', "field 'xs[1]': true is not of type 'number'"),
    ('{"x": [true, null]}', "field 'x': [true, null] is not of type 'number'"),
    ('{"exact": true}', "field 'exact': false was expected"),
])
async def test_messages_use_json_spelling(args, message):
    rec, tool = await call(args)
    assert rec.status == "invalid_arguments" and not tool.executed
    assert rec.observation == f"Error: invalid arguments for t: {message}.", rec.observation
    for python in ("True", "False", "None"):
        assert python not in rec.observation


@pytest.mark.parametrize("args, literal, field", [
    ('{"x": 1e400}', "1e400", "x"),
    ('{"x": -1e999}', "-1e999", "x"),
    ('{"x": NaN}', "NaN", "x"),
    ('{"x": Infinity}', "Infinity", "x"),
    ('{"xs": [1, 2, -Infinity]}', "-Infinity", "xs[2]"),
    ('{"opts": {"deep": [0.5, 1E+309]}}', "1E+309", "opts.deep[1]"),
])
async def test_non_finite_numbers_are_refused(args, literal, field):
    rec, tool = await call(args)
    assert rec.status == "invalid_arguments" and not tool.executed
    assert rec.observation == (f"Error: invalid arguments for t: field '{field}': {literal} is not a finite number "
                               "(out of range, NaN or Infinity); use a number between -1.7e308 and 1.7e308.")


async def test_non_finite_in_dict_arguments_is_refused_too():
    rec, tool = await call({"x": math.inf})
    assert rec.status == "invalid_arguments" and not tool.executed
    assert "field 'x': not a finite number" in rec.observation


def test_finite_numbers_still_parse():
    assert parse_arguments('{"x": 1.7e308, "y": -2.5e-300, "z": 10, "big": 100000000000000000000000}') == {
        "x": 1.7e308, "y": -2.5e-300, "z": 10, "big": 10 ** 23}
    with pytest.raises(ArgumentError):
        parse_arguments('{"x": 1.8e308}')


def test_json_spelling():
    assert json_spelling(True) == "true" and json_spelling(None) == "null" and json_spelling(False) == "false"
    assert json_spelling({"a": [1, None, "s", 2.5]}) == "{'a': [1, null, 's', 2.5]}"
    assert json.loads(json_spelling([True, None, 1]).replace("'", '"')) == [True, None, 1]
