"""Run a worker script as N gloo ranks on this machine (one process each), the way torchrun would set them up."""
import os
import socket
import subprocess
import sys
import traceback
from typing import Callable, List

DIST_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(worker: str, args: List[str], world: int, timeout: float = 240) -> List[str]:
    """Start `worker` (a file beside the tests) with `args` as `world` ranks (world 1: no distributed variables), wait
    for all; each must exit 0. Returns each rank's output."""
    base = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
                OMP_NUM_THREADS="1")
    for k in DIST_VARS:
        base.pop(k, None)
    port, procs = str(free_port()), []
    for rank in range(world):
        env = dict(base)
        if world > 1:
            env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                       MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), worker), *args],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append(out)
        assert p.returncode == 0, out[-4000:]
    return outs


def rank_main(main: Callable[..., None], *args: str) -> None:
    """A worker's `__main__`: `main(*args)`, leave the process group, then exit at once with 0 (1 after an error, its
    traceback printed). The ranks write their results to files inside `main`; skipping the interpreter's teardown
    skips the C++ destructors where gloo's threads can still abort a finished rank ("terminate called without an
    active exception": a fresh-clone run on 2026-12-07 failed so after both ranks had written their files)."""
    from agent_rl.training.dist import close_distributed

    code = 0
    try:
        main(*args)
    except BaseException:  # noqa: BLE001 - reported through the exit code and the traceback
        traceback.print_exc()
        code = 1
    try:
        close_distributed()
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        code = code or 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
