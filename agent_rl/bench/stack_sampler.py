"""Where the event-loop thread's time goes: its Python stack, sampled by a timer signal (or from a helper thread).

With the in-process sglang engine our rollout loop and sglang's tokenizer manager share one thread; the benchmark's
`loop_cpu_frac` says how busy that thread is, not whose work keeps it busy. `StackSampler` looks at the thread's
stack every `interval_s` (no tracing hook, so the code under test runs at full speed; how it looks: below) and files
every sample under one owner:

* `idle`: the thread waits in the event loop's selector (nothing to run);
* the innermost frame that is not the standard library decides otherwise, by its top-level package
  (`agent_rl`, `sglang`, `zmq`, `tools`, `transformers`, `tokenizers`, `torch`, `aiohttp`, ...), so a `json.dumps`
  called by our code counts as ours and pyzmq's receive inside sglang's loop counts as `zmq`;
* `sampler`: a look that found the thread in this module (method `signal`: the sampler's own cost);
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

How it looks (`method` in the summary):

* `signal` (the main thread sampled from itself, where SIGALRM is free: the bench's event loop, sglang's scheduler):
  a kernel timer (`setitimer(ITIMER_REAL)`, SA_RESTART) interrupts the thread every `interval_s` of wall time and
  the handler, run on that thread at its next bytecode, files the frame it interrupted. The looks fall uniformly in
  time whatever the thread does, so each stands for the wall time since the previous one; `owners_cpu` splits the
  thread's CPU clock in the shares of the looks that found it busy (not in the selector). A look costs the thread
  ~9 us (0.4% of it at 2 ms, this CPU), counted in the figures it samples.
* `thread` (any other thread, or SIGALRM taken, e.g. by pytest-timeout): a helper thread looks with
  `sys._current_frames`, which needs the GIL. It gets the GIL when the sampled thread lets go of it, and a thread that
  runs Python lets go mostly in calls that release it (a socket send, a stat): the look lands there and collects all
  the Python work done since the previous look. In a loop that sends a request every few hundred microseconds nearly
  every look lands in the send: on the GPU host such looks put 45-73% of the event-loop thread's CPU in pyzmq's
  `send` (2026-12-05), and a thread doing 99% pure Python and 1% `os.stat` came out as 99.7% `os.stat` (this CPU).
  Each look weighs the wall time and the thread's CPU time (`time.pthread_getcpuclockid`, Linux) since the previous.

`summary()`: `owners` (shares of wall time), `owners_cpu` (shares of the thread's CPU time, where the platform can
read another thread's CPU clock) and the functions seen most (innermost non-library frame,
`agent_rl/rollout/chat.py:function`) with their shares of wall time; with `focus` (a module path prefix, e.g.
`sglang/`) also `focus_functions`: the innermost frame of that package on each stack (what of its own code was
running, or called the library that ran); with `stage_under` (a function-name prefix, e.g. `event_loop` for sglang's
scheduler loop) also `stages`: the chain of up to `STAGE_DEPTH` `focus` frames below the frame of that loop on each
stack, outermost first (`scheduler.py:get_next_batch_to_run > scheduler.py:get_new_batch_prefill`, decorators'
`wrapper` frames left out): which step of the loop the time went to, wherever inside it the thread was.
"""
from __future__ import annotations

