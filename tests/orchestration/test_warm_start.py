"""Supervised warm-start inside the trainer (one process): demonstrations generated from the KG data,
SFT steps before RL, the warm-started model saved, made the KL reference and validated; a restart loads it
instead of training again, and a resumed RL run gets it back as its reference."""
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from agent_rl.config.load import ConfigError, compose
from agent_rl.tasks.generate import generate_dataset


def _cfg(tiny_model_path, tmp_path, steps, *extra):
    data = tmp_path / "data"
    return compose([f"model.path={tiny_model_path}", "model.dtype=float32", "model.gradient_checkpointing=false",
                    f"data.train_files=[{data}/train.parquet]", f"data.val_files=[{data}/val.parquet]",
                    f"tools.kg_store={data}/kg_store.json", "tools.kg_server_url=http://127.0.0.1:0",
                    f"sft.files=[{data}/sft.parquet]", "sft.steps=3", "sft.batch_size=4", "sft.lr=1e-3",
                    "sft.warmup_steps=0", "trainer.use_ray=false", "data.train_batch_size=2",
                    "actor.ppo_mini_batch_size=2", "rollout.n=2", "data.max_val_samples=2", "data.val_batch_size=2",
                    "rollout.multi_turn.max_new_tokens_per_turn=8", "rollout.multi_turn.max_assistant_turns=2",
                    "actor.optim.lr=1e-3", f"trainer.total_training_steps={steps}", "trainer.save_freq=1",
                    "trainer.test_freq=-1", "rollout.progress_bar=false", "logger.backends=[jsonl]",
                    f"trainer.output_dir={tmp_path}/out", *extra], check_paths=False)


def _params(model):
    return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}


def _same_as_file(params, hf_dir):
    sd = load_file(os.path.join(hf_dir, "model.safetensors"))
    return all(torch.equal(params[n], sd[n].float()) for n in sd if n in params)


@pytest.mark.slow
def test_warm_start_then_rl_then_resume(tiny_model_path, tmp_path):
    from agent_rl.orchestration.trainer import Trainer

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 16, "val": 2, "test": 0})
    out = tmp_path / "out"
    lines = []
    tr = Trainer(_cfg(tiny_model_path, tmp_path, 1), echo=lines.append)
    try:
        assert (tmp_path / "data" / "sft.parquet").exists()         # written from the KG folder
        w = tr.group.workers[0]
        base = _params(w.actor.model)
        tr.fit()
        sft_hf = out / "sft" / "global_step_3" / "hf"
        assert _same_as_file(_params(w.ref.model), sft_hf)          # the reference is the warm-started model
        assert not _same_as_file(base, sft_hf)                      # ... which the SFT steps changed
        assert not _same_as_file(_params(w.actor.model), sft_hf)    # the RL step moved the actor on from it
        assert w._sft is None                                       # warm-start optimizer dropped
    finally:
        tr.close()
    sft_log = [json.loads(x) for x in (out / "sft_metrics.jsonl").read_text().splitlines()]
    assert [r["sft_step"] for r in sft_log] == [1, 2, 3]
    assert all(r["sft/tokens"] > 0 and r["sft/loss"] > 0 for r in sft_log)
    assert any("warm-start step 3/3" in x for x in lines)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [0, 1]                     # one record per step
    assert "val/kg_synth/reward" in recs[0] and "sft/val/kg_synth/reward" in recs[0]
    assert recs[0]["sft/loss_first"] == sft_log[0]["sft/loss"] and recs[0]["sft/demonstrations"] > 0

    # resumed RL (step 1 -> 2): no second warm-start, the reference is the warm-started model again
    mtime = os.path.getmtime(out / "sft_metrics.jsonl")
    tr = Trainer(_cfg(tiny_model_path, tmp_path, 2), echo=lambda s: None)
    try:
        assert tr.step == 1
        assert _same_as_file(_params(tr.group.workers[0].ref.model), out / "sft" / "global_step_3" / "hf")
        tr.fit()
        assert tr.step == 2
    finally:
        tr.close()
    assert os.path.getmtime(out / "sft_metrics.jsonl") == mtime

    # a restart before the first RL checkpoint loads the finished warm-start instead of training again
    import shutil

    shutil.rmtree(out / "checkpoints")
    lines.clear()
    tr = Trainer(_cfg(tiny_model_path, tmp_path, 1, "trainer.val_before_train=false", "sft.validate=false"),
                 echo=lines.append)
    try:
        w = tr.group.workers[0]
        tr.fit()
        assert any("warm-start: loading" in x for x in lines)
        assert _same_as_file(_params(w.ref.model), out / "sft" / "global_step_3" / "hf")
    finally:
        tr.close()
    assert os.path.getmtime(out / "sft_metrics.jsonl") == mtime


def test_sft_config_errors(tiny_model_path, tmp_path):
    with pytest.raises(ConfigError, match="sft.steps: must be >= 0"):
        _cfg(tiny_model_path, tmp_path, 1, "sft.steps=-1")
    with pytest.raises(ConfigError, match="sft.files: sft.steps > 0 needs"):
        _cfg(tiny_model_path, tmp_path, 1, "sft.files=[]")
    with pytest.raises(ConfigError, match="sft.lr"):
        _cfg(tiny_model_path, tmp_path, 1, "sft.lr=0")
    (tmp_path / "rows.parquet").write_bytes(b"")  # only existence is checked here
    with pytest.raises(ConfigError, match="sft.files: file not found"):
        compose([f"model.path={tiny_model_path}", "sft.steps=2", f"sft.files=[{tmp_path}/none.parquet]",
                 "data.generate_if_missing=null", f"data.train_files=[{tmp_path}/rows.parquet]",
                 f"data.val_files=[{tmp_path}/rows.parquet]"], check_paths=True)
