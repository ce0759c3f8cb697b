"""The driver's multi-objective wiring, with the real batch and advantages and stand-in workers: GDPO advantages reach
the shards, each row's KL coefficient is the mean of its objectives', each objective's coefficient moves by its own
measured KL, everything is logged and saved."""
import math
import types

import pytest
import torch

from agent_rl.algorithms.kl_ctrl import TargetRangeKLController
from agent_rl.orchestration.train_data import TrainData
from agent_rl.orchestration.trainer import Trainer
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tasks.objectives import Objective


def _traj(uid, source, **scores):
    t = Trajectory(uid=uid, sample_index=0, prompt_ids=[1, 2], response_ids=[3, 4], loss_mask=[1, 1],
                   rollout_logprobs=[0.0, 0.0],
                   turns=[TurnRecord(index=0, output_ids=[3, 4], logprobs=[0.0, 0.0], finish_reason="stop", text="")],
                   row={"data_source": source})
    t.reward_components = {f"obj/{k}": v for k, v in scores.items()}
    weights = {"answer": 1.0, "format": 2.0}
    t.reward = sum(weights[k] * v for k, v in scores.items())
    return t


def _trainer(tmp_path, monkeypatch, trajs, kl_ctrl, norm_per_objective=True):
    import agent_rl.rollout.output as O
    from agent_rl.metrics import Tracker

    monkeypatch.setattr(O, "write_trajectories", lambda *a, **k: None)
    tr = Trainer.__new__(Trainer)
    tr.cfg = types.SimpleNamespace(
        trainer=types.SimpleNamespace(test_freq=-1, save_freq=-1, total_training_steps=3, total_epochs=1),
        algorithm=types.SimpleNamespace(adv_estimator="grpo", norm_adv_by_std=True, adv_epsilon=1e-6,
                                        turn_adv_coef=1.0, norm_per_objective=norm_per_objective,
                                        filter_groups=types.SimpleNamespace(enable=False)),
        rollout=types.SimpleNamespace(trajectory_dir=str(tmp_path / "rollouts")))
    tr.objectives = (Objective("answer", "kg", 1.0), Objective("format", "x:y", 2.0, ("b_src",)))
    tr.step, tr.world_size, tr.pad_id = 0, 1, 0
    tr.data = TrainData(types.SimpleNamespace(epoch=0, position=0, rows=[None] * 8), [], None)
    tr.tokenizer = None
    tr.kl_ctrl = kl_ctrl
    tr._rollout = lambda step: (trajs, {})
    tr.tracker = Tracker(["jsonl"], output_dir=str(tmp_path), plot=False)
    sent = []

    class Group:
        def call_each(self, method, args):
            sent.append(args)
            return [{"actor/pg_loss": 0.1, "actor/kl_loss": 0.02, "actor/kl/answer": 0.05, "actor/kl/format": 0.0001}]

        def call(self, method, *args):
            return [{}]

    tr.group = Group()
    return tr, sent


def test_gdpo_advantages_and_per_objective_kl_reach_the_workers(tmp_path, monkeypatch):
    # group g0 (a_src: answer only): answers (1, 0); group g1 (b_src: answer and format, weight 2): (1, 0), (0, 1)
    trajs = [_traj("g0", "a_src", answer=1.0), _traj("g0", "a_src", answer=0.0),
             _traj("g1", "b_src", answer=1.0, format=0.0), _traj("g1", "b_src", answer=0.0, format=1.0)]
    ctrl = TargetRangeKLController({"answer": 0.01, "format": 0.01}, [0.001, 0.01], factor=2.0)
    tr, sent = _trainer(tmp_path, monkeypatch, trajs, ctrl)
    m1 = tr.train_step()
    (shard, step, coef, names), = sent[0]
    # GDPO by hand (tests/algorithms/test_multi_objective.py): S = [A, -A, -A, A] -> +-sqrt(3)/2
    h = math.sqrt(3) / 2
    assert shard["advantages"][:, -1].tolist() == pytest.approx([h, -h, -h, h], rel=1e-5)
    assert "objective_scores" not in shard and names == ["answer", "format"]
    assert shard["kl_objectives"].tolist() == [[1, 0], [1, 0], [1, 1], [1, 1]]
    assert shard["kl_coef"].tolist() == pytest.approx([0.01] * 4)
    # step 1 measured answer 0.05 (> hi: x2) and format 0.0001 (< lo: /2)
    assert m1["actor/kl_coef/answer"] == 0.01 and m1["actor/kl_coef/format"] == 0.01 and m1["actor/kl_coef"] == 0.01
    assert ctrl.coefs == {"answer": 0.02, "format": 0.005}
    m2 = tr.train_step()
    (shard2, _, _, _), = sent[1]
    # rows of a_src train with answer's coefficient, rows of b_src with the mean of answer's and format's
    assert shard2["kl_coef"].tolist() == pytest.approx([0.02, 0.02, 0.0125, 0.0125])
    assert m2["actor/kl_coef"] == pytest.approx(0.01625) and m2["actor/kl_coef/format"] == 0.005
    assert m2["actor/kl/answer"] == 0.05
    tr.tracker.finish()
    saved = {}
    tr.group.call = lambda method, root, step, extra: saved.update(extra) or ["ckpt"]
    tr.cfg.trainer.experiment_name, tr.cfg.trainer.output_dir = "x", str(tmp_path)
    tr.data.loader.state_dict = lambda: {}
    Trainer.save(tr)
    assert saved["kl_ctrl"] == {"type": "range", "coefs": {"answer": 0.04, "format": 0.0025}}


def test_without_per_objective_normalisation_grpo_runs_on_the_weighted_sum(tmp_path, monkeypatch):
    """norm_per_objective=false: GRPO on rewards (the weighted sums [1, 0] and [1, 2]): +-1/sqrt 2 in each group; a
    single-coefficient controller gets no per-row coefficients but the objectives' KL is still measured."""
    from agent_rl.algorithms.kl_ctrl import FixedKLController

    trajs = [_traj("g0", "a_src", answer=1.0), _traj("g0", "a_src", answer=0.0),
             _traj("g1", "b_src", answer=1.0, format=0.0), _traj("g1", "b_src", answer=0.0, format=1.0)]
    tr, sent = _trainer(tmp_path, monkeypatch, trajs, FixedKLController(0.01), norm_per_objective=False)
    m = tr.train_step()
    tr.tracker.finish()
    (shard, _, coef, names), = sent[0]
    a = 1 / math.sqrt(2)
    assert shard["advantages"][:, -1].tolist() == pytest.approx([a, -a, -a, a], rel=1e-5)
    assert coef == 0.01 and "kl_coef" not in shard and names == ["answer", "format"]
    assert m["actor/kl_coef"] == 0.01 and "actor/kl_coef/answer" not in m


def test_objectives_without_kl_loss_send_no_kl_inputs(tmp_path, monkeypatch):
    trajs = [_traj("g0", "a_src", answer=1.0), _traj("g0", "a_src", answer=0.0)]
    tr, sent = _trainer(tmp_path, monkeypatch, trajs, None)
    tr.train_step()
    tr.tracker.finish()
    (args,) = sent[0]
    assert len(args) == 3 and args[2] is None and "kl_objectives" not in args[0]
    assert torch.isfinite(args[0]["advantages"]).all()
