"""The event-loop thread's stack samples: who owns each sample, and the bench's `--sample-stacks` output."""
import asyncio
import json
import os
import selectors
import signal
import sys
import sysconfig
import threading
import textwrap
import time
from types import SimpleNamespace

import pytest

from agent_rl.bench.stack_sampler import StackSampler, owners_line
from agent_rl.cli.main import main as cli_main


def _sample_thread(target, samples=40):
    """Run `target(stop)` in a thread and sample that thread `samples` times by hand."""
    stop, ready = threading.Event(), threading.Event()

    def run():
        ready.set()
        target(stop)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    ready.wait()
    s = StackSampler(thread_id=t.ident)
    try:
        while s.samples < samples:
            s.sample_once()
            stop.wait(0.001)
    finally:
        stop.set()
        t.join()
    return s.summary()


def _busy_in_this_file(stop):
    x = 0
    while not stop.is_set():
        x += sum(range(200))


def _waiting_in_a_selector(stop):
    sel = selectors.DefaultSelector()
    while not stop.is_set():
        sel.select(timeout=0.01)


def _stdlib_only(stop):
    text = "word " * 400
    while not stop.is_set():
        textwrap.wrap(text, 30)


def _stack(*where):
    """A fake stack, leaf first: (file, function) pairs; `_owner` reads f_code.co_filename / co_name and f_back."""
    frame = None
    for filename, name in reversed(where):
        frame = SimpleNamespace(f_code=SimpleNamespace(co_filename=filename, co_name=name), f_back=frame)
    return frame


def test_the_event_loops_own_work_is_stdlib_not_the_caller_of_run_until_complete():
    import agent_rl.cli.bench as driver
    import agent_rl.rollout.agent_loop as ours

    lib = sysconfig.get_paths()["stdlib"]
    loop = [(os.path.join(lib, "asyncio", "base_events.py"), "_run_once"),
            (os.path.join(lib, "asyncio", "base_events.py"), "run_forever"),
            (os.path.join(lib, "asyncio", "base_events.py"), "run_until_complete"), (driver.__file__, "run")]
    handle = (os.path.join(lib, "asyncio", "events.py"), "_run")
    s = StackSampler()
    # asyncio's scheduling (a stdlib callback run by the loop, the loop's own bookkeeping): not the driver's
    assert s._owner(_stack((os.path.join(lib, "heapq.py"), "heappop"), *loop))[0] == "stdlib"
    assert s._owner(_stack((os.path.join(lib, "asyncio", "futures.py"), "_set_result"), handle, *loop))[0] == "stdlib"
    # a coroutine of ours stepped by the loop, and the standard library called by our code: ours
    assert s._owner(_stack((ours.__file__, "run_trajectory"), handle, *loop)) == ("agent_rl", "agent_rl/rollout/agent_loop.py:run_trajectory")
    assert s._owner(_stack((os.path.join(lib, "json", "encoder.py"), "encode"), (ours.__file__, "run_trajectory"), handle,
                           *loop))[0] == "agent_rl"
    # an audit hook a library installed runs inside the C call that raised the event: the sample is its caller's
    hook = (os.path.join(os.path.dirname(os.path.dirname(json.__file__)), "site-packages", "filelock", "_api.py"),
            "_audit_fork_safety")
    assert s._owner(_stack(hook, (ours.__file__, "run_trajectory"), handle, *loop))[0] == "agent_rl"
    # outside any event loop the innermost non-library frame still owns the sample
    assert s._owner(_stack((os.path.join(lib, "heapq.py"), "heappop"), (driver.__file__, "run")))[0] == "agent_rl"


def test_a_look_inside_a_gc_callback_is_the_collection():
    """A gc.callbacks function runs at the end of a collection that held the GIL: the sample is the collector's."""
    import gc

    import agent_rl.rollout.agent_loop as ours
    from agent_rl.metrics.gc_watch import GcWatch

    watch = GcWatch().start(count_objects=False)
    try:
        leaf = _stack((ours.__file__, "run_trajectory"))
        leaf.f_code = GcWatch._callback.__code__   # the callback's real code, called from our frame
        assert StackSampler()._owner(leaf) == ("gc", "gc: garbage collection")
    finally:
        watch.stop()
    assert StackSampler()._owner(leaf)[0] == "agent_rl"   # no longer a collector callback: the file's owner
    assert watch._callback not in gc.callbacks


