"""Our sglang wrapper against real sglang 0.5.17 on a CPU (run by test_real_sglang.py in a process of its own, with
the side site of scripts/sglang_cpu/setup.sh on PYTHONPATH). Prints one JSON line of figures; asserts nothing, the
test does. argv: MODEL_DIR."""
import asyncio
import json
import os
import sys

# with device=cpu agent-rl sets sglang's sleep_on_idle (server_args_kwargs): an idle scheduler waits on its sockets
# instead of polling them, a whole core per engine, which on the 2-core test machine starved the test's own work
CPU_KWARGS = {"device": "cpu", "attention_backend": "torch_native", "disable_cuda_graph": True,
              "enable_memory_saver": False, "max_total_tokens": 60000, "log_level": "error",
              "dtype": "float32"}


def run_engine_recorded(cls, kwargs, drive, out_path):
    """Start the engine class `cls` (sglang's with a recording scheduler runner writing JSON lines to `out_path`),
    run `drive(engine)` (a coroutine function) on a fresh event loop, shut the engine down and remove its ipc socket
    files as our wrapper does; (its result, the lines)."""
    import time

    from agent_rl.engines.sglang_engine import remove_ipc_socket_files

    engine = cls(**kwargs)
    try:
        result = asyncio.new_event_loop().run_until_complete(drive(engine))
        time.sleep(0.5)   # the scheduler's last records
    finally:
        engine.shutdown()
        remove_ipc_socket_files(getattr(engine, "port_args", None))
    with open(out_path) as f:
        lines = [json.loads(line) for line in f]
    os.unlink(out_path)
    return result, lines


async def mixed_requests(engine, count, temperature, new_tokens):
    """`count` requests at once (prompts of 12-16 tokens), request k generating `new_tokens(k)` tokens at
    `temperature`, so that they finish one by one; whether each got its tokens."""
    async def gen(k):
        ids = [100 + (13 * k + j) % 800 for j in range(12 + k % 5)]
        out = await engine.async_generate(input_ids=ids, rid=f"r{k:02d}", sampling_params={
            "max_new_tokens": new_tokens(k), "temperature": temperature, "ignore_eos": True})
        return len(out["output_ids"]) == new_tokens(k)
    return await asyncio.gather(*(gen(k) for k in range(count)))


def ref_logprobs(hf, prompt, out, temperature=1.0):
    import torch

    with torch.no_grad():
        logits = hf(torch.tensor([prompt + out])).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt) - 1:-1] / temperature, -1)
    return lp.gather(-1, torch.tensor(out)[:, None])[:, 0]


def gap(a, b):
    import torch

    d = (torch.tensor(a) - b).abs()
    return [d.mean().item(), d.max().item()]


async def abort_scenario(engine, prompt, long_tokens: int, short_tokens: int, wait_s: float):
    """Requests "a1" and "early" of `long_tokens`, "a10" of `short_tokens` ("a1" is a prefix of its id); "early" is
    aborted before sglang registered it, "a1" after `wait_s`. Returns the three outputs (also tests/gpu)."""
    from agent_rl.engines.base import SamplingParams

    long = SamplingParams(max_new_tokens=long_tokens, temperature=1.0, ignore_eos=True)
    t1 = asyncio.ensure_future(engine.generate(prompt, long, "a1"))
    t10 = asyncio.ensure_future(engine.generate(prompt, SamplingParams(max_new_tokens=short_tokens, ignore_eos=True),
                                                "a10"))
    early = asyncio.ensure_future(engine.generate(prompt, long, "early"))
    await asyncio.sleep(0)          # generate() entered, sglang has not registered it yet
    await engine.abort("early")
    await asyncio.sleep(wait_s)
    await engine.abort("a1")
    return await asyncio.gather(t1, t10, early)


