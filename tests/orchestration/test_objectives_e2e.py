"""reward.objectives through the whole trainer on CPU (hf engine, in-process worker, tiny model): two objectives named by
file path, one restricted to a data source, GDPO advantages, one KL coefficient per objective moved by its own KL;
per-objective metrics in training and validation; the coefficients are saved with the checkpoint."""
import json
import textwrap

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agent_rl.config.load import compose

REWARDS = '''
def parity(traj, cfg):
    ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    return float(bool(ids) and ids[0] % 2 == 0), {"sampled": float(len(ids))}

async def low(traj, cfg):
    ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    return -sum(1 for t in ids if t > 20000) / max(len(ids), 1), {}
'''


def _rows(n, start=0):
    return [{"prompt": [{"role": "user", "content": f"Say something, number {i}."}],
             "data_source": "toy_a" if i % 2 == 0 else "toy_b", "ability": "toy",
             "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(start, start + n)]


def _range_rule(coef, kl, lo, hi, factor=2.0):
    return coef * factor if kl > hi else coef / factor if kl < lo else coef


def test_two_objectives_with_per_objective_kl_end_to_end(tmp_path, tiny_model_path):
    from agent_rl.orchestration.trainer import Trainer

    (tmp_path / "obj_rewards.py").write_text(textwrap.dedent(REWARDS))
    pq.write_table(pa.Table.from_pylist(_rows(16)), str(tmp_path / "train.parquet"))
    pq.write_table(pa.Table.from_pylist(_rows(4, start=100)), str(tmp_path / "val.parquet"))
    out = tmp_path / "out"
    lo, hi = 1e-6, 1e-3
    fn = f"{tmp_path}/obj_rewards.py"
    cfg = compose([f"model.path={tiny_model_path}", "model.dtype=float32", "model.gradient_checkpointing=false",
                   f"data.train_files=[{tmp_path}/train.parquet]", f"data.val_files=[{tmp_path}/val.parquet]",
                   "data.shuffle=false", "data.generate_if_missing=null", "tools.config_path=null",
                   "trainer.use_ray=false", "data.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=4",
                   "rollout.multi_turn.max_new_tokens_per_turn=6", "rollout.multi_turn.max_assistant_turns=1",
                   "actor.optim.lr=5e-2", "trainer.total_training_steps=2", "trainer.val_before_train=false",
                   "trainer.test_freq=2", "trainer.save_freq=2", "logger.backends=[jsonl]", "logger.plot=false",
                   "rollout.progress_bar=false", f"trainer.output_dir={out}", "trainer.resume=disable",
                   f"reward.objectives.parity.function={fn}:parity",
                   f"reward.objectives.low.function={fn}:low", "reward.objectives.low.weight=0.5",
                   "reward.objectives.low.data_sources=[toy_b]", "algorithm.norm_per_objective=true",
                   "actor.kl_loss_coef=0.01", "algorithm.kl_ctrl.type=range",
                   f"algorithm.kl_ctrl.target_range=[{lo},{hi}]",
                   "algorithm.kl_ctrl.factor=2.0"])
    trainer = Trainer(cfg, echo=lambda s: None)
    try:
        trainer.fit()
        final = dict(trainer.kl_ctrl.coefs)
    finally:
        trainer.close()
    recs = {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    r1, r2 = recs[1], recs[2]
    for r in (r1, r2):
        assert 0.0 <= r["reward/obj/parity"] <= 1.0 and r["reward/obj/low"] <= 0      # low: toy_b rows only
        for name in ("parity", "low"):
            assert f"actor/kl_coef/{name}" in r and f"actor/kl/{name}" in r
    # step 1 trains with the starting coefficient; each coefficient then moves by its own objective's KL
    assert r1["actor/kl_coef/parity"] == r1["actor/kl_coef/low"] == 0.01
    for name in ("parity", "low"):
        assert r2[f"actor/kl_coef/{name}"] == pytest.approx(_range_rule(0.01, r1[f"actor/kl/{name}"], lo, hi))
        assert final[name] == pytest.approx(_range_rule(r2[f"actor/kl_coef/{name}"], r2[f"actor/kl/{name}"], lo, hi))
    # half the rows (toy_a) train with parity's coefficient, the other half with the mean of both
    c_p, c_s = r2["actor/kl_coef/parity"], r2["actor/kl_coef/low"]
    # parity applies to every row: its KL is actor/kl_loss (one mini-batch); low's is measured on toy_b rows only
    assert r2["actor/kl/parity"] == pytest.approx(r2["actor/kl_loss"], rel=1e-5) and r2["actor/kl_loss"] > 0
    assert r2["actor/kl/low"] != pytest.approx(r2["actor/kl/parity"], rel=1e-3)
    assert r2["actor/kl_coef"] == pytest.approx(0.5 * c_p + 0.5 * (c_p + c_s) / 2)
    # validation: per data source, only the objectives that apply to it
    assert "val/toy_a/obj/parity" in r2 and "val/toy_b/obj/low" in r2 and "val/toy_a/obj/low" not in r2
    saved = json.loads((out / "checkpoints" / "global_step_2" / "extra_state.json").read_text())
    assert saved["kl_ctrl"] == {"type": "range", "coefs": pytest.approx(final)}
    traj = json.loads((out / "rollouts").glob("*").__next__().read_text().splitlines()[0])
    assert "obj/parity" in traj["reward_components"]
