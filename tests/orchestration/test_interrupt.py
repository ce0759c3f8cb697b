"""Stopping a real `agent-rl train` with a signal: it exits promptly (exit status 128 + signal), says what was saved,
and leaves no process behind. The tiny model on CPU; in-process (`trainer.use_ray=false`) and under Ray."""
import os
import signal
import subprocess
import sys
import time

import pytest

BOUND_S = 30.0


def _args(tiny_model_path, tmp_path, *extra):
    data = tmp_path / "data"
    return [sys.executable, "-m", "agent_rl.cli.main", "train", f"model.path={tiny_model_path}", "model.dtype=float32",
            "model.gradient_checkpointing=false", f"data.train_files=[{data}/train.parquet]",
            f"data.val_files=[{data}/val.parquet]", f"tools.kg_store={data}/kg_store.json",
            "tools.kg_server_url=http://127.0.0.1:0", "data.train_batch_size=2", "actor.ppo_mini_batch_size=2",
            "rollout.n=2", "rollout.multi_turn.max_new_tokens_per_turn=8", "rollout.multi_turn.max_assistant_turns=2",
            "trainer.total_training_steps=200", "trainer.test_freq=-1", "trainer.val_before_train=false",
            "logger.backends=[console,jsonl]", "logger.plot=false", "rollout.progress_bar=false",
            f"trainer.output_dir={tmp_path}/out", *extra]


def _descendants(pid):
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(procs):
    import psutil

    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _interrupt(tiny_model_path, tmp_path, sig, wait_for, extra, group=False):
    """Start the run in its own session, wait for `wait_for`, send `sig` to it (to its whole process group with
    `group`, as Ctrl-C in a terminal does: Ray's processes get it too); -> (exit status, seconds, output)."""
    from agent_rl.tasks.generate import generate_dataset

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 32, "val": 2, "test": 0})
    log_path = tmp_path / "run.log"
    log = open(log_path, "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_args(tiny_model_path, tmp_path, *extra), stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    children = []
    try:
        deadline = time.time() + 400
        while not wait_for.exists():            # a step is under way
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        children = _descendants(proc.pid)
        t0 = time.time()
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        try:
            rc = proc.wait(BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {BOUND_S:.0f} s after {sig.name}:\n" + log_path.read_text()[-3000:])
        took = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    log.close()
    end = time.time() + 10                       # a process may take a moment to be reaped
    while _alive(children) and time.time() < end:
        time.sleep(0.2)
    left = _alive(children)
    for p in left:
        p.kill()
    text = log_path.read_text()
    assert not left, f"left behind: {[(p.pid, p.name()) for p in left]}\n{text[-3000:]}"
    return rc, took, text


@pytest.mark.slow
def test_sigint_in_process_stops_promptly_and_names_the_checkpoint(tiny_model_path, tmp_path):
    """Ctrl-C during step 2 (step 1 checkpointed): exit 130 within the bound, the summary names global_step_1
    and its hf/ folder; the run resumes from it."""
    out = tmp_path / "out"
    rc, took, text = _interrupt(tiny_model_path, tmp_path, signal.SIGINT, out / "rollouts" / "step_000002.jsonl",
                                ["trainer.use_ray=false", "trainer.save_freq=1"])
    assert rc == 130, text[-3000:]
    assert "SIGINT received: stopping the run" in text
    assert "run stopped by SIGINT" in text
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert latest in ("global_step_1", "global_step_2")      # step 2 may have been saved before the signal landed
    ck = out / "checkpoints" / latest
    assert f"last checkpoint: {ck} (step {latest.rsplit('_', 1)[1]})" in text
    assert f"model: {ck / 'hf'}" in text
    assert "agent-rl train: run stopped by SIGINT" in text and f"last checkpoint: {ck}" in text.split("agent-rl train:")[-1]
    assert not list((out / "checkpoints").glob(".tmp-*"))    # a save cut by the signal cleans up after itself
    assert (out / "metrics.jsonl").exists()
    print(f"SIGINT in process: exited in {took:.1f} s")


@pytest.mark.slow
def test_sigterm_under_ray_before_any_checkpoint(tiny_model_path, tmp_path):
    """SIGTERM while step 1 trains under Ray (raylet, GCS, a worker actor): no `Aborted`, exit 143 within the
    bound, `nothing was saved`, and Ray's processes are gone."""
    out = tmp_path / "out"
    rc, took, text = _interrupt(tiny_model_path, tmp_path, signal.SIGTERM, out / "rollouts" / "step_000001.jsonl",
                                ["trainer.save_freq=-1", "trainer.n_gpus_per_node=1"])
    assert rc == 143, text[-3000:]
    assert "Aborted" not in text
    assert "SIGTERM received: stopping the run" in text
    assert "nothing was saved: no complete checkpoint (trainer.save_freq <= 0)" in text
    assert "agent-rl train: run stopped by SIGTERM" in text
    print(f"SIGTERM under Ray: exited in {took:.1f} s")


@pytest.mark.slow
def test_ctrl_c_in_a_terminal_under_ray(tiny_model_path, tmp_path):
    """Ctrl-C in a terminal: SIGINT to the whole process group (driver, raylet, GCS, the worker actor) during step 2:
    exit 130 within the bound, the step-1 checkpoint named, no process left."""
    out = tmp_path / "out"
    rc, took, text = _interrupt(tiny_model_path, tmp_path, signal.SIGINT, out / "rollouts" / "step_000002.jsonl",
                                ["trainer.save_freq=1"], group=True)
    assert rc == 130, text[-3000:]
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert f"last checkpoint: {out / 'checkpoints' / latest}" in text
    assert "Traceback" not in text
    print(f"Ctrl-C (process group) under Ray: exited in {took:.1f} s")
