"""KV sessions (`rollout.kv_sessions`, engines/kv_sessions.py) on real sglang 0.5.17 on a CPU, float32: multi-turn
trajectories generated in sessions against the same trajectories as plain requests on the same engine (the session
off), and a sampled turn's log-probs against transformers on the whole context; the engine runs at most 3 requests at
once under a request pool of 12 (sessions hold up to 9). Prints one JSON line of figures; the test
(test_real_sglang.py) asserts (and reads sglang's batch log lines). argv: MODEL_DIR."""
import asyncio
import json
import sys

from engine_checks import CPU_KWARGS, gap, ref_logprobs

OBS = [[300 + t, 301 + t, 302 + t] for t in range(4)]   # each turn's "tool observation" ids


async def trajectory(engine, key, prompt, turns, max_new, *, stop=None, cut=None, between=None):
    """A trajectory's turns as the agent loop sends them: the context so far, then its observation. `cut`: that
    turn keeps all but its last 2 ids (a stop string); `between(t)`: awaited after turn t."""
    from agent_rl.engines.base import SamplingParams

    ctx, outs = list(prompt), []
    for t in range(turns):
        sp = SamplingParams(max_new_tokens=max_new, temperature=0.0, ignore_eos=stop is None,
                            stop_token_ids=list(stop or []), session=key)
        out = await engine.generate(ctx, sp, f"{key}-t{t}")
        outs.append((list(out.output_ids), list(out.logprobs), out.finish_reason))
        ctx += (out.output_ids[:-2] if cut == t else out.output_ids) + OBS[t]
        if between is not None:
            await between(t)
    await engine.end_session(key)
    return outs


def same(a, b):
    """Equal tokens and finish reasons; the largest log-prob difference."""
    tokens = all(x[0] == y[0] and x[2] == y[2] for x, y in zip(a, b)) and len(a) == len(b)
    return tokens, max(abs(p - q) for x, y in zip(a, b) for p, q in zip(x[1], y[1]))


async def both(engine, name, res, *args, **kw):
    engine.kv_sessions = True
    on = await trajectory(engine, f"{name}-on", *args, **kw)
    engine.kv_sessions = False
    off = await trajectory(engine, f"{name}-off", *args, **kw)
    engine.kv_sessions = True
    res[name] = same(on, off)
    return on


async def main(model: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines import build_engine
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.sglang_engine import FLUSH_WAIT_S

    cfg = RolloutConfig(engine="sglang", max_model_len=2048, kv_sessions=True)
    # a request pool of 12 with at most 3 requests running (`pp_max_micro_batch_size`, as scheduling_kwargs sets both
    # with sessions above the CUDA-graph batch): sessions may hold the other 9 entries; sglang logs its batches
    cfg.engine_kwargs = {**cfg.engine_kwargs, **CPU_KWARGS, "max_running_requests": 12, "pp_max_micro_batch_size": 3,
                         "log_level": "info"}
    engine = build_engine(cfg, model, seed=1, dtype=torch.float32)
    prompt = list(range(100, 140))
    res = {"kv_sessions": engine.kv_sessions}
    try:
        plain = await both(engine, "turns", res, prompt, 4, 12)
        # a stop token ends turn 1: sglang holds the context through it, as we do
        stop = plain[1][0][5]
        res["stopped"] = (await both(engine, "stop", res, prompt, 3, 12, stop=[stop]))[1][2]
        await both(engine, "cut", res, prompt, 3, 12, cut=0)          # turn 0's last ids dropped: starts over

        async def flush(t):
            if t == 1:
                res["flushed"] = bool(await engine.flush_cache())
        await both(engine, "flush", res, prompt, 3, 12, between=flush)

        async def server_flush(t):   # a server after loading weights from disk: its own flush, our sessions open
            if t == 1:
                out = await engine.tokenizer_manager.flush_cache(timeout_s=FLUSH_WAIT_S)   # sglang 0.5.17's
                res["server_flushed"] = bool(getattr(out, "success", True))
        await both(engine, "server_flush", res, prompt, 3, 12, between=server_flush)

        # eight trajectories at once (groups of two share a prompt), in sessions and plain
        prompts = [list(range(100 + 5 * (i // 2), 140 + 5 * (i // 2))) for i in range(8)]
        engine.kv_sessions = True
        on = await asyncio.gather(*(trajectory(engine, f"c{i}-on", p, 3, 10) for i, p in enumerate(prompts)))
        engine.kv_sessions = False
        off = await asyncio.gather(*(trajectory(engine, f"c{i}-off", p, 3, 10) for i, p in enumerate(prompts)))
        engine.kv_sessions = True
        res["concurrent"] = [same(a, b) for a, b in zip(on, off)]

        # an aborted turn, then the resumed one on its whole context (the session was dropped), as plain
        ctx = list(prompt)
        first = await engine.generate(ctx, SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True,
                                                          session="ab"), "ab-0")
        ctx += first.output_ids + OBS[0]
        long = SamplingParams(max_new_tokens=1500, temperature=0.0, ignore_eos=True, session="ab")
        task = asyncio.ensure_future(engine.generate(ctx, long, "ab-1"))
        await asyncio.sleep(0.5)
        await engine.abort("ab-1")
        cut = await task
        ctx += cut.output_ids
        resumed = await engine.generate(ctx, SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True,
                                                            session="ab"), "ab-2")
        engine.kv_sessions = False
        ref = await engine.generate(ctx, SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True), "ab-ref")
        engine.kv_sessions = True
        res["abort"] = [cut.finish_reason, len(cut.output_ids), resumed.output_ids == ref.output_ids]
        await engine.end_session("ab")

        # a sampled turn in a session: log_softmax(logits / T) of transformers on the whole context
        hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        sp = SamplingParams(max_new_tokens=16, temperature=0.7, ignore_eos=True, session="s")
        a = await engine.generate(prompt, sp, "s-0")
        ctx = prompt + a.output_ids + OBS[0]
        b = await engine.generate(ctx, sp, "s-1")
        res["sampled_gap"] = gap(b.logprobs, ref_logprobs(hf, ctx, b.output_ids, 0.7))[1]
        res["stats"] = engine.session_stats()
        res["kv_tokens"] = (await engine._engine.tokenizer_manager.get_internal_state())[0]["memory_usage"]["token_capacity"]
    finally:
        await engine.shutdown()
    return res


if __name__ == "__main__":
    print(json.dumps(asyncio.new_event_loop().run_until_complete(main(sys.argv[1]))), flush=True)