def test_busy_code_is_owned_by_its_package_and_function():
    s = _sample_thread(_busy_in_this_file)
    label, share = s["functions"][0]
    # the path is taken from the longest sys.path entry holding the file (pytest may put tests/bench itself there)
    assert label.endswith("test_stack_sampler.py:_busy_in_this_file") and share > 0.8, s
    top = label.rsplit(":", 1)[0].split("/", 1)[0]
    assert s["owners"][top[:-3] if top.endswith(".py") else top] > 0.8
    if "owners_cpu" in s:           # Linux: the busy thread's own CPU clock, all of it in this file's code
        assert s["owners_cpu"][top[:-3] if top.endswith(".py") else top] > 0.8 and s["cpu_s"] > 0


def _decorated(fn):
    def wrapper(*a):   # a decorator's frame (sglang's profile_method): not a step of its own
        return fn(*a)
    return wrapper


@_decorated
def _step_outer(sampler):
    return _step_inner(sampler)


def _step_inner(sampler):
    return _step_leaf(sampler)


def _step_leaf(sampler):
    sampler.sample_once(sys._getframe())
    return 1


def event_loop_test(sampler):
    _step_outer(sampler)
    sampler.sample_once(sys._getframe())   # in the loop itself: no step


def test_stages_are_the_steps_below_the_loop_outermost_first():
    s = StackSampler(focus="", stage_under="event_loop")
    event_loop_test(s)
    stages = dict(s.summary()["stages"])
    assert list(stages) == ["test_stack_sampler.py:_step_outer > test_stack_sampler.py:_step_inner > "
                            "test_stack_sampler.py:_step_leaf"], stages   # the wrapper left out, the loop's own look too
    leaves = dict(s.summary()["stage_leaves"])                 # each stage with the innermost function it was in
    assert list(leaves) == [f"{list(stages)[0]} | test_stack_sampler.py:_step_leaf"], leaves
    s.sample_once(sys._getframe())   # no loop on this stack
    assert len(s.stages) == 1 and "stages" not in StackSampler().summary()


def test_each_look_stands_for_the_time_since_the_last():
    """A look that had to wait for the GIL (the thread was running Python) weighs the whole wait: counting looks
    would under-weight busy code (here 1 look in 4 = 25%; by time 7 ms of 13 = 54%; by CPU all of it)."""
    s = StackSampler()
    times = iter([(0.0, 0.0), (0.002, 0.0), (0.009, 0.007), (0.011, 0.007)])
    owners = iter([("idle", None), ("idle", None), ("agent_rl", "agent_rl/x.py:f"), ("idle", None)])
    s._now = lambda: next(times)
    s._owner = lambda frame: next(owners)
    for _ in range(4):
        s.sample_once()
    sm = s.summary()
    assert sm["samples"] == 4 and abs(sm["wall_s"] - 0.013) < 1e-12       # the first look stands for one interval
    assert abs(sm["owners"]["agent_rl"] - 7 / 13) < 1e-9 and abs(sm["functions"][0][1] - 7 / 13) < 1e-9
    assert sm["owners_cpu"] == {"agent_rl": 1.0, "idle": 0.0} and abs(sm["cpu_s"] - 0.007) < 1e-12
    assert owners_line(sm, key="owners_cpu") == "agent_rl 100%, idle 0%"


def _pure_python():
    x = 0
    for i in range(3000):
        x += i * i
    return x


def _python_with_brief_gil_releases(seconds):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        _pure_python()
        os.stat(".")   # lets go of the GIL for a microsecond or two, as a socket send does


