import json
import os

import pytest

from agent_rl.metrics import Tracker, plot_metrics
from agent_rl.metrics.console import format_block, format_value
from agent_rl.metrics.jsonl import read_jsonl
from agent_rl.metrics.timer import PhaseTimer


def _metrics(step):
    return {"reward/mean": 0.1 * step, "reward/answer": 0.05 * step, "actor/kl_loss": 1e-4 * step,
            "actor/pg_loss": -0.01, "actor/entropy": 2.0 - 0.1 * step, "timing/step_s": 2.5,
            "timing/rollout_s": 1.25, "val/kg_synth/reward": 0.2, "rollout/response_len_mean": 100.0 + step,
            "kg/query_success_rate": 0.5, "perf/tokens_per_s": 1234.5, "custom": 7}


def test_console_block_groups_by_prefix():
    text = format_block(_metrics(3), step=3)
    lines = text.splitlines()
    assert lines[0] == "step 3  (2.5 s)"
    labels = [ln.split()[0] for ln in lines[1:]]
    # fixed familiar order, each group once, unknown prefixes last
    assert labels == ["reward", "val", "actor", "rollout", "kg", "perf", "timing", "misc"]
    reward = next(ln for ln in lines if ln.strip().startswith("reward"))
    assert reward.split()[1:3] == ["mean", format_value(0.1 * 3)]      # mean first within its group
    assert "{" not in text and "'" not in text                           # not a dict dump


def test_console_wraps_long_groups():
    m = {f"actor/metric_{i:02d}": 0.123456 for i in range(30)}
    lines = format_block(m, 1).splitlines()
    assert all(len(ln) <= 110 for ln in lines)
    assert len(lines) > 3 and lines[2].startswith(" " * 12)


def test_format_value():
    assert format_value(0) == "0" and format_value(3) == "3" and format_value(True) == "true"
    assert format_value(1e-5) == "1.00e-05" and format_value(0.41234) == "0.4123"
    assert format_value(12.3456) == "12.346" and format_value(1234.56) == "1234.6" and format_value(64.0) == "64"


def test_jsonl_lines_and_flush(tmp_path):
    t = Tracker(["jsonl"], output_dir=str(tmp_path), plot=False)
    t.log(_metrics(1), step=1)
    # flushed after each step: readable while the run is alive
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert rec["step"] == 1 and rec["reward/mean"] == pytest.approx(0.1) and "time" in rec
    t.log({"reward/mean": float("nan"), "x": __import__("torch").tensor(2.5)}, step=2)
    t.finish()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    rec2 = json.loads(lines[1])
    assert rec2["reward/mean"] is None and rec2["x"] == 2.5
    assert not (tmp_path / "metrics.png").exists()


def test_read_jsonl_tolerates_torn_line_and_resumed_steps(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 2, "a": 5}\n{"step": 3, "a"')
    recs = read_jsonl(str(p))
    assert [r["step"] for r in recs] == [1, 2] and recs[1]["a"] == 5


def test_console_backend_prints(tmp_path):
    out = []
    t = Tracker(["console"], output_dir=str(tmp_path), print_fn=out.append, plot=False)
    t.log(_metrics(1), step=1)
    t.finish()
    assert out and out[0].startswith("step 1")
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unknown_backend():
    with pytest.raises(ValueError, match="tensorboardx"):
        Tracker(["tensorboardx"])


def test_png_written_on_finish(tmp_path):
    t = Tracker(["jsonl"], output_dir=str(tmp_path), plot=True, print_fn=lambda s: None)
    for s in range(1, 6):
        t.log(_metrics(s), step=s)
    t.finish()
    png = tmp_path / "metrics.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_plot_metrics_keys_and_empty(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text("".join(json.dumps({"step": s, "a/b": s * 1.0, "c": "text"}) + "\n" for s in range(4)))
    assert plot_metrics(str(p), str(tmp_path / "x.png"), keys=["a/*"]) == str(tmp_path / "x.png")
    assert (tmp_path / "x.png").exists()
    assert plot_metrics(str(p), str(tmp_path / "y.png"), keys=["nothing"]) is None
    assert not (tmp_path / "y.png").exists()


def test_wandb_offline_without_network(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    # any attempt to reach the network would fail: point wandb at a closed port
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    t = Tracker(["wandb"], project="proj", experiment="exp1", output_dir=str(tmp_path),
                config_dict={"rollout": {"n": 4}}, wandb_mode="auto", plot=False)
    assert t._wandb.mode == "offline"
    t.log(_metrics(1), step=1)
    t.log(_metrics(2), step=2)
    run_dir = t.wandb_run_dir
    t.finish()
    assert run_dir and os.path.isdir(run_dir) and os.path.basename(run_dir).startswith("offline-run-")
    assert run_dir.startswith(str(tmp_path / "wandb"))
    assert any(f.endswith(".wandb") for f in os.listdir(run_dir))
    run_id = (tmp_path / "wandb_run_id").read_text()
    assert run_id and run_dir.endswith(run_id)


def test_phase_timer():
    timer = PhaseTimer()
    with timer("a"):
        pass
    with timer("a"):
        pass
    with timer("b"):
        pass
    times = timer.pop()
    assert set(times) == {"timing/a_s", "timing/b_s"} and all(v >= 0 for v in times.values())
    assert timer.pop() == {}


def test_jsonl_record_is_fsynced_before_log_returns(tmp_path, monkeypatch):
    import agent_rl.metrics.jsonl as J

    synced = []
    real_fsync = J.os.fsync

    def fsync(fd):
        # the record is already in the file when it is fsync'ed
        synced.append(len((tmp_path / "metrics.jsonl").read_text().splitlines()))
        real_fsync(fd)

    monkeypatch.setattr(J.os, "fsync", fsync)
    t = Tracker(["jsonl"], output_dir=str(tmp_path), plot=False)
    n0 = len(synced)                                   # the new file's directory entry
    t.log(_metrics(1), step=1)
    assert synced[n0:] == [1]                          # one fsync per record, after it was written
    t.log(_metrics(2), step=2)
    assert synced[n0:] == [1, 2]
    t.finish()


def test_jsonl_reopen_cuts_torn_last_line(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a"')   # killed inside a write
    t = Tracker(["jsonl"], output_dir=str(tmp_path), plot=False)
    t.log({"a": 3}, step=3)
    t.finish()
    lines = p.read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3]                  # every line parses
    p.write_text('{"step": 1, "a"')                                             # nothing but a torn line
    t = Tracker(["jsonl"], output_dir=str(tmp_path), plot=False)
    t.log({"a": 1}, step=1)
    t.finish()
    assert [json.loads(x)["step"] for x in p.read_text().splitlines()] == [1]
