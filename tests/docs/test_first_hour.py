"""First-hour papercuts (issue 16): the README's CLI table lists every command, option help shows defaults, the
model check prints a verdict, and the noise switches (pytest-asyncio, Ray's token warning) stay set."""
import argparse
import os
import re
import sys

import pytest

from agent_rl.cli.main import build_parser

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _subcommands(parser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _readme_cli_rows():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## CLI"):]
    section = section[:section.index("\n## ", 1)] if "\n## " in section[1:] else section
    return [line for line in section.splitlines() if line.startswith("| `agent-rl")]


def _readme_commands():
    """{(command, subcommand or None)} named in the first column of the README's CLI table."""
    top = set(_subcommands(build_parser()))
    named = set()
    for row in _readme_cli_rows():
        cell = row.split(" | ")[0]
        cmd = None
        for code in re.findall(r"`([^`]+)`", cell):
            words = code.replace("\\|", "|").split()
            if words and words[0] == "agent-rl":
                words = words[1:]
            if words and words[0] in top:
                cmd, words = words[0], words[1:]
            if cmd is None:
                continue
            named.add((cmd, None))
            if words:
                for sub in words[0].split("|"):
                    named.add((cmd, sub))
    return named


def test_readme_cli_table_lists_every_command_and_subcommand():
    named = _readme_commands()
    missing = []
    for name, parser in _subcommands(build_parser()).items():
        subs = _subcommands(parser)
        if not subs:
            if (name, None) not in named:
                missing.append(f"agent-rl {name}")
        for sub in subs:
            if (name, sub) not in named:
                missing.append(f"agent-rl {name} {sub}")
    assert not missing, f"README.md's CLI table lacks: {', '.join(missing)}"
    # and names nothing that does not exist
    top = _subcommands(build_parser())
    for cmd, sub in named:
        assert cmd in top
        if sub is not None and _subcommands(top[cmd]):
            assert sub in _subcommands(top[cmd]), f"README names agent-rl {cmd} {sub}, which does not exist"


def _leaf_parsers():
    top = _subcommands(build_parser())
    yield "kg-server", top["kg-server"]
    for sub, p in _subcommands(top["bench"]).items():
        yield f"bench {sub}", p


@pytest.mark.parametrize("name, parser", list(_leaf_parsers()), ids=lambda x: x if isinstance(x, str) else "")
def test_bench_and_kg_server_options_show_their_defaults(name, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        d = action.default
        if not action.option_strings or action.required or d in (None, False, argparse.SUPPRESS) or d == []:
            continue
        shown = formatter._expand_help(action)            # the option's help as `--help` prints it
        assert "default" in shown, f"agent-rl {name} {action.option_strings[-1]}: no default in {shown!r}"
        if "(default: " in shown and action.help and "%(default)" in formatter._get_help_string(action):
            assert f"default: {d}" in shown, shown


def test_kg_server_help_names_the_values():
    text = " ".join(_subcommands(build_parser())["kg-server"].format_help().split())
    for shown in ("(default: 127.0.0.1)", "(default: 8001)", "(default: 1024)", "(default: 64)", "(default: 10.0)",
                  "(default: 30.0)"):
        assert shown in text


def test_pytest_asyncio_loop_scope_is_set():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        ini = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    assert ini["asyncio_default_fixture_loop_scope"] == "function"


def test_model_check_prints_expectation_and_verdict():
    from agent_rl.model.prepare import check_report

    lines = check_report("17 * 23 = 349<|im_end|>")       # what SmolLM2-135M answers
    assert lines[0] == "check: greedy reply to 'What is 17 * 23?' with a calculator tool offered: '17 * 23 = 349<|im_end|>'"
    assert "expected readable text" in lines[1] and "-> PASS" in lines[1] and "391" in lines[1]
    assert len(lines) == 2
    call = check_report('<tool_call>{"name": "calculator", "arguments": {"expression"')
    assert "PASS: a <tool_call>" in call[1]
    for empty in ("", "<|im_end|>", "  \n"):
        bad = check_report(empty)
        assert "-> FAIL: no readable text" in bad[1] and "agent-rl model prepare --force" in bad[2]


def test_ray_auth_env_left_alone_when_set_or_joining(monkeypatch):
    pytest.importorskip("ray")
    from agent_rl.orchestration.group import quiet_auth_env

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")            # the user's choice wins
    assert quiet_auth_env() == {} and os.environ["RAY_AUTH_MODE"] == "disabled"
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")         # ray.init would join that cluster: its setting
    assert quiet_auth_env() == {} and "RAY_AUTH_MODE" not in os.environ
