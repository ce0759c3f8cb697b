"""`agent-rl bench actor`: full fine-tuning vs LoRA, one step's phases and parameters, on the tiny model."""
import json

import pytest
import torch

from agent_rl.bench.actor_bench import synthetic_batch
from agent_rl.cli.main import main


def test_synthetic_batch_trains_only_after_the_prompt():
    b = synthetic_batch(3, 10, 4, vocab_size=50, seed=1)
    assert b["input_ids"].shape == (3, 10) and int(b["input_ids"].max()) < 50
    assert b["loss_mask"][:, :4].sum() == 0 and b["loss_mask"][:, 4:].all()
    assert b["advantages"].tolist() == [1.0, -1.0, 1.0]
    assert torch.equal(b["input_ids"], synthetic_batch(3, 10, 4, 50, seed=1)["input_ids"])
    with pytest.raises(ValueError, match="prompt_len"):
        synthetic_batch(2, 8, 8, 50)


@pytest.mark.slow  # two actors of the tiny model, 2 steps each (~20 s on 2 cores)
def test_bench_actor_full_vs_lora(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "actor"
    rc = main(["bench", "actor", "--model", tiny_model_path, "--device", "cpu", "--out", str(out), "--batch", "2",
               "--seq-len", "24", "--prompt-len", "8", "--steps", "2", "--lora-rank", "4",
               "--override", "model.dtype=float32"])
    assert rc == 0
    res = json.load(open(out / "actor.json"))
    assert res["command"].startswith("agent-rl bench actor") and "_argv" not in res["command"]
    full, lora = res["variants"]["full"], res["variants"]["lora-r4"]
    assert not full["lora"] and full["params_trainable"] == full["params_total"]
    assert lora["lora"] and 0 < lora["params_trainable"] < full["params_total"] / 10
    for r in (full, lora):
        assert r["step_s"] >= r["update_s"] > 0 and r["old_logprob_s"] > 0 and r["ref_s"] > 0
        assert r["peak_memory_gib"] is None  # CPU: no accelerator memory
    assert "step_time_vs_full" in res["ratios"]["lora-r4"]
    assert "| lora-r4 |" in (out / "summary.md").read_text()


def test_bench_actor_bad_arguments_are_one_line(tiny_model_path, tmp_path, capsys):
    rc = main(["bench", "actor", "--model", tiny_model_path, "--device", "cpu", "--out", str(tmp_path / "a"),
               "--no-full", "--lora-rank", "0"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "nothing to run" in err
    rc = main(["bench", "actor", "--model", tiny_model_path, "--device", "cpu", "--out", str(tmp_path / "b"),
               "--override", "actor.lora.rnk=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "actor.lora.rnk" in err[0]
