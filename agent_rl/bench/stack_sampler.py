"""Where the event-loop thread's time goes: its Python stack sampled from a helper thread.

With the in-process sglang engine our rollout loop and sglang's tokenizer manager share one thread; the benchmark's
`loop_cpu_frac` says how busy that thread is, not whose work keeps it busy. `StackSampler` looks at the thread's
stack every `interval_s` (`sys._current_frames`, no tracing hook, so the code under test runs at full speed; each
look costs the sampled thread one GIL hand-over) and files every sample under one owner:

* `idle`: the thread waits in the event loop's selector (nothing to run);
* the innermost frame that is not the standard library decides otherwise, by its top-level package
  (`agent_rl`, `sglang`, `zmq`, `tools`, `transformers`, `tokenizers`, `torch`, `aiohttp`, ...), so a `json.dumps`
  called by our code counts as ours and pyzmq's receive inside sglang's loop counts as `zmq`;
* `gc`: the thread runs a `gc.callbacks` function (the benchmark's own `GcWatch` or a library's): such a callback runs
  at the end of a garbage collection, which holds the GIL throughout, so the look that lands there stands for the
  collection;
* `stdlib`: only standard-library frames up to the event loop's `_run_once` (asyncio's own scheduling, its
  callbacks, timers and task wake-ups), whatever frame called `run_until_complete` below it (in the bench, its own
  driver, which would otherwise own every such sample: `agent_rl/cli/bench.py:run`, 9% of the loop's samples on the
  H200 on 2026-12-04);
* `uvloop`: on uvloop (`--event-loop uvloop`) the loop waits and schedules in C, with no Python frame of its own:
  the look finds the frame that called `run_until_complete` on top, and files it here (waiting or uvloop's own work;
  the thread's CPU clock tells them apart in `owners_cpu`). `start()` from a coroutine on the sampled thread finds
  that frame.

Each sample stands for the time since the previous one. The sampler needs the GIL to look: while the thread waits in
its selector (GIL released) a look comes every `interval_s`, while it runs Python only at the interpreter's next
switch (up to 5 ms later). Counting samples would therefore over-weight idle time (on the H200 the counts said
"idle 93%" for a thread on CPU 34% of the time); weighting each sample by the wall time since the last one removes
that bias, and weighting it by the thread's own CPU time since the last one (`time.pthread_getcpuclockid`, Linux)
gives whose code spent the CPU.

`summary()`: `owners` (shares of wall time), `owners_cpu` (shares of the thread's CPU time, where the platform can
read another thread's CPU clock) and the functions seen most (innermost non-library frame,
`agent_rl/rollout/chat.py:function`) with their shares of wall time; with `focus` (a module path prefix, e.g.
`sglang/`) also `focus_functions`: the innermost frame of that package on each stack (what of its own code was
running, or called the library that ran).
"""
from __future__ import annotations

import gc
import inspect
import os
import sys
import sysconfig
import threading
import time
from collections import Counter
from typing import Any, Dict, Optional

