import math

import pytest
import torch

from agent_rl.algorithms import (broadcast_to_tokens, compute_advantages, grpo_multi_turn_advantage,
                                 grpo_outcome_advantage, turn_advantage)
from agent_rl.config.schema import RewardConfig
from agent_rl.tasks import compute_reward
from agent_rl.rollout.batch import build_batch
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import ToolCallRecord


def test_outcome_advantage_unbiased_std_and_group_of_one():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0])
    g = torch.tensor([7, 7, 7, 7, 3])
    adv = grpo_outcome_advantage(r, g, eps=0.0)
    s = math.sqrt(1.0 / 3.0)  # unbiased: sum((±0.5)^2)=1 over n-1=3
    assert torch.allclose(adv, torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0.0]), atol=1e-6)


def test_outcome_advantage_std_off_and_eps():
    r = torch.tensor([3.0, 1.0, 2.0, 2.0])
    g = torch.tensor([0, 0, 1, 1])
    assert torch.allclose(grpo_outcome_advantage(r, g, norm_by_std=False), torch.tensor([1.0, -1.0, 0.0, 0.0]))
    # identical rewards: std 0, eps keeps it finite and zero
    adv = grpo_outcome_advantage(r, g, norm_by_std=True, eps=1e-6)
    assert torch.isfinite(adv).all() and adv[2] == 0 and adv[3] == 0
    assert torch.allclose(adv[:2], torch.tensor([1.0, -1.0]) / (math.sqrt(2.0) + 1e-6))


def test_broadcast_under_mask():
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert torch.equal(broadcast_to_tokens(adv, mask), torch.tensor([[0.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]))


def test_turn_advantage_centres_on_the_group_turn_mean_without_std():
    tr = torch.tensor([[1.0, 0.5], [0.0, float("nan")], [0.5, 0.3]])
    g = torch.tensor([0, 0, 1])
    # group 0: turns 1.0, 0.5, 0.0 (mean 0.5); group 1: turns 0.5, 0.3 (mean 0.4); a missing turn gets 0
    assert torch.allclose(turn_advantage(tr, g), torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.1, -0.1]]))
    # the lone trajectory of group 1 has no outcome baseline, so no shaping either
    out = grpo_multi_turn_advantage(torch.tensor([1.0, 0.0, 1.0]), tr, g, torch.tensor([[0, 1], [0, -1], [0, 1]]),
                                    torch.ones(3, 2))
    assert torch.equal(out[2], torch.zeros(2))


def test_multi_turn_token_advantage_hand_computed():
    rewards = torch.tensor([1.0, 0.0])
    g = torch.tensor([0, 0])
    tr = torch.tensor([[1.0, 0.5], [0.0, float("nan")]])   # centred: [[0.5, 0], [-0.5, -]]
    turn_index = torch.tensor([[-1, 0, 0, 1], [-1, 0, 0, -1]])
    mask = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 0]])
    s = math.sqrt(0.5)                                      # outcome std; A = ±0.5 / s
    a, b = 0.5 / s, 0.2 * 0.5 / s                          # bonus: coef * centred turn reward / the outcome's std
    out = grpo_multi_turn_advantage(rewards, tr, g, turn_index, mask, coef=0.2, eps=0.0)
    exp = torch.tensor([[0.0, a + b, a + b, a], [0.0, -a - b, -a - b, 0.0]])
    assert torch.allclose(out, exp, atol=1e-6)
    # a large coefficient is clipped at half the outcome advantage: the sign never flips
    out = grpo_multi_turn_advantage(rewards, tr, g, turn_index, mask, coef=10.0, eps=0.0)
    exp = torch.tensor([[0.0, 1.5 * a, 1.5 * a, a], [0.0, -1.5 * a, -1.5 * a, 0.0]])
    assert torch.allclose(out, exp, atol=1e-6)
    # std off (Dr.GRPO): the bonus stays in reward units
    out = grpo_multi_turn_advantage(rewards, tr, g, turn_index, mask, coef=0.2, norm_by_std=False)
    assert torch.allclose(out[0, 1:], torch.tensor([0.5 + 0.1, 0.5 + 0.1, 0.5]), atol=1e-6)


def test_equal_outcomes_get_no_shaping():
    # all rewards equal: no outcome signal, and shaping alone gives none either (docs/rewards.md)
    batch = {"rewards": torch.tensor([0.15, 0.15]), "group_index": torch.tensor([0, 0]),
             "loss_mask": torch.ones(2, 2, dtype=torch.long), "turn_index": torch.tensor([[0, 1], [0, 1]]),
             "turn_rewards": torch.tensor([[0.35, 0.0], [0.05, 0.1]])}
    assert torch.equal(compute_advantages(batch, "grpo_multi_turn"), torch.zeros(2, 2))


def test_compute_advantages_dispatch():
    batch = {"rewards": torch.tensor([1.0, 0.0]), "group_index": torch.tensor([0, 0]),
             "loss_mask": torch.tensor([[0, 1], [1, 1]]), "turn_index": torch.tensor([[-1, 0], [0, 0]]),
             "turn_rewards": torch.tensor([[1.0], [1.0]])}
    a = compute_advantages(batch, "grpo", norm_by_std=False)
    assert torch.allclose(a, torch.tensor([[0.0, 0.5], [-0.5, -0.5]]))
    # equal turn rewards -> no turn bonus
    b = compute_advantages(batch, "grpo_multi_turn", norm_by_std=False)
    assert torch.allclose(a, b)


