"""The scheduler's time in sglang's decode-result function per row, with and without agent-rl's `decode_rows` patch
(engines/sglang_patches/decode_rows.py), on real sglang 0.5.17 on a CPU: REQUESTS requests of TOKENS tokens each (return
log-probs, the model's EOS and a stop token, as the rollout sends them), all at once, through an engine started with
the patches named (none, then decode_rows, alternating ROUNDS times). Prints each run's microseconds per row and rows
per pass (`PROF=1`: and a cProfile of the function). A CPU's forward dominates its wall time; this times the scheduler's
per-row Python only, the share it bounds on the GPU host (docs/benchmarks-log.md). The timing is scheduler_prof.py's,
on this one function. Usage (setup: README.md here):
    python decode_rows_cpu.py [REQUESTS=128] [TOKENS=64] [ROUNDS=2]"""
import functools
import glob
import json
import os
import shutil
import sys
import tempfile
import time

import scheduler_prof

DECODE = tuple(t for t in scheduler_prof.TIMED if t[2] == "process_batch_result_decode")


def one(model, names, requests, tokens):
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import engine_class

    work = tempfile.mkdtemp(prefix="decode-rows-cpu-")
    prefix = os.path.join(work, "sched")
    profile = bool(os.environ.get("PROF"))
    cls = engine_class(runner=functools.partial(scheduler_prof.run_profiled, tuple(names), prefix, functions=DECODE,
                                                profile=profile, profile_every=1))
    cpu = {"device": "cpu", "attention_backend": "torch_native", "disable_cuda_graph": True, "log_level": "error",
           "max_total_tokens": 200000}
    engine = cls(**server_args_kwargs(model, 0.4, 1024, 1, "float32", False, cpu, requests))
    try:
        ids = [[100 + (7 * k + j) % 900 for j in range(32 + k % 32)] for k in range(requests)]
        sp = {"max_new_tokens": tokens, "temperature": 1.0, "stop_token_ids": [2, 7], "no_stop_trim": True}
        engine.generate(input_ids=ids, sampling_params=sp, return_logprob=True)
        time.sleep(0.5)
    finally:
        engine.shutdown()
    (path,) = glob.glob(prefix + "-*.json")
    with open(path) as f:
        stats = json.load(f)["process_batch_result_decode"]
    if profile:
        import pstats

        print(f"patches {list(names) or 'none'}: cProfile of the decode-result function", flush=True)
        pstats.Stats(path[:-5] + ".prof").sort_stats("tottime").print_stats(12)
    shutil.rmtree(work)
    return stats


def main():
    from agent_rl.model.prepare import cache_dir, tiny_model_dir

    requests, tokens, rounds = (int(a) for a in (sys.argv[1:] + ["128", "64", "2"][len(sys.argv) - 1:])[:3])
    model = tiny_model_dir(os.path.join(cache_dir(), "test-models", "tiny-llama-h64-l2"))
    for r in range(rounds):
        for names in ((), ("decode_rows",)):
            s = one(model, names, requests, tokens)
            print(json.dumps({"round": r, "patches": list(names), "us_per_row": round(s["s"] / s["requests"] * 1e6, 2),
                              "rows_per_pass": round(s["requests"] / s["calls"], 1), "passes": s["calls"]}), flush=True)


if __name__ == "__main__":
    main()
