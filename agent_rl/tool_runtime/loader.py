"""Load and validate a tool YAML file (verl's shape) and build the tools it declares.

    tools:
      - class_name: tools.calculator.CalculatorTool      # dotted import path, or
                                                         # path/to/file.py:ClassName (relative to the YAML)
        config: {type: native, timeout_s: 5}
        tool_schema:
          type: function
          function: {name: calculator, description: ..., parameters: {JSON Schema}, strict: false}

Every problem raises `ToolConfigError("<file>: tools[<i>] (<name>): <reason>")`, one line.
"""
from __future__ import annotations

import inspect
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

import jsonschema
import yaml

from agent_rl.tool_runtime.base import BaseTool
from agent_rl.tool_runtime.errors import ToolConfigError
from agent_rl.tool_runtime.imports import ImportSpecError, load_object, one_line
from agent_rl.tool_runtime.options import RuntimeOptions, options_from_config

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
SUPPORTED_TYPES = ("native",)
LIFECYCLE = ("create", "execute", "calc_reward", "release")

# verl's class paths for tools that exist here, so verl YAML files load unchanged.
CLASS_ALIASES = {
    "verl.tools.gsm8k_tool.Gsm8kTool": "tools.gsm8k_reward.Gsm8kRewardTool",
}


@dataclass
class ToolSpec:
    """One validated YAML entry."""
    index: int
    class_name: str
    config: Dict[str, Any]
    tool_schema: Dict[str, Any]
    options: RuntimeOptions
    where: str                     # "<file>: tools[i] (name)" for error messages

    @property
    def name(self) -> str:
        return self.tool_schema["function"]["name"]


def schema_validator(schema: Dict[str, Any]):
    """A jsonschema validator for `schema` (its $schema dialect, else Draft 2020-12)."""
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema)


