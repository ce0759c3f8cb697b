"""examples/run_qwen_*.sh: argument checks (fast), the composed config (fast), and the embedded-default
KG example completing a small run on CPU (slow)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KG = os.path.join(ROOT, "examples", "run_qwen_kg_multiturn.sh")
GSM = os.path.join(ROOT, "examples", "run_qwen_gsm8k_multiturn.sh")


def _run(script, *args, env=None, timeout=120):
    e = {k: v for k, v in os.environ.items() if k not in ("BASE_MODEL", "DATA_DIR", "N_GPUS", "TOOL_CONFIG", "SIZE",
                                                          "EXPERIMENT_NAME")}
    e.update({"PYTHON": sys.executable, **(env or {})})
    return subprocess.run(["bash", script, *args], capture_output=True, text=True, env=e, timeout=timeout)


@pytest.mark.parametrize("script", [KG, GSM])
def test_missing_model_and_data_are_one_line_errors(script, tmp_path):
    r = _run(script, env={"BASE_MODEL": str(tmp_path / "no-model")})
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "BASE_MODEL" in r.stderr
    r = _run(script, env={"DATA_DIR": str(tmp_path / "no-data")})
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "train.parquet" in r.stderr
    r = _run(script, env={"TOOL_CONFIG": str(tmp_path / "none.yaml")})
    assert r.returncode == 1 and "TOOL_CONFIG" in r.stderr
    r = _run(script, env={"N_GPUS": "two"})
    assert r.returncode == 1 and "N_GPUS" in r.stderr


@pytest.mark.parametrize("script,tool", [(KG, "kg_query_tool_config.yaml"), (GSM, "arith_tool_config.yaml")])
def test_composed_config(script, tool, tmp_path):
    """Every override the script writes exists in the schema; env and extra overrides arrive."""
    r = _run(script, "--print-config", "rollout.n=3", env={"EXPERIMENT_NAME": "exp-x"})
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "experiment_name: exp-x" in out and "'n': 3" in out and tool in out
    assert "total_training_steps: 2" in out                       # the small preset
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    r = _run(script, "--print-config", env={"BASE_MODEL": str(model)})
    assert r.returncode == 0, r.stderr
    assert f"path: {model}" in r.stdout and "train_batch_size: 128" in r.stdout   # the full preset
    # on-policy as KG-R1 and verl run it: no over-sampling whose extras would be thrown away (nor its warning)
    assert "over_sample_rate: 0.0" in r.stdout and "over_sample_rate=" not in r.stderr


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# scripts/gpu/pipeline.sh stage `learn` (docs/results.md section 5): its common settings, the warm-start, and each run's
GPU_COMMON = {
    "trainer.test_freq": 10, "trainer.val_before_train": True, "trainer.total_training_steps": 100,
    "actor.optim.lr": 1e-5, "actor.kl_loss_coef": 0.001, "actor.clip_ratio_high": 0.28,
    "rollout.sampling.temperature": 0.7, "model.remove_padding": True, "model.gradient_checkpointing": False,
    "actor.ppo_max_token_len_per_gpu": 8192, "ref.log_prob_max_token_len_per_gpu": 16384,
    "algorithm.filter_groups.enable": True, "algorithm.filter_groups.max_num_gen_batches": 3,
    "rollout.over_sample_rate": 0.5, "rollout.gpu_memory_utilization": 0.7,
    "sft.steps": 20, "sft.batch_size": 32, "sft.lr": 1e-4,
    "actor.use_kl_loss": True, "actor.kl_loss_type": "low_var_kl", "model.path": "embedded",
}
GPU_KG = {
    "data.train_batch_size": 8, "rollout.n": 16, "actor.ppo_mini_batch_size": 4,
    "rollout.multi_turn.max_assistant_turns": 7, "rollout.multi_turn.max_new_tokens_per_turn": 128,
    "rollout.multi_turn.max_response_tokens": 1536, "rollout.multi_turn.max_tool_response_tokens": 256,
    "data.val_batch_size": 64, "data.max_val_samples": 64, "sft.max_turns": 7,
    "algorithm.adv_estimator": "grpo_multi_turn", "reward.kg_answer_metric": "f1",
    "rollout.multi_turn.stop_strings": ["</tool_call>"], "trainer.experiment_name": "kg-grpo-gpu",
}
GPU_ARITH = {
    "data.train_batch_size": 16, "rollout.n": 8, "actor.ppo_mini_batch_size": 8,
    "rollout.multi_turn.max_assistant_turns": 3, "rollout.multi_turn.max_new_tokens_per_turn": 192,
    "rollout.multi_turn.max_response_tokens": 768, "rollout.multi_turn.max_tool_response_tokens": 64,
    "data.val_batch_size": 128, "data.max_val_samples": 128, "algorithm.adv_estimator": "grpo",
    "trainer.experiment_name": "gsm8k-grpo-gpu",
}
# the defaults the learn runs got without naming them (sft.* the small preset now sets must not leak in)
GPU_DEFAULTS = {"sft.warmup_steps": 10, "sft.max_length": 2048, "sft.validate": True, "sft.update_ref": True,
                "algorithm.filter_groups.metric": "score", "actor.clip_ratio_low": 0.2}


def _composed(script, *args, env=None):
    import yaml

    r = _run(script, "--print-config", *args, env=env)
    assert r.returncode == 0, r.stderr
    return _flat(yaml.safe_load(r.stdout)), r


@pytest.mark.parametrize("script,task", [(KG, GPU_KG), (GSM, GPU_ARITH)])
def test_gpu_preset_is_the_documented_gpu_run(script, task):
    """SIZE=gpu composes to the settings of the documented GPU runs (stage learn of scripts/gpu/pipeline.sh); the
    pipeline then needs only run-specific overrides. On a machine without a GPU the script says so (stderr)."""
    cfg, r = _composed(script, env={"SIZE": "gpu"})
    want = {**GPU_COMMON, **task}
    got = {k: cfg[k] for k in want}
    assert got == want
    assert {k: cfg[k] for k in GPU_DEFAULTS} == GPU_DEFAULTS
    assert cfg["trainer.save_freq"] > 0                       # a user's run keeps checkpoints (the pipeline: -1)
    import torch

    assert ("sized for GPUs" in r.stderr) == (not torch.cuda.is_available())


def test_gpu_preset_is_the_default_with_a_gpu_and_the_embedded_model(tmp_path):
    """A visible GPU (here: a python whose torch probe answers 1) and no BASE_MODEL -> SIZE=gpu in bf16; with
    BASE_MODEL -> full; SIZE=small still wins when asked for."""
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
if [ "$1" = -c ] && [[ "$2" == *device_count* ]]; then echo 1; exit 0; fi
exec {sys.executable} "$@"
""")
    fake.chmod(0o755)
    env = {"PYTHON": str(fake)}
    cfg, _ = _composed(KG, env=env)
    assert cfg["trainer.experiment_name"] == "kg-grpo-gpu" and cfg["model.dtype"] == "bfloat16"
    assert cfg["rollout.n"] == 16 and cfg["sft.steps"] == 20
    cfg, _ = _composed(KG, env={**env, "SIZE": "small"})
    assert cfg["trainer.experiment_name"] == "kg-grpo-small" and cfg["trainer.total_training_steps"] == 2
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    cfg, _ = _composed(KG, env={**env, "BASE_MODEL": str(model)})
    assert cfg["data.train_batch_size"] == 128                                  # full
    r = _run(KG, "--print-config", env={"SIZE": "huge"})
    assert r.returncode == 1 and "SIZE=huge" in r.stderr


