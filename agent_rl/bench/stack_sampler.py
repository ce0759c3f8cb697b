"""Where the event-loop thread's time goes: its Python stack sampled from a helper thread.

With the in-process sglang engine our rollout loop and sglang's tokenizer manager share one thread; the benchmark's
`loop_cpu_frac` says how busy that thread is, not whose work keeps it busy. `StackSampler` looks at the thread's
stack every `interval_s` (`sys._current_frames`, no tracing hook, so the code under test runs at full speed; each
look costs the sampled thread one GIL hand-over) and files every sample under one owner:

* `idle`: the thread waits in the event loop's selector (nothing to run);
* the innermost frame that is not the standard library decides otherwise, by its top-level package
  (`agent_rl`, `sglang`, `zmq`, `tools`, `transformers`, `tokenizers`, `torch`, `aiohttp`, ...), so a `json.dumps`
  called by our code counts as ours and pyzmq's receive inside sglang's loop counts as `zmq`;
* `stdlib`: only standard-library frames (on the event-loop thread: asyncio's own scheduling, task steps, callbacks).

`summary()` gives each owner's share of the samples and the functions seen most (innermost non-library frame,
`agent_rl/rollout/chat.py:function`) with their shares; samples are counts, so shares are of wall time, not of CPU time.
"""
from __future__ import annotations

import os
import sys
import sysconfig
import threading
from collections import Counter
from typing import Any, Dict, Optional

_STDLIB = tuple({os.path.realpath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")})
_SELECTOR_FILE = os.sep + "selectors.py"


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
    return path[len(best):].replace(os.sep, "/") if best else "other/" + os.path.basename(path)


class StackSampler:
    def __init__(self, thread_id: Optional[int] = None, interval_s: float = 0.002, top: int = 15):
        self.thread_id = threading.get_ident() if thread_id is None else thread_id
        self.interval_s = float(interval_s)
        self.top = int(top)
        self.owners: Counter = Counter()
        self.functions: Counter = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._modules: Dict[str, Optional[str]] = {}

    def _owner(self, frame) -> tuple:
        """(owner, function label) of one stack, leaf first."""
        code = frame.f_code
        if code.co_filename.endswith(_SELECTOR_FILE) and code.co_name == "select":
            return "idle", None
        f = frame
        while f is not None:
            name = f.f_code.co_filename
            mod = self._modules.get(name, False)
            if mod is False:
                mod = self._modules[name] = _module(name)
            if mod is not None:
                top = mod.split("/", 1)[0]
                return (top[:-3] if top.endswith(".py") else top), f"{mod}:{f.f_code.co_name}"
            f = f.f_back
        return "stdlib", f"stdlib/{os.path.basename(code.co_filename)}:{code.co_name}"

    def sample_once(self) -> None:
        frame = sys._current_frames().get(self.thread_id)
        if frame is None:
            return
        owner, label = self._owner(frame)
        del frame
        self.samples += 1
        self.owners[owner] += 1
        if label is not None:
            self.functions[label] += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample_once()

    def start(self) -> "StackSampler":
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
        n = max(self.samples, 1)
        return {"samples": self.samples, "interval_s": self.interval_s,
                "owners": {k: v / n for k, v in self.owners.most_common()},
                "functions": [[k, v / n] for k, v in self.functions.most_common(self.top)]}


def owners_line(stacks: Optional[Dict[str, Any]], limit: int = 6) -> str:
    """`idle 52%, sglang 20%, agent_rl 15%, ...`: the owners' shares, largest first."""
    if not stacks or not stacks.get("samples"):
        return "–"
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(stacks["owners"].items())[:limit])
