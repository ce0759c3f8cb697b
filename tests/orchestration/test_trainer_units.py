import pytest

from agent_rl.orchestration.trainer import PromptFilter, Trainer


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
    tr.step, tr.world_size, tr.rows_per_epoch, tr.val_rows, tr.pad_id = 0, 1, 8, [], 0
    tr.loader = types.SimpleNamespace(epoch=0, position=0)
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
