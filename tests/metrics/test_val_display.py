"""Validation in the console and the PNG: reward, answer metric, answer rate and per-hop F1 when present."""
import json

from agent_rl.metrics import plot_metrics
from agent_rl.metrics.console import format_block
from agent_rl.metrics.plot import _panels


def _record(step, hops=True):
    m = {"step": step, "reward/mean": 0.1 * step, "actor/entropy": 1.0, "val/kg_synth/reward": 0.2 * step,
         "val/kg_synth/f1": 0.1 * step, "val/kg_synth/format": 0.5, "val/kg_synth/num_samples": 8.0}
    if hops:
        m.update({"val/kg_synth/answer_rate": 0.5 + 0.1 * step, "val/kg_synth/hop1/f1": 0.2 * step,
                  "val/kg_synth/hop2/f1": 0.1 * step, "val/kg_synth/hop10/f1": 0.0, "val/kg_synth/hop1/reward": 0.3,
                  "val/kg_synth/tool/kg_query/success_rate": 0.5})
    return m


def _write(path, hops):
    path.write_text("".join(json.dumps(_record(s, hops)) + "\n" for s in range(1, 5)))
    return str(path)


def test_png_with_and_without_hop_keys(tmp_path):
    for hops in (True, False):
        src = _write(tmp_path / f"m{hops}.jsonl", hops)
        png = tmp_path / f"m{hops}.png"
        assert plot_metrics(src, str(png)) == str(png)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_default_panels_keep_hops_out_of_the_flat_validation_panels():
    panels = dict(_panels([_record(1)], None))
    assert panels["validation F1 by hop"] == ["val/kg_synth/hop1/f1", "val/kg_synth/hop2/f1", "val/kg_synth/hop10/f1"]
    assert panels["validation answer rate"] == ["val/kg_synth/answer_rate"]
    assert panels["validation"] == ["val/kg_synth/f1", "val/kg_synth/format"]
    assert panels["reward"] == ["reward/mean", "val/kg_synth/reward"]
    panels = dict(_panels([_record(1, hops=False)], None))
    assert panels["validation F1 by hop"] == [] and panels["validation answer rate"] == []


def test_console_validation_headline():
    m = {k: v for k, v in _record(2).items() if k != "step"}
    m.update({"val/gsm8k/reward": 0.5, "val/gsm8k/correct": 0.5, "val/gsm8k/answer_rate": 1.0, "val/all/reward": 0.3,
              "sft/val/kg_synth/reward": 0.1, "sft/loss_first": 2.0})
    lines = format_block(m, 2).splitlines()
    val = [ln for ln in lines if ln.startswith("  val ") or ln.startswith(" " * 12)]
    assert val[0].split() == ["val", "gsm8k", "reward", "0.5", "correct", "0.5", "answer_rate", "1"]
    kg = next(ln for ln in lines if "kg_synth  reward" in ln and "sft" not in ln)
    assert kg.split()[1:] == ["reward", "0.4", "f1", "0.2", "answer_rate", "0.7", "f1@hop", "1:0.4", "2:0.2",
                              "10:0", "n", "8"]
    assert any(ln.split()[:3] == ["kg_synth", "format", "0.5"] for ln in lines)   # the other flat metrics follow
    assert any(ln.split() == ["all", "reward", "0.3"] for ln in lines)
    assert not any("tool/" in ln or "hop1/" in ln for ln in lines)                  # JSONL / wandb only
    assert any(ln.split()[:3] == ["sft/val", "kg_synth", "reward"] for ln in lines)
    assert all(len(ln) <= 110 for ln in lines)
