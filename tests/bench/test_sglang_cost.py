import random

import pytest

from agent_rl.bench.sglang_cost import fit, markdown, sim_cost, windows
from agent_rl.cli.main import main as cli_main

A, B, C, D = 0.002, 11e-6, 0.025, 0.0009   # a decode pass, a row of one, a prefill pass, an admitted request
EVERY = 20


def _log(seed=0, runs=(("async", 30), ("async+carryover 0.5", 25), ("async", 12)), idle=2, costs=(A, B, C, D)):
    """A scheduler log whose decode windows follow the cost model exactly (rates printed with 6 decimals)."""
    a, b, c, d = costs
    rng = random.Random(seed)
    out = [f"[2026-12-01 09:59:00] server_args=ServerArgs(model_path='m', decode_log_interval={EVERY}, x=1)"]
    for name, n in runs:
        out.append(f"[2026-12-01 10:00:00] agent-rl bench: mode {name} start")
        # the first window reaches back before the mode: any figures, left out
        out.append("[2026-12-01 10:00:00] Decode batch, #running-req: 7, #token: 1, token usage: 0.00, cuda graph: True, "
                   "gen throughput (token/s): 3.0, #queue-req: 0")
        for i in range(n):
            prefills = rng.randint(0, 3)
            seqs = [rng.randint(1, 60) for _ in range(prefills)]
            for k in seqs:
                out.append(f"[2026-12-01 10:00:01] Prefill batch, #new-seq: {k}, #new-token: {50 * k}, #cached-token: 900, "
                           f"token usage: 0.01, #running-req: 90, #queue-req: 3, #pending-token: 0, cuda graph: False")
            running = rng.randint(4, 1000)
            s = a * EVERY + b * EVERY * running + c * prefills + d * sum(seqs)
            if i < idle:
                s += 5.0   # the engine waited for tools inside this window
            out.append(f"[2026-12-01 10:00:02] Decode batch, #running-req: {running}, #token: 5000, token usage: 0.02, "
                       f"cuda graph: True, gen throughput (token/s): {EVERY * running / s:.6f}, #queue-req: 0")
        out.append(f"[2026-12-01 10:00:09] agent-rl bench: mode {name} end")
        out.append("[2026-12-01 10:00:09] Decode batch, #running-req: 5, #token: 1, token usage: 0.0, cuda graph: True, "
                   "gen throughput (token/s): 9.0, #queue-req: 0")   # outside the marks
    return out


def test_fit_recovers_the_costs_and_splits_each_run():
    f = fit(_log())
    assert f["interval"] == EVERY and f["left_out"] == 6 and f["windows"] == 30 + 25 + 12 - 6
    for term, want in zip(("decode passes", "decode rows", "prefill passes", "admitted requests"), (A, B, C, D)):
        assert f["costs"][term] == pytest.approx(want, rel=1e-4), term
    assert f["rmse_s"] < 1e-6
    assert sim_cost(f["costs"]) == "2,11,25,0.9"
    assert [m["mode"] for m in f["modes"]] == ["async", "async+carryover 0.5", "async"]   # runs in order, not merged
    assert [m["windows"] for m in f["modes"]] == [28, 23, 10]
    for m in f["modes"]:
        assert sum(m["shares"].values()) == pytest.approx(1.0)
        assert m["fitted_s"] / m["measured_s"] == pytest.approx(1.0, rel=1e-4)
    md = markdown(f)
    assert "Cost fit on 61 decode windows of 20 passes (6 left out" in md and "`--sim-cost 2,11,25,0.9`" in md
    assert md.count("| async |") == 2 and "| async+carryover 0.5 | 23 | 1.00 |" in md


def test_fit_keeps_costs_non_negative_and_needs_windows():
    from agent_rl.bench.sglang_cost import _nnls

    # a free least-squares slope here is -0.95: the constrained fit drops it and keeps the mean
    assert list(_nnls([[1, 0], [1, 1], [1, 2]], [2.0, 1.0, 0.1])) == pytest.approx([3.1 / 3, 0.0])
    f = fit(_log(seed=3, costs=(A, B, 0.0, 0.0)))   # prefill free: its costs come out 0, not a rounding below
    assert all(v >= 0 for v in f["costs"].values()) and f["costs"]["prefill passes"] < 1e-9
    assert f["costs"]["decode rows"] == pytest.approx(B, rel=1e-4)
    assert fit(_log(runs=(("async", 9),), idle=2)) is None    # 7 usable windows
    assert "fewer than 8 decode windows" in markdown(None)
    w = windows(_log(), max_pass_ms=1e9)                       # no cap: the idle windows count too
    assert w["left_out"] == 0 and len(w["rows"]) == 67


def test_cli_fit_cost(tmp_path, capsys):
    log = tmp_path / "bench.log"
    log.write_text("\n".join(_log()) + "\n")
    assert cli_main(["bench", "sglang-log", str(log), "--fit-cost"]) == 0
    out = capsys.readouterr().out
    assert "| async+carryover 0.5 |" in out and "--sim-cost 2,11,25,0.9" in out
    assert cli_main(["bench", "sglang-log", str(log)]) == 0
    assert "Cost fit" not in capsys.readouterr().out
    assert cli_main(["bench", "sglang-log", str(log), "--fit-cost", "--max-pass-ms", "0"]) == 2
    assert "--max-pass-ms 0: needs a positive" in capsys.readouterr().err
