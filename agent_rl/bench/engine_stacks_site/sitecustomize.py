"""Started by Python in every process that finds this folder on its path (`agent_rl/bench/engine_stacks.py` puts it
there, in the environment sglang's subprocesses inherit, only for `agent-rl bench --sample-engine-stacks`): starts
the stack sampler when asked to, then runs the `sitecustomize` this one hides, if any."""
import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("AGENT_RL_ENGINE_STACKS_DIR"):
    try:
        from agent_rl.bench.engine_stacks import child_start

        child_start(os.environ["AGENT_RL_ENGINE_STACKS_DIR"])
    except Exception as e:   # never stop the process over a profiling aid
        print(f"agent-rl engine stacks: not started: {e}", file=sys.stderr)
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _HERE])
if _spec is not None and _spec.loader is not None:
    _mod = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_mod)
