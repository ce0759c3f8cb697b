"""agent-rl's `delayer_cap` scheduler patch (engines/sglang_patches/delayer_cap.py) against real sglang 0.5.17 on a
CPU. Two engines with our KV-session split (a request pool of 40 for the sessions, running requests capped at 8 by
`pp_max_micro_batch_size`, sglang's prefill delayer as our engine sets it), one with the default patches and one with
`delayer_cap` too, each given 32 greedy requests at once whose lengths differ, so that they finish one by one while
24 wait. Each scheduler records every negotiation of its prefill delayer (the running cap it counted free rows
against, running rows, queue, decision) and every prefill pass's size. Prints one JSON line; test_real_sglang.py
asserts. argv: MODEL_DIR."""
import functools
import json
import os
import sys
import tempfile

import delayer_cap_checks   # this module, importable in sglang's spawned scheduler (the script's folder is on its path)
from engine_checks import CPU_KWARGS, mixed_requests, run_engine_recorded

POOL, CAP, REQUESTS = 40, 8, 32


# ---------------------------------------------------------------------------------------------- in the scheduler
def run_recorded(names, out_path, *args, **kwargs):
    """sglang's run_scheduler_process with `names` of agent-rl's patches applied, its delayer's negotiations and its
    prefill passes recorded to `out_path` (JSON lines)."""
    from agent_rl.engines.sglang_patches import apply

    applied = apply(names)
    out = open(out_path, "w", buffering=1)
    out.write(json.dumps({"applied": applied}) + "\n")
    from sglang.srt.managers.prefill_delayer import PrefillDelayer
    from sglang.srt.managers.scheduler import Scheduler

    pure = PrefillDelayer._negotiate_should_allow_prefill_pure

    def recorded_pure(self, prev_state, local_prefillable, token_usage, running_batch=0, max_prefill_bs=0,
                      max_running_requests=0, waiting_queue_len=0):
        res = pure(self, prev_state, local_prefillable, token_usage, running_batch, max_prefill_bs,
                   max_running_requests, waiting_queue_len)
        if local_prefillable:
            out.write(json.dumps({"negotiate": [max_running_requests, running_batch, waiting_queue_len,
                                                res.output_allow, res.output_reason]}) + "\n")
        return res
    PrefillDelayer._negotiate_should_allow_prefill_pure = recorded_pure
    run = Scheduler.run_batch

    def run_batch(self, batch, *a, **k):
        if batch is not None and batch.forward_mode.is_extend():
            out.write(json.dumps({"prefill": len(batch.reqs)}) + "\n")
        return run(self, batch, *a, **k)
    Scheduler.run_batch = run_batch
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- the driver
def workload(engine):
    return mixed_requests(engine, REQUESTS, 0.0, lambda k: 6 + (11 * k) % 29)


def run(model, names):
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import engine_class

    out_path = tempfile.mktemp(prefix="delayer-cap-", suffix=".jsonl")
    cls = engine_class(runner=functools.partial(delayer_cap_checks.run_recorded, tuple(names), out_path))
    kwargs = server_args_kwargs(model, 0.4, 512, 1, "float32", False,
                                dict(CPU_KWARGS, enable_streaming_session=True, max_running_requests=POOL,
                                     pp_max_micro_batch_size=CAP), REQUESTS)
    done, lines = run_engine_recorded(cls, kwargs, workload, out_path)
    negotiations = [ln["negotiate"] for ln in lines if "negotiate" in ln]
    prefills = [ln["prefill"] for ln in lines if "prefill" in ln]
    return {"applied": lines[0]["applied"], "all_done": all(done) and len(done) == REQUESTS,
            "caps_seen": sorted({n[0] for n in negotiations}),
            "max_running_seen": max((n[1] for n in negotiations), default=0),
            "delays_with_queue": sum(1 for n in negotiations if n[4] == "delay" and n[2] >= 0.25 * n[1]),
            "negotiations": len(negotiations), "prefill_passes": len(prefills), "admitted": sum(prefills)}


def main():
    model = sys.argv[1]
    res = {"without": run(model, ("delayer_gather", "decode_rows")),
           "cap": run(model, ("delayer_gather", "decode_rows", "delayer_cap"))}
    print(json.dumps(res), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
