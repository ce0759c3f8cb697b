"""GSM8K / arithmetic rewards: number parsing (verl's sign rule) and the cost of extra answer submissions."""
import os

import pytest

from agent_rl.config.load import section_class
from agent_rl.tasks import compute_reward
from agent_rl.rewards.text import parse_number
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.runtime import ToolRuntime

RewardConfig = section_class("reward")   # with the tasks' keys (reward.kg_*, reward.arith_format_weight)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH = os.path.join(REPO, "configs", "tool_config", "arith_tool_config.yaml")
SUBMIT = '<tool_call>{{"name": "calc_gsm8k_reward", "arguments": {{"answer": "{}"}}}}</tool_call>'


@pytest.mark.parametrize("text, want", [
    ("72", 72.0), ("#### 1,234", 1234.0), ("$1,234.50", 1234.5), ("-3", -3.0), ("The answer is 0.5.", 0.5),
    ("from 3 to 18", 18.0), ("no number", None), ("", None), (".5", 0.5), ("$ 40", 40.0), (12, 12.0),
    # a minus is a sign only when attached to the digits (verl's `-?[0-9.,]+`)
    ("Answer:\n- 72", 72.0), ("12 - 5", 5.0), ("x = -3.5", -3.5), ("-$5", -5.0), ("-.5", -0.5), ("12-5", -5.0),
    (True, None), (float("inf"), None), pytest.param("9" * 400, None, id="overflow"),
])
def test_parse_number(text, want):
    assert parse_number(text) == want


def math_traj(texts, truth, calls=(), tool_rewards=None):
    turns = [TurnRecord(index=i, output_ids=[1], logprobs=[0.0], finish_reason="stop", text=t) for i, t in enumerate(texts)]
    for i, rec in enumerate(calls):
        turns[i].tool_calls = [rec]
    return Trajectory(uid="u", sample_index=0, prompt_ids=[0], turns=turns, tool_rewards=dict(tool_rewards or {}),
                      row={"data_source": "gsm8k", "reward_model": {"ground_truth": truth}})


@pytest.mark.parametrize("answer, truth", [
    ("Answer:\n- 72", "72"), ("12 - 5", "5"), ("-3", "-3"), ("it is -3", -3),
])
def test_spaced_minus_is_not_a_sign(answer, truth):
    for text in (f"<answer>{answer}</answer>", "so\n#### " + answer.replace("\n", " ")):
        score, c = compute_reward(math_traj([text], truth), RewardConfig())
        assert c["correct"] == 1.0 and score == 1.0, text


async def submissions(answers, truth):
    """Run the shipped tool on `answers` -> (call records, calc_rewards)."""
    rt = ToolRuntime.from_yaml(ARITH, only=["calc_gsm8k_reward"])
    async with rt.session("t", {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": truth}}}) as s:
        recs = [await s.call("calc_gsm8k_reward", {"answer": a}) for a in answers]
        return recs, await s.calc_rewards()


async def scored(guesses, final, truth="42", cfg=RewardConfig(arith_format_weight=0.1)):
    recs, rewards = await submissions(guesses, truth)
    traj = math_traj([SUBMIT.format(g) for g in guesses] + [f"<answer>{final}</answer>"], truth, recs, rewards)
    return compute_reward(traj, cfg)


async def test_guessing_through_the_submit_tool_never_pays():
    at_once, c_once = await scored([], "42")
    submit_once, c_submit = await scored(["42"], "42")
    guessed, c_guess = await scored(["40", "41", "42"], "42")
    assert at_once == pytest.approx(1.1) and submit_once == pytest.approx(1.1) and c_submit["submit_penalty"] == 0.0
    assert guessed < submit_once and guessed < at_once
    assert guessed == pytest.approx(1.1 - 2 * 0.05) and c_guess["submit_penalty"] == pytest.approx(-0.1)
    assert c_guess["correct"] == 1.0 and c_guess["calc_reward"] == 1.0     # logged, not added
    # a wrong answer gains nothing from submissions either
    wrong_guessed, _ = await scored(["40", "41"], "41")
    wrong_once, _ = await scored([], "41")
    assert wrong_guessed < wrong_once
