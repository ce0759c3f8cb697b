"""Speed-ups inside sglang's scheduler process (`rollout.scheduler_patches`, on by default).

sglang's scheduler runs in a process of its own and, on the GPU host, is the rollout's bottleneck: its main thread is
on CPU all the time while the GPU idles half of it (stack samples inside the process, docs/benchmarks-log.md, 2026-12-05
twenty-fourth session). Some of that work is waste; each patch, a module here, removes some in that process:

* `delayer_gather` (`delayer.py`): the prefill delayer's per-pass all-gather over a group of one rank;
* `decode_rows` (`decode_rows.py`): the per-row calls after each decode pass that change nothing;
* `delayer_cap` (`delayer_cap.py`): the prefill delayer counts free rows against the running cap, not the larger
  request pool KV sessions need;
* `sample_gumbel` (`sample_gumbel.py`): a token drawn as `torch.multinomial` draws it, without its 10 checking
  operations a decode pass;
* `gc_freeze` (`gc_freeze.py`): the scheduler's start-up heap out of the garbage collector's full collections (one
  such collection stopped the engine for ~0.4 s every few thousand requests);
* `mixed_logprob` (`mixed_logprob.py`): sglang's mixed chunked prefill (`enable_mixed_chunk`, off by default) also for
  requests that return log-probs (every rollout request); not in the default set.

Each patch checks that the installed sglang has what it replaces as it was written for (signatures, hashes of
sources) and leaves sglang as it is otherwise (the start line on stderr says what was applied). They reach the
scheduler through sglang's own hook for this (`Engine.run_scheduler_process_func`,
`http_server.launch_server(run_scheduler_process_func=...)`): `run_scheduler_process` here is what sglang's engine starts
in each scheduler process instead of its own, with the names of the patches to apply; it applies them there and runs
sglang's. `rollout.scheduler_patches`: true (the default set, `DEFAULT`), false (none) or a list of names (`selected`;
`default` in it stands for the default set, e.g. `[default, mixed_logprob]`).
"""
from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

# name -> the module whose `patch()` applies it (in this order)
PATCHES = {"delayer_gather": "delayer", "decode_rows": "decode_rows", "delayer_cap": "delayer_cap",
           "sample_gumbel": "sample_gumbel", "mixed_logprob": "mixed_logprob", "gc_freeze": "gc_freeze"}
# what `rollout.scheduler_patches: true` applies: the patches measured to win on the GPU
DEFAULT = ("delayer_gather", "decode_rows", "delayer_cap", "sample_gumbel", "gc_freeze")

UNAVAILABLE = ("rollout.scheduler_patches: the installed sglang has no hook to start its scheduler through "
               "(run_scheduler_process_func); its scheduler runs as shipped")


def selected(value: Union[bool, str, Sequence[str], None]) -> Tuple[str, ...]:
    """The patch names `rollout.scheduler_patches` asks for: true = the default set (`DEFAULT`), false / null = none, a
    list (or a comma-separated string) = those, `default` among them standing for the default set; ValueError naming
    an unknown one."""
    if value is None or value is False:
        return ()
    if value is True:
        return DEFAULT
    names = [n.strip() for n in value.split(",")] if isinstance(value, str) else [str(n).strip() for n in value]
    names = [m for n in names for m in (DEFAULT if n == "default" else (n,))]
    unknown = [n for n in names if n not in PATCHES]
    if unknown:
        raise ValueError(f"unknown scheduler patch {unknown[0]!r} (known: {', '.join(PATCHES)}; default: the default "
                         "set)")
    return tuple(n for n in PATCHES if n in names)


def source_digest(*functions: Any) -> str:
    """The first 16 hex digits of the sha256 of these functions' sources joined (a patch's check that the installed
    sglang's code is the code it was written against); '' where a source cannot be read."""
    import hashlib
    import inspect

    try:
        text = "\n".join(inspect.getsource(f) for f in functions)
    except (OSError, TypeError):
        return ""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def delayer_method(name: str, params: Sequence[str]) -> Union[bool, Tuple[type, Callable[..., Any]]]:
    """sglang's `PrefillDelayer` and its method `name`, where that has these parameters and is not patched yet:
    (class, method); True where our patch is already in place; False where sglang has no such method."""
    import inspect

    try:
        from sglang.srt.managers.prefill_delayer import PrefillDelayer
    except ImportError:
        return False
    original = unpatched(PrefillDelayer, name)
    if isinstance(original, bool):
        return original
    if list(inspect.signature(original).parameters) != list(params):
        return False
    return PrefillDelayer, original


