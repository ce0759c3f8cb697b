"""agent-rl's `gc_freeze` scheduler patch (engines/sglang_patches/gc_freeze.py) against real sglang 0.5.17 on a CPU.
Two engines, with the default patches and with `gc_freeze` added, serve the same requests, then flush their cache.
Each scheduler records, as its event loop starts and again at the flush: the objects in the collector's permanent
generation (`gc.get_freeze_count()`) and those in its oldest generation (what a full collection walks besides the
young ones). Prints one JSON line; test_real_sglang.py asserts.
argv: MODEL_DIR."""
import functools
import gc
import json
import os
import sys
import tempfile

import gc_checks   # this module, importable in sglang's spawned scheduler (the script's folder is on its path)
from engine_checks import CPU_KWARGS, mixed_requests, run_engine_recorded

REQUESTS = 16


# ---------------------------------------------------------------------------------------------- in the scheduler
def run_recorded(names, out_path, *args, **kwargs):
    """sglang's run_scheduler_process with `names` of agent-rl's patches applied (after the recorders are in place,
    so that `gc_freeze` runs before the loop's record), the collector's state recorded to `out_path` (JSON lines)."""
    from sglang.srt.managers.scheduler import Scheduler

    out = open(out_path, "w", buffering=1)

    def record(at):
        out.write(json.dumps({"at": at, "frozen": gc.get_freeze_count(),
                              "oldest": len(gc.get_objects(generation=2))}) + "\n")

    loop, flush = Scheduler.run_event_loop, Scheduler.flush_cache

    def run_event_loop(self):
        record("loop")
        return loop(self)

    def flush_cache(self, *a, **k):
        done = flush(self, *a, **k)
        record("flush")
        return done
    Scheduler.run_event_loop, Scheduler.flush_cache = run_event_loop, flush_cache

    from agent_rl.engines.sglang_patches import apply

    out.write(json.dumps({"applied": apply(names)}) + "\n")
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- the driver
async def workload(engine):
    done = await mixed_requests(engine, REQUESTS, 1.0, lambda k: 4 + (5 * k) % 13)
    await engine.tokenizer_manager.flush_cache()
    return done


def run(names):
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import engine_class

    out_path = tempfile.mktemp(prefix="gc-", suffix=".jsonl")
    cls = engine_class(runner=functools.partial(gc_checks.run_recorded, names, out_path))
    kwargs = server_args_kwargs(sys.argv[1], 0.4, 512, 1, "float32", False, dict(CPU_KWARGS), REQUESTS)
    done, lines = run_engine_recorded(cls, kwargs, workload, out_path)
    at = {ln["at"]: ln for ln in lines if "at" in ln}
    return {"applied": lines[0]["applied"], "all_done": all(done) and len(done) == REQUESTS, **at}


def main():
    from agent_rl.engines.sglang_patches import DEFAULT

    base = tuple(n for n in DEFAULT if n != "gc_freeze")
    print(json.dumps({"default": run(base), "frozen": run(base + ("gc_freeze",))}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