def test_small_kg_preset_warm_starts_where_demonstrations_exist(tmp_path):
    """SIZE=small (CPU): a short warm-start and dynamic sampling on the default data folder (its demonstrations are
    written on first use) or a DATA_DIR that has sft.parquet; neither on a DATA_DIR without demonstrations."""
    from agent_rl.tasks.generate import generate_dataset

    cfg, _ = _composed(KG, env={"SIZE": "small"})
    assert (cfg["sft.steps"], cfg["sft.batch_size"], cfg["sft.lr"], cfg["sft.warmup_steps"]) == (2, 2, 1e-4, 0)
    assert cfg["sft.max_length"] == 800 and cfg["sft.validate"] is False
    assert cfg["sft.files"] == [os.path.join(ROOT, "data", "kg", "sft.parquet")]
    assert cfg["rollout.sampling.temperature"] == 0.7 and cfg["rollout.multi_turn.max_assistant_turns"] == 3
    assert cfg["trainer.total_training_steps"] == 2 and cfg["actor.use_kl_loss"] is True
    # one question a step, 3 groups launched, the first with a spread in reward trained on (dynamic sampling)
    assert (cfg["data.train_batch_size"], cfg["rollout.n"], cfg["rollout.over_sample_rate"]) == (1, 2, 2.0)
    assert cfg["algorithm.filter_groups.enable"] is True and cfg["algorithm.filter_groups.max_num_gen_batches"] == 2
    data = tmp_path / "kg"
    generate_dataset("kg", str(data), sizes={"train": 4, "val": 2, "test": 0})
    cfg, _ = _composed(KG, env={"SIZE": "small", "DATA_DIR": str(data)})
    assert cfg["sft.steps"] == 0                 # and no dynamic sampling: the base model's groups all score 0
    assert cfg["algorithm.filter_groups.enable"] is False and cfg["data.train_batch_size"] == 2
    (data / "sft.parquet").write_bytes(b"")
    cfg, _ = _composed(KG, env={"SIZE": "small", "DATA_DIR": str(data)})
    assert cfg["sft.steps"] == 2 and cfg["sft.files"] == [str(data / "sft.parquet")]


@pytest.mark.slow
def test_kg_example_embedded_default_completes(tmp_path):
    from agent_rl.tasks.generate import generate_dataset

    data = tmp_path / "kg"
    generate_dataset("kg", str(data), sizes={"train": 8, "val": 2, "test": 0})
    out = tmp_path / "out"
    r = _run(KG, f"trainer.output_dir={out}", "trainer.total_training_steps=1", "trainer.save_freq=1",
             "trainer.test_freq=1", "data.max_val_samples=2", "rollout.multi_turn.max_new_tokens_per_turn=16",
             "rollout.multi_turn.max_assistant_turns=2", "rollout.progress_bar=false", "tools.kg_server_url=http://127.0.0.1:0",
             env={"DATA_DIR": str(data)}, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in recs] == [1]
    assert "reward/mean" in recs[0] and "val/kg_synth/reward" in recs[0]
    assert (out / "checkpoints" / "global_step_1" / "hf" / "config.json").exists()
    assert (out / "metrics.png").exists()
    assert "step 1" in r.stdout