async def idle_scheduler_cores(seconds: float) -> list:
    """The CPU cores each sglang scheduler process below this one used over `seconds` of an idle engine (the bench's
    own process sampler, here against real sglang)."""
    from agent_rl.bench.proc_sampler import ProcSampler

    sampler = ProcSampler(interval_s=0.5).start()
    await asyncio.sleep(seconds)
    summary = sampler.stop() or {"processes": []}
    return [round(p["cpu_cores_mean"], 3) for p in summary["processes"] if "scheduler" in p["name"]]


async def main(model: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines import build_engine
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.sglang_engine import ipc_socket_files

    cfg = RolloutConfig(engine="sglang", max_model_len=2048)
    cfg.engine_kwargs = dict(cfg.engine_kwargs, **CPU_KWARGS)
    engine = build_engine(cfg, model, seed=1, dtype=torch.float32)
    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    prompt = list(range(100, 140))
    res = {"engine": type(engine).__name__}
    try:
        greedy = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True)
        base = await engine.generate(prompt, greedy, "g0")
        res["greedy_len"], res["greedy_finish"] = len(base.output_ids), base.finish_reason
        res["greedy_logprob_gap"] = gap(base.logprobs, ref_logprobs(hf, prompt, base.output_ids))
        with torch.no_grad():   # transformers' own greedy continuation of the same prompt
            ids = torch.tensor([prompt])
            for _ in range(24):
                ids = torch.cat([ids, hf(ids).logits[:, -1:].argmax(-1)], 1)
        res["greedy_equals_transformers"] = base.output_ids == ids[0, len(prompt):].tolist()

        T = 0.7
        outs = await asyncio.gather(*[engine.generate(prompt, SamplingParams(max_new_tokens=16, temperature=T,
                                                                             ignore_eos=True), f"t{i}")
                                      for i in range(4)])
        res["sampled_gap_scaled"] = max(gap(o.logprobs, ref_logprobs(hf, prompt, o.output_ids, T))[0] for o in outs)
        res["sampled_gap_plain"] = min(gap(o.logprobs, ref_logprobs(hf, prompt, o.output_ids, 1.0))[0] for o in outs)

        a1, a10, e = await asyncio.wait_for(abort_scenario(engine, prompt, 1500, 40, 0.5), 300)
        res["abort"] = {"a1": [a1.finish_reason, len(a1.output_ids), len(a1.logprobs)],
                        "a10": [a10.finish_reason, len(a10.output_ids)], "early": [e.finish_reason, len(e.output_ids)]}
        await engine.abort("a1")        # finished: a no-op

        original = [(n, p.detach().clone()) for n, p in hf.named_parameters()]
        g = torch.Generator().manual_seed(0)
        noisy = [(n, p + 0.5 * p.std() * torch.randn(p.shape, generator=g)) for n, p in original]
        await engine.update_weights(noisy)
        changed = await engine.generate(prompt, greedy, "w1")
        res["noisy_moved"] = changed.output_ids != base.output_ids or \
            max(abs(a - b) for a, b in zip(changed.logprobs, base.logprobs))
        with torch.no_grad():
            for (_, p), (_, q) in zip(hf.named_parameters(), noisy):
                p.copy_(q)
        res["noisy_logprob_gap"] = gap(changed.logprobs, ref_logprobs(hf, prompt, changed.output_ids))
        await engine.update_weights(original)
        res["flush"] = bool(await engine.flush_cache())
        restored = await engine.generate(prompt, greedy, "w2")
        res["restored_equals_base"] = restored.output_ids == base.output_ids
        res["idle_scheduler_cores"] = await idle_scheduler_cores(2.0)
    finally:
        ipc = ipc_socket_files(engine._engine.port_args)   # sglang's socket files: ours to remove at the shutdown
        await engine.shutdown()
    res["ipc_files"] = {"named": len(ipc), "left": sum(os.path.exists(p) for p in ipc)}
    return res


if __name__ == "__main__":
    print(json.dumps(asyncio.new_event_loop().run_until_complete(main(sys.argv[1]))), flush=True)