import atexit
import gc
import inspect
import os
import signal
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
STAGE_DEPTH = 3
# frames of decorators between a loop step and the function it decorates (sglang's `profile_method`, torch's
# `no_grad`): not steps of their own
_WRAPPERS = frozenset({"wrapper", "wrapped", "inner", "decorate_context", "_fn"})


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
                 focus: Optional[str] = None, stage_under: Optional[str] = None):
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.interval_s = float(interval_s)
        self.top = int(top)
        self.owners: Counter = Counter()
        self.functions: Counter = Counter()
        self.focus, self.focus_functions = focus, Counter()
        self.stage_under, self.stages = stage_under, Counter()
        self.stage_leaves: Counter = Counter()   # `stage | innermost function`: what each stage was doing inside
        self.owners_cpu: Counter = Counter()
        self.samples = 0
        self.cpu_s = 0.0   # method signal: the thread's CPU clock over the looks (`owners_cpu` holds busy wall time)
        self._clock = _cpu_clock(self.thread_id)
        self._last: Optional[tuple] = None       # (wall, cpu) at the previous look
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._modules: Dict[str, Optional[str]] = {}
        self._driver = None   # uvloop: the frame below the loop's C code (`start`)
        self.method: Optional[str] = None   # "signal" / "thread" once started (module docstring)
        self._prev_handler: Any = None
        self._in_handler = False

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
        if code.co_filename == __file__:   # the thread was in this module (e.g. stopping the timer): the sampler's cost
            return "sampler", "sampler: taking a look"
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

    def _stage(self, frame) -> Optional[str]:
        """The `focus` frames below the innermost frame whose function name starts with `stage_under`, outermost
        first, up to STAGE_DEPTH, joined by ` > `; None when no such frame is on the stack (or none below it)."""
        chain = []
        f = frame
        while f is not None:
            name = f.f_code.co_name
            if name.startswith(self.stage_under):
                break
            if name not in _WRAPPERS:
                mod = self._module_of(f.f_code.co_filename)
                if mod is not None and mod.startswith(self.focus or ""):
                    chain.append(f"{mod.rsplit('/', 1)[-1]}:{name}")
            f = f.f_back
        if f is None or not chain:
            return None
        return " > ".join(chain[::-1][:STAGE_DEPTH])

    def _now(self) -> tuple:
        cpu = None
        if self._clock is not None:
            try:
                cpu = time.clock_gettime(self._clock)
            except OSError:          # the thread has ended
                self._clock = None
        return time.perf_counter(), cpu

    def sample_once(self, frame: Any = None) -> None:
        """One look at the thread (`frame`: the frame a timer signal interrupted, on the sampled thread itself)."""
        now = self._now()
        if frame is None:
            frame = sys._current_frames().get(self.thread_id)
        if frame is None:
            return
        owner, label = self._owner(frame)
        focus = self._focus(frame) if self.focus else None
        stage = self._stage(frame) if self.stage_under else None
        del frame
        last, self._last = self._last, now
        wall = now[0] - last[0] if last is not None else self.interval_s   # the time this look stands for
        cpu = now[1] - last[1] if last is not None and now[1] is not None and last[1] is not None else None
        self.samples += 1
        self.owners[owner] += wall
        if self.method == "signal":
            if owner == "uvloop":   # waiting or uvloop's own work (module docstring): what the thread's clock says
                self.owners_cpu[owner] += cpu or 0.0
            elif owner != "idle":   # busy looks' wall time; summary() scales it to the CPU clock
                self.owners_cpu[owner] += wall
            if cpu is not None:
                self.cpu_s += cpu
        elif cpu is not None:
            self.owners_cpu[owner] += cpu
        if label is not None:
            self.functions[label] += wall
        if focus is not None:
            self.focus_functions[focus] += wall
        if stage is not None:
            self.stages[stage] += wall
            if label is not None:
                self.stage_leaves[f"{stage} | {label}"] += wall

    def _on_alarm(self, signum: int, frame: Any) -> None:
        if self._in_handler:   # a signal that came while the handler ran: the next look weighs its time
            return
        self._in_handler = True
        try:
            self.sample_once(frame)
        finally:
            self._in_handler = False

    def start_timer(self) -> bool:
        """Sample by a kernel timer's signal (method `signal`) where this is the sampled thread, the main thread, and
        SIGALRM is neither handled nor armed; False (nothing changed) otherwise."""
        if (self.method is not None or self.thread_id != threading.get_ident()
                or threading.get_ident() != threading.main_thread().ident or not hasattr(signal, "setitimer")
                or signal.getsignal(signal.SIGALRM) is not signal.SIG_DFL
                or signal.getitimer(signal.ITIMER_REAL) != (0.0, 0.0)):
            return False
        self.method = "signal"
        self._prev_handler = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.siginterrupt(signal.SIGALRM, False)   # SA_RESTART: blocking calls in C libraries go on
        # disarmed before the interpreter's finalization puts SIGALRM back to its default, which ends the process
        atexit.register(self._stop_timer)
        signal.setitimer(signal.ITIMER_REAL, self.interval_s, self.interval_s)
        return True

    def _stop_timer(self) -> None:
        if self._prev_handler is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        _run_pending_handlers()   # a signal that came before the timer stopped runs here, with our handler
        signal.signal(signal.SIGALRM, self._prev_handler)
        self._prev_handler = None
        atexit.unregister(self._stop_timer)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self, timer: bool = True) -> "StackSampler":
        """Sampling from now: by a timer signal where `start_timer` can (and `timer`), else from a helper thread."""
        if self.thread_id == threading.get_ident():
            self._driver = _loop_driver(sys._getframe(1))
        if self.method is None and not (timer and self.start_timer()):
            self.method = "thread"
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="stack-sampler", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> Dict[str, Any]:
        if self.method == "signal":
            self._stop_timer()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        return self.summary()

    def summary(self) -> Dict[str, Any]:
        wall = sum(self.owners.values()) or 1.0
        cpu = self.cpu_s if self.method == "signal" else sum(self.owners_cpu.values())
        busy = sum(self.owners_cpu.values())
        out = {"samples": self.samples, "interval_s": self.interval_s, "method": self.method,
               "wall_s": sum(self.owners.values()),
               "owners": {k: v / wall for k, v in self.owners.most_common()},
               "functions": [[k, v / wall] for k, v in self.functions.most_common(self.top)]}
        if self.focus:
            out["focus"] = self.focus
            out["focus_functions"] = [[k, v / wall] for k, v in self.focus_functions.most_common(self.top)]
        if self.stage_under:
            out["stages"] = [[k, v / wall] for k, v in self.stages.most_common(self.top)]
            out["stage_leaves"] = [[k, v / wall] for k, v in self.stage_leaves.most_common(self.top)]
        if cpu > 0 and busy > 0:
            out["cpu_s"] = cpu
            out["owners_cpu"] = {k: v / busy for k, v in self.owners_cpu.most_common()}
        return out


def owners_line(stacks: Optional[Dict[str, Any]], limit: int = 6, key: str = "owners") -> str:
    """`idle 52%, sglang 20%, agent_rl 15%, ...`: the owners' shares (`key`: owners = of wall time, owners_cpu = of
    the thread's CPU time), largest first."""
    if not stacks or not stacks.get("samples") or not stacks.get(key):
        return "–"
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(stacks[key].items())[:limit])


def _run_pending_handlers() -> None:
    """A Python function call: the interpreter runs the signal handlers due on this thread before its first line."""


def _cpu_clock(thread_id: int) -> Optional[int]:
    """The CPU-time clock of thread `thread_id` (a `threading.get_ident()`), or None where the platform has none."""
    try:
        clock = time.pthread_getcpuclockid(thread_id)
        time.clock_gettime(clock)
        return clock
    except (AttributeError, OSError):
        return None
