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
    e.update(PYTHON=sys.executable, **(env or {}))
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


@pytest.mark.slow
def test_kg_example_embedded_default_completes(tmp_path):
    from agent_rl.data.generate import generate_dataset

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
