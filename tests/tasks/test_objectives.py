"""reward.objectives: weighted sum of several reward functions, data_sources, async objectives, errors, config."""
import asyncio
import dataclasses
import textwrap

import pytest

from agent_rl.config.load import ConfigError, compose, section_class
from agent_rl.rollout.group_filter import GroupFilter
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tasks import UnknownDataSourceError, check_row_reward, compute_reward, compute_reward_async
from agent_rl.tasks.objectives import ObjectiveError, check_objectives

RewardConfig = section_class("reward")   # with the tasks' keys (reward.kg_*)
BASE = RewardConfig(kg_answer_weight=1.0, kg_format_weight=0.1, kg_validity_weight=0.1, kg_retrieval_weight=0.2)

REWARDS = '''
import asyncio

def brevity(traj, cfg):
    # 1 for one assistant turn, 0.5 for two, ...; a per-turn reward of 1 on every turn
    traj.turn_rewards = [1.0] * len(traj.turns)
    return 1.0 / len(traj.turns), {"turns": float(len(traj.turns))}

async def polite(traj, cfg):
    await asyncio.sleep(0)
    return (0.25 if "please" in traj.turns[-1].text else 0.0), {"polite_checked": 1.0}

def boom(traj, cfg):
    raise ValueError("backend down")

def nan_score(traj, cfg):
    return float("nan"), {}

def no_tuple(traj, cfg):
    return 0.5
'''