_STDLIB = tuple({os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")})
_SELECTOR_FILE = os.sep + "selectors.py"
_LOOP_FILE = os.sep + os.path.join("asyncio", "base_events.py")
_HANDLE_FILE = os.sep + os.path.join("asyncio", "events.py")
# Audit hooks libraries install (`sys.addaudithook`) run inside the C call that raised the event (pickle.loads,
# open, ...), and their Python entry is where a thread holding the GIL in that call first lets a look in, so they
# collect the whole call's time: such samples go to the frame below. filelock's fork-safety hook took up to 14% of
# the event-loop thread's CPU that way on the H200 (2026-12-04).
_AUDIT_HOOKS = frozenset({"_audit_fork_safety"})


def _callback_codes() -> list:
    """The code objects of the functions in `gc.callbacks` now (bound methods: their function's)."""
    codes = (getattr(getattr(cb, "__func__", cb), "__code__", None) for cb in list(gc.callbacks))
    return [c for c in codes if c is not None]


def _module(filename: str) -> Optional[str]:
    """A code file's path from its top-level package (`agent_rl/rollout/chat.py`); None: the standard library or
    not a file."""
    if not filename or filename.startswith("<"):
        return None
    path = os.path.realpath(filename)
    for marker in ("site-packages" + os.sep, "dist-packages" + os.sep):
        i = path.rfind(marker)
        if i >= 0:
            return path[i + len(marker):].replace(os.sep, "/")
    if path.startswith(_STDLIB):
        return None
    # a source tree on sys.path (this project, editable installs): the longest sys.path entry that holds the file
    best = ""
    for entry in sys.path:
        root = os.path.realpath(entry or ".") + os.sep
        if path.startswith(root) and len(root) > len(best):
            best = root
    if best:
        return path[len(best):].replace(os.sep, "/")
    return _package_path(path) or "other/" + os.path.basename(path)


def _package_path(path: str) -> Optional[str]:
    """`top/rel.py` for a file of an imported top-level package that no sys.path entry holds (an editable install
    reached through an import finder: `pip install -e .` puts no source folder on sys.path), else None."""
    for name, mod in list(sys.modules.items()):
        if "." in name:
            continue
        for folder in list(getattr(mod, "__path__", None) or ()):
            root = os.path.realpath(folder) + os.sep
            if path.startswith(root):
                return f"{name}/" + path[len(root):].replace(os.sep, "/")
    return None


def _loop_driver(frame) -> Any:
    """The frame an event loop implemented in C (uvloop) runs the coroutines of `frame`'s stack from: the caller of
    the outermost coroutine frame, unless that caller is asyncio's own loop (its `Handle._run` steps the tasks) or
    there is none."""
    below = None
    while frame is not None:
        if frame.f_code.co_flags & (inspect.CO_COROUTINE | inspect.CO_ITERABLE_COROUTINE | inspect.CO_ASYNC_GENERATOR):
            below = frame.f_back
        frame = frame.f_back
    if below is None or below.f_code.co_filename.endswith(_HANDLE_FILE):
        return None
    return below


class StackSampler:
    def __init__(self, thread_id: Optional[int] = None, interval_s: float = 0.002, top: int = 15,
                 focus: Optional[str] = None):
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.interval_s = float(interval_s)
        self.top = int(top)
        self.owners: Counter = Counter()
        self.functions: Counter = Counter()
        self.focus, self.focus_functions = focus, Counter()
        self.owners_cpu: Counter = Counter()
        self.samples = 0
        self._clock = _cpu_clock(self.thread_id)
        self._last: Optional[tuple] = None       # (wall, cpu) at the previous look
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._modules: Dict[str, Optional[str]] = {}
        self._driver = None   # uvloop: the frame below the loop's C code (`start`)

    def _module_of(self, filename: str) -> Optional[str]:
        """`_module(filename)`, computed once per file."""
        mod = self._modules.get(filename, False)
        if mod is False:
            mod = self._modules[filename] = _module(filename)
        return mod

    def _owner(self, frame) -> tuple:
        """(owner, function label) of one stack, leaf first."""
        code = frame.f_code
        if code.co_filename.endswith(_SELECTOR_FILE) and code.co_name == "select":
            return "idle", None
        if any(code is c for c in _callback_codes()):
            return "gc", "gc: garbage collection"
        if frame is self._driver:
            return "uvloop", None
        f = frame
        while f is not None and f is not self._driver:
            name = f.f_code.co_filename
            mod = self._module_of(name)
            if mod is not None and f.f_code.co_name not in _AUDIT_HOOKS:
                top = mod.split("/", 1)[0]
                return (top[:-3] if top.endswith(".py") else top), f"{mod}:{f.f_code.co_name}"
            if f.f_code.co_name == "_run_once" and name.endswith(_LOOP_FILE):
                break   # the event loop's own work: not the frame that called run_until_complete
            f = f.f_back
        return "stdlib", f"stdlib/{os.path.basename(code.co_filename)}:{code.co_name}"

    def _focus(self, frame) -> Optional[str]:
        """The innermost frame whose module path starts with `focus`, as `path:function`."""
        f = frame
        while f is not None:
            mod = self._module_of(f.f_code.co_filename)
            if mod is not None and mod.startswith(self.focus):
                return f"{mod}:{f.f_code.co_name}"
            f = f.f_back
        return None

    def _now(self) -> tuple:
        cpu = None
        if self._clock is not None:
            try:
                cpu = time.clock_gettime(self._clock)
            except OSError:          # the thread has ended
                self._clock = None
        return time.perf_counter(), cpu

    def sample_once(self) -> None:
        now = self._now()
        frame = sys._current_frames().get(self.thread_id)
        if frame is None:
            return
        owner, label = self._owner(frame)
        focus = self._focus(frame) if self.focus else None
        del frame
        last, self._last = self._last, now
        wall = now[0] - last[0] if last is not None else self.interval_s   # the time this look stands for
        cpu = now[1] - last[1] if last is not None and now[1] is not None and last[1] is not None else None
        self.samples += 1
        self.owners[owner] += wall
        if cpu is not None:
            self.owners_cpu[owner] += cpu
        if label is not None:
            self.functions[label] += wall
        if focus is not None:
            self.focus_functions[focus] += wall

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self) -> "StackSampler":
        if self.thread_id == threading.get_ident():
            self._driver = _loop_driver(sys._getframe(1))
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="stack-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> Dict[str, Any]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return self.summary()

    def summary(self) -> Dict[str, Any]:
        wall = sum(self.owners.values()) or 1.0
        cpu = sum(self.owners_cpu.values())
        out = {"samples": self.samples, "interval_s": self.interval_s, "wall_s": sum(self.owners.values()),
               "owners": {k: v / wall for k, v in self.owners.most_common()},
               "functions": [[k, v / wall] for k, v in self.functions.most_common(self.top)]}
        if self.focus:
            out["focus"] = self.focus
            out["focus_functions"] = [[k, v / wall] for k, v in self.focus_functions.most_common(self.top)]
        if cpu > 0:
            out["cpu_s"] = cpu
            out["owners_cpu"] = {k: v / cpu for k, v in self.owners_cpu.most_common()}
        return out


def owners_line(stacks: Optional[Dict[str, Any]], limit: int = 6, key: str = "owners") -> str:
    """`idle 52%, sglang 20%, agent_rl 15%, ...`: the owners' shares (`key`: owners = of wall time, owners_cpu = of
    the thread's CPU time), largest first."""
    if not stacks or not stacks.get("samples") or not stacks.get(key):
        return "–"
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(stacks[key].items())[:limit])


def _cpu_clock(thread_id: int) -> Optional[int]:
    """The CPU-time clock of thread `thread_id` (a `threading.get_ident()`), or None where the platform has none."""
    try:
        clock = time.pthread_getcpuclockid(thread_id)
        time.clock_gettime(clock)
        return clock
    except (AttributeError, OSError):
        return None
