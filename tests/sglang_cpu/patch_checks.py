"""agent-rl's delayer_gather scheduler patch (engines/sglang_patches/delayer.py) against real sglang 0.5.17 on a CPU:
sglang's own prefill delayer, over a gloo group of one rank, decides the same with the patched gather as with its all-gather on the same
inputs (a seeded sequence of loop passes) and no longer calls the collective, both where its numbers come back as
plain values (this sglang's negotiation) and where they fill the gather's buffer (another's: the same buffer too);
over a group of two ranks the patched function still gathers. Then an engine started with the patches on generates what one started
without them does (greedy). Prints one JSON line; test_real_sglang.py asserts. argv: MODEL_DIR."""
import asyncio
import json
import os
import random
import socket
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist

FIELDS = ("output_allow", "output_reason", "num_prefillable", "num_token_watermark_force_allow", "wait_forward_passes",
          "input_estimation")


def passes(delayer, n=200, seed=0):
    """n loop passes of varied inputs: each pass's decision and the buffer the gather left."""
    rng, out = random.Random(seed), []
    for _ in range(n):
        res = delayer._negotiate_should_allow_prefill(
            local_prefillable=rng.random() < 0.6, token_usage=rng.choice([0.1, 0.5, 0.97]),
            running_batch=rng.randrange(0, 300), max_prefill_bs=rng.randrange(0, 100), max_running_requests=256,
            waiting_queue_len=rng.randrange(0, 120))
        out.append(([getattr(res, k) for k in FIELDS], delayer._global_info_buffer.flatten().tolist()))
    return out


def make_delayer():
    from sglang.srt.managers.prefill_delayer import PrefillDelayer

    args = SimpleNamespace(prefill_delayer_queue_min_ratio=0.25, prefill_delayer_max_delay_ms=None,
                           enable_dp_attention=False, disable_overlap_schedule=False)
    return PrefillDelayer(dp_size=1, attn_tp_size=1, cpu_group=dist.group.WORLD, server_args=args, max_delay_passes=10,
                          token_usage_low_watermark=0.9)


def count_gathers():
    calls = {"n": 0}
    real = dist.all_gather_into_tensor

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)
    dist.all_gather_into_tensor = counted
    return calls


async def generate(model, patches):
    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines import build_engine
    from agent_rl.engines.base import SamplingParams
    from engine_checks import CPU_KWARGS

    cfg = RolloutConfig(engine="sglang", max_model_len=512, scheduler_patches=patches)
    cfg.engine_kwargs = dict(cfg.engine_kwargs, **CPU_KWARGS)
    engine = build_engine(cfg, model, seed=1, dtype=torch.float32)
    try:
        greedy = SamplingParams(max_new_tokens=16, temperature=0.0, ignore_eos=True)
        outs = await asyncio.gather(*(engine.generate(list(range(100 + i, 130 + i)), greedy, f"p{i}") for i in range(6)))
        return [o.output_ids for o in outs], engine.scheduling_info().get("scheduler_patches")
    finally:
        await engine.shutdown()


def main():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    calls = count_gathers()
    before = passes(make_delayer())
    gathers_before = calls["n"]

    from agent_rl.engines.sglang_patches import apply, delayer
    from sglang.srt.managers.prefill_delayer import PrefillDelayer

    applied = apply(["delayer_gather"])
    again = apply(["delayer_gather"])        # idempotent: the patch is not stacked on itself
    calls["n"] = 0
    after = passes(make_delayer())           # this sglang's negotiation: read from plain values, no buffer
    gathers_after = calls["n"]
    light = type(make_delayer()._gather_info(True, False, 1, 2, 3)).__name__
    PrefillDelayer._gather_info = PrefillDelayer._gather_info.__wrapped__   # as if the negotiation were another's:
    delayer.NEGOTIATE_SHA256 = "another"                                    # the numbers go into the buffer
    apply(["delayer_gather"])
    buffered = passes(make_delayer())
    gathers_buffered = calls["n"] - gathers_after
    two = make_delayer()                     # a group of two ranks (the world size read once per delayer)
    real_size = dist.get_world_size
    dist.get_world_size = lambda group=None: 2
    try:
        two._global_info_buffer = torch.empty((1, 1, 5), dtype=torch.int64)
        two._negotiate_should_allow_prefill(local_prefillable=True, token_usage=0.1, running_batch=3)
    finally:
        dist.get_world_size = real_size
    res = {"applied": applied, "again": again, "passes": len(before), "light": light,
           "same": [d for d, _ in before] == [d for d, _ in after], "same_buffered": before == buffered,
           "allowed": sum(1 for d, _ in after if d[0]), "delayed": sum(1 for d, _ in after if d[1] == "delay"),
           "gathers_before": gathers_before, "gathers_after": gathers_after, "gathers_buffered": gathers_buffered,
           "gathers_two_ranks": calls["n"] - gathers_after - gathers_buffered}
    dist.destroy_process_group()
    on, info_on = asyncio.run(generate(sys.argv[1], True))
    off, info_off = asyncio.run(generate(sys.argv[1], False))
    res.update(generate_same=on == off and len(on) == 6 and all(len(x) == 16 for x in on),
               info=[info_on, info_off])
    print(json.dumps(res), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