@pytest.fixture
def mod(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(textwrap.dedent(REWARDS))
    return str(path)


def turn(i, text):
    return TurnRecord(index=i, output_ids=[1], logprobs=[0.0], finish_reason="stop", text=text)


def traj(texts, source="webqsp", gold=("France",)):
    return Trajectory(uid="u", sample_index=0, prompt_ids=[0], turns=[turn(i, t) for i, t in enumerate(texts)],
                      row={"data_source": source, "reward_model": {"ground_truth": list(gold)}})


def cfg_with(**objectives):
    return dataclasses.replace(BASE, objectives=objectives)


def test_weighted_sum_components_and_turn_rewards(mod):
    """answer = the kg task's reward (weight 1), brevity (weight -0.5, sets turn rewards), polite (async, weight 2,
    webqsp rows only). Score = 1 * kg - 0.5 * brevity + 2 * polite; each objective's score is kept as obj/<name>,
    their own components unprefixed; turn rewards are the weighted sum of those the objectives set."""
    t = traj(["thinking", "<answer>France</answer> please"])
    single = traj(["thinking", "<answer>France</answer> please"])
    kg_score, kg_comps = compute_reward(single, BASE)       # the kg reward alone, as without objectives
    cfg = cfg_with(answer={"function": "kg"}, brevity={"function": f"{mod}:brevity", "weight": -0.5},
                   polite={"function": f"{mod}:polite", "weight": 2.0, "data_sources": ["webqsp"]})
    score, comps = compute_reward(t, cfg)
    assert kg_score > 0.9
    assert score == pytest.approx(kg_score - 0.5 * 0.5 + 2 * 0.25)
    assert comps["obj/answer"] == pytest.approx(kg_score)
    assert comps["obj/brevity"] == 0.5 and comps["obj/polite"] == 0.25
    assert comps["turns"] == 2.0 and comps["polite_checked"] == 1.0
    assert all(comps[k] == v for k, v in kg_comps.items())          # the task's own components, unprefixed
    assert t.turn_rewards == pytest.approx([a - 0.5 for a in single.turn_rewards])
    # the rollout's path (awaits the async objective on the running loop) gives the same
    t2 = traj(["thinking", "<answer>France</answer> please"])
    assert asyncio.run(compute_reward_async(t2, cfg)) == (pytest.approx(score), comps)


def test_objectives_outside_their_data_sources_add_nothing(mod):
    cfg = cfg_with(answer={"function": "kg"}, polite={"function": f"{mod}:polite", "weight": 2.0,
                                                      "data_sources": ["webqsp"]})
    t = traj(["<answer>France</answer> please"], source="kg_synth")
    score, comps = compute_reward(t, cfg)
    assert score == pytest.approx(comps["obj/answer"]) and "obj/polite" not in comps and "polite_checked" not in comps
    # a row that no objective scores is an error at load, in one line naming the data source
    only = cfg_with(polite={"function": f"{mod}:polite", "data_sources": ["webqsp"]})
    with pytest.raises(UnknownDataSourceError, match="no objective of reward.objectives applies to data_source "
                                                     "'kg_synth'"):
        check_row_reward({"data_source": "kg_synth"}, only)
    check_row_reward({"data_source": "webqsp"}, only)


def test_auto_is_the_rows_own_reward(mod):
    """function: auto = reward.functions for the row's source, else its task (as without objectives)."""
    cfg = dataclasses.replace(cfg_with(main={"function": "auto"}, brevity={"function": f"{mod}:brevity",
                                                                            "weight": 0.0}),
                              functions={"my_src": f"{mod}:polite"})
    s1, c1 = compute_reward(traj(["<answer>France</answer>"]), cfg)
    assert s1 == pytest.approx(compute_reward(traj(["<answer>France</answer>"]), BASE)[0])
    assert c1["obj/brevity"] == 1.0                                      # weight 0: logged, not scored
    s2, c2 = compute_reward(traj(["please"], source="my_src"), cfg)
    assert s2 == 0.25 and c2["obj/main"] == 0.25
    with pytest.raises(UnknownDataSourceError, match="'nowhere'"):
        check_row_reward({"data_source": "nowhere"}, cfg)


@pytest.mark.parametrize("fn, msg", [("boom", r"reward.objectives.bad \(.*:boom\) on a 'webqsp' row: ValueError: "
                                                r"backend down"),
                                     ("nan_score", "non-finite score nan"),
                                     ("no_tuple", r"returned float, not \(score, \{component: value\}\)")])
def test_a_failing_objective_stops_with_its_name(mod, fn, msg):
    cfg = cfg_with(answer={"function": "kg"}, bad={"function": f"{mod}:{fn}"})
    with pytest.raises(ObjectiveError, match=msg):
        compute_reward(traj(["<answer>France</answer>"]), cfg)
    with pytest.raises(ObjectiveError, match=msg):
        asyncio.run(compute_reward_async(traj(["<answer>France</answer>"]), cfg))


def test_functions_are_checked_at_start(mod):
    from agent_rl.orchestration.prepare import check_rewards

    assert [o.name for o in check_objectives(cfg_with(a={"function": "arith"}, b={"function": f"{mod}:brevity"}))] \
        == ["a", "b"]
    with pytest.raises(ValueError, match=r"reward.objectives.a.function: unknown task 'kgg'"):
        check_objectives(cfg_with(a={"function": "kgg"}))
    with pytest.raises(ValueError, match=r"reward.objectives.b.function: 'nope_pkg.mod:fn': cannot import"):
        check_objectives(cfg_with(b={"function": "nope_pkg.mod:fn"}))
    cfg = compose([f"reward.objectives.b.function={mod}:missing"], check_paths=False)
    with pytest.raises(ConfigError, match=r"^reward.objectives.b.function: .* has no (attribute|callable) 'missing'$"):
        check_rewards(cfg)


@pytest.mark.parametrize("overrides, msg", [
    (["reward.objectives.a.funcion=kg"], r"^reward.objectives.a.funcion: unknown key"),
    (["reward.objectives.a.weight=2"], r"^reward.objectives.a.function: missing"),
    (["reward.objectives.a.function=kg", "reward.objectives.a.weight=inf"], r"^reward.objectives.a.weight: must be a "
                                                                            r"finite number, got inf$"),
    (["reward.objectives.a.function=kg", "reward.objectives.a.weight=x"], r"^reward.objectives.a.weight: must be a "
                                                                          r"finite number"),
    (["reward.objectives.a.function=kg", "reward.objectives.a.data_sources=[]"],
     r"^reward.objectives.a.data_sources: empty"),
    (["reward.objectives.a.function=kg", "reward.objectives.a.data_sources=webqsp"],
     r"^reward.objectives.a.data_sources: must be a list"),
    (["reward.objectives.a.function=k g"], r"^reward.objectives.a.function: 'k g' is neither"),
    (["algorithm.norm_per_objective=true"], r"^algorithm.norm_per_objective: needs reward.objectives"),
    (["reward.objectives.a.function=kg", "reward.functions.src=x.y:z"], r"^reward.functions: not read when "
                                                                        r"reward.objectives is set"),
    (["reward.objectives.a.function=a.b:judge_reward"], r"^reward.judge.base_url:"),
])
def test_config_errors_name_the_key(overrides, msg):
    with pytest.raises(ConfigError, match=msg) as e:
        compose(overrides, check_paths=False)
    assert "\n" not in str(e.value)


def test_config_fills_defaults_and_accepts_a_bare_function():
    cfg = compose(["reward.objectives.a=kg", "reward.objectives.b.function=m.n:f", "reward.objectives.b.weight=0.5",
                   "reward.objectives.b.data_sources=[webqsp,cwq]", "algorithm.norm_per_objective=true"],
                  check_paths=False)
    assert cfg.reward.objectives == {"a": {"function": "kg", "weight": 1.0, "data_sources": None},
                                     "b": {"function": "m.n:f", "weight": 0.5, "data_sources": ["webqsp", "cwq"]}}
    assert compose([], check_paths=False).reward.objectives == {}


def _scored(reward, **objs):
    t = traj(["x"])
    t.reward, t.reward_components = reward, {f"obj/{k}": v for k, v in objs.items()}
    return t


def test_group_filter_sees_objectives_that_trade_off():
    """Weighted sums equal ([2, 2] from (2, 0) and (0, 1) with weights 1, 2): no signal for GRPO on the sum, but GDPO
    normalises each objective, so with objectives given the group is informative."""
    group = [_scored(2.0, a=2.0, b=0.0), _scored(2.0, a=0.0, b=1.0)]
    assert not GroupFilter("score").informative(group)
    assert GroupFilter("score", ["a", "b"]).informative(group)
    assert not GroupFilter("score", ["a", "b"]).informative([_scored(1.0, a=1.0, b=0.0), _scored(1.0, a=1.0, b=0.0)])
    assert not GroupFilter("score", ["c"]).informative(group)           # an objective absent from the row
