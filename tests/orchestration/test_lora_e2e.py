"""`agent-rl train` with a LoRA actor, end to end on CPU: the arithmetic example (examples/run_qwen_gsm8k_multiturn.sh,
SIZE=small) for 2 steps with `actor.lora.rank=8`, the tiny model, and a reward that varies with the sampled tokens
(so the random model's groups carry signal and the adapter trains)."""
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("peft")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GSM = os.path.join(ROOT, "examples", "run_qwen_gsm8k_multiturn.sh")

REWARD = '''
def score(traj, reward_cfg):
    """Share of even token ids among the sampled tokens: differs between samples of a group."""
    ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    return (sum(1 for t in ids if t % 2 == 0) / len(ids) if ids else 0.0), {}
'''


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft reads the old property
@pytest.mark.slow
def test_train_two_steps_with_lora(tiny_model_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from agent_rl.tasks.generate import generate_dataset

    data, out = tmp_path / "data", tmp_path / "out"
    generate_dataset("arith", str(data), sizes={"train": 8, "val": 4, "test": 0})
    (tmp_path / "even_reward.py").write_text(REWARD)
    env = {k: v for k, v in os.environ.items() if k not in ("BASE_MODEL", "N_GPUS", "TOOL_CONFIG", "EXPERIMENT_NAME")}
    env.update(PYTHON=sys.executable, SIZE="small", DATA_DIR=str(data))
    args = ["actor.lora.rank=8", "actor.lora.alpha=16", f"model.path={tiny_model_path}", "trainer.use_ray=false",
            f"trainer.output_dir={out}", "rollout.progress_bar=false", "logger.backends=[jsonl]", "logger.plot=false",
            "actor.optim.lr=1e-2", f"reward.functions.arith_synth={tmp_path}/even_reward.py:score"]
    r = subprocess.run(["bash", GSM, *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    records = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [x["step"] for x in records] == [1, 2]
    assert any(x["actor/grad_norm"] > 0 for x in records)               # the groups carried signal: adapters moved
    assert all(x["weight_sync/tensors"] == 20 for x in records)         # merged base tensors, no adapter tensors
    ck = out / "checkpoints" / "global_step_2"
    assert json.load(open(ck / "meta.json"))["lora"]["rank"] == 8
    assert sorted(os.listdir(ck / "adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    x = torch.randint(0, 400, (1, 10))
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(ck / "hf", dtype=torch.float32).eval()   # plain transformers
        base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
        base_logits = base(x).logits
        adapted = PeftModel.from_pretrained(base, str(ck / "adapter")).eval()
        assert torch.allclose(merged(x).logits, adapted(input_ids=x).logits, atol=1e-5)
        assert (merged(x).logits - base_logits).abs().max() > 1e-4      # training changed the policy
