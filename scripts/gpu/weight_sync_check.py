"""Weight-sync correctness on a GPU host (issue 7): after a training step and a sync, SGLang's log-probs
for a fixed sequence match the FSDP actor's, and differ from the pre-step ones.

    python3 scripts/gpu/weight_sync_check.py MODEL_DIR [OVERRIDE ...] > $OUT/weight_sync.log 2>&1

OVERRIDEs are training config overrides applied last, e.g. `actor.lora.rank=8 actor.optim.lr=1e-3` checks the
LoRA actor (the engine gets the merged base + scaling * B @ A weights).

Steps: SGLang samples a fixed sequence (greedy, 128 tokens); the actor scores it (log-probs A0) and SGLang
scores it by teacher forcing (E0); one actor update with a large learning rate on that sequence
(advantage +1); sync weights into SGLang in buckets; score again (A1, E1). Reported: |E0 - A0|, |E1 - A1|
(the sync tolerance) and |E1 - E0| (the step moved the engine).
"""
import asyncio
import json
import sys

import torch


def stats(a, b):
    d = (a - b).abs()
    return {"mean": round(float(d.mean()), 5), "max": round(float(d.max()), 5)}


async def engine_score(engine, ids, n_prompt):
    """Teacher-forced log-probs of ids[n_prompt:] under the engine (input log-probs of sglang)."""
    out = await engine._engine.async_generate(input_ids=ids, sampling_params={"max_new_tokens": 1, "temperature": 0.0},
                                              return_logprob=True, logprob_start_len=n_prompt - 1)
    lps = [x[0] for x in out["meta_info"]["input_token_logprobs"]]
    return torch.tensor([0.0 if v is None else v for v in lps][-(len(ids) - n_prompt):])


def main(model_dir: str, overrides=()) -> None:
    from transformers import AutoTokenizer

    from agent_rl.config.load import compose
    from agent_rl.engines import build_engine
    from agent_rl.engines.base import SamplingParams
    from agent_rl.training.actor import Actor
    from agent_rl.training.weight_sync import sync_weights

    cfg = compose([f"model.path={model_dir}", "rollout.engine=sglang", "actor.optim.lr=1e-4", "actor.use_kl_loss=false",
                   "rollout.gpu_memory_utilization=0.3", "data.train_batch_size=1", "actor.ppo_mini_batch_size=1",
                   "rollout.n=1", "algorithm.tis.enable=false", *overrides], check_paths=False)
    dev = torch.device("cuda", 0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    actor = Actor.from_config(cfg, device=dev)
    engine = build_engine(cfg.rollout, model_dir, device="cuda")
    loop = asyncio.new_event_loop()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name three rivers in Europe and one fact about each."}],
                                     add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    gen = loop.run_until_complete(engine.generate(prompt, SamplingParams(max_new_tokens=128, temperature=0.0, ignore_eos=True), "fixed"))
    ids = list(prompt) + gen.output_ids
    n_p, L = len(prompt), len(ids)
    mask = torch.zeros(1, L, dtype=torch.long)
    mask[0, n_p:] = 1
    batch = {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, L, dtype=torch.long),
             "position_ids": torch.arange(L)[None], "loss_mask": mask}

    def actor_score():
        lp, _ = actor.compute_log_probs(batch, with_entropy=False, positions="loss_mask")
        return lp[0, n_p:].float().cpu()

    a0, e0 = actor_score(), loop.run_until_complete(engine_score(engine, ids, n_p))
    sampled = torch.tensor(gen.logprobs)
    upd = actor.update({**batch, "advantages": torch.tensor([1.0])})
    sync = loop.run_until_complete(sync_weights(actor, engine, bucket_mb=64))
    a1, e1 = actor_score(), loop.run_until_complete(engine_score(engine, ids, n_p))
    report = {
        "tokens": L - n_p,
        "before_step |engine - actor|": stats(e0, a0),
        "before_step |engine sampled - actor|": stats(sampled, a0),
        "after_sync |engine - actor|": stats(e1, a1),
        "step moved engine |E1 - E0|": stats(e1, e0),
        "step moved actor |A1 - A0|": stats(a1, a0),
        "mean logprob actor before/after": [round(float(a0.mean()), 4), round(float(a1.mean()), 4)],
        "overrides": list(overrides), "lora": bool(getattr(actor.policy, "lora", False)),
        "sync": sync, "update": {k: v for k, v in upd.items() if k.startswith("actor/")},
    }
    print(json.dumps(report, indent=1))
    ok = report["after_sync |engine - actor|"]["mean"] < 0.05 and report["step moved engine |E1 - E0|"]["mean"] > 0.05
    print("WEIGHT SYNC CHECK:", "PASS" if ok else "FAIL")
    loop.run_until_complete(engine.shutdown())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
