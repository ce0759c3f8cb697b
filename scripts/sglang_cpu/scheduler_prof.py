"""sglang's scheduler work per request, by function, on real sglang 0.5.17 on a CPU: runs `agent-rl bench rollout`
(the arguments after `--`) with the scheduler process started through agent-rl's default patches and a cProfile of
the scheduler functions that handle requests (receiving, admitting a prefill, filing prefill and decode results),
then prints each one's seconds, calls and requests and the profile's top functions. A CPU's forward is not in these
functions: what they cost is the scheduler's Python, the share that bounds the engine on the GPU host
(docs/benchmarks-log.md, forty-first session). Setup: README.md here. Usage, from this folder:

    PYTHONPATH=DIR/stubs:DIR/site:$(git rev-parse --show-toplevel):. python scheduler_prof.py -- \
        --model TINY --engine-kwarg device=cpu --engine-kwarg attention_backend=torch_native \
        --engine-kwarg disable_cuda_graph=true --engine-kwarg enable_memory_saver=false \
        --engine-kwarg max_total_tokens=200000 --prompts 32 --n 4 --turns 3 --tokens-per-turn 32 \
        --tool-latency lognormal:mean=0.3,sigma=1 --modes async --steps 2 --no-ceiling --no-progress

`PROFILE=0`: time the functions without cProfile (its overhead is in every figure otherwise). The prefill function's
passes are split by outcome: prefilled, held (requests waiting, none admitted: the prefill delayer or the budget),
nothing waiting. Receiving counts every message (sessions' opens and closes too). `--out` and `--engine` are set here.
Give `max_total_tokens`: with a CPU's default KV pool sglang's allocator copies its whole free list at every free
(`torch.cat`, a device-side copy on the GPU), which then dominates the profile."""
import cProfile
import functools
import glob
import json
import os
import sys
import tempfile
import time


def _messages(args):
    return len(args[0])


def _rows(args):
    return len(args[0].reqs)


# (module, class, method, how many requests a call handles) of the scheduler functions timed (module-level functions:
# a runner given some of them is pickled into the scheduler process)
TIMED = (("sglang.srt.managers.scheduler", "Scheduler", "process_input_requests", _messages),
         ("sglang.srt.managers.scheduler", "Scheduler", "get_new_batch_prefill", None),
         ("sglang.srt.managers.scheduler_components.batch_result_processor", "SchedulerBatchResultProcessor",
          "process_batch_result_prefill", _rows),
         ("sglang.srt.managers.scheduler_components.batch_result_processor", "SchedulerBatchResultProcessor",
          "process_batch_result_decode", _rows))
PROFILE_EVERY = 50   # calls between writes of the profile (the scheduler process is killed at shutdown, so the
#                      figures are written after every call, the slower profile every PROFILE_EVERY calls)


def run_profiled(names, out_prefix, *args, functions=TIMED, profile=None, profile_every=PROFILE_EVERY, **kwargs):
    """sglang's run_scheduler_process with the patches `names` applied and `functions` (entries as TIMED's) timed,
    and cProfiled where `profile` (None: unless the environment's PROFILE is 0); their figures go to
    `out_prefix-<pid>.json` (per function: seconds, calls, requests; after every call) / `.prof` (every
    `profile_every` calls)."""
    import importlib

    from agent_rl.engines.sglang_patches import apply

    apply(names)
    prof, stats, count = cProfile.Profile(), {}, [0]
    if profile is None:
        profile = os.environ.get("PROFILE", "1") != "0"
    path = f"{out_prefix}-{os.getpid()}"

    def timed(name, original, requests):
        def wrapper(self, *a, **k):
            waiting, out = len(getattr(self, "waiting_queue", ())), None
            t0 = time.perf_counter()
            try:
                out = prof.runcall(original, self, *a, **k) if profile else original(self, *a, **k)
                return out
            finally:
                key = name
                if name == "get_new_batch_prefill":   # a pass that prefilled, one the delayer (or the budget) held
                    key += (" (prefill)" if getattr(out, "batch_to_run", None) is not None
                            else " (held: requests waiting)" if waiting else " (nothing waiting)")
                st = stats.setdefault(key, {"s": 0.0, "calls": 0, "requests": 0})
                st["s"] += time.perf_counter() - t0
                st["calls"] += 1
                st["requests"] += requests(a) if requests is not None else 0
                count[0] += 1
                with open(path + ".json", "w") as f:
                    json.dump(stats, f)
                if profile and count[0] % profile_every == 0:
                    prof.dump_stats(path + ".prof")
        return wrapper

    for module, cls, method, requests in functions:
        owner = getattr(importlib.import_module(module), cls)
        setattr(owner, method, timed(method, getattr(owner, method), requests))
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


def report(out_prefix: str, top: int = 25) -> None:
    import pstats

    for path in sorted(glob.glob(out_prefix + "-*.json")):
        with open(path) as f:
            stats = json.load(f)
        print(f"scheduler process {path.rsplit('-', 1)[-1][:-5]} (the profile as of its last write, every "
              f"{PROFILE_EVERY} calls):")
        for name, st in stats.items():
            per = f", {st['s'] / st['requests'] * 1e6:.0f} us a request" if st["requests"] else ""
            print(f"  {name}: {st['s']:.3f} s in {st['calls']} calls, {st['requests']} requests{per}")
        if os.path.exists(path[:-5] + ".prof"):
            pstats.Stats(path[:-5] + ".prof").sort_stats("tottime").print_stats(top)


def main(argv) -> int:
    import scheduler_prof

    from agent_rl.cli.main import main as cli
    from agent_rl.engines import sglang_patches

    bench = argv[argv.index("--") + 1:] if "--" in argv else argv
    work = tempfile.mkdtemp(prefix="scheduler-prof-")
    prefix = os.path.join(work, "sched")
    # the bench's engine starts its scheduler through `_runner(names)`: profile there, the same patches applied
    sglang_patches._runner = lambda names: functools.partial(scheduler_prof.run_profiled,
                                                             tuple(sglang_patches.selected(list(names))), prefix)
    rc = cli(["bench", "rollout", "--engine", "sglang", "--out", os.path.join(work, "bench"), *bench])
    report(prefix)
    print(f"files: {work}")
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
