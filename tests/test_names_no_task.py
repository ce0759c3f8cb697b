"""The generic framework names no shipped task (docs/architecture.md): each task's specifics live in its folder under
agent_rl/tasks/ and are reached through the task registry. Read from the code (AST), not from docstrings or the
help texts of config keys (which may list the shipped tasks as examples):

- no identifier (name, attribute, argument, keyword, definition) of the framework's generic packages contains a
  shipped task's name, data source or tool name as a `_`-separated word (`kg_store`, `KG_TOOL`, `arith_format_weight`);
- no other string of agent_rl/config, agent_rl/data and agent_rl/metrics contains one, except the defaults that make
  the default run the KG task's and two examples in error messages (DEFAULTS, MESSAGES below: a new one is a
  decision), and the documentation tables of config/docs.py.
"""
import ast
import pathlib
import re

from agent_rl.tasks.registry import TASKS

ROOT = pathlib.Path(__file__).resolve().parents[1]
GENERIC = ["agent_rl/config", "agent_rl/data", "agent_rl/metrics", "agent_rl/orchestration"]
STRINGS_TOO = ["agent_rl/config", "agent_rl/data", "agent_rl/metrics"]
# files of GENERIC that others own and that still name a task (see the report of the registries work)
NOT_YET: set = set()
# what the default config holds (the default run is the KG task's), and examples in two error messages
DEFAULTS = {"data/kg/train.parquet", "data/kg/val.parquet", "data/kg/sft.parquet", "kg-grpo",
            "configs/tool_config/kg_query_tool_config.yaml"}
MESSAGES = {("agent_rl/config/load.py", "e.g. reward.objectives.answer.function=kg"),
            ("agent_rl/config/objectives.py", "a task name (kg, arith, gsm8k)")}
DOC_CONSTANTS = {"VERL_KEYS", "HEADER"}     # documentation tables of agent_rl/config/docs.py (docs/config.md)
PAPER = re.compile(r"KG-R1")               # the paper the KG task follows is not the task


def task_words():
    words = set()
    for t in TASKS.values():
        words.add(t.name)
        words.update(s for s in t.data_sources + t.tools if "_" not in s)
        words.update(w for s in t.data_sources + t.tools for w in s.split("_") if w in TASKS)
    return words


def _docstrings(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _doc_constants(tree):
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(getattr(t, "id", None) in DOC_CONSTANTS for t in targets) and node.value is not None:
                out.update(id(n) for n in ast.walk(node.value) if isinstance(n, ast.Constant))
    return out


def _help_texts(tree):
    """Constants that are the help of a config key: F(default, "help", ...) / F(..., help=...) / {"help": ...}."""
    out = set()
    for node in ast.walk(tree):
        parts = []
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "F":
            parts = node.args[1:2] + [k.value for k in node.keywords if k.arg == "help"]
        elif isinstance(node, ast.Dict):
            parts = [v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant) and k.value == "help"]
        for p in parts:
            out.update(id(n) for n in ast.walk(p) if isinstance(n, ast.Constant))
    return out


def _identifiers(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.lineno, node.id
        elif isinstance(node, ast.Attribute):
            yield node.lineno, node.attr
        elif isinstance(node, ast.arg):
            yield node.lineno, node.arg
        elif isinstance(node, ast.keyword) and node.arg:
            yield node.value.lineno, node.arg
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.lineno, node.name
        elif isinstance(node, ast.alias):
            for part in (node.asname or node.name).split("."):
                yield getattr(node, "lineno", 0), part


def _allowed(rel, text, allowed, messages):
    return text in allowed or any(rel == f and part in text for f, part in messages)


def violations(root=ROOT, generic=GENERIC, strings_too=STRINGS_TOO, allowed=DEFAULTS, skip=NOT_YET,
               messages=MESSAGES):
    words = task_words()
    word_re = re.compile(r"(?<![A-Za-z0-9])(" + "|".join(sorted(map(re.escape, words))) + r")(?![A-Za-z0-9])", re.I)
    out = []
    for folder in generic:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel in skip:
                continue
            tree = ast.parse(path.read_text(), rel)
            for line, name in _identifiers(tree):
                if set(name.lower().split("_")) & words:
                    out.append(f"{rel}:{line}: identifier {name}")
            if not any(rel.startswith(f + "/") for f in strings_too):
                continue
            skip_ids = _docstrings(tree) | _help_texts(tree) | _doc_constants(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip_ids \
                        and not _allowed(rel, node.value, allowed, messages) \
                        and word_re.search(PAPER.sub("", node.value)):
                    out.append(f"{rel}:{node.lineno}: string {node.value[:60]!r}")
    return out


def test_the_framework_names_no_task():
    assert violations() == []


def test_the_check_catches_a_task_name(tmp_path):
    pkg = tmp_path / "agent_rl" / "config"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text('KG_TOOL = "calculator"\n\n\ndef f(cfg):\n    return cfg.tools.kg_store\n')
    (pkg / "fine.py").write_text('"""Docs may name kg_query."""\nimport math\n\nbackground = math.pi\n')
    assert violations(tmp_path, ["agent_rl/config"], ["agent_rl/config"], set(), set(), set()) == [
        "agent_rl/config/bad.py:1: identifier KG_TOOL", "agent_rl/config/bad.py:5: identifier kg_store",
        "agent_rl/config/bad.py:1: string 'calculator'"]


def test_the_skipped_files_still_need_skipping():
    """Drop an entry of NOT_YET once its file names no task."""
    for rel in NOT_YET:
        assert violations(skip=set(NOT_YET) - {rel}), f"{rel} names no task any more: remove it from NOT_YET"