def check_parameters_schema(params: Any, where: str) -> None:
    if not isinstance(params, dict):
        raise ToolConfigError(f"{where}: tool_schema.function.parameters must be a mapping (a JSON Schema), got {type(params).__name__}")
    cls = jsonschema.validators.validator_for(params, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(params)
    except jsonschema.SchemaError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        raise ToolConfigError(f"{where}: tool_schema.function.parameters is not a valid JSON Schema: {one_line(e.message)} "
                              f"(at {path})") from None
    if params.get("type") != "object":
        raise ToolConfigError(f"{where}: tool_schema.function.parameters must have type: object (the arguments are a JSON object)")


def _check_entry(entry: Any, i: int, path: str) -> ToolSpec:
    where = f"{path}: tools[{i}]"
    if not isinstance(entry, dict):
        raise ToolConfigError(f"{where}: each entry must be a mapping with class_name, config, tool_schema")
    schema = entry.get("tool_schema")
    fn = schema.get("function") if isinstance(schema, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if isinstance(name, str):
        where = f"{where} ({name})"
    unknown = set(entry) - {"class_name", "config", "tool_schema"}
    if unknown:
        raise ToolConfigError(f"{where}: unknown key(s) {sorted(unknown)} (expected class_name, config, tool_schema)")
    class_name = entry.get("class_name")
    if not isinstance(class_name, str) or not class_name.strip():
        raise ToolConfigError(f"{where}: missing required field class_name (dotted.path.Class or file.py:Class)")
    config = entry.get("config")
    if config is None:
        config = {"type": "native"}
    if not isinstance(config, dict):
        raise ToolConfigError(f"{where}: config must be a mapping, got {type(config).__name__}")
    ctype = config.get("type", "native")
    if ctype not in SUPPORTED_TYPES:
        raise ToolConfigError(f"{where}: config.type {ctype!r} is not supported (supported: {', '.join(SUPPORTED_TYPES)})")
    if schema is None:
        raise ToolConfigError(f"{where}: missing required field tool_schema")
    if not isinstance(schema, dict):
        raise ToolConfigError(f"{where}: tool_schema must be a mapping")
    if schema.get("type") != "function":
        raise ToolConfigError(f"{where}: tool_schema.type must be 'function', got {schema.get('type')!r}")
    if not isinstance(fn, dict):
        raise ToolConfigError(f"{where}: missing required field tool_schema.function")
    for key in ("name", "description", "parameters"):
        if key not in fn:
            raise ToolConfigError(f"{where}: missing required field tool_schema.function.{key}")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ToolConfigError(f"{where}: tool_schema.function.name must match {NAME_RE.pattern}, got {name!r}")
    if not isinstance(fn["description"], str):
        raise ToolConfigError(f"{where}: tool_schema.function.description must be a string")
    if "strict" in fn and not isinstance(fn["strict"], bool):
        raise ToolConfigError(f"{where}: tool_schema.function.strict must be true or false")
    extra = set(fn) - {"name", "description", "parameters", "strict"}
    if extra:
        raise ToolConfigError(f"{where}: unknown key(s) in tool_schema.function: {sorted(extra)}")
    check_parameters_schema(fn["parameters"], where)
    options = options_from_config(config, where)
    return ToolSpec(i, class_name.strip(), dict(config), {"type": "function", "function": dict(fn)}, options, where)


def read_tool_specs(path: str) -> List[ToolSpec]:
    """Parse and validate the YAML without importing anything."""
    if not os.path.isfile(path):
        raise ToolConfigError(f"{path}: tool config file not found")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ToolConfigError(f"{path}: not valid YAML{where}: {one_line(problem)}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ToolConfigError(f"{path}: cannot read the tool config: {one_line(e)}") from None
    if not isinstance(doc, dict) or "tools" not in doc:
        raise ToolConfigError(f"{path}: expected a mapping with a top-level `tools:` list")
    entries = doc["tools"]
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        raise ToolConfigError(f"{path}: `tools` must be a list, got {type(entries).__name__}")
    specs: List[ToolSpec] = []
    seen: Dict[str, int] = {}
    for i, entry in enumerate(entries):
        spec = _check_entry(entry, i, path)
        if spec.name in seen:
            raise ToolConfigError(f"{spec.where}: duplicate tool name {spec.name!r} (already declared by tools[{seen[spec.name]}])")
        seen[spec.name] = i
        specs.append(spec)
    return specs


def resolve_class(class_name: str, base_dir: str, where: str = ""):
    """`pkg.mod.Class`, `pkg.mod:Class` or `path/to/file.py:Class` (relative to base_dir) -> the class
    (tool_runtime/imports.py)."""
    prefix = f"{where}: " if where else ""
    class_name = CLASS_ALIASES.get(class_name, class_name)
    try:
        cls, _ = load_object(class_name, base_dir, allow_dotted=True)
    except ImportSpecError as e:
        raise ToolConfigError(f"{prefix}class_name {e}") from e.__cause__
    if not inspect.isclass(cls):
        raise ToolConfigError(f"{prefix}class_name {class_name!r} is not a class")
    if not issubclass(cls, BaseTool):
        missing = [m for m in LIFECYCLE if not inspect.iscoroutinefunction(getattr(cls, m, None))]
        if missing:
            raise ToolConfigError(f"{prefix}class_name {class_name!r} is not a BaseTool subclass and lacks async {', '.join(missing)}")
    return cls


def build_tool(spec: ToolSpec, base_dir: str):
    cls = resolve_class(spec.class_name, base_dir, spec.where)
    try:
        tool = cls(dict(spec.config), spec.tool_schema)
    except Exception as e:
        raise ToolConfigError(f"{spec.where}: building {spec.class_name} failed: {type(e).__name__}: {one_line(e)}") from e
    if getattr(tool, "name", None) is None:
        tool.name = spec.name
    if tool.name != spec.name:
        raise ToolConfigError(f"{spec.where}: {spec.class_name} set its name to {tool.name!r}, expected {spec.name!r}")
    return tool


def load_tools(path: str) -> List[Any]:
    """Validate `path` and build every tool it declares (in file order)."""
    specs = read_tool_specs(path)
    base_dir = os.path.dirname(os.path.abspath(path))
    return [build_tool(s, base_dir) for s in specs]


def load_tool_specs_and_tools(path: str, only: Optional[Iterable[str]] = None) -> List[Tuple[ToolSpec, Any]]:
    """-> [(spec, tool)]; `only` restricts to these tool names (each must be declared in the file)."""
    specs = read_tool_specs(path)
    if only is not None:
        wanted = list(only)
        declared = {s.name for s in specs}
        missing = [n for n in wanted if n not in declared]
        if missing:
            raise ToolConfigError(f"{path}: no tool named {', '.join(map(repr, missing))} (declared: {', '.join(sorted(declared)) or 'none'})")
        specs = [s for s in specs if s.name in set(wanted)]
    base_dir = os.path.dirname(os.path.abspath(path))
    return [(s, build_tool(s, base_dir)) for s in specs]
