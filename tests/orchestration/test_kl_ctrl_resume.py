"""algorithm.kl_ctrl=adaptive end to end on CPU (hf engine, in-process worker): the coefficient each step trains
with is logged, moves by verl's rule from the step's measured KL, is saved with the checkpoint, and a run stopped
after step 1 and resumed trains step 2 with the same coefficient as the uninterrupted run."""
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
                   "rollout.progress_bar=false", f"trainer.output_dir={out}",
                   "actor.kl_loss_coef=0.01", "algorithm.kl_ctrl.type=adaptive", "algorithm.kl_ctrl.target_kl=0.5",
                   "algorithm.kl_ctrl.horizon=16"], check_paths=False)
    trainer = Trainer(cfg, echo=lambda s: None)
    try:
        trainer.fit()
        return trainer.kl_ctrl.value
    finally:
        trainer.close()


def _records(out):
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_adaptive_kl_coefficient_is_logged_moved_saved_and_resumed(tmp_path, tiny_model_path):
    register_reward("toy_kl", lambda traj, cfg: (float(len(traj.response_ids) % 2), {}))
    rows = [{"prompt": [{"role": "user", "content": f"Say something, number {i}."}], "data_source": "toy_kl",
             "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(16)]
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "train.parquet"))
    try:
        final_a = _run(tmp_path, tiny_model_path, tmp_path / "a", steps=2)
        _run(tmp_path, tiny_model_path, tmp_path / "b", steps=1)
        final_b = _run(tmp_path, tiny_model_path, tmp_path / "b", steps=2)
    finally:
        REWARD_FNS.pop("toy_kl", None)
    a = _records(tmp_path / "a")
    kl1 = a[1]["actor/kl_loss"]
    # step 1 trains with actor.kl_loss_coef; 8 trajectories, horizon 16: mult = 1 + clip(kl / 0.5 - 1) * 8 / 16
    assert a[1]["actor/kl_coef"] == pytest.approx(0.01)
    c2 = 0.01 * (1 + min(max(kl1 / 0.5 - 1, -0.2), 0.2) * 8 / 16)
    assert a[2]["actor/kl_coef"] == pytest.approx(c2, rel=1e-9) and c2 != pytest.approx(0.01)
    saved = json.loads((tmp_path / "a" / "checkpoints" / "global_step_2" / "extra_state.json").read_text())
    assert saved["kl_ctrl"] == {"type": "adaptive", "value": pytest.approx(final_a, rel=1e-12)}
    b = _records(tmp_path / "b")
    assert b[2]["actor/kl_coef"] == pytest.approx(a[2]["actor/kl_coef"], rel=1e-9)
    assert final_b == pytest.approx(final_a, rel=1e-6)
