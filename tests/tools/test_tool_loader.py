"""Tool YAML loading: validation errors name the file and entry; class_name forms; shipped configs."""
import glob
import os
import textwrap

import pytest

from agent_rl.tool_runtime.errors import ToolConfigError
from agent_rl.tool_runtime.loader import load_tools, read_tool_specs
from agent_rl.tool_runtime.runtime import ToolRuntime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GOOD_ENTRY = """
  - class_name: tools.calculator.CalculatorTool
    config: {type: native}
    tool_schema:
      type: function
      function:
        name: calc
        description: arithmetic
        parameters: {type: object, properties: {expression: {type: string}}, required: [expression]}
"""

TOOL_PY = '''
from agent_rl.tool_runtime.base import BaseTool, ToolResponse

class Shout(BaseTool):
    async def execute(self, instance_id, arguments, **kw):
        return ToolResponse(text=arguments["text"].upper() + self.config.get("suffix", "")), 0.0, {}

NOT_A_CLASS = 3

class Plain:
    pass
'''


def write(tmp_path, body, name="tools.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return str(p)


def entry(name="shout", class_name="helpers/shout.py:Shout", params="{type: object, properties: {text: {type: string}}, required: [text]}", config="{type: native, suffix: '!'}"):
    return f"""
  - class_name: {class_name}
    config: {config}
    tool_schema:
      type: function
      function:
        name: {name}
        description: shouts
        parameters: {params}
"""


@pytest.fixture
def helper_dir(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "helpers" / "shout.py").write_text(TOOL_PY)
    return tmp_path


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "tool_config", "*.yaml"))))
def test_shipped_configs_load(path):
    tools = load_tools(path)
    assert tools and all(t.name for t in tools)


def test_shipped_config_names():
    names = {os.path.basename(p): [s.name for s in read_tool_specs(p)] for p in glob.glob(os.path.join(REPO, "configs", "tool_config", "*.yaml"))}
    assert names["arith_tool_config.yaml"] == ["calculator", "calc_gsm8k_reward"]
    assert names["kg_query_tool_config.yaml"] == ["kg_query"]
    assert names["gsm8k_tool_config.yaml"] == ["calc_gsm8k_reward"]
    assert names["calculator_tool_config.yaml"] == ["calculator"]


async def test_file_relative_class_name(helper_dir):
    path = write(helper_dir, "tools:" + entry())
    rt = ToolRuntime.from_yaml(path)
    async with rt.session("t", {}) as s:
        rec = await s.call("shout", {"text": "hi"})
    assert rec.status == "ok" and rec.observation == "HI!"


def test_full_json_schema_is_kept(tmp_path):
    params = """
          type: object
          properties:
            unit: {type: string, enum: [m, km]}
            values: {type: array, items: {type: number}, minItems: 1}
            nested: {type: object, properties: {deep: {type: integer}}, required: [deep]}
          required: [unit]"""
    body = f"""
tools:
  - class_name: tools.calculator.CalculatorTool
    tool_schema:
      type: function
      function:
        name: full
        description: d
        strict: true
        parameters:{params}
"""
    rt = ToolRuntime.from_yaml(write(tmp_path, body))
    fn = rt.schemas[0]["function"]
    assert fn["strict"] is True and fn["parameters"]["properties"]["unit"]["enum"] == ["m", "km"]
    assert fn["parameters"]["properties"]["values"]["items"] == {"type": "number"}
    assert fn["parameters"]["properties"]["nested"]["required"] == ["deep"]
    assert rt.tools["full"].config == {"type": "native"}


def test_verl_class_alias(tmp_path):
    body = GOOD_ENTRY.replace("tools.calculator.CalculatorTool", "verl.tools.gsm8k_tool.Gsm8kTool")
    tools = load_tools(write(tmp_path, "tools:" + body))
    assert type(tools[0]).__name__ == "Gsm8kRewardTool"


def test_verl_rate_limit_keys_keep_verl_meaning(tmp_path):
    # a verl sandbox / search tool config: rate_limit is the number of calls in flight at once
    verl = entry(class_name="tools.calculator.CalculatorTool",
                 config="{type: native, num_workers: 10, rate_limit: 4, enable_global_rate_limit: true}")
    ours = entry(name="paced", class_name="tools.calculator.CalculatorTool",
                 config="{type: native, calls_per_second: 2.5, calls_per_second_burst: 3}")
    shout, paced = read_tool_specs(write(tmp_path, "tools:" + verl + ours))
    assert (shout.options.rate_limit, shout.options.concurrent_cap, shout.options.calls_per_second) == (4, 4, None)
    assert (paced.options.calls_per_second, paced.options.calls_per_second_burst, paced.options.concurrent_cap) == (2.5, 3, None)
    off = entry(class_name="tools.calculator.CalculatorTool", config="{type: native, rate_limit: 4, enable_global_rate_limit: false}")
    assert read_tool_specs(write(tmp_path, "tools:" + off, "off.yaml"))[0].options.concurrent_cap is None


