"""The worked example of docs/tools.md loads, validates and runs."""
import os

from agent_rl.cli.main import main
from agent_rl.tool_runtime.runtime import ToolRuntime

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(REPO, "examples", "tools", "word_count_tool_config.yaml")


async def test_word_count_example_runs():
    rt = ToolRuntime.from_yaml(EXAMPLE)
    assert rt.names == ["word_count"] and rt.options("word_count").timeout_s == 2
    async with rt.session("doc", {"word_count": {"create_kwargs": {"target": 4}}}) as s:
        all_words = await s.call("word_count", '{"text": "to be or not to be"}')
        unique = await s.call("word_count", {"text": "To be or not to be", "unique": True})
        bad = await s.call("word_count", {"text": "x", "extra": 1})
        rewards = await s.calc_rewards()
    assert all_words.observation == "6 words" and unique.observation == "4 words" and unique.metrics == {"words": 4}
    assert bad.status == "invalid_arguments" and "'extra' was unexpected" in bad.observation
    assert rewards == {"word_count": 1.0}


def test_word_count_example_cli(capsys):
    assert main(["tools", "validate", EXAMPLE]) == 0
    assert main(["tools", "call", EXAMPLE, "word_count", '{"text": "a b c"}', "--create-kwargs", '{"target": 3}']) == 0
    out = capsys.readouterr().out
    assert "3 words" in out and "calc_reward: 1.0" in out


def test_docs_reference_the_example():
    with open(os.path.join(REPO, "docs", "tools.md"), encoding="utf-8") as f:
        doc = f.read()
    assert "examples/tools/word_count_tool_config.yaml" in doc and "word_count.py:WordCountTool" in doc
