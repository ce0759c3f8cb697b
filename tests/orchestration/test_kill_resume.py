"""`agent-rl train` killed with SIGKILL in the middle of a step resumes from the latest complete
checkpoint and redraws exactly the rows of the interrupted step (one process, no Ray: fast)."""
import json
import signal
import subprocess
import sys
import time

import pytest


def _args(tiny_model_path, tmp_path):
    data = tmp_path / "data"
    return [sys.executable, "-m", "agent_rl.cli.main", "train", f"model.path={tiny_model_path}", "model.dtype=float32",
            "model.gradient_checkpointing=false", f"data.train_files=[{data}/train.parquet]",
            f"data.val_files=[{data}/val.parquet]", f"tools.kg_store={data}/kg_store.json",
            "tools.kg_server_url=http://127.0.0.1:0", "trainer.use_ray=false", "data.train_batch_size=2",
            "actor.ppo_mini_batch_size=2", "rollout.n=2", "rollout.multi_turn.max_new_tokens_per_turn=8",
            "rollout.multi_turn.max_assistant_turns=1", "trainer.total_training_steps=4", "trainer.save_freq=1",
            "trainer.test_freq=-1", "trainer.val_before_train=false", "logger.backends=[jsonl]", "logger.plot=false",
            "rollout.progress_bar=false", f"trainer.output_dir={tmp_path}/out"]


def _sample_ids(path):
    with open(path) as f:
        return sorted(json.loads(line)["row"]["extra_info"]["sample_id"] for line in f)


@pytest.mark.slow
def test_sigkill_mid_step_then_resume(tiny_model_path, tmp_path):
    from agent_rl.tasks.generate import generate_dataset

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 16, "val": 2, "test": 0})
    out = tmp_path / "out"
    step3 = out / "rollouts" / "step_000003.jsonl"
    log = open(tmp_path / "run1.log", "w")
    proc = subprocess.Popen(_args(tiny_model_path, tmp_path), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not step3.exists():           # step 3's rollout is written, its update has not finished
            assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-2000:]
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_rows = _sample_ids(step3)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest in ("global_step_2", "global_step_3")

    r = subprocess.run(_args(tiny_model_path, tmp_path), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = int(latest.rsplit("_", 1)[1])
    assert f"resumed from {out / 'checkpoints' / latest} (step {resumed}" in r.stdout
    if resumed == 2:                         # step 3 ran again on the same rows
        assert _sample_ids(step3) == killed_rows
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 4 and sorted(set(steps)) == [1, 2, 3, 4]
    assert (out / "checkpoints" / "global_step_4" / "COMPLETE").exists()
