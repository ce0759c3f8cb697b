"""rollout.engine_replicas through the whole trainer on CPU (hf engine, in-process worker, tiny model): both replicas
roll out, every weight sync reaches both, and training runs as with one engine."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from agent_rl.config.load import compose


def _rows(n):
    return [{"prompt": [{"role": "user", "content": f"Say something, number {i}."}], "data_source": "toy",
             "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(n)]


REWARD = '''
def parity(traj, cfg):
    ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    return float(bool(ids) and ids[0] % 2 == 0), {}
'''


def test_two_hf_replicas_train_and_receive_every_sync(tmp_path, tiny_model_path):
    from agent_rl.engines.replicas import ReplicaEngine
    from agent_rl.orchestration.trainer import Trainer

    (tmp_path / "rw.py").write_text(REWARD)
    pq.write_table(pa.Table.from_pylist(_rows(16)), str(tmp_path / "train.parquet"))
    out = tmp_path / "out"
    cfg = compose([f"model.path={tiny_model_path}", "model.dtype=float32", "model.gradient_checkpointing=false",
                   f"data.train_files=[{tmp_path}/train.parquet]", f"data.val_files=[{tmp_path}/train.parquet]",
                   "data.shuffle=false",
                   "data.generate_if_missing=null", "tools.config_path=null", "trainer.use_ray=false",
                   "data.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=2", "rollout.engine=hf",
                   "rollout.engine_replicas=2", "rollout.multi_turn.max_new_tokens_per_turn=6",
                   "rollout.multi_turn.max_assistant_turns=1", "actor.optim.lr=5e-2", "trainer.total_training_steps=2",
                   "trainer.val_before_train=false", "trainer.test_freq=-1", "trainer.save_freq=-1",
                   "logger.backends=[jsonl]", "logger.plot=false", "rollout.progress_bar=false",
                   f"trainer.output_dir={out}", "trainer.resume=disable",
                   f"reward.objectives.parity.function={tmp_path}/rw.py:parity"])
    trainer = Trainer(cfg, echo=lambda s: None)
    try:
        trainer.fit()
        w = trainer.group.workers[0]
        engine = w.engine
        assert isinstance(engine, ReplicaEngine) and len(engine.replicas) == 2
        assert min(engine.routed) > 0   # both rolled out
        served = [r.model.state_dict() for r in engine.replicas]
        actor = {k: v.detach().float().cpu() for k, v in w.actor.policy.model.state_dict().items()}
    finally:
        trainer.close()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "actor/pg_loss" in r] == [1, 2]
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_path, torch_dtype=torch.float32).state_dict()
    assert set(served[0]) <= set(actor)   # the same parameter names: every one is compared below
    moved = 0
    for k, v in served[0].items():
        assert torch.equal(v, served[1][k]), k     # both replicas hold the same weights ...
        assert torch.allclose(v.float(), actor[k], atol=1e-6), k   # ... the actor's after the last sync
        moved += not torch.equal(v.float(), initial[k].float())
    assert moved > 0   # which training changed: the syncs carried something
