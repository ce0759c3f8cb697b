"""A run stopped after step 1 and resumed reproduces the uninterrupted run on CPU (hf engine): the same sampled
tokens at step 2 (sampler seeds follow the request ids, not the engine's history) and the same update."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_rl.config.load import compose
from agent_rl.tasks import REWARD_FNS, register_reward


def _run(tmp_path, model, out, steps):
    from agent_rl.orchestration.trainer import Trainer

    cfg = compose([f"model.path={model}", "model.dtype=float32", "model.gradient_checkpointing=false",
                   f"data.train_files=[{tmp_path}/train.parquet]", "data.val_files=[]",
                   "data.generate_if_missing=null", "tools.config_path=null", "trainer.use_ray=false",
                   "data.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=4",
                   "rollout.multi_turn.max_new_tokens_per_turn=6", "rollout.multi_turn.max_assistant_turns=1",
                   "actor.optim.lr=1e-2", f"trainer.total_training_steps={steps}", "trainer.val_before_train=false",
                   "trainer.test_freq=-1", "trainer.save_freq=1", "logger.backends=[jsonl]", "logger.plot=false",
                   "rollout.progress_bar=false", f"trainer.output_dir={out}"], check_paths=False)
    trainer = Trainer(cfg, echo=lambda s: None)
    try:
        trainer.fit()
        return trainer.param_digest()
    finally:
        trainer.close()


def _step(out, step):
    recs = [json.loads(line) for line in (out / "rollouts" / f"step_{step:06d}.jsonl").read_text().splitlines()]
    return [(r["id"], r["response_ids"], r["reward"]) for r in recs]


@pytest.mark.slow
def test_resumed_run_reproduces_the_uninterrupted_one(tmp_path, tiny_model_path):
    def reward(traj, cfg):   # prefers even token ids: a signal the tiny model can move
        ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
        r = sum(1 for t in ids if t % 2 == 0) / max(len(ids), 1)
        return r, {"even": r}

    register_reward("toy_resume", reward)
    rows = [{"prompt": [{"role": "user", "content": f"Say something, number {i}."}], "data_source": "toy_resume",
             "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(16)]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "train.parquet"))
    try:
        straight = _run(tmp_path, tiny_model_path, tmp_path / "a", steps=2)
        _run(tmp_path, tiny_model_path, tmp_path / "b", steps=1)
        resumed = _run(tmp_path, tiny_model_path, tmp_path / "b", steps=2)
    finally:
        REWARD_FNS.pop("toy_resume", None)
    a, b = _step(tmp_path / "a", 2), _step(tmp_path / "b", 2)
    assert a == b
    assert a != _step(tmp_path / "a", 1)          # step 2 draws are not step 1's again
    assert resumed == pytest.approx(straight, rel=1e-6, abs=1e-9)
