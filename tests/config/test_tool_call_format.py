"""rollout.multi_turn.format: a registered name or a dotted path; anything else fails at load in one line."""
import pytest

from agent_rl.config.load import ConfigError, compose
from agent_rl.rollout.formats import FORMATS


def test_known_formats_and_dotted_path_load():
    assert compose([], check_paths=False).rollout.multi_turn.format == "hermes"
    for name in FORMATS:
        assert compose([f"rollout.multi_turn.format={name}"], check_paths=False).rollout.multi_turn.format == name
    cfg = compose(["rollout.multi_turn.format=agent_rl.rollout.formats:parse_llama3_json"], check_paths=False)
    assert cfg.rollout.multi_turn.format.endswith(":parse_llama3_json")


@pytest.mark.parametrize("value, reason", [("qwen_xml", "is not one of hermes, llama3_json, mistral"),
                                           ("no_such_module_xyz:parse", "ModuleNotFoundError")])
def test_unknown_format_fails_at_load_in_one_line(value, reason):
    with pytest.raises(ConfigError) as ei:
        compose([f"rollout.multi_turn.format={value}"], check_paths=False)
    msg = str(ei.value)
    assert msg.startswith("rollout.multi_turn.format: ") and reason in msg and "\n" not in msg


def test_unknown_format_cli_error(capsys):
    from agent_rl.cli.main import main

    assert main(["train", "rollout.multi_turn.format=nosuch"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "rollout.multi_turn.format" in err and "nosuch" in err
