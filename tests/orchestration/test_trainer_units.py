import os
import time

import pytest

from agent_rl.orchestration.train_data import PromptFilter, TrainData
from agent_rl.orchestration.trainer import Trainer


class _Renderer:
    def prompt_ids(self, messages):
        return list(range(len(messages[0]["content"])))


def test_prompt_filter_drops_long_rows_and_warns_once():
    warnings = []
    f = PromptFilter(_Renderer(), max_len=5, warn=warnings.append)
    rows = [{"prompt": [{"role": "user", "content": c}]} for c in ("abc", "abcdefgh", "abcde", "abcdefghij")]
    assert [f.ok(r) for r in rows] == [True, False, True, False]
    assert f.dropped == 2
    assert len(warnings) == 1 and "data.max_prompt_length=5" in warnings[0] and "8 tokens" in warnings[0]


def test_merge_train_metrics_rank0_values_max_times():
    merged = Trainer._merge_train([{"actor/pg_loss": 0.5, "timing/update_s": 1.0, "perf/cpu_max_rss_gb": 2.0},
                                   {"actor/pg_loss": 0.7, "timing/update_s": 3.0, "perf/cpu_max_rss_gb": 1.0}])
    assert merged == {"actor/pg_loss": 0.5, "timing/update_s": 3.0, "perf/cpu_max_rss_gb": 2.0}


def _fake_trainer(tmp_path, monkeypatch, on_save):
    """A Trainer whose rollout / batch / workers are stand-ins; the real Tracker writes metrics.jsonl."""
    import types

    import torch

    import agent_rl.algorithms.advantage as A
    import agent_rl.orchestration.trainer as T
    import agent_rl.rollout.batch as B
    import agent_rl.rollout.output as O
    from agent_rl.metrics import Tracker

    monkeypatch.setattr(O, "write_trajectories", lambda *a, **k: None)
    monkeypatch.setattr(B, "build_batch", lambda trajs, pad: {"loss_mask": torch.ones(2, 3),
                                                              "attention_mask": torch.ones(2, 4)})
    monkeypatch.setattr(A, "compute_advantages", lambda batch, *a: torch.ones(2, 3))
    monkeypatch.setattr(T, "shard_batch", lambda batch, n: [batch])
    monkeypatch.setattr(T, "reward_metrics", lambda trajs: {"reward/mean": 0.5})
    monkeypatch.setattr(T, "rollout_metrics", lambda trajs: {})

    class Group:
        def call_each(self, method, args):
            return [{"actor/pg_loss": 0.1}]

        def call(self, method, *args):
            return [{}]

    tr = Trainer.__new__(Trainer)
    tr.cfg = types.SimpleNamespace(
        trainer=types.SimpleNamespace(test_freq=-1, save_freq=1, total_training_steps=3, total_epochs=1),
        algorithm=types.SimpleNamespace(adv_estimator="grpo", norm_adv_by_std=True, adv_epsilon=1e-6,
                                        turn_adv_coef=1.0),
        rollout=types.SimpleNamespace(trajectory_dir=str(tmp_path / "rollouts")))
    tr.step, tr.world_size, tr.pad_id = 0, 1, 0
    tr.data = TrainData(types.SimpleNamespace(epoch=0, position=0, rows=[None] * 8), [], None)
    tr.group = Group()
    tr.tokenizer = None
    tr._rollout = lambda step: (["traj"], {})
    tr.save = lambda: on_save(tr.step)
    tr.tracker = Tracker(["jsonl"], output_dir=str(tmp_path), plot=False)
    return tr


