"""calculator (ast walk, bounds) and calc_gsm8k_reward (neutral reply, penalty per extra submission, final reward).
Number parsing is tested with the rewards (tests/rewards/test_math_rewards.py)."""
import os

import pytest

from agent_rl.tool_runtime.runtime import ToolRuntime
from tools.calculator import CalcError, evaluate, format_result

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH = os.path.join(REPO, "configs", "tool_config", "arith_tool_config.yaml")


@pytest.mark.parametrize("expr, want", [
    ("1 + 2 * 3", "7"), ("(1 + 2) * 3", "9"), ("7 / 2", "3.5"), ("7 // 2", "3"), ("-7 // 2", "-4"),
    ("7 % 3", "1"), ("2 ** 10", "1024"), ("-3 + -(-2)", "-1"), ("+5", "5"), ("0.1 + 0.2", "0.3"),
    ("1.5 * 4", "6"), ("2 ** -1", "0.5"), ("10 / 3", "3.33333333333"), ("(2.5)", "2.5"), ("-2 ** 2", "-4"),
])
def test_calculator_values(expr, want):
    assert format_result(evaluate(expr)) == want


@pytest.mark.parametrize("expr, needle", [
    ("1 / 0", "division by zero"), ("5 // 0", "division by zero"), ("5 % 0.0", "division by zero"),
    ("0 ** -1", "division by zero"), ("1 +", "invalid syntax"), ("", "empty"),
    ("2 ** 1000", "exponent 1000 exceeds"), ("9 ** 99 * 9 ** 99", "exceeds the limit"),
    ("10.0 ** 99", "exceeds the limit"), ("(-8) ** 0.5", "not a real number"),
    ("__import__('os').system('echo hi')", "functions are not supported"), ("x + 1", "variables"),
    ("2 ^ 3", "use **"), ("1,000 + 1", "commas"), ("'a' * 3", "unsupported literal"), ("True + 1", "unsupported literal"),
    ("1 < 2", "unsupported syntax"), ("1" * 201, "longer than 200"), ("[1][0]", "unsupported syntax"),
    ("1e400", "too large"), ("lambda: 1", "unsupported syntax"),
])
def test_calculator_errors(expr, needle):
    with pytest.raises(CalcError, match=None) as ei:
        evaluate(expr)
    assert needle in str(ei.value), str(ei.value)


def test_calculator_never_evals(monkeypatch):
    import builtins

    def no_eval(*a, **k):
        raise AssertionError("eval used")
    monkeypatch.setattr(builtins, "eval", no_eval)
    assert evaluate("6 * 7") == 42


async def test_arith_config_through_runtime():
    rt = ToolRuntime.from_yaml(ARITH)
    assert rt.names == ["calculator", "calc_gsm8k_reward"]
    kwargs = {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": "1,234"}}}
    async with rt.session("t", kwargs) as s:
        calc = await s.call("calculator", '{"expression": "1000 + 234"}')
        err = await s.call("calculator", {"expression": "1/0"})
        wrong = await s.call("calc_gsm8k_reward", {"answer": "1233"})
        right = await s.call("calc_gsm8k_reward", {"answer": "$1,234.00"})
        again = await s.call("calc_gsm8k_reward", {"answer": "1234"})
        rewards = await s.calc_rewards()
    assert calc.observation == "1234" and calc.metrics == {"success": True}
    assert err.status == "ok" and err.observation == "Error: division by zero" and err.metrics == {"success": False}
    assert not err.succeeded     # ran, but the tool reports a failure
    assert wrong.observation == "Answer recorded (parsed: 1233)." and wrong.step_reward == 0.0   # the first is free
    assert right.observation == "Answer recorded (parsed: 1234)." and right.step_reward == -0.05
    assert again.step_reward == -0.05          # every later submission costs, right or wrong
    assert rewards == {"calculator": 0.0, "calc_gsm8k_reward": 1.0}


async def submit(answers, truth=72):
    rt = ToolRuntime.from_yaml(ARITH, only=["calc_gsm8k_reward"])
    async with rt.session("t", {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": truth}}}) as s:
        recs = [await s.call("calc_gsm8k_reward", {"answer": a}) for a in answers]
        return recs, (await s.calc_rewards())["calc_gsm8k_reward"]


async def test_gsm8k_reply_does_not_reveal_correctness():
    (right,), right_reward = await submit(["72"])
    (wrong,), wrong_reward = await submit(["71"])
    assert (right_reward, wrong_reward) == (1.0, 0.0)
    # identical apart from the echoed answer; same step reward; nothing says right or wrong
    assert right.observation.replace("72", "N") == wrong.observation.replace("71", "N") == "Answer recorded (parsed: N)."
    assert right.step_reward == wrong.step_reward == 0.0
    later_right, later_wrong = (await submit(["1", "72"]))[0][1], (await submit(["1", "71"]))[0][1]
    assert later_right.observation.replace("72", "N") == later_wrong.observation.replace("71", "N")
    assert later_right.step_reward == later_wrong.step_reward == -0.05


async def test_gsm8k_spaced_minus_is_not_a_sign():
    assert (await submit(["Answer:\n- 72"]))[1] == 1.0
    assert (await submit(["12 - 5"], truth=5))[1] == 1.0
    recs, reward = await submit(["-3"], truth=-3)
    assert reward == 1.0 and recs[0].observation == "Answer recorded (parsed: -3)."


async def test_gsm8k_final_answer_wrong_and_missing_ground_truth():
    rt = ToolRuntime.from_yaml(ARITH, only=["calc_gsm8k_reward"])
    async with rt.session("t", {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": 18}}}) as s:
        await s.call("calc_gsm8k_reward", {"answer": "18"})
        await s.call("calc_gsm8k_reward", {"answer": "nineteen"})
        assert (await s.calc_rewards())["calc_gsm8k_reward"] == 0.0   # the last answer counts
    async with rt.session("t2", {}) as s:
        rec = await s.call("calc_gsm8k_reward", {"answer": "18"})
    assert rec.status == "create_failed" and "ground_truth" in rec.observation


def test_gsm8k_penalty_must_not_be_a_bonus():
    from tools.gsm8k_reward import Gsm8kRewardTool

    schema = {"type": "function", "function": {"name": "calc_gsm8k_reward", "description": "", "parameters": {"type": "object"}}}
    with pytest.raises(ValueError, match="penalty must be <= 0"):
        Gsm8kRewardTool({"penalty": 0.1}, schema)
