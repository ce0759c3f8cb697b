"""Settings that one benchmark run compares mode by mode (`--modes async,async@notify256`).

A mode word with `@VARIANT` runs that mode under the setting and restores it afterwards, so the setting and the
defaults are measured in one run, one after the other (with `--rounds`, in alternating order). Separate runs cannot
decide a 10-30% effect on the GPU host: sglang's own decode rate moved 1.3-1.6x between two suites minutes apart
(docs/benchmarks-log.md, thirteenth session). Only settings read at run time can be variants:

* `nocoalesce`: the in-process sglang wrapper sends each request as its trajectory asks (`coalesce_submits` off);
* `notify<N>`: sglang's tokenizer manager wakes up to N finished requests per event-loop pass (its
  `batch_notify_size`, read at every output message; 16 by default; the simulated engine hands its requests over
  the same way);
* `load<F>`: over-sampled extras start only while fewer than F of the kept groups' trajectories run
  (`rollout.over_sample_max_load`, 0 < F <= 1; any engine);
* `replicas<N>`: new requests go to the first N of the engine's replicas only (`--engine-replicas` >= N,
  `engines/replicas.py`): one run compares one sglang scheduler with two on the same GPU;
* `sessions` / `nosessions`: each trajectory keeps its KV cache between turns in an sglang streaming session, or
  not (`rollout.kv_sessions`, engines/kv_sessions.py; engines sglang and sglang-server, which the benchmark then
  starts with sglang's streaming sessions enabled: its plain modes run on that engine too). They keep sessions by
  default (`--kv-sessions` unset, as `rollout.kv_sessions` null): `async,async@nosessions` compares them.
"""
from __future__ import annotations

import contextlib
import re
from typing import Any, Dict, Iterator

from agent_rl.engines.replicas import replicas_of

_NOTIFY = re.compile(r"notify([1-9][0-9]*)")
_LOAD = re.compile(r"load(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)")
_REPLICAS = re.compile(r"replicas([1-9][0-9]*)")
SESSIONS = {"sessions": True, "nosessions": False}
NAMES = ("nocoalesce", "notify<N>", "load<F>", "replicas<N>", "sessions", "nosessions")


def check_name(variant: str) -> None:
    if variant and variant != "nocoalesce" and variant not in SESSIONS and not any(p.fullmatch(variant) for p in (_NOTIFY, _LOAD, _REPLICAS)):
        raise ValueError(f"unknown mode variant {variant!r} (choose from {', '.join(NAMES)})")


def rollout_overrides(variant: str) -> Dict[str, Any]:
    """The rollout-config fields a variant sets for its mode (`load<F>`), else none."""
    m = _LOAD.fullmatch(variant or "")
    return {"over_sample_max_load": float(m.group(1))} if m else {}


def _server_args(engine: Any) -> Any:
    return getattr(getattr(engine, "tokenizer_manager", None), "server_args", None)


def _notify_owner(engine: Any) -> Any:
    """What holds `batch_notify_size` for `engine`: the in-process sglang engine's server args, the simulated engine
    itself, else None."""
    args = _server_args(engine)
    if hasattr(args, "batch_notify_size"):
        return args
    return engine if hasattr(engine, "batch_notify_size") else None


def check_engine(engine: Any, variant: str) -> None:
    """A one-line error when `engine` (the benchmark's engine, unwrapped; each of its replicas) cannot run `variant`."""
    if not variant or rollout_overrides(variant):
        return
    m = _REPLICAS.fullmatch(variant)
    if m:
        count = len(getattr(engine, "replicas", None) or ())
        if count < int(m.group(1)):
            raise ValueError(f"mode variant @{variant} needs at least {m.group(1)} engine replicas (--engine-replicas), "
                             f"this run has {count or 'no replicated engine'}")
        return
    for replica in replicas_of(engine):
        _check_one(replica, variant)


def _check_one(engine: Any, variant: str) -> None:
    if variant in SESSIONS:
        if not callable(getattr(engine, "session_stats", None)) or engine.session_stats() is None:
            raise ValueError(f"mode variant @{variant} needs an sglang engine started with streaming sessions "
                             f"(--engine sglang or sglang-server; the benchmark starts it so for @sessions, "
                             f"--kv-sessions for @nosessions), not {getattr(engine, 'name', type(engine).__name__)}")
        return
    ok = hasattr(engine, "coalesce_submits") if variant == "nocoalesce" else _notify_owner(engine) is not None
    if not ok:
        raise ValueError(f"mode variant @{variant} needs the in-process sglang engine (--engine sglang"
                         f"{'' if variant == 'nocoalesce' else ' or sim'}), "
                         f"not {getattr(engine, 'name', type(engine).__name__)}")
    if variant != "nocoalesce":   # can it change at run time? (a write of the value it has; before any mode runs)
        sa = _notify_owner(engine)
        try:
            _set(sa, "batch_notify_size", sa.batch_notify_size)
        except (AttributeError, TypeError) as e:
            raise ValueError(f"mode variant @{variant}: this sglang's batch_notify_size cannot change at run time "
                             f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


@contextlib.contextmanager
def applied(engine: Any, variant: str) -> Iterator[None]:
    """`engine` under `variant` for the block; as before afterwards."""
    if not variant or rollout_overrides(variant):   # no engine setting: the mode's rollout config carries it
        yield
        return
    check_engine(engine, variant)
    if m := _REPLICAS.fullmatch(variant):
        owners, attr, value = [engine], "active", int(m.group(1))
    elif variant == "nocoalesce":
        owners, attr, value = replicas_of(engine), "coalesce_submits", False
    elif variant in SESSIONS:
        owners, attr, value = replicas_of(engine), "kv_sessions", SESSIONS[variant]
    else:
        owners, attr, value = [_notify_owner(r) for r in replicas_of(engine)], "batch_notify_size", \
            int(_NOTIFY.fullmatch(variant).group(1))
    olds = [getattr(owner, attr) for owner in owners]
    try:
        for owner in owners:
            _set(owner, attr, value)
        yield
    finally:
        for owner, old in zip(owners, olds):
            _set(owner, attr, old)


def _set(owner: Any, attr: str, value: Any) -> None:
    """sglang 0.5.17's resolved ServerArgs refuse plain assignment ("read-only -- use ...override(source, ...)", seen on
    the H200): its `override` is the logged way to change one at run time."""
    override = getattr(owner, "override", None)
    if attr == "batch_notify_size" and callable(override):
        override("agent-rl bench mode variant", **{attr: value})
    else:
        setattr(owner, attr, value)