@pytest.mark.timeout(120, method="thread")   # pytest-timeout's own method takes SIGALRM
def test_the_main_thread_is_sampled_by_a_timer_signal_uniformly_in_time():
    """A helper thread's looks land where the thread lets go of the GIL (here the stat, ~1% of the time, took 99% of
    the looks on a CPU); a timer signal's land anywhere: the Python work owns nearly all of the time."""
    s = StackSampler().start()
    assert s.method == "signal" and signal.getsignal(signal.SIGALRM) == s._on_alarm
    _python_with_brief_gil_releases(1.0)
    sm = s.stop()
    assert signal.getsignal(signal.SIGALRM) is signal.SIG_DFL and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    shares = {label.rsplit(":", 1)[1]: share for label, share in sm["functions"]}
    assert sm["method"] == "signal" and sm["samples"] > 100, sm
    assert shares.get("_pure_python", 0) > 0.8 and shares.get("_python_with_brief_gil_releases", 0) < 0.15, sm
    assert sm["cpu_s"] > 0.5 and abs(sum(sm["owners_cpu"].values()) - 1) < 1e-9
    assert sm["owners"].get("sampler", 0) < 0.1      # a look that lands in the handler itself is the sampler's cost
    assert not any(label.startswith("agent_rl/bench/stack_sampler.py") for label, _ in sm["functions"]), sm


@pytest.mark.timeout(120, method="thread")
def test_the_timer_signal_finds_the_selector_idle():
    sel = selectors.DefaultSelector()
    s = StackSampler().start()
    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        sel.select(timeout=0.05)
    sm = s.stop()
    assert sm["method"] == "signal" and sm["owners"].get("idle", 0) > 0.8, sm


def test_a_taken_sigalrm_or_another_thread_is_sampled_from_a_helper_thread():
    prev = signal.getsignal(signal.SIGALRM)   # pytest-timeout's handler here, or a stand-in
    mine = (lambda signum, frame: None) if prev in (signal.SIG_DFL, None) else prev
    signal.signal(signal.SIGALRM, mine)
    try:
        s = StackSampler().start()
        assert s.method == "thread" and signal.getsignal(signal.SIGALRM) is mine
        assert s.stop()["method"] == "thread" and signal.getsignal(signal.SIGALRM) is mine
    finally:
        signal.signal(signal.SIGALRM, prev)
    box = {}
    t = threading.Thread(target=lambda: box.update(ok=StackSampler().start_timer()))
    t.start()
    t.join()
    assert box["ok"] is False      # signal handlers run on the main thread only


def test_timer_looks_weigh_wall_time_and_split_the_cpu_clock_by_the_busy_ones():
    """Uniform looks: a busy look stands for its interval of work; the thread's CPU clock is split in those shares
    (a look after an idle stretch does not collect the CPU spent before it)."""
    s = StackSampler()
    s.method = "signal"
    times = iter([(0.0, 0.0), (0.002, 0.002), (0.004, 0.002), (0.006, 0.004), (0.008, 0.006)])
    owners = iter([("agent_rl", "agent_rl/x.py:f"), ("agent_rl", "agent_rl/x.py:f"), ("idle", None),
                   ("zmq", "zmq/sugar/socket.py:send"), ("agent_rl", "agent_rl/x.py:f")])
    s._now = lambda: next(times)
    s._owner = lambda frame: next(owners)
    for _ in range(5):
        s.sample_once(frame=object())
    sm = s.summary()
    assert abs(sm["cpu_s"] - 0.006) < 1e-12 and sm["owners"]["idle"] == 0.2
    assert sm["owners_cpu"] == {"agent_rl": 0.75, "zmq": 0.25}


def test_waiting_in_the_selector_is_idle():
    s = _sample_thread(_waiting_in_a_selector)
    assert s["owners"].get("idle", 0) > 0.8, s


def test_standard_library_only_stacks_are_stdlib():
    # textwrap is called straight from threading.run: no frame outside the standard library but this file's
    # `run` at the bottom, which is the innermost non-library frame
    s = _sample_thread(_stdlib_only)
    assert s["functions"][0][0].endswith("test_stack_sampler.py:_stdlib_only") and "stdlib" not in s["owners"], s
    bare = StackSampler()
    frame = type("F", (), {})()
    frame.f_code = textwrap.wrap.__code__
    frame.f_back = None
    assert bare._owner(frame) == ("stdlib", "stdlib/textwrap.py:wrap")


def test_owners_line_and_empty_summary():
    assert owners_line(None) == "–" and owners_line(StackSampler().summary()) == "–"
    s = StackSampler()
    s.samples, s.owners["idle"], s.owners["agent_rl"] = 4, 3, 1
    assert owners_line(s.summary()) == "idle 75%, agent_rl 25%"


