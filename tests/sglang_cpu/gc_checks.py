"""agent-rl's `gc_freeze` scheduler patch (engines/sglang_patches/gc_freeze.py) against real sglang 0.5.17 on a CPU.
One engine with the default patches (`gc_freeze` among them) serves requests, then flushes its cache. Its
scheduler records the objects in the collector's permanent generation (`gc.get_freeze_count()`) and those in its
oldest generation (what a full collection walks besides the young ones): as its event loop is entered, before the
patch acts (`start`: sglang as shipped, the state an unpatched scheduler's loop starts in), once the patch has
frozen the heap (`loop`), and at the flush. Prints one JSON line; test_real_sglang.py asserts.
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
    """sglang's run_scheduler_process with `names` of agent-rl's patches applied between two recorders (`start`
    before `gc_freeze` runs, `loop` after), the collector's state recorded to `out_path` (JSON lines)."""
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
    entered = Scheduler.run_event_loop   # gc_freeze's wrapper around the recorder above

    def run_event_loop_entered(self):
        record("start")
        return entered(self)
    Scheduler.run_event_loop = run_event_loop_entered
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

    print(json.dumps(run(tuple(DEFAULT))), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