def unpatched(owner: Any, name: str) -> Union[bool, Callable[..., Any]]:
    """`owner.name` (a class's or module's function) where it is there and not ours yet; True where `install` put our
    patch there already, False where there is none."""
    original = getattr(owner, name, None)
    if original is None or getattr(original, "_agent_rl", False):
        return original is not None
    return original


def install(owner: Any, name: str, patched: Callable[..., Any], original: Callable[..., Any]) -> bool:
    """Put `patched` in place of `owner.name` (`original`), marked as ours (`unpatched` reads the mark); True."""
    patched._agent_rl = True
    patched.__wrapped__ = original
    setattr(owner, name, patched)
    return True


def run_scheduler_process(names: Sequence[str], *args: Any, **kwargs: Any) -> Any:
    """sglang's `run_scheduler_process`, after `apply(names)` (in the scheduler process sglang spawned; bound to the
    names with functools.partial)."""
    applied = apply(names)
    print(f"agent-rl: sglang scheduler patched: {', '.join(applied) or 'nothing'}"
          + "".join(f"; {n} not applied (this sglang differs)" for n in names if n not in applied),
          file=sys.stderr, flush=True)
    from sglang.srt.managers.scheduler import run_scheduler_process as run

    return run(*args, **kwargs)


def engine_class(names: Sequence[str] = DEFAULT, runner: Optional[Callable[..., Any]] = None) -> Optional[type]:
    """sglang's Engine class starting its schedulers through `run_scheduler_process` with these patches (or through
    `runner`, a picklable function of sglang's scheduler arguments, e.g. a check's recording one); None where the
    installed sglang has no such hook (the engine then starts as sglang's own)."""
    try:
        from sglang.srt.entrypoints.engine import Engine   # the class (`sglang.Engine` is a lazy import)
    except ImportError:
        return None
    if not hasattr(Engine, "run_scheduler_process_func"):
        return None
    return type(Engine)(f"Patched{Engine.__name__}", (Engine,),   # its metaclass: sglang's Engine is an ABC
                        {"run_scheduler_process_func": staticmethod(runner or _runner(names)),
                         "__module__": __name__})


def _runner(names: Sequence[str]) -> Callable[..., Any]:
    """`run_scheduler_process` bound to the patch names (pickled by reference into sglang's spawned processes)."""
    return functools.partial(run_scheduler_process, tuple(selected(list(names))))


def available() -> bool:
    """Whether a server process of the installed sglang can take the hook (`server_launcher`'s: `launch_server`'s
    `run_scheduler_process_func`), read from its HTTP-server module's source without importing it here (that import
    would set up sglang in this process, e.g. uvloop's event-loop policy)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("sglang.srt.entrypoints.http_server")
        with open(spec.origin, encoding="utf-8") as f:
            return "run_scheduler_process_func" in f.read()
    except (ImportError, AttributeError, OSError, TypeError, ValueError):
        return False


def server_launcher(names: Sequence[str] = DEFAULT) -> Optional[Callable[..., Any]]:
    """sglang's `launch_server(server_args)` of the HTTP server, starting its schedulers through
    `run_scheduler_process` with these patches; None where the installed sglang has no such hook."""
    import inspect

    try:
        from sglang.srt.entrypoints.http_server import launch_server
    except ImportError:
        return None
    if "run_scheduler_process_func" not in inspect.signature(launch_server).parameters:
        return None
    return functools.partial(launch_server, run_scheduler_process_func=_runner(names))


def apply(names: Sequence[str] = DEFAULT) -> List[str]:
    """Apply the named patches the installed sglang fits (the default set unless named); the names of those applied."""
    return [name for name in selected(list(names))
            if importlib.import_module(f"{__name__}.{PATCHES[name]}").patch()]
