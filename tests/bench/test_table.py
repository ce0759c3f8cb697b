"""`agent-rl bench table`: bench rollout runs side by side (their own flags, raw rounds, step times, scheduler cost)."""
import json

from agent_rl.cli.main import main as cli_main


def _run(folder, flags, raw, steps, wall_s):
    folder.mkdir()
    st = {"wall_s": wall_s, "tokens": 1000, "stage_leaves": [["a > b | torch/cuda/streams.py:synchronize", 0.25]]}
    data = {"kind": "rollout", "argv": ["main.py", "bench", "rollout", "--prompts", "64", *flags, "--out", str(folder)],
            "ceiling": {"tokens_per_s": raw[0], "tokens_per_s_rounds": raw, "output_tokens": 2000,
                        "engine_stacks": dict(st, tokens=2000)},
            "modes": [{"mode": "async", "step_wall_s_mean": sum(steps) / len(steps), "gen_tokens": 2000,
                       "rounds": [{"step_wall_s_mean": s} for s in steps], "engine_stacks": st}]}
    (folder / "rollout_bench.json").write_text(json.dumps(data))
    return str(folder)


def test_runs_side_by_side_with_their_own_flags(tmp_path, capsys):
    a = _run(tmp_path / "a", ["--no-scheduler-patches", "--steps", "2"], [60000.0, 62000.0], [2.0, 2.2], 0.02)
    b = _run(tmp_path / "b", ["--steps", "2"], [70000.0, 71000.0], [1.8, 1.9], 0.03)
    assert cli_main(["bench", "table", a, b + "/rollout_bench.json"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[2] == "| a | `--no-scheduler-patches` | 60000, 62000 | raw engine | – | 10.0 (25% GPU wait) |"
    assert rows[3] == "|  |  |  | async | 2.100 (2.000, 2.200) | 20.0 (25% GPU wait) |"   # its window's own tokens
    assert rows[4].startswith("| b | – | 70000, 71000 | raw engine |")          # the common flags and --out left out
    assert rows[5] == "|  |  |  | async | 1.850 (1.800, 1.900) | 30.0 (25% GPU wait) |"


def test_older_json_and_bad_input(tmp_path, capsys):
    old = _run(tmp_path / "old", [], [60000.0], [2.0, 2.0], 0.02)
    data = json.loads((tmp_path / "old" / "rollout_bench.json").read_text())
    for m in data["modes"]:    # before the samples carried their tokens or stage leaves: round 0's share of them
        m["engine_stacks"] = {"wall_s": 0.02}
    (tmp_path / "old" / "rollout_bench.json").write_text(json.dumps(data))
    assert cli_main(["bench", "table", old]) == 0
    assert "| async | 2.000 (2.000, 2.000) | 20.0 |" in capsys.readouterr().out
    (tmp_path / "suite.json").write_text(json.dumps({"kind": "suite"}))
    assert cli_main(["bench", "table", str(tmp_path / "suite.json")]) == 2
    assert "is not the result of `agent-rl bench rollout`" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    assert cli_main(["bench", "table", str(tmp_path / "list.json")]) == 2
    assert "is not the result of `agent-rl bench rollout`" in capsys.readouterr().err
    assert cli_main(["bench", "table", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