# Issue 12, item 3: one right trajectory among eight. The per-turn rewards used to be normalised by their
# own std and added with weight 1, which cancelled the outcome: the wrong answers' answer turns ended at 0.

def test_one_right_among_eight_keeps_its_sign_on_every_token():
    # sample 0: look-up ok, look-up failed, look-up ok, right answer; samples 1-7: one look-up, wrong answer.
    # Turn rewards as the KG reward gave them then (0.1 format + 0.1 validity, answer turns "valid").
    rewards = torch.tensor([1.2] + [0.2] * 7)
    nan = float("nan")
    turn_rewards = torch.tensor([[0.2, 0.1, 0.2, 0.2]] + [[0.2, 0.2, nan, nan]] * 7)
    turn_index = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 3]] + [[0, 0, 1, 1, -1, -1, -1, -1]] * 7)
    mask = (turn_index >= 0).long()
    g = torch.zeros(8, dtype=torch.long)
    outcome = grpo_outcome_advantage(rewards, g)
    assert [round(float(x), 2) for x in outcome] == [2.47] + [-0.35] * 7
    adv = grpo_multi_turn_advantage(rewards, turn_rewards, g, turn_index, mask)
    # shaping keeps at least half of the outcome advantage on every token
    assert (adv[0] >= 0.5 * outcome[0] - 1e-6).all()                      # was 2.47 - 2.47 = 0 on turn 1
    assert (adv[1:][mask[1:].bool()] <= 0.5 * outcome[1] + 1e-6).all()   # was -0.35 + 0.35 = 0 on the answer turn
    assert adv[0, 2] < adv[0, 0] and adv[0, 2] < adv[0, 4]               # the failed look-up earns less


def _call(text, lookup, ok=True, entities=None):
    metrics = {"success": ok, "error_type": "KG_SUCCESS" if ok else "KG_RELATION_NOT_FOUND", "lookup": lookup}
    if entities:
        metrics["entities"] = entities
    return ToolCallRecord(name="kg_query", arguments={}, observation=text, status="ok", metrics=metrics)


def _kg_traj(k, turns):
    """turns: (text, call or None); every turn samples 2 tokens, a call's observation is 1 token."""
    traj = Trajectory(uid="q", sample_index=k, prompt_ids=[5, 5], status="finished",
                      row={"data_source": "kg_synth", "reward_model": {"ground_truth": ["France"]}})
    for i, (text, call) in enumerate(turns):
        obs = [9] if call else []
        traj.turns.append(TurnRecord(index=i, output_ids=[1, 2], logprobs=[0.0, 0.0], finish_reason="stop", text=text,
                                     tool_calls=[call] if call else [], observation_ids=obs))
        traj.response_ids += [1, 2] + obs
        traj.loss_mask += [1, 1] + [0] * len(obs)
        traj.rollout_logprobs += [0.0, 0.0] + [0.0] * len(obs)
    return traj


def test_outcome_is_never_cancelled_by_turn_shaping():
    def tool(action, relation=None):
        args = {"action": action, "entity": "Paris", **({"relation": relation} if relation else {})}
        return '<tool_call>{"name": "kg_query", "arguments": %s}</tool_call>' % str(args).replace("'", '"')

    relations = (tool("get_relations_out"), _call('Outgoing relations of "Paris": capital_of', "get_relations_out|paris|"))
    failed = (tool("get_entities_out", "capitol"), _call('Relation "capitol" is not an outgoing relation', "x", ok=False))
    entities = (tool("get_entities_out", "capital_of"),
                _call('Tail entities of "Paris" via capital_of: France', "get_entities_out|paris|capital_of", True, ["France"]))
    right = _kg_traj(0, [relations, failed, entities, ("<answer>France</answer>", None)])
    wrong = [_kg_traj(k, [relations, ("<answer>Spain</answer>", None)]) for k in range(1, 8)]
    trajs = [right] + wrong
    cfg = RewardConfig()   # weights 1 / 0.1 / 0.1 / 0.2 (answer / format / validity / retrieval)
    for t in trajs:
        t.reward, _ = compute_reward(t, cfg)
    assert right.turn_rewards == pytest.approx([0.15, 0.1, 0.35, 0.1])   # the look-up that retrieved earns most
    assert wrong[0].turn_rewards == pytest.approx([0.15, 0.1])
    batch = build_batch(trajs, pad_token_id=0)
    outcome = grpo_outcome_advantage(batch["rewards"], batch["group_index"])
    assert [round(float(x), 2) for x in outcome] == [2.47] + [-0.35] * 7
    adv = compute_advantages(batch, "grpo_multi_turn")
    mask = batch["loss_mask"].bool()
    assert (adv[0][mask[0]] > 0).all()                # the right answer: every token pushed up
    for b in range(1, 8):
        assert (adv[b][mask[b]] < 0).all()            # a wrong answer: every token pushed down, the answer turn too
    bonus, bound = (adv - outcome[:, None])[mask], (0.5 * outcome.abs()[:, None]).expand_as(adv)[mask]
    assert (bonus.abs() <= bound + 1e-6).all()        # never more than half the outcome either way

    def per_turn(b):
        ti = batch["turn_index"][b]
        return [float(adv[b][ti == t].mean()) for t in range(len(trajs[b].turns))]

    # the weights matter: within a trajectory, a turn with a higher shaping reward gets a higher advantage
    r0 = per_turn(0)
    assert r0[2] > r0[0] > r0[1] and r0[1] == pytest.approx(r0[3])
    w = per_turn(1)
    assert w[0] > w[1]