def test_step_metrics_durable_before_its_checkpoint(tmp_path, monkeypatch):
    """The record of step N is in metrics.jsonl when step N's checkpoint is written; a driver killed once the
    checkpoint is complete (and `latest` names it) has lost no metrics; the save's duration is logged with the next
    step."""
    from agent_rl.metrics.jsonl import read_jsonl

    seen = []

    def save(step):
        seen.append([r["step"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))])
        if step == 2:
            raise KeyboardInterrupt("driver killed after the checkpoint became latest")

    tr = _fake_trainer(tmp_path, monkeypatch, save)
    tr.train_step()
    with pytest.raises(KeyboardInterrupt):
        tr.train_step()
    tr.tracker.finish()
    assert seen == [[1], [1, 2]]
    recs = read_jsonl(str(tmp_path / "metrics.jsonl"))
    assert [r["step"] for r in recs] == [1, 2]
    assert "timing/save_s" not in recs[0] and recs[1]["timing/save_s"] >= 0


def test_a_step_without_any_informative_group_skips_the_update(tmp_path, monkeypatch):
    """Dynamic sampling found no group with signal after its rounds: the step is logged and counted, the actor
    and the engine are left alone; without the filter an empty rollout is an error."""
    import types

    from agent_rl.metrics.jsonl import read_jsonl
    from agent_rl.orchestration.trainer import TrainError

    tr = _fake_trainer(tmp_path, monkeypatch, lambda step: None)
    called = []
    tr.group.call_each = lambda method, args: called.append(method) or [{}]
    tr.group.call = lambda method, *a: called.append(method) or [{}]
    tr._rollout = lambda step: ([], {"dynamic_sampling/rounds": 4.0, "dynamic_sampling/short_groups": 8.0})
    tr.cfg.algorithm.filter_groups = types.SimpleNamespace(enable=True)
    m = tr.train_step()
    tr.tracker.finish()
    assert tr.step == 1 and called == []
    assert m["actor/skipped_update"] == 1.0 and m["perf/total_tokens"] == 0.0
    assert read_jsonl(str(tmp_path / "metrics.jsonl"))[0]["dynamic_sampling/short_groups"] == 8.0
    tr.cfg.algorithm.filter_groups.enable = False
    with pytest.raises(TrainError, match="no complete GRPO group"):
        tr.train_step()


def _fake_run_dir(tmp_path, steps=(1, 2), latest=2, sft_steps=None, records=()):
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "checkpoints"
    for s in steps:
        d = root / f"global_step_{s}"
        (d / "hf").mkdir(parents=True)
        (d / "meta.json").write_text(json.dumps({"step": s}))
        (d / "COMPLETE").write_text("")
    if latest is not None:
        root.mkdir(exist_ok=True)
        (root / "latest").write_text(f"global_step_{latest}")
    if sft_steps:
        d = tmp_path / "sft" / f"global_step_{sft_steps}"
        (d / "hf").mkdir(parents=True)
        (d / "meta.json").write_text("{}")
        (d / "COMPLETE").write_text("")
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(tmp_path)


def test_run_summary_names_checkpoint_hf_folder_and_best_validation(tmp_path):
    from agent_rl.orchestration.run_summary import best_validation, run_summary

    out = _fake_run_dir(tmp_path, sft_steps=5, records=[
        {"step": 0, "val/kg_synth/reward": 0.01, "sft/val/kg_synth/reward": 0.2, "val/kg_synth/hop1/reward": 0.9},
        {"step": 1, "reward/mean": 0.1},
        {"step": 2, "val/kg_synth/reward": 0.35, "val/kg_synth/f1": 0.9},
        {"step": 4, "val/kg_synth/reward": 0.3}])
    lines = run_summary(out, step=4, elapsed_s=125.0, save_freq=2)
    text = "\n".join(lines)
    assert lines[0] == "run finished after 2m05s: 4 step(s)"
    ck = os.path.join(out, "checkpoints", "global_step_2")
    assert f"last checkpoint: {ck} (step 2)" in text
    assert f"model: {os.path.join(ck, 'hf')}" in text and "AutoModelForCausalLM.from_pretrained" in text
    assert f"warm-started model: {os.path.join(out, 'sft', 'global_step_5', 'hf')}" in text
    # the per-source reward, not a per-hop one; the best over steps, with its step
    assert "best validation reward: 0.35 (step 2; val/kg_synth/reward)" in text
    assert best_validation(out) == {"key": "val/kg_synth/reward", "value": 0.35, "step": 2, "label": "step 2"}
    assert "saved:" not in text


