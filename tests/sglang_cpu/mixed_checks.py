"""agent-rl's `mixed_logprob` scheduler patch (engines/sglang_patches/mixed_logprob.py) against real sglang 0.5.17 on a
CPU. Two engines get the same workload, requests that return log-probs arriving in waves while earlier ones decode:
(a) `enable_mixed_chunk` without the patch (sglang declines to mix: the requests return log-probs, so it runs them as
it does without mixed chunked prefill), (b) `enable_mixed_chunk` with the patch. Each scheduler records every forward
pass's mode, rows and decode rows mixed in. For each request the driver keeps its tokens and log-probs; the script
compares the log-probs with transformers' of the same tokens (greedy and temperature 0.7 rows) and the greedy tokens
across the engines. Prints one JSON line; test_real_sglang.py asserts. argv: MODEL_DIR."""
import asyncio
import functools
import json
import os
import sys
import tempfile

import mixed_checks   # this module, importable in sglang's spawned scheduler (the script's folder is on its path)
from engine_checks import CPU_KWARGS, ref_logprobs, run_engine_recorded

# waves of (requests, new tokens, temperature); each wave starts while the earlier ones still decode
WAVES = ((6, 80, 0.0), (6, 40, 0.0), (6, 24, 0.7), (4, 16, 0.0))
WAVE_GAP_S = 0.25
SHARED = list(range(200, 216))   # a prefix every third request shares (radix-cache hits in the mixed passes)


# ---------------------------------------------------------------------------------------------- in the scheduler
def run_recorded(names, out_path, *args, **kwargs):
    """sglang's run_scheduler_process with `names` of agent-rl's patches applied, each forward pass's mode, rows and
    mixed-in decode rows recorded to `out_path` (JSON lines)."""
    from agent_rl.engines.sglang_patches import apply

    applied = apply(names)
    out = open(out_path, "w", buffering=1)
    out.write(json.dumps({"applied": applied}) + "\n")
    from sglang.srt.managers.scheduler import Scheduler

    run = Scheduler.run_batch

    def run_batch(self, batch, *a, **k):
        if batch is not None:
            out.write(json.dumps({"pass": [batch.forward_mode.name, len(batch.reqs),
                                           len(batch.decoding_reqs or [])]}) + "\n")
        return run(self, batch, *a, **k)
    Scheduler.run_batch = run_batch
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- the driver
def prompt(k):
    own = [100 + (17 * k + j) % 700 for j in range(10 + k % 7)]
    return SHARED + own if k % 3 == 0 else own


async def workload(engine):
    async def gen(k, new_tokens, temperature):
        out = await engine.async_generate(input_ids=prompt(k), rid=f"m{k:02d}", return_logprob=True, sampling_params={
            "max_new_tokens": new_tokens, "temperature": temperature, "ignore_eos": True})
        lps = [t[0] for t in out["meta_info"]["output_token_logprobs"]]
        return {"k": k, "temperature": temperature, "ids": list(out["output_ids"]), "logprobs": lps}

    tasks, k = [], 0
    for count, new_tokens, temperature in WAVES:
        for _ in range(count):
            tasks.append(asyncio.ensure_future(gen(k, new_tokens, temperature)))
            k += 1
        await asyncio.sleep(WAVE_GAP_S)
    return await asyncio.gather(*tasks)


def run(model, names):
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import engine_class

    out_path = tempfile.mktemp(prefix="mixed-", suffix=".jsonl")
    cls = engine_class(runner=functools.partial(mixed_checks.run_recorded, tuple(names), out_path))
    kwargs = server_args_kwargs(model, 0.4, 512, 1, "float32", False,
                                dict(CPU_KWARGS, chunked_prefill_size=256, enable_mixed_chunk=True),
                                scheduler_patches=names)
    outs, lines = run_engine_recorded(cls, kwargs, workload, out_path)
    passes = [ln["pass"] for ln in lines if "pass" in ln]
    return {"applied": lines[0]["applied"], "outs": outs,
            "mixed_passes": sum(1 for p in passes if p[0] == "MIXED"),
            "mixed_decode_rows": sum(p[2] for p in passes if p[0] == "MIXED"),
            "extend_passes": sum(1 for p in passes if p[0] == "EXTEND")}


def main():
    import torch
    from transformers import AutoModelForCausalLM

    model = sys.argv[1]
    base = ("delayer_gather", "decode_rows")
    runs = {"declined": run(model, base), "mixed": run(model, base + ("mixed_logprob",))}
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    res = {}
    for name, r in runs.items():
        gaps, lengths_ok = [], True
        for o in r["outs"]:
            lengths_ok &= len(o["ids"]) == len(o["logprobs"]) > 0
            # sglang's greedy rows: log-probs of the plain softmax (temperature 1)
            ref = ref_logprobs(hf, prompt(o["k"]), o["ids"], o["temperature"] or 1.0)
            gaps.append((torch.tensor(o["logprobs"]) - ref).abs().max().item())
        res[name] = {"applied": r["applied"], "mixed_passes": r["mixed_passes"],
                     "mixed_decode_rows": r["mixed_decode_rows"], "extend_passes": r["extend_passes"],
                     "requests": len(r["outs"]), "lengths_ok": lengths_ok, "max_logprob_gap": max(gaps)}
    greedy = [o["k"] for o in runs["declined"]["outs"] if o["temperature"] == 0.0]
    ids = {name: {o["k"]: o["ids"] for o in r["outs"]} for name, r in runs.items()}
    res["greedy_same"] = sum(ids["mixed"][k] == ids["declined"][k] for k in greedy)
    res["greedy"] = len(greedy)
    print(json.dumps(res), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
