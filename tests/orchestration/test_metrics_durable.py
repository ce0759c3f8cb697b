"""Issue 19 item 4: a checkpoint never becomes resumable before its step's metrics record is on disk. One process,
the tiny model: the driver "dies" (an exception that nothing catches) during step 2's save, either after the
checkpoint was renamed into place and `latest` names it, or before the rename; the run is started again, and
metrics.jsonl holds every step up to `latest` and then every step to the end, with no gap."""
import json

import pytest

from agent_rl.config.load import compose
from agent_rl.tasks.generate import generate_dataset


class Killed(BaseException):
    """Stands for SIGKILL of the driver: nothing after it runs (BaseException: no handler of Exception catches it)."""


def _cfg(tiny_model_path, tmp_path, steps):
    data = tmp_path / "data"
    return compose([f"model.path={tiny_model_path}", "model.dtype=float32", "model.gradient_checkpointing=false",
                    f"data.train_files=[{data}/train.parquet]", f"data.val_files=[{data}/val.parquet]",
                    f"tools.kg_store={data}/kg_store.json", "tools.kg_server_url=http://127.0.0.1:0",
                    "trainer.use_ray=false", "data.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=2",
                    "rollout.multi_turn.max_new_tokens_per_turn=8", "rollout.multi_turn.max_assistant_turns=2",
                    "actor.optim.lr=1e-3", f"trainer.total_training_steps={steps}", "trainer.save_freq=1",
                    "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.max_ckpt_to_keep=2",
                    "rollout.progress_bar=false", "logger.backends=[jsonl]", "logger.plot=false",
                    f"trainer.output_dir={tmp_path}/out"], check_paths=False)


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("when", ["after_latest", "before_rename"])
def test_killed_during_save_loses_no_metrics(tiny_model_path, tmp_path, monkeypatch, when):
    """after_latest: step 2's checkpoint is complete and `latest` names it when the driver dies; the resume starts
    at step 3. before_rename: the driver dies inside the save, before the checkpoint is renamed into place; the resume
    starts from step 1's checkpoint, runs step 2 again and logs it again (the later record wins)."""
    from agent_rl.metrics.jsonl import read_jsonl
    from agent_rl.orchestration.trainer import Trainer
    from agent_rl.orchestration.worker import TrainWorker
    from agent_rl.training import ckpt_verify

    generate_dataset("kg", str(tmp_path / "data"), sizes={"train": 16, "val": 2, "test": 0})
    out = tmp_path / "out"
    real_save, real_manifest = TrainWorker.save, ckpt_verify.write_manifest

    def save_then_die(self, root, step, extra_state):
        path = real_save(self, root, step, extra_state)   # complete, renamed into place, `latest` -> it, pruned
        if step == 2:
            raise Killed(f"driver killed after {path} became latest")
        return path

    def die_in_save(tmp):
        if tmp.endswith("global_step_2"):
            raise Killed(f"driver killed while writing {tmp}")
        return real_manifest(tmp)

    if when == "after_latest":
        monkeypatch.setattr(TrainWorker, "save", save_then_die)
    else:
        monkeypatch.setattr(ckpt_verify, "write_manifest", die_in_save)
    tr = Trainer(_cfg(tiny_model_path, tmp_path, 3), echo=lambda s: None)
    try:
        with pytest.raises(Killed):
            tr.fit()
    finally:
        tr.close()
    latest = "global_step_2" if when == "after_latest" else "global_step_1"
    assert (out / "checkpoints" / "latest").read_text().strip() == latest
    assert _steps(out) == [1, 2]                       # step 2's record was on disk before its checkpoint

    monkeypatch.undo()
    lines = []
    tr = Trainer(_cfg(tiny_model_path, tmp_path, 3), echo=lines.append)
    try:
        assert tr.step == int(latest.rsplit("_", 1)[1])
        assert any("resumed from" in x and latest in x for x in lines)
        tr.fit()
        assert tr.step == 3
    finally:
        tr.close()
    # every step up to `latest`, then on to the end: no gap; a step run again was logged again
    assert _steps(out) == ([1, 2, 3] if when == "after_latest" else [1, 2, 2, 3])
    assert [r["step"] for r in read_jsonl(str(out / "metrics.jsonl"))] == [1, 2, 3]
    assert (out / "checkpoints" / "latest").read_text().strip() == "global_step_3"