def test_run_summary_interrupted_says_what_was_saved(tmp_path):
    from agent_rl.orchestration.run_summary import run_summary

    out = _fake_run_dir(tmp_path, steps=(2,), latest=2, records=[
        {"step": 0, "val/a/reward": 0.1, "val/b/reward": 0.5, "val/all/reward": 0.3,
         "sft/val/a/reward": 0.2, "sft/val/b/reward": 0.8, "sft/val/all/reward": 0.5},
        {"step": 2, "val/all/reward": 0.4}])
    text = "\n".join(run_summary(out, step=3, elapsed_s=7.0, interrupted="SIGINT", save_freq=2))
    assert text.startswith("run stopped by SIGINT after 7s (3 step(s) complete)")
    assert "saved: the checkpoint of step 2; steps 3..3 are logged in metrics.jsonl but not saved" in text
    assert "resume" in text
    # several data sources: val/all/reward; the warm-started model's validation counts
    assert "best validation reward: 0.5 (step 0, after the warm-start; sft/val/all/reward)" in text

    empty = tmp_path / "empty"
    empty.mkdir()
    text = "\n".join(run_summary(str(empty), step=0, interrupted="SIGTERM", save_freq=-1))
    assert "nothing was saved: no complete checkpoint (trainer.save_freq <= 0)" in text
    assert "best validation reward: none" in text
    text = "\n".join(run_summary(str(empty), step=0, save_freq=10))
    assert "no checkpoint saved" in text and "nothing was saved" not in text
    # stopped after the warm-start, before the first RL checkpoint: the warm-started model is what was saved
    sft_only = _fake_run_dir(tmp_path / "sft-only", steps=(), latest=None, sft_steps=2)
    text = "\n".join(run_summary(sft_only, step=0, interrupted="SIGINT", save_freq=2))
    assert "saved: only the warm-started model, no RL checkpoint yet" in text and "nothing was saved" not in text
    assert f"warm-started model: {os.path.join(sft_only, 'sft', 'global_step_2', 'hf')}" in text


def test_stop_signals_raise_once_and_restore(monkeypatch):
    import signal

    from agent_rl.orchestration.stop import StopSignals

    before = signal.getsignal(signal.SIGTERM)
    stop = StopSignals()
    stop.install()
    stop.install()                                      # idempotent
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):                        # the handler runs between bytecodes
                time.sleep(0.01)
        assert stop.signum == signal.SIGTERM and stop.name == "SIGTERM"
        exits = []
        monkeypatch.setattr(os, "_exit", exits.append)  # a second signal exits at once
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert exits == [128 + signal.SIGINT]
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_close_after_interrupt_cancels_the_in_process_worker_tasks(tmp_path):
    """use_ray=false: a signal left the worker's event loop with tasks pending; close() cancels them (their
    tool sessions unwind), shuts the worker down, closes its tools and the loop, then stops the KG server."""
    import asyncio
    import types

    from agent_rl.orchestration.stop import StopSignals

    loop = asyncio.new_event_loop()
    events = []

    async def trajectory():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("trajectory cancelled")
            raise

    class Runtime:
        async def close(self, timeout):
            events.append("tools closed")

    class Worker:
        def __init__(self):
            self.loop, self.tool_runtime = loop, Runtime()

        def shutdown(self):
            events.append("worker shutdown")

    task = loop.create_task(trajectory())
    loop.run_until_complete(asyncio.sleep(0))
    tr = Trainer.__new__(Trainer)
    tr.tracker = None
    tr.signals = StopSignals()
    tr.signals.signum = 2
    tr.group = types.SimpleNamespace(use_ray=False, workers=[Worker()], shutdown=lambda: events.append("group"))
    tr.services = [types.SimpleNamespace(stop=lambda timeout: events.append("kg server stopped"))]
    tr.echo = print
    tr.close()
    assert task.cancelled() and loop.is_closed()
    assert events == ["trajectory cancelled", "worker shutdown", "tools closed", "group", "kg server stopped"]
    assert tr.group is None and tr.services == []


