"""`sglang-server` engine: sglang's HTTP server in a process of its own, started with the in-process engine's settings,
and the `http` client pointed at it.

The in-process engine (`sglang_engine.SGLangEngine`) runs sglang's TokenizerManager on our event loop, beside the
rollout loop and the tools. Here it runs in the server's process instead; our loop only speaks HTTP to it.

* `SGLangServer(kwargs)` starts `python -c _LAUNCHER SPEC.json` in a session (process group) of its own. The
  launcher builds `ServerArgs(**kwargs)` from the JSON spec and calls `sglang.launch_server.run_server` (what
  `python -m sglang.launch_server` does after parsing its flags, sglang 0.5.17 `launch_server.py`), so no value is
  converted to a command-line flag (some fields, e.g. `disable_cuda_graph`, have none). `kwargs` are
  `sglang_engine.server_args_kwargs(...)`, the very dict `sglang.Engine(**kwargs)` gets in process; `launch_kwargs`
  adds the server's own keys only (`SERVER_KEYS`). stdout and stderr go to a log file (sglang's children keep
  inherited pipes open), next to the spec. `start()` waits until `/health` answers 200 (sglang answers 503 until
  its warm-up request ran); a process that exits, or a timeout, raises `SGLangServerError`: one line naming the
  cause and the log, then the log's last lines. With `gc_freeze` among the scheduler patches (the default), a healthy
  server is then asked to freeze its garbage collector (`/freeze_gc`, sglang's own endpoint, after its warm-up
  request): the server process holds sglang's tokenizer manager on every request's path, and its full collections
  walk ~710k start-up objects (six of 0.41-0.61 s in 3.5 minutes of rollout on a CPU test server, none once frozen:
  sglang's own GC warning; docs/benchmarks-log.md, thirty-third session). `stop()` ends the whole process group
  (SIGTERM, then SIGKILL). The launcher kills its group when our process goes away without stopping it.
* `SGLangServerEngine` is an `HTTPEngine` on that server that owns it: `shutdown()` stops it. Weights reach it from
  disk as with `http` (`training.weight_sync.sync_weights_from_disk`), one server per training rank.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

from agent_rl.engines import sglang_patches
from agent_rl.engines.base import model_eos_token_ids
from agent_rl.engines.http import HTTPEngine
from agent_rl.engines.sglang_engine import apply_engine_env, scheduling_info, server_args_kwargs

log = logging.getLogger(__name__)
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # holds agent_rl/
START_TIMEOUT_S = 900.0   # model load + CUDA-graph capture (sglang 0.5.17: 1-2 min on a fresh machine)

# keys of the server's ServerArgs beyond the in-process engine's: where it listens, and two defaults. sglang.Engine
# sets log_level "error" when none is given (0.5.17 `entrypoints/engine.py`; ServerArgs' own default is "info"), so
# the server logs what the in-process engine logs; its HTTP layer (uvicorn) logs warnings only, not a line per request.
SERVER_KEYS = ("host", "port", "log_level", "log_level_http")


class SGLangServerError(RuntimeError):
    pass


def launch_kwargs(kwargs: Dict[str, Any], host: str, port: int) -> Dict[str, Any]:
    """The server's ServerArgs kwargs: the engine's `kwargs` plus `SERVER_KEYS` (a log level given there wins)."""
    out = dict(kwargs)
    out.setdefault("log_level", "error")
    out.setdefault("log_level_http", "warning")
    out.update(host=host, port=int(port))
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# run as `python -c _LAUNCHER SPEC.json` (agent_rl imported only for the scheduler patches, from the spec's
# `patches_root`: the folder holding this package)
_LAUNCHER = r'''
import json, logging, os, signal, sys, threading, time

with open(sys.argv[1]) as f:
    spec = json.load(f)


def watch(parent):  # our starter is gone without stopping us: end the whole group (sglang's children too)
    while os.getppid() == parent:
        time.sleep(1.0)
    os.killpg(0, signal.SIGKILL)


threading.Thread(target=watch, args=(spec["parent_pid"],), daemon=True).start()
from sglang.srt.plugins import load_plugins

load_plugins()
from sglang.launch_server import run_server
from sglang.srt.server_args import ServerArgs
from sglang.srt.utils import kill_process_tree

kwargs = spec["kwargs"]
logging.basicConfig(level=getattr(logging, str(kwargs.get("log_level", "info")).upper(), logging.INFO),
                    format="[%(asctime)s] %(message)s", datefmt="%Y-%m-%d %H:%M:%S", force=True)
server_args = ServerArgs(**kwargs)
plain = not any(getattr(server_args, k, False) for k in ("encoder_only", "smg_grpc_mode", "grpc_mode", "use_ray"))
launch = None
if spec.get("patches_root") and plain:   # agent_rl/engines/sglang_patches in each scheduler process
    sys.path.insert(0, spec["patches_root"])   # spawned children inherit the path
    from agent_rl.engines.sglang_patches import server_launcher

    launch = server_launcher(spec["scheduler_patches"])
try:
    (launch or run_server)(server_args)
finally:
    kill_process_tree(os.getpid(), include_parent=False)
'''


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: never through an http_proxy


def _get(url: str, timeout: float):
    return _OPENER.open(url, timeout=timeout)


def _tail(path: str, lines: int = 20) -> List[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies waiting for a reaper do not count)."""
    import psutil

    for p in psutil.process_iter(["status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.Error):
            continue
    return False


class SGLangServer:
    """sglang's HTTP server in its own process group, started with ServerArgs(**launch_kwargs(kwargs, host, port)) in
    the environment `env` (default: ours)."""

    def __init__(self, kwargs: Dict[str, Any], log_dir: Optional[str] = None, host: str = "127.0.0.1",
                 port: Optional[int] = None, start_timeout_s: float = START_TIMEOUT_S,
                 env: Optional[Dict[str, str]] = None, scheduler_patches: Any = True):
        self.env = env
        # engines/sglang_patches in its scheduler processes (true: all, or their names), where the installed sglang
        # has the hooks
        names = sglang_patches.selected(scheduler_patches)
        self.scheduler_patches = list(names) if names and sglang_patches.available() else []
        if names and not self.scheduler_patches:
            log.info(sglang_patches.UNAVAILABLE)
        self.freeze_gc = "gc_freeze" in names   # the server process's collector too, through its endpoint
        self.gc_frozen = False
        self.host, self.port = host, int(port or free_port(host))
        self.kwargs = launch_kwargs(kwargs, host, self.port)
        self.log_dir = log_dir or tempfile.mkdtemp(prefix="agent-rl-sglang-server-")
        self.log_path = os.path.join(self.log_dir, f"sglang-server-{self.port}.log")
        self.spec_path = os.path.join(self.log_dir, f"sglang-server-{self.port}.json")
        self.start_timeout_s = float(start_timeout_s)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "SGLangServer":
        os.makedirs(self.log_dir, exist_ok=True)
        try:
            spec = json.dumps({"kwargs": self.kwargs, "parent_pid": os.getpid(),
                               "patches_root": PACKAGE_ROOT if self.scheduler_patches else None,
                               "scheduler_patches": self.scheduler_patches}, indent=1)
        except TypeError as e:
            raise SGLangServerError(f"sglang server: an engine kwarg cannot be passed as JSON: {e}") from None
        with open(self.spec_path, "w") as f:
            f.write(spec)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, self.spec_path], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        atexit.register(self.stop)
        deadline, pid = time.monotonic() + self.start_timeout_s, self.proc.pid
        while True:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise SGLangServerError(self._failure(pid, f"exited with code {code} before answering /health"))
            if self.healthy():
                if self.freeze_gc:
                    self.gc_frozen = self._freeze_gc()
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise SGLangServerError(self._failure(pid, f"did not answer /health within {self.start_timeout_s:.0f} s"))
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with _get(self.url + "/health", timeout=5) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _freeze_gc(self) -> bool:
        """sglang's `/freeze_gc`: its processes' start-up objects out of their garbage collector's full collections;
        a server that refuses it (an sglang without the endpoint) runs on as it ships, said once."""
        try:
            with _get(self.url + "/freeze_gc", timeout=60) as resp:   # sglang takes GET or POST
                return resp.status == 200
        except (urllib.error.URLError, OSError, ValueError) as e:
            log.warning("sglang server %s: /freeze_gc failed (%s); its garbage collector runs as sglang ships it",
                        self.url, e)
            return False

    def _failure(self, pid: int, what: str) -> str:
        """One line (what happened, the log's last line, the log's path), then the log's last lines."""
        tail = _tail(self.log_path)
        last = f": {tail[-1].strip()[:300]}" if tail else ""
        head = f"sglang server (pid {pid}, {self.url}) {what}{last} (log {self.log_path})"
        return head + ("\n  last lines of the log:\n" + "\n".join("    " + ln for ln in tail) if tail else "")

    def stop(self, timeout_s: float = 15.0) -> None:
        """End every process of the server's group: SIGTERM, then SIGKILL after `timeout_s`. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        pgid = proc.pid   # start_new_session: the launcher leads its group
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                if proc.poll() is not None and not _group_alive(pgid):
                    return
                time.sleep(0.1)
        proc.poll()


class SGLangServerEngine(HTTPEngine):
    """The `http` engine on an sglang server it started (`SGLangServer`) with the in-process engine's ServerArgs
    (`server_args_kwargs`, same arguments as `SGLangEngine`); `shutdown()` stops the server."""

    name = "sglang-server"
    server_per_rank = True   # each training rank starts its own: every rank loads the synced weights

    def __init__(self, model_path: str, mem_fraction_static: float = 0.4, context_length: Optional[int] = None,
                 seed: Optional[int] = None, dtype: Any = None, enable_memory_saver: bool = True,
                 engine_kwargs: Optional[Dict[str, Any]] = None, max_concurrency: Optional[int] = None,
                 log_dir: Optional[str] = None, start_timeout_s: float = START_TIMEOUT_S,
                 scheduler_patches: Any = True):
        kwargs = server_args_kwargs(model_path, mem_fraction_static, context_length, seed, dtype, enable_memory_saver,
                                    engine_kwargs, max_concurrency, scheduler_patches)
        env = dict(os.environ)
        self.engine_env = apply_engine_env(env)   # the server's processes get the in-process engine's variables
        self.server = SGLangServer(kwargs, log_dir=log_dir, start_timeout_s=start_timeout_s, env=env,
                                   scheduler_patches=scheduler_patches).start()
        self.priority_scheduling = bool(kwargs.get("enable_priority_scheduling"))
        super().__init__(self.server.url, eos_token_ids=model_eos_token_ids(model_path),
                         send_priority=self.priority_scheduling)
        self.abort_retry_s, self.abort_retries = 0.1, 600   # the in-process engine's

    def scheduling_info(self) -> Dict[str, Any]:
        """As `SGLangEngine.scheduling_info`, from the ServerArgs the server resolved (`/server_info`, sglang
        0.5.17; the kwargs it was given when that does not answer)."""
        try:
            with _get(self.server.url + "/server_info", timeout=30) as resp:
                info = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            info = None
        out = scheduling_info(info if isinstance(info, dict) else self.server.kwargs, self.priority_scheduling,
                              self.engine_env)
        out["scheduler_patches"] = self.server.scheduler_patches
        return out

    async def shutdown(self) -> None:
        await super().shutdown()
        await asyncio.get_running_loop().run_in_executor(None, self.server.stop)
