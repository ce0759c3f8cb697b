"""End to end under Ray: 2 gloo ranks, the tiny model, the generated KG task with the kg_query tool
(KG server autostarted), with a 2-step supervised warm-start on generated demonstrations (sharded over both
ranks). Run 2 steps with checkpoints, stop, start again with a larger step budget:
the run resumes at the saved data position with the saved parameters, then trains on."""
import json
import os

import pytest

from agent_rl.config.load import compose


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(tiny_model_path, tmp_path, steps):
    data = tmp_path / "data"
    return compose([f"model.path={tiny_model_path}", "model.dtype=float32", "model.gradient_checkpointing=false",
                    f"data.train_files=[{data}/train.parquet]", f"data.val_files=[{data}/val.parquet]",
                    f"tools.kg_store={data}/kg_store.json", "tools.kg_server_url=http://127.0.0.1:0",
                    "trainer.n_gpus_per_node=2", "data.train_batch_size=2", "actor.ppo_mini_batch_size=2",
                    "rollout.n=2", "data.max_val_samples=4", "data.val_batch_size=4",
                    "rollout.multi_turn.max_new_tokens_per_turn=12", "rollout.multi_turn.max_assistant_turns=2",
                    "actor.optim.lr=1e-3", f"trainer.total_training_steps={steps}", "trainer.save_freq=1",
                    "trainer.test_freq=2", "trainer.max_ckpt_to_keep=2", "rollout.progress_bar=false",
                    "logger.backends=[jsonl]", f"trainer.output_dir={tmp_path}/out",
                    "sft.steps=2", "sft.batch_size=3", f"sft.files=[{data}/sft.parquet]"], check_paths=False)


@pytest.mark.slow
def test_ray_two_ranks_checkpoint_and_resume(tiny_model_path, tmp_path, ray_local):
    from agent_rl.orchestration.trainer import Trainer

    from agent_rl.tasks.generate import generate_dataset

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 16, "val": 4, "test": 0})
    out = tmp_path / "out"
    tr = Trainer(_cfg(tiny_model_path, tmp_path, 2), echo=lambda s: None)
    try:
        assert tr.world_size == 2 and tr.group.use_ray
        digest0 = tr.param_digest()
        tr.fit()
        assert tr.step == 2
        loader_state = tr.data.loader.state_dict()
        digest2 = tr.param_digest()
    finally:
        tr.close()
    assert digest2 != digest0                       # training changed the weights
    ckpts = sorted(os.listdir(out / "checkpoints"))
    assert "global_step_1" in ckpts and "global_step_2" in ckpts
    assert (out / "checkpoints" / "global_step_2" / "hf" / "model.safetensors").exists()
    assert (out / "rollouts").is_dir() and len(os.listdir(out / "rollouts")) == 2

    tr = Trainer(_cfg(tiny_model_path, tmp_path, 3), echo=lambda s: None)
    try:
        assert tr.step == 2
        assert tr.data.loader.state_dict() == loader_state
        assert tr.param_digest() == pytest.approx(digest2, rel=1e-6, abs=1e-6)
        tr.fit()
        assert tr.step == 3
    finally:
        tr.close()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 1, 2, 3]
    assert "val/kg_synth/reward" in recs[0] and "sft/val/kg_synth/reward" in recs[0]
    assert "val/kg_synth/reward" in recs[2]
    assert len((out / "sft_metrics.jsonl").read_text().splitlines()) == 2
    assert (out / "sft" / "global_step_2" / "hf" / "model.safetensors").exists()
    for key in ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "actor/grad_norm", "reward/mean",
                "timing/rollout_s", "timing/update_s", "timing/sync_s", "perf/tokens_per_s", "mismatch/kl_k3",
                "perf/gc_s", "perf/gc_full_collections"):
        assert key in recs[3], key
    assert recs[3]["perf/gc_s"] >= 0 and recs[3]["perf/gc_full_collections"] >= 0
    assert recs[1]["rollout/num_trajectories"] == 4
    assert sorted(os.listdir(out / "checkpoints"))[:2] == ["global_step_2", "global_step_3"]