def test_kl_controller_sets_each_steps_coefficient_logs_it_and_survives_a_checkpoint(tmp_path, monkeypatch):
    """algorithm.kl_ctrl=adaptive: step 1 trains with the starting coefficient, its measured KL (actor/kl_loss) and
    its trajectories (2 rows) move it by verl's rule for step 2; actor/kl_coef logs the coefficient each step trained
    with; the controller state goes into the checkpoint's trainer state and a resumed trainer trains with it."""
    import json

    from agent_rl.algorithms.kl_ctrl import AdaptiveKLController
    from agent_rl.metrics.jsonl import read_jsonl

    tr = _fake_trainer(tmp_path, monkeypatch, lambda step: None)
    tr.kl_ctrl = AdaptiveKLController(0.01, target_kl=0.1, horizon=10)
    sent, kls = [], iter([0.3, 0.05])
    tr.group.call_each = lambda method, args: sent.append([a[2] for a in args]) or [{"actor/kl_loss": next(kls)}]
    m1 = tr.train_step()
    m2 = tr.train_step()
    tr.tracker.finish()
    c2 = 0.01 * (1 + 0.2 * 2 / 10)        # KL 0.3: error clipped to +0.2, 2 trajectories, horizon 10
    c3 = c2 * (1 - 0.2 * 2 / 10)          # KL 0.05: error -0.5 clipped to -0.2
    assert sent == [[0.01], [pytest.approx(c2)]]
    assert m1["actor/kl_coef"] == 0.01 and m2["actor/kl_coef"] == pytest.approx(c2)
    assert [r["actor/kl_coef"] for r in read_jsonl(str(tmp_path / "metrics.jsonl"))] == [0.01, pytest.approx(c2)]
    assert tr.kl_ctrl.value == pytest.approx(c3)

    saved = {}
    tr.group.call = lambda method, root, step, extra: saved.update(json.loads(json.dumps(extra))) or ["ckpt"]
    tr.cfg.trainer.experiment_name, tr.cfg.trainer.output_dir = "x", str(tmp_path)
    tr.data.loader.state_dict = lambda: {}
    Trainer.save(tr)
    assert saved["kl_ctrl"] == {"type": "adaptive", "value": pytest.approx(c3)}

    fresh = _fake_trainer(tmp_path / "resumed", monkeypatch, lambda step: None)
    fresh.kl_ctrl = AdaptiveKLController(0.01, target_kl=0.1, horizon=10)
    fresh._load_kl_ctrl(saved, "ckpt")
    sent.clear()
    fresh.group.call_each = lambda method, args: sent.append([a[2] for a in args]) or [{"actor/kl_loss": 0.1}]
    assert fresh.train_step()["actor/kl_coef"] == pytest.approx(c3)
    assert sent == [[pytest.approx(c3)]]
    fresh.tracker.finish()

    # a checkpoint of another controller type: warned, the configured start is kept
    warned = []
    other = _fake_trainer(tmp_path / "other", monkeypatch, lambda step: None)
    other.echo = warned.append
    other.kl_ctrl = AdaptiveKLController(0.01, target_kl=0.1, horizon=10)
    other._load_kl_ctrl({"kl_ctrl": {"type": "fixed", "value": 0.5}}, "ckpt")
    assert other.kl_ctrl.value == 0.01 and "algorithm.kl_ctrl.type=fixed" in warned[0]
    other.tracker.finish()


def test_without_kl_loss_no_coefficient_is_sent_or_logged(tmp_path, monkeypatch):
    tr = _fake_trainer(tmp_path, monkeypatch, lambda step: None)
    sent = []
    tr.group.call_each = lambda method, args: sent.append([a[2] for a in args]) or [{"actor/pg_loss": 0.1}]
    m = tr.train_step()
    tr.tracker.finish()
    assert sent == [[None]] and "actor/kl_coef" not in m