@pytest.mark.timeout(300, method="thread")   # SIGALRM free: the bench's loop thread is sampled by a timer signal
def test_bench_rollout_sample_stacks(tmp_path, tiny_model_path):
    args = ["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path,
            "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "8", "--modes", "async",
            "--steps", "1", "--no-ceiling", "--no-progress"]
    assert cli_main(args + ["--out", str(tmp_path / "a"), "--sample-stacks"]) == 0
    (m,) = json.load(open(tmp_path / "a" / "rollout_bench.json"))["modes"]
    st = m["loop_stacks"]
    assert st["samples"] > 0 and abs(sum(st["owners"].values()) - 1) < 1e-9
    assert st["owners"].get("idle", 0) > 0      # the simulated engine sleeps: the loop waits in its selector
    assert all(label.rsplit(":", 1)[0].split("/", 1)[0].removesuffix(".py") in st["owners"] for label, _ in st["functions"])
    assert st["method"] == "signal" and signal.getsignal(signal.SIGALRM) is signal.SIG_DFL
    assert "The event-loop thread's time (stack samples every 2 ms, by a timer signal" in open(tmp_path / "a" / "summary.md").read()
    assert cli_main(args + ["--out", str(tmp_path / "b")]) == 0
    (m,) = json.load(open(tmp_path / "b" / "rollout_bench.json"))["modes"]
    assert "loop_stacks" not in m


def _loop_owners(loop):
    """The owners of a sampled wait on `loop` (a sleep in a coroutine), sampled from a helper thread."""
    async def wait():
        s = StackSampler(interval_s=0.002).start()   # from a coroutine on the sampled thread, as the bench does
        await asyncio.sleep(0.3)
        return s.stop()

    try:
        return loop.run_until_complete(wait())["owners"]
    finally:
        loop.close()


def test_a_wait_on_uvloop_is_the_loops_not_the_caller_of_run_until_complete():
    pytest.importorskip("uvloop")
    from agent_rl.rollout.event_loop import new_event_loop

    owners = _loop_owners(new_event_loop("uvloop"))   # the caller (this test) is on top of the stack: not its owner
    assert owners.get("uvloop", 0) > 0.9, owners
    owners = _loop_owners(new_event_loop("asyncio"))  # asyncio's loop waits in its selector: idle, as before
    assert owners.get("idle", 0) > 0.9 and "uvloop" not in owners, owners


def test_bench_rollout_on_uvloop(tmp_path, tiny_model_path):
    pytest.importorskip("uvloop")
    assert cli_main(["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path,
                     "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "8", "--modes", "async",
                     "--tool-latency", "0.05",   # waits of 50 ms: the loop is idle for many looks, whatever the CPU
                     "--steps", "1", "--no-ceiling", "--no-progress", "--event-loop", "uvloop", "--sample-stacks",
                     "--out", str(tmp_path)]) == 0
    res = json.load(open(tmp_path / "rollout_bench.json"))
    assert res["event_loop"] == "uvloop"
    owners = res["modes"][0]["loop_stacks"]["owners"]
    assert owners.get("uvloop", 0) > 0.5 and "idle" not in owners, owners   # the tool waits are uvloop's
    assert "agent_rl/cli/bench.py" not in str(res["modes"][0]["loop_stacks"]["functions"])   # not the driver's
    assert "- engine: sim, model: " in (md := open(tmp_path / "summary.md").read()) and ", event loop uvloop" in md


def test_a_package_outside_sys_path_is_named_by_its_package(tmp_path, monkeypatch):
    """An editable install reaches its source through an import finder, not a sys.path entry: its files are still
    its package's (`agent_rl/...`), not `other/...`."""
    import importlib.util
    import sys

    from agent_rl.bench.stack_sampler import _module

    pkg = tmp_path / "src" / "editpkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "work.py").write_text("def f():\n    return 1\n")
    spec = importlib.util.spec_from_file_location("editpkg", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    assert _module(str(pkg / "sub" / "work.py")) == "other/work.py"   # not imported: nothing names it
    monkeypatch.setitem(sys.modules, "editpkg", mod)
    assert str(tmp_path) not in " ".join(sys.path)
    assert _module(str(pkg / "sub" / "work.py")) == "editpkg/sub/work.py"
