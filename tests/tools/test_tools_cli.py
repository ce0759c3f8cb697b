"""`agent-rl tools validate|call` through agent_rl.cli.main.main."""
import os

import pytest

from agent_rl.cli.main import main

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(REPO, "configs", "tool_config")
ARITH = os.path.join(CONFIGS, "arith_tool_config.yaml")


def test_validate_ok(capsys):
    files = [os.path.join(CONFIGS, f) for f in ("arith_tool_config.yaml", "kg_query_tool_config.yaml")]
    assert main(["tools", "validate", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"OK {files[0]}: calculator (tools.calculator.CalculatorTool)",
                   f"OK {files[0]}: calc_gsm8k_reward (tools.gsm8k_reward.Gsm8kRewardTool)",
                   f"OK {files[1]}: kg_query (tools.kg_query.KGQueryTool)"]


def test_validate_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tools:\n  - class_name: tools.calculator.CalculatorTool\n    tool_schema: {type: function, function: {name: c, description: d}}\n")
    assert main(["tools", "validate", ARITH, str(bad)]) == 1
    cap = capsys.readouterr()
    assert f"OK {ARITH}: calculator" in cap.out
    assert f"error: {bad}: tools[0] (c): missing required field tool_schema.function.parameters" in cap.err


def test_call_calculator(capsys):
    assert main(["tools", "call", ARITH, "calculator", '{"expression": "(12 + 30) * 1.5"}']) == 0
    out = capsys.readouterr().out
    assert "observation:\n63\n" in out and "status: ok" in out and "step_reward: 0.0" in out
    assert "calc_reward: 0.0" in out and '"tools/calculator/calls": 1' in out


def test_call_gsm8k_with_create_kwargs(capsys):
    assert main(["tools", "call", ARITH, "calc_gsm8k_reward", '{"answer": "$1,234"}',
                 "--create-kwargs", '{"ground_truth": "1234"}']) == 0
    out = capsys.readouterr().out
    assert "Answer recorded (parsed: 1234)." in out and "calc_reward: 1.0" in out


def test_call_failures(capsys):
    assert main(["tools", "call", ARITH, "calculator", '{"expression": 5}']) == 1
    assert "status: invalid_arguments" in capsys.readouterr().out
    assert main(["tools", "call", ARITH, "nope", "{}"]) == 1
    assert "no tool named 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--create-kwargs is not valid JSON"):
        main(["tools", "call", ARITH, "calculator", "{}", "--create-kwargs", "{oops"])


def test_call_kg_query_with_store(kg_store_path, capsys, monkeypatch):
    monkeypatch.delenv("AGENT_RL_KG_SERVER_URL", raising=False)
    kg = os.path.join(CONFIGS, "kg_query_tool_config.yaml")
    assert main(["tools", "call", kg, "kg_query", '{"action": "get_relations_out", "entity": "France"}',
                 "--create-kwargs", '{"sample_id": "q2"}', "--kg-store", kg_store_path]) == 0
    out = capsys.readouterr().out
    assert 'Outgoing relations of "France": location.country.capital' in out and '"error_type": "KG_SUCCESS"' in out
