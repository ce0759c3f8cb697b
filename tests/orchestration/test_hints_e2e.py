"""Prompt hints through the whole trainer (one process, hf engine, toy model): the hint is in exactly the prompts the
per-row decision picked, every trajectory of a group shares it, the step's metrics split the reward by it, the
probability fades to 0, and validation rows stay unhinted."""
import pyarrow as pa
import pyarrow.parquet as pq

from agent_rl.data.hints import FLAG, PREFIX, row_draw
from agent_rl.rollout.output import read_trajectories, step_path
from agent_rl.tasks import register_reward
from test_learning import _fit, _toy_model

HINT = "Say something short."


def _hinted_reward(traj, cfg):
    """1 when the prompt the model saw holds the hint: reward/hinted and reward/unhinted are then exactly 1 and 0."""
    hit = 1.0 if PREFIX + HINT in traj.row["prompt"][-1]["content"] else 0.0
    return hit, {"hit": hit}


def _mixed_seed(indices, t, p):
    """The first seed whose draws at step t give both kinds among `indices` (so the step has both)."""
    for seed in range(100):
        kinds = {row_draw(seed, t, i) < p for i in indices}
        if kinds == {True, False}:
            return seed
    raise AssertionError("no seed mixes the kinds")


def test_hints_fade_through_the_trainer(tmp_path, tokenizer):
    _toy_model(str(tmp_path / "model"), tokenizer)
    register_reward("toy_hint", _hinted_reward)
    rows = [{"prompt": [{"role": "system", "content": "You answer briefly."},
                        {"role": "user", "content": f"Question: write anything, number {i}."}],
             "data_source": "toy_hint", "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"},
             "extra_info": {"index": i}} for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "train.parquet"))
    pq.write_table(pa.Table.from_pylist(rows[:2]), str(tmp_path / "val.parquet"))
    # no shuffle: step 1 draws rows 0-3, step 2 rows 4-7, step 3 rows 0-3; p(t) = 1, 0.5, 0 (linear, hint_steps 2)
    seed = _mixed_seed(range(4, 8), 1, 0.5)
    out = tmp_path / "out"
    recs = _fit(tmp_path, out, "toy_hint", [
        f"data.val_files=[{tmp_path}/val.parquet]", "trainer.val_before_train=true", "data.shuffle=false",
        "data.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=2",
        "rollout.multi_turn.max_new_tokens_per_turn=2", "rollout.multi_turn.max_assistant_turns=1",
        "trainer.total_training_steps=3", "data.prompt_augmentation.enable=true",
        f"data.prompt_augmentation.hint_text='{HINT}'", "data.prompt_augmentation.hint_steps=2",
        "data.prompt_augmentation.decay=linear", f"data.prompt_augmentation.seed={seed}"])
    by_step = {r["step"]: r for r in recs}
    assert by_step[0]["val/toy_hint/reward"] == 0.0 and not any(k.startswith("val/hints") for k in by_step[0])
    assert [by_step[s]["hints/prob"] for s in (1, 2, 3)] == [1.0, 0.5, 0.0]
    for step in (1, 2, 3):
        trajs = read_trajectories(step_path(str(out / "rollouts"), step))
        assert len(trajs) == 8
        groups = {}
        for t in trajs:
            hinted = t["row"]["extra_info"][FLAG]
            assert hinted == (row_draw(seed, step - 1, t["row"]["extra_info"]["index"]) < by_step[step]["hints/prob"])
            user = t["row"]["prompt"][-1]["content"]
            assert user.count(PREFIX) == int(hinted) and t["prompt_text"].count(PREFIX) == int(hinted)
            assert t["row"]["prompt"][0] == rows[0]["prompt"][0]                     # system prompt unchanged
            assert t["reward"] == float(hinted)
            groups.setdefault(t["uid"], set()).add((hinted, tuple(t["prompt_ids"])))
        assert all(len(g) == 1 for g in groups.values())                              # a group shares its row's choice
        share = sum(next(iter(g))[0] for g in groups.values()) / len(groups)
        assert by_step[step]["hints/share"] == share
    assert by_step[1]["hints/share"] == 1.0 and by_step[3]["hints/share"] == 0.0
    assert 0.0 < by_step[2]["hints/share"] < 1.0
    assert by_step[2]["reward/hinted"] == 1.0 and by_step[2]["reward/unhinted"] == 0.0
    assert "reward/hinted" not in by_step[1] and "reward/unhinted" not in by_step[3]
