"""`agent-rl rollout` end to end on CPU: tiny model, generated arithmetic data, calculator tools."""
import argparse
import json
import os

from agent_rl.cli import rollout as rollout_cli

ARITH_YAML = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          "configs", "tool_config", "arith_tool_config.yaml")


def test_rollout_command(tmp_path, tiny_model_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)      # generation writes only the default folder data/arith (of the working directory)
    data = tmp_path / "data" / "arith"
    out = tmp_path / "step.jsonl"
    parser = argparse.ArgumentParser()
    rollout_cli.add_arguments(parser)
    args, extra = parser.parse_known_args(["--prompts", "2", "--show", "1", "--out", str(out)])
    args._extra = extra + [
        f"model.path={tiny_model_path}", "rollout.engine=hf", "rollout.n=2", "rollout.over_sample_rate=0.5",
        "rollout.multi_turn.max_new_tokens_per_turn=8", "rollout.progress_bar=false",
        f"data.train_files=[{data}/train.parquet]", f"data.val_files=[{data}/val.parquet]",
        "data.generate_if_missing=arith", f"tools.config_path={ARITH_YAML}",
        f"trainer.output_dir={tmp_path}/run"]
    assert rollout_cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "rollout/kept_groups" in printed and "rollout/launched_groups" in printed and "[assistant turn 0" in printed
    lines = out.read_text().splitlines()
    assert len(lines) == 4  # B = 2 groups x n = 2
    rec = json.loads(lines[0])
    assert rec["row"]["data_source"] == "arith_synth" and rec["turns"] and "prompt_text" in rec
    assert set(rec["reward_components"]) >= {"correct", "format"}
    assert os.path.exists(data / "train.parquet")


def test_rollout_bad_row_is_one_line(tmp_path, tiny_model_path, capsys):
    """A row with a null message content stops `agent-rl rollout` at load, exit 2, naming file, row and field."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = tmp_path / "bad.parquet"
    rows = [{"prompt": [{"role": "user", "content": "what is 1 + 1?"}], "data_source": "arith_synth", "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": "2"}, "extra_info": {"index": 0}},
            {"prompt": [{"role": "user", "content": None}], "data_source": "arith_synth", "ability": "math",
             "reward_model": {"style": "rule", "ground_truth": "3"}, "extra_info": {"index": 1}}]
    pq.write_table(pa.Table.from_pylist(rows), bad)
    parser = argparse.ArgumentParser()
    rollout_cli.add_arguments(parser)
    args, extra = parser.parse_known_args(["--prompts", "1"])
    args._extra = extra + [f"model.path={tiny_model_path}", "rollout.engine=hf", f"data.train_files=[{bad}]",
                           f"data.val_files=[{bad}]", "tools.config_path=null", f"trainer.output_dir={tmp_path}/run"]
    assert rollout_cli.run(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.parquet row 1" in err[0] and "prompt[0].content" in err[0]