@pytest.mark.parametrize("body, needles", [
    ("tools:" + GOOD_ENTRY.replace("  - class_name: tools.calculator.CalculatorTool\n    config", "  - config"),
     ["tools[0] (calc)", "missing required field class_name"]),
    ("tools:" + GOOD_ENTRY.replace("        description: arithmetic\n", ""),
     ["tools[0] (calc)", "missing required field tool_schema.function.description"]),
    ("tools:" + GOOD_ENTRY + GOOD_ENTRY, ["tools[1] (calc)", "duplicate tool name 'calc'", "tools[0]"]),
    ("tools:" + entry(params="{type: object, properties: {text: {type: strng}}}"),
     ["tools[0] (shout)", "not a valid JSON Schema", "properties/text/type"]),
    ("tools:" + entry(params="{type: object, required: notalist}"), ["tools[0] (shout)", "not a valid JSON Schema"]),
    ("tools:" + entry(params="{type: array}"), ["tools[0] (shout)", "type: object"]),
    ("tools:" + entry(name="'bad name!'"), ["tools[0] (bad name!)", "must match"]),
    ("tools:" + entry(config="{type: mcp}"), ["tools[0] (shout)", "config.type 'mcp' is not supported"]),
    ("tools:" + entry(config="{type: native, timeout_s: -1}"), ["tools[0] (shout)", "config.timeout_s must be > 0"]),
    ("tools:" + entry(config="{type: native, max_concurrency: 1.5}"), ["tools[0] (shout)", "must be an integer"]),
    ("tools:" + entry(config="{type: native, rate_limit: 1.5}"), ["tools[0] (shout)", "config.rate_limit must be an integer"]),
    ("tools:" + entry(config="{type: native, enable_global_rate_limit: 1}"),
     ["tools[0] (shout)", "config.enable_global_rate_limit must be true or false"]),
    ("tools:" + entry(config="{type: native, rate_limit: 5, rate_limit_burst: 2}"),
     ["tools[0] (shout)", "rate_limit_burst is now calls_per_second_burst", "calls_per_second"]),
    ("tools: {a: 1}", ["`tools` must be a list"]),
    ("something: else", ["top-level `tools:` list"]),
    ("tools: [\n  - bad", ["not valid YAML"]),
    ("tools:\n  - 42", ["tools[0]", "must be a mapping"]),
])
def test_validation_errors_name_file_and_entry(tmp_path, body, needles):
    path = write(tmp_path, body)
    with pytest.raises(ToolConfigError) as ei:
        load_tools(path)
    msg = str(ei.value)
    assert msg.startswith(path), msg
    for n in needles:
        assert n in msg, (n, msg)


@pytest.mark.parametrize("class_name, needle", [
    ("no_such_pkg.mod.Tool", "cannot import module 'no_such_pkg.mod'"),
    ("tools.calculator.NoSuchTool", "has no attribute 'NoSuchTool'"),
    ("NoDots", "must be a dotted path"),
    ("helpers/missing.py:Shout", "file not found"),
    ("helpers/shout.py:Missing", "has no attribute 'Missing'"),
    ("helpers/shout.py:NOT_A_CLASS", "is not a class"),
    ("helpers/shout.py:Plain", "not a BaseTool subclass"),
    ("helpers/shout.txt:Shout", "must be a .py file"),
])
def test_bad_class_name(helper_dir, class_name, needle):
    path = write(helper_dir, "tools:" + entry(class_name=class_name))
    with pytest.raises(ToolConfigError) as ei:
        load_tools(path)
    msg = str(ei.value)
    assert msg.startswith(path) and "tools[0] (shout)" in msg and needle in msg, msg


def test_tool_constructor_error_names_entry(helper_dir):
    (helper_dir / "helpers" / "broken.py").write_text(
        "from agent_rl.tool_runtime.base import BaseTool\n"
        "class Broken(BaseTool):\n    def __init__(self, config, schema):\n        raise RuntimeError('needs api key')\n")
    path = write(helper_dir, "tools:" + entry(class_name="helpers/broken.py:Broken"))
    with pytest.raises(ToolConfigError, match=r"tools\[0\] \(shout\): building .* RuntimeError: needs api key"):
        load_tools(path)


def test_import_error_in_tool_file(helper_dir):
    (helper_dir / "helpers" / "syntax.py").write_text("def broken(:\n")
    path = write(helper_dir, "tools:" + entry(class_name="helpers/syntax.py:X"))
    with pytest.raises(ToolConfigError, match="importing .* failed: SyntaxError"):
        load_tools(path)


def test_missing_file_and_only_filter(tmp_path):
    with pytest.raises(ToolConfigError, match="not found"):
        load_tools(str(tmp_path / "nope.yaml"))
    path = os.path.join(REPO, "configs", "tool_config", "arith_tool_config.yaml")
    assert ToolRuntime.from_yaml(path, only=["calculator"]).names == ["calculator"]
    with pytest.raises(ToolConfigError, match="no tool named 'x'"):
        ToolRuntime.from_yaml(path, only=["x"])
