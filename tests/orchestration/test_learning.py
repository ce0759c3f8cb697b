"""Learning sanity check: GRPO through the whole trainer raises the reward of an obvious behaviour.

Toy task (single turn, no tools): the reward is the fraction of sampled tokens in a set S that is
linearly separable in the (tied) embedding space, S = {token j : E_j . u > 0} for a fixed direction
u. About half of the tokens are in S, so the untrained policy scores ~0.5, and the policy can raise
it by moving its hidden states along u: a behaviour a tiny model can learn in a few steps.
"""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from agent_rl.config.load import compose
from agent_rl.tasks import REWARD_FNS, register_reward


def _toy_model(path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      tie_word_embeddings=True, initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    emb = model.get_input_embeddings().weight.detach()
    u = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(1))
    return set(torch.nonzero(emb @ u > 0).flatten().tolist())


def _fit(tmp_path, out, reward_name, overrides):
    """Train the toy model on tmp_path/train.parquet (no tools, one process) with `overrides`; unregister the reward."""
    from agent_rl.orchestration.trainer import Trainer

    cfg = compose([f"model.path={tmp_path}/model", "model.dtype=float32", "model.gradient_checkpointing=false",
                   f"data.train_files=[{tmp_path}/train.parquet]", "data.generate_if_missing=null",
                   "tools.config_path=null", "trainer.use_ray=false", "trainer.val_before_train=false",
                   "trainer.test_freq=-1", "trainer.save_freq=-1", "logger.backends=[jsonl]", "logger.plot=false",
                   "rollout.progress_bar=false", f"trainer.output_dir={out}", "trainer.resume=disable", *overrides],
                  check_paths=False)
    try:
        trainer = Trainer(cfg, echo=lambda s: None)
        try:
            trainer.fit()
        finally:
            trainer.close()
    finally:
        REWARD_FNS.pop(reward_name, None)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_grpo_raises_reward_on_toy_task(tmp_path, tokenizer):
    good = _toy_model(str(tmp_path / "model"), tokenizer)

    def in_set_reward(traj, cfg):
        ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
        frac = sum(1 for t in ids if t in good) / max(len(ids), 1)
        return frac, {"in_set": frac}

    register_reward("toy_in_set", in_set_reward)
    rows = [{"prompt": [{"role": "user", "content": f"Write anything, number {i}."}], "data_source": "toy_in_set",
             "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(32)]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "train.parquet"))
    pq.write_table(pa.Table.from_pylist(rows[:4]), str(tmp_path / "val.parquet"))
    out = tmp_path / "out"
    recs = _fit(tmp_path, out, "toy_in_set", [f"data.val_files=[{tmp_path}/val.parquet]", "data.train_batch_size=4",
                                              "actor.ppo_mini_batch_size=4", "rollout.n=8",
                                              "rollout.multi_turn.max_new_tokens_per_turn=8",
                                              "rollout.multi_turn.max_assistant_turns=1", "actor.optim.lr=3e-2",
                                              "trainer.total_training_steps=10"])
    rewards = [r["reward/mean"] for r in recs]
    assert len(rewards) == 10
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.15, rewards
    assert all(r["actor/grad_norm"] > 0 for r in recs)
    assert recs[-1]["actor/kl_loss"] > 0           # moved away from the reference
    assert len(os.listdir(out / "rollouts")) == 10


def _has_uvloop() -> bool:
    import importlib.util

    return importlib.util.find_spec("uvloop") is not None


def test_dynamic_sampling_through_the_trainer(tmp_path, tokenizer):
    """`algorithm.filter_groups.enable=true` end to end (workers, real hf engine, real scheduler): groups of even rows
    always score 0 and never reach a training batch; the steps train on odd rows' groups only."""
    from agent_rl.rollout.output import read_trajectories, step_path

    good = _toy_model(str(tmp_path / "model"), tokenizer)

    def odd_rows_reward(traj, cfg):
        ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
        hit = 1.0 if traj.row["extra_info"]["index"] % 2 and ids and ids[0] in good else 0.0
        return hit, {"hit": hit}

    register_reward("toy_odd", odd_rows_reward)
    rows = [{"prompt": [{"role": "user", "content": f"Write anything, number {i}."}], "data_source": "toy_odd",
             "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(32)]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "train.parquet"))
    out = tmp_path / "out"
    recs = _fit(tmp_path, out, "toy_odd", ["data.val_files=[]", "data.shuffle=false", "data.train_batch_size=2",
                                           "actor.ppo_mini_batch_size=2", "rollout.n=8", "rollout.over_sample_rate=0.5",
                                           "algorithm.filter_groups.enable=true", "algorithm.filter_groups.metric=hit",
                                           "algorithm.filter_groups.max_num_gen_batches=5",
                                           "rollout.multi_turn.max_new_tokens_per_turn=2",
                                           "rollout.multi_turn.max_assistant_turns=1", "trainer.total_training_steps=2",
                                           # the workers' rollouts on uvloop where it is installed (the dev extras)
                                           f"rollout.event_loop={'uvloop' if _has_uvloop() else 'asyncio'}"])
    assert len(recs) == 2
    for step, r in enumerate(recs, start=1):
        trajs = read_trajectories(step_path(str(out / "rollouts"), step))
        indices = [t["row"]["extra_info"]["index"] for t in trajs]
        assert indices and all(i % 2 for i in indices), indices
        assert r["rollout/groups_without_signal"] == 0
    # step 1 launches rows 0-2: rows 0 and 2 can never be kept, so both complete and are filtered before B is full
    assert recs[0]["dynamic_sampling/filtered_groups"] >= 2 and recs[0]["rollout/launched_groups"] >= 4
    for r in recs:
        assert r["dynamic_sampling/kept_groups"] + r["dynamic_sampling/short_groups"] == 2
        assert r["actor/grad_norm"] > 0
