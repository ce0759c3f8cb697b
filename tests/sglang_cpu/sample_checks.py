"""agent-rl's `sample_gumbel` scheduler patch (engines/sglang_patches/sample_gumbel.py) against real sglang 0.5.17 on a
CPU. An engine with the default patches (`sample_gumbel` among them) samples 24 requests of different lengths at
temperature 1, all at once. In its scheduler every draw goes through a check: sglang's own `sampling_from_probs_torch` draws first,
the generator is put back, the patched one draws; the record says whether the tokens and the generator's state after
the draw are the same, and the batch's size. Two engines of one seed cannot be compared token for token: sglang's
draws drift between runs. Prints one JSON line; test_real_sglang.py asserts. argv: MODEL_DIR."""
import functools
import json
import os
import sys
import tempfile

import sample_checks   # this module, importable in sglang's spawned scheduler (the script's folder is on its path)
from engine_checks import CPU_KWARGS, mixed_requests, run_engine_recorded

REQUESTS = 24


# ---------------------------------------------------------------------------------------------- in the scheduler
def run_recorded(names, out_path, *args, **kwargs):
    """sglang's run_scheduler_process with `names` of agent-rl's patches applied and every draw checked against
    sglang's own (JSON lines to `out_path`)."""
    import torch

    from agent_rl.engines.sglang_patches import apply

    applied = apply(names)
    out = open(out_path, "w", buffering=1)
    out.write(json.dumps({"applied": applied}) + "\n")
    from sglang.srt.layers import sampler

    patched = sampler.sampling_from_probs_torch
    original = getattr(patched, "__wrapped__", patched)

    def checked(probs, sampling_seed=None, positions=None):
        state = torch.get_rng_state()
        want = original(probs.clone(), sampling_seed=sampling_seed, positions=positions)
        want_state = torch.get_rng_state()
        torch.set_rng_state(state)
        got = patched(probs, sampling_seed=sampling_seed, positions=positions)
        out.write(json.dumps({"draw": [int(probs.shape[0]), bool(torch.equal(got, want)),
                                       bool(torch.equal(torch.get_rng_state(), want_state)), str(got.dtype)]}) + "\n")
        return got
    sampler.sampling_from_probs_torch = checked
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- the driver
def workload(engine):
    return mixed_requests(engine, REQUESTS, 1.0, lambda k: 4 + (7 * k) % 19)


def main():
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import DEFAULT, engine_class

    names = tuple(DEFAULT)
    out_path = tempfile.mktemp(prefix="sample-", suffix=".jsonl")
    cls = engine_class(runner=functools.partial(sample_checks.run_recorded, names, out_path))
    kwargs = server_args_kwargs(sys.argv[1], 0.4, 512, 1, "float32", False, dict(CPU_KWARGS), REQUESTS)
    done, lines = run_engine_recorded(cls, kwargs, workload, out_path)
    draws = [ln["draw"] for ln in lines if "draw" in ln]
    print(json.dumps({"applied": lines[0]["applied"], "all_done": all(done) and len(done) == REQUESTS,
                      "draws": len(draws), "same_tokens": sum(d[1] for d in draws), "same_state": sum(d[2] for d in draws),
                      "dtypes": sorted({d[3] for d in draws}), "largest_batch": max((d[0] for d in draws), default=0)}),
          flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
