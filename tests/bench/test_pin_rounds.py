"""`--pin-scheduler-core alternate`: sglang's scheduler pinned in every other pair of rounds, compared side by side."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from agent_rl.bench.rounds import pin_comparison, pin_markdown, pinned_round
from agent_rl.cli.main import main as cli_main


def test_pinned_rounds_see_both_mode_orders():
    assert [pinned_round(r) for r in range(8)] == [False, True, True, False] * 2
    # round_order runs even rounds forward, odd ones reversed: pinned rounds 1 (reversed) and 2 (forward)


def _m(name, step):
    return {"mode": name, "step_wall_s_mean": step}


def test_pin_comparison_means_each_group_of_rounds():
    rounds = [[_m("a", 2.0), _m("b", 4.0)], [_m("b", 3.0), _m("a", 1.0)], [_m("a", 1.5), _m("b", 2.0)],
              [_m("b", 5.0), _m("a", 3.0)]]
    ceilings = [{"tokens_per_s": 100.0}, {"tokens_per_s": 150.0}, {"tokens_per_s": 130.0}, None]
    comp = pin_comparison(rounds, ceilings, [False, True, True, False])
    assert comp["modes"]["a"] == {"unpinned_step_s": 2.5, "pinned_step_s": 1.25, "rounds": [2, 2]}
    assert comp["modes"]["b"]["unpinned_step_s"] == 4.5 and comp["modes"]["b"]["pinned_step_s"] == 2.5
    assert comp["ceiling_unpinned_tokens_per_s"] == 100.0 and comp["ceiling_pinned_tokens_per_s"] == 140.0
    rows = pin_markdown(comp, "heavy-tail")
    assert rows[0] == "| heavy-tail | a | 2.50 | 1.25 | -50% |"
    assert rows[-1] == "| heavy-tail | raw engine, tokens/s | 100 | 140 | +40% |"
    lone = pin_comparison(rounds[:1], ceilings[:1], [False])
    assert lone["modes"]["a"]["pinned_step_s"] is None and "| a | 2.00 | – | – |" in pin_markdown(lone)


def test_bench_rollout_alternate_on_the_sim_engine(tmp_path, tiny_model_path, capsys):
    args = ["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path, "--prompts", "2",
            "--n", "2", "--turns", "2", "--tokens-per-turn", "8", "--modes", "async", "--steps", "1", "--no-ceiling",
            "--no-progress", "--out", str(tmp_path), "--pin-scheduler-core", "alternate"]
    assert cli_main(args) == 2 and "--rounds 2 or more" in capsys.readouterr().err   # one round: nothing to compare
    assert cli_main(args + ["--rounds", "2"]) == 0
    out = json.load(open(tmp_path / "rollout_bench.json"))
    comp = out["pin_comparison"]
    assert comp["modes"]["async"]["rounds"] == [2, 0]    # the sim engine has no scheduler: no round got pinned
    assert "no sglang::scheduler" in comp["failed"]
    assert [r["cpu_pinned"] for r in out["round_results"]] == [False, False]
    assert "--pin-scheduler-core alternate" in out["command"]
    md = open(tmp_path / "summary.md").read()
    assert "## Pinned vs unpinned rounds" in md and "- not pinned: no sglang::scheduler" in md


ROUNDS = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from agent_rl.bench.rollout_bench import RolloutBench
    kid = subprocess.Popen(["sglang::scheduler_TP0", "-c", "import time; time.sleep(60)"], executable=sys.executable)
    aff = lambda pid: sorted(set().union(*(os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task"))))
    seen, pin = [], None
    for r in range(4):
        pin = RolloutBench._pin_for_round(r, pin)
        seen.append({"pinned": pin.get("pinned"), "scheduler": aff(kid.pid), "self": aff(os.getpid())})
    RolloutBench._pin_for_round(0, pin)
    seen.append({"scheduler": aff(kid.pid), "self": aff(os.getpid())})
    kid.kill()
    print(json.dumps(seen))
""")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs two allowed CPUs")
def test_alternate_rounds_pin_and_unpin_the_scheduler():
    out = subprocess.run([sys.executable, "-c", ROUNDS], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    r0, r1, r2, r3, end = json.loads(out.stdout.strip().splitlines()[-1])
    allowed = sorted(os.sched_getaffinity(0))
    assert not r0["pinned"] and r0["scheduler"] == r0["self"] == allowed
    assert r1["pinned"] and r1["scheduler"] == r2["scheduler"] and len(r1["scheduler"]) < len(allowed)
    assert not set(r1["scheduler"]) & set(r1["self"])
    assert not r3["pinned"] and r3["scheduler"] == r3["self"] == allowed
    assert end["scheduler"] == end["self"] == allowed


def test_bench_suite_alternate_tables_every_scenario(tmp_path, tiny_model_path):
    args = ["bench", "suite", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path, "--prompts", "2",
            "--n", "2", "--turns", "2", "--tokens-per-turn", "8", "--heavy-tail-prompts", "2", "--steps", "1",
            "--ceiling-prompts", "4,8", "--ceiling-new-tokens", "8", "--no-progress", "--out", str(tmp_path),
            "--rounds", "2", "--pin-scheduler-core", "alternate"]
    assert cli_main(args) == 0
    suite = json.load(open(tmp_path / "suite.json"))
    assert set(suite["pin_comparisons"]) == {"instant-tools", "tool-latency", "heavy-tail"}
    md = open(tmp_path / "summary.md").read()
    assert "in rounds 2, 3, 6, 7" in md and "| scenario | mode | unpinned | pinned | change |" in md
    assert "| heavy-tail | async | " in md and "- heavy-tail: not pinned (no sglang::scheduler" in md
