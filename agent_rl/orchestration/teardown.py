"""The end of a run, driven from the trainer (`Trainer.close`): the tracker (metrics file, PNG), the workers (engine,
tool sessions, Ray actors and Ray itself when this run started it) and the tasks' services (the KG server).

`close_run(trainer, interrupted)`: `interrupted` (a signal stopped the run, or a KeyboardInterrupt): a worker may be in
the middle of a call; Ray workers get a few seconds to shut down and are then killed, the in-process worker's
interrupted tasks are cancelled first (`stop._cancel_pending_tasks`). A failure in one part is logged and never keeps
the next one alive.
"""
from __future__ import annotations

import logging

from agent_rl.orchestration.stop import _cancel_pending_tasks

log = logging.getLogger(__name__)


def close_run(trainer, interrupted: bool = False) -> None:
    interrupted = interrupted or (trainer.signals is not None and trainer.signals.signum is not None)
    if trainer.tracker is not None:
        try:
            trainer.tracker.finish()
        except Exception as e:  # noqa: BLE001 - never keeps the workers alive
            log.warning("tracker finish failed: %s", e)
        finally:
            trainer.tracker = None
    if trainer.group is not None:
        try:
            _shutdown_workers(trainer, interrupted)
        except Exception as e:  # noqa: BLE001
            log.warning("worker shutdown failed: %s", e)
        try:
            trainer.group.shutdown()
        finally:
            trainer.group = None
    for service in getattr(trainer, "services", None) or []:
        try:
            service.stop(timeout=5.0 if interrupted else 10.0)
        except Exception as e:  # noqa: BLE001
            log.warning("stopping %s failed: %s", type(service).__name__, e)
    trainer.services = []


def _shutdown_workers(trainer, interrupted: bool) -> None:
    group = trainer.group
    if not group.use_ray:
        w = group.workers[0]
        loop = getattr(w, "loop", None)
        if interrupted:
            _cancel_pending_tasks(loop)
        w.shutdown()
        runtime = getattr(w, "tool_runtime", None)
        if loop is not None and not loop.is_closed():
            if runtime is not None:
                loop.run_until_complete(runtime.close(timeout=5.0))  # tools' shared sessions
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        return
    if not interrupted:
        group.call("shutdown")
        return
    # a busy actor runs the shutdown only after the call in flight: wait briefly, then group.shutdown() kills it
    import ray

    refs = [w.shutdown.remote() for w in group.workers]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=5.0)
    if len(ready) < len(refs):
        trainer.echo(f"{len(refs) - len(ready)} worker(s) busy: killing them")
