"""A real `agent-rl train` under Ray killed with SIGKILL: nothing in the driver runs, yet every process that Ray
started for the run (GCS, raylet, dashboard / monitor processes, the DashboardAgent and RuntimeEnvAgent, the worker
actor) is gone within seconds, through the reaper (agent_rl/orchestration/reaper.py), and the reaper exits too.
Another Ray instance on the same host is left alone. A normal run leaves no reaper behind."""
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

GONE_S = 15.0

# another Ray instance on this host (another run's): must survive the reaping
BYSTANDER = r"""
import sys, ray
ray.init(num_cpus=1, include_dashboard=False)
print("ready", flush=True)
sys.stdin.read()
ray.shutdown()
"""


def _args(tiny_model_path, tmp_path, *extra):
    data = tmp_path / "data"
    return [sys.executable, "-m", "agent_rl.cli.main", "train", f"model.path={tiny_model_path}", "model.dtype=float32",
            "model.gradient_checkpointing=false", f"data.train_files=[{data}/train.parquet]",
            f"data.val_files=[{data}/val.parquet]", f"tools.kg_store={data}/kg_store.json",
            "tools.kg_server_url=http://127.0.0.1:0", "data.train_batch_size=2", "actor.ppo_mini_batch_size=2",
            "rollout.n=2", "rollout.multi_turn.max_new_tokens_per_turn=8", "rollout.multi_turn.max_assistant_turns=1",
            "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.n_gpus_per_node=1",
            "logger.backends=[jsonl]", "logger.plot=false", "rollout.progress_bar=false",
            f"trainer.output_dir={tmp_path}/out", *extra]


def _alive(procs):
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _is_reaper(p):
    try:
        return "agent_rl.orchestration.reaper" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def _names(procs):
    out = []
    for p in procs:
        try:
            out.append((p.pid, p.name()))
        except psutil.Error:
            pass
    return out


@pytest.mark.slow
def test_sigkill_under_ray_leaves_no_process(tiny_model_path, tmp_path):
    from agent_rl.tasks.generate import generate_dataset

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 32, "val": 2, "test": 0})
    bystander = subprocess.Popen([sys.executable, "-c", BYSTANDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    log_path = tmp_path / "run.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(_args(tiny_model_path, tmp_path, "trainer.total_training_steps=200", "trainer.save_freq=1"),
                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            start_new_session=True)
    run = []
    others = []
    try:
        assert bystander.stdout.readline().strip() == "ready"
        others = [p for p in psutil.Process(bystander.pid).children(recursive=True)   # idle workers may come and go
                  if p.name() != "ray::IDLE"]
        step = tmp_path / "out" / "rollouts" / "step_000001.jsonl"
        deadline = time.time() + 300
        while not step.exists():                     # the worker actor is in step 1
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.time() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.05)
        run = psutil.Process(proc.pid).children(recursive=True)
        names = " ".join(n for _, n in _names(run))
        for expected in ("gcs_server", "raylet", "DashboardAgent", "RuntimeEnvAgent", "TrainWorker"):
            assert expected in names, names
        reapers = [p for p in run if _is_reaper(p)]
        assert len(reapers) == 1, _names(run)
        t0 = time.time()
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        while _alive(run) and time.time() - t0 < GONE_S:
            time.sleep(0.1)
        took = time.time() - t0
        left = _alive(run)
        assert not left, f"{_names(left)} still there {GONE_S:.0f} s after SIGKILL"
        print(f"SIGKILL under Ray: every process of the run gone {took:.1f} s after the kill")
        assert not _alive(reapers)
        assert len(others) >= 4 and len(_alive(others)) == len(others), "another Ray instance was touched"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
        for p in _alive(run):
            p.kill()
        bystander.stdin.close()
        try:
            bystander.wait(30)
        except subprocess.TimeoutExpired:
            bystander.kill()
        for p in _alive(others):
            p.kill()


@pytest.mark.slow
def test_normal_run_under_ray_leaves_no_reaper(tiny_model_path, tmp_path):
    """The reaper watches the run while it runs; the driver stops it at the end (gone as soon as the driver is: it
    did not wait to find the driver dead), and it killed nothing (the run's Ray shut down by itself)."""
    from agent_rl.tasks.generate import generate_dataset

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 8, "val": 2, "test": 0})
    proc = subprocess.Popen(_args(tiny_model_path, tmp_path, "trainer.total_training_steps=1", "trainer.save_freq=-1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            try:
                seen += [p for p in psutil.Process(proc.pid).children() if _is_reaper(p) and p not in seen]
            except psutil.NoSuchProcess:
                pass
            time.sleep(0.2)
        out = proc.communicate(timeout=60)[0]
        assert not _alive(seen)           # at once: the driver stopped it
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert len(seen) == 1, out[-3000:]
