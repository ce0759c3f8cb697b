"""Imports go one way (docs/architecture.md, Layers): a module never imports a package of a higher layer, nor a
sibling package of its own layer. Every import is read, also those inside functions."""
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAYERS = [
    ["agent_rl.algorithms", "agent_rl.metrics", "agent_rl.model", "agent_rl.tool_runtime", "agent_rl.data"],
    ["agent_rl.engines"],
    ["agent_rl.rollout"],
    ["agent_rl.rewards", "agent_rl.training", "agent_rl.config"],
    ["tools"],
    ["agent_rl.tasks"],
    ["agent_rl.orchestration", "agent_rl.bench"],
    ["agent_rl.cli"],
]
# Known exceptions: the start-up file check of `compose(check_paths=True)` reuses the orchestration's data / tool /
# model / reward checks. Two lower layers read the task registry's declarations (it imports no task to answer)
# when asked, in every process, through one module each: the config schema has the keys the tasks add to its
# sections (`Task.config`: a script that only composes a config knows `tools.kg_store` as the trainer does), and
# the metrics' PNG panels and console groups are the tasks' too (`Task.panels`: `python -m agent_rl.metrics.plot`
# draws what the trainer's Tracker draws).
KNOWN = {("agent_rl.config.load", "agent_rl.orchestration.prepare"),
         ("agent_rl.config.load", "agent_rl.tasks.registry"),
         ("agent_rl.metrics.tasks", "agent_rl.tasks.registry")}


def _place(module: str):
    for i, layer in enumerate(LAYERS):
        for pkg in layer:
            if module == pkg or module.startswith(pkg + "."):
                return i, pkg
    return None, None


def _imports(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def violations():
    out = []
    for path in sorted(list((ROOT / "agent_rl").rglob("*.py")) + list((ROOT / "tools").rglob("*.py"))):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        mine, my_pkg = _place(module)
        if mine is None:
            continue
        for target in _imports(path):
            theirs, their_pkg = _place(target)
            if theirs is None or their_pkg == my_pkg or (module, target) in KNOWN:
                continue
            if theirs >= mine:
                out.append(f"{module} imports {target} (layer {theirs} >= {mine})")
    return out


def test_imports_go_down_only():
    assert violations() == []


def test_known_exceptions_are_still_real():
    """Drop an entry of KNOWN once its import is gone."""
    for module, target in KNOWN:
        path = ROOT / (module.replace(".", "/") + ".py")
        assert target in set(_imports(path)), f"{module} no longer imports {target}: remove it from KNOWN"


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "agent_rl" / "algorithms"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from agent_rl.orchestration import trainer\n")
    (tmp_path / "tools").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations() == ["agent_rl.algorithms.bad imports agent_rl.orchestration (layer 6 >= 0)"]
