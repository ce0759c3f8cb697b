"""The scheduler's time in sglang's decode-result function per row, with and without agent-rl's `decode_rows` patch
(engines/sglang_patches/decode_rows.py), on real sglang 0.5.17 on a CPU: REQUESTS requests of TOKENS tokens each (return
log-probs, the model's EOS and a stop token, as the rollout sends them), all at once, through an engine started with
the patches named (none, then decode_rows, alternating ROUNDS times). Prints each run's microseconds per row and rows
per pass (`PROF=1`: and a cProfile of the function). A CPU's forward dominates its wall time; this times the scheduler's
per-row Python only, the share it bounds on the GPU host (docs/benchmarks.md). Usage (setup: README.md here):
    python decode_rows_cpu.py [REQUESTS=128] [TOKENS=64] [ROUNDS=2]"""
import functools
import json
import os
import sys
import time


def run_timed(names, out_path, *args, **kwargs):
    """sglang's run_scheduler_process with `names` applied and the decode-result function timed (to `out_path`)."""
    from agent_rl.engines.sglang_patches import apply

    apply(names)
    from sglang.srt.managers.scheduler_components import batch_result_processor as brp

    decode, stats = brp.SchedulerBatchResultProcessor.process_batch_result_decode, {"s": 0.0, "rows": 0, "passes": 0}
    prof = None
    if os.environ.get("PROF"):
        import cProfile

        prof = cProfile.Profile()

    def timed(self, batch, result):
        t0 = time.perf_counter()
        try:
            return decode(self, batch, result) if prof is None else prof.runcall(decode, self, batch, result)
        finally:
            stats["s"] += time.perf_counter() - t0
            if prof is not None:
                prof.dump_stats(out_path + ".prof")
            stats["rows"] += len(batch.reqs)
            stats["passes"] += 1
            with open(out_path, "w") as f:
                json.dump(stats, f)
    brp.SchedulerBatchResultProcessor.process_batch_result_decode = timed
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


def one(model, names, requests, tokens):
    import decode_rows_cpu
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import engine_class

    out_path = f"/tmp/decode-rows-cpu-{os.getpid()}.json"
    cls = engine_class(runner=functools.partial(decode_rows_cpu.run_timed, tuple(names), out_path))
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
    with open(out_path) as f:
        stats = json.load(f)
    os.unlink(out_path)
    if os.path.exists(out_path + ".prof"):
        import pstats

        print(f"patches {list(names) or 'none'}: cProfile of the decode-result function", flush=True)
        pstats.Stats(out_path + ".prof").sort_stats("tottime").print_stats(12)
        os.unlink(out_path + ".prof")
    return stats


def main():
    from agent_rl.model.prepare import cache_dir, tiny_model_dir

    requests, tokens, rounds = (int(a) for a in (sys.argv[1:] + ["128", "64", "2"][len(sys.argv) - 1:])[:3])
    model = tiny_model_dir(os.path.join(cache_dir(), "test-models", "tiny-llama-h64-l2"))
    for r in range(rounds):
        for names in ((), ("decode_rows",)):
            s = one(model, names, requests, tokens)
            print(json.dumps({"round": r, "patches": list(names), "us_per_row": round(s["s"] / s["rows"] * 1e6, 2),
                              "rows_per_pass": round(s["rows"] / s["passes"], 1), "passes": s["passes"]}), flush=True)


if __name__ == "__main__":
    main()
