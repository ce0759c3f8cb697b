"""One resolver for user code (tool_runtime/imports.py): tool classes, task hooks / rewards and tool-call parsers
name code the same way and fail with the same one-line reasons."""
import pytest

from agent_rl.rollout.formats import get_parser
from agent_rl.tasks.registry import load_callable
from agent_rl.tool_runtime.errors import ToolConfigError
from agent_rl.tool_runtime.imports import ImportSpecError, load_object
from agent_rl.tool_runtime.loader import resolve_class


@pytest.fixture
def user_code(tmp_path):
    (tmp_path / "mine.py").write_text("class Box:\n    @staticmethod\n    def parse(text):\n        return text\n"
                                      "VALUE = 3\n")
    (tmp_path / "broken.py").write_text("def f(:\n")
    return tmp_path


def test_the_three_spellings(user_code, monkeypatch):
    monkeypatch.syspath_prepend(str(user_code))
    box, origin = load_object("mine:Box")
    assert box.__name__ == "Box" and origin == "mine"
    assert load_object("mine.py:Box.parse", base_dir=str(user_code))[0]("x") == "x"   # dotted attribute, file form
    assert load_object("mine.Box", allow_dotted=True)[0] is box
    with pytest.raises(ImportSpecError, match="must be a dotted path"):
        load_object("mine.Box")        # the class_name-only spelling elsewhere


@pytest.mark.parametrize("spec, reason", [
    ("mine.py:Nope", "has no attribute 'Nope'"),
    ("missing.py:f", "file not found"),
    ("broken.py:f", "importing .*broken.py failed: SyntaxError"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz': ModuleNotFoundError"),
    ("sub/file.txt:f", "the part before ':' must be a .py file"),
])
def test_every_caller_gives_the_same_one_line_reason(user_code, monkeypatch, spec, reason):
    monkeypatch.chdir(user_code)
    errors = []
    for call, exc in [(lambda: resolve_class(spec, str(user_code), "tools.yaml: tools[0]"), ToolConfigError),
                      (lambda: load_callable(spec, "reward.functions.x"), ValueError),
                      (lambda: get_parser(spec), ValueError)]:
        with pytest.raises(exc, match=reason) as ei:
            call()
        assert "\n" not in str(ei.value)
        errors.append(str(ei.value))
    tails = {e[e.index(repr(spec)):] for e in errors}
    assert len(tails) == 1, errors      # the same reason after each caller's own prefix


def test_not_callable_and_not_a_class(user_code):
    with pytest.raises(ValueError, match="'mine.py:VALUE' is not callable"):
        load_callable("mine.py:VALUE", "x", base_dir=str(user_code))
    with pytest.raises(ToolConfigError, match="is not a class"):
        resolve_class("mine.py:VALUE", str(user_code))
