"""A task written outside `agent_rl/` (issue 13's acceptance test): its own tool (class_name in its YAML), its own
reward (`reward.functions`, a dotted path in the config) and its own data_source, from a temporary folder on
PYTHONPATH. `agent-rl rollout` scores with it, and two CPU training steps under Ray (the reward is loaded in the
Ray worker from the config string alone) log its components. Nothing under agent_rl/ knows the task."""
import json
import os
import subprocess
import sys

TOOL = '''
from agent_rl.tool_runtime.base import BaseTool, ToolResponse


class ShoutTool(BaseTool):
    async def execute(self, instance_id, parameters, **kwargs):
        text = str(parameters.get("text", ""))
        return ToolResponse(text=text.upper()), 0.0, {"chars": len(text)}
'''

REWARD = '''
def score(traj, reward_cfg):
    """1 when the last assistant turn is not empty; the component `shout_len` is the response length."""
    text = traj.turns[-1].text if traj.turns else ""
    n = float(len(text))
    return (1.0 if n else 0.0), {"shout_len": n, "shout_seen": 1.0}
'''

YAML = '''tools:
  - class_name: shout_task.tool.ShoutTool
    config: {type: native}
    tool_schema:
      type: function
      function:
        name: shout
        description: Upper-cases a text
        parameters:
          type: object
          properties:
            text: {type: string, description: the text}
          required: [text]
'''


def _task(tmp_path):
    pkg = tmp_path / "shout_task"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tool.py").write_text(TOOL)
    (pkg / "reward.py").write_text(REWARD)
    (tmp_path / "shout.yaml").write_text(YAML)
    from agent_rl.data.parquet_io import write_rows

    rows = [{"prompt": [{"role": "user", "content": f"Shout the word number {i}."}], "data_source": "shout_synth",
             "ability": "shouting", "reward_model": {"style": "rule", "ground_truth": f"WORD {i}"},
             "extra_info": {"split": "train", "index": i, "sample_id": f"shout-{i}"}} for i in range(8)]
    write_rows(str(tmp_path / "train.parquet"), rows)
    write_rows(str(tmp_path / "val.parquet"), rows[:2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]),
               PYTHONUNBUFFERED="1")
    common = [f"tools.config_path={tmp_path}/shout.yaml", f"data.train_files=[{tmp_path}/train.parquet]",
              f"data.val_files=[{tmp_path}/val.parquet]", "reward.functions.shout_synth=shout_task.reward:score",
              "model.dtype=float32", "model.gradient_checkpointing=false", "rollout.n=2", "data.train_batch_size=2",
              "actor.ppo_mini_batch_size=2", "rollout.multi_turn.max_new_tokens_per_turn=8",
              "rollout.multi_turn.max_assistant_turns=2", "sft.steps=0", "data.generate_if_missing=null"]
    return env, common


def test_a_task_from_outside_agent_rl_rolls_out_and_trains(tiny_model_path, tmp_path):
    env, common = _task(tmp_path)
    cli = [sys.executable, "-m", "agent_rl.cli.main"]
    out = tmp_path / "rollout.jsonl"
    r = subprocess.run(cli + ["rollout", "--out", str(out), "--show", "0", f"model.path={tiny_model_path}", *common],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    trajs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(trajs) == 4
    for t in trajs:
        assert t["reward_components"]["shout_seen"] == 1.0 and "shout_len" in t["reward_components"]
    r = subprocess.run(cli + ["train", f"model.path={tiny_model_path}", *common, "trainer.use_ray=true",
                              "trainer.total_training_steps=2", "trainer.save_freq=-1", "trainer.test_freq=-1",
                              "trainer.val_before_train=false", "logger.backends=[console,jsonl]", "logger.plot=false",
                              "rollout.progress_bar=false", f"trainer.output_dir={tmp_path}/out"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    steps = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    steps = [s for s in steps if "reward/shout_seen" in s]
    assert [s["step"] for s in steps] == [1, 2] and all(s["reward/shout_seen"] == 1.0 for s in steps)


def test_a_reward_path_that_does_not_load_is_one_line(tiny_model_path, tmp_path):
    env, common = _task(tmp_path)
    common = [c if not c.startswith("reward.functions") else "reward.functions.shout_synth=shout_task.reward:nope"
              for c in common]
    r = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "rollout", f"model.path={tiny_model_path}", *common],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == ("agent-rl rollout: config error: reward.functions.shout_synth: "
                                "'shout_task.reward:nope': shout_task.reward has no attribute 'nope'")
