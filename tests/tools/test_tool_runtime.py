"""ToolRuntime: validation, faults, timeouts, cancellation, limits, retries, metrics."""
import asyncio
import json
import threading
import time

import pytest

from agent_rl.tool_runtime import bounded as bounded_mod
from agent_rl.tool_runtime.base import BaseTool, ToolResponse, TransientToolError
from agent_rl.tool_runtime.runtime import ToolRuntime
from agent_rl.tool_runtime.bounded import CANCEL_GRACE_S
from tool_fakes import IgnoresCancel, ScriptedTool, fn_schema, hang_forever

pytestmark = pytest.mark.timeout(30)

RICH_SCHEMA = fn_schema("rich", {
    "mode": {"type": "string", "enum": ["fast", "slow"]},
    "count": {"type": "integer", "minimum": 1},
    "items": {"type": "array", "items": {"type": "number"}},
    "options": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["m", "km"]}}, "required": ["unit"]},
}, required=["mode"])


async def run_one(tool, name=None, arguments="{}", tools_kwargs=None, **rt_kwargs):
    rt = ToolRuntime([tool], **rt_kwargs)
    async with rt.session("t0", tools_kwargs or {}) as s:
        rec = await s.call(name or tool.name, arguments)
    return rt, rec


async def test_ok_call_with_str_and_dict_arguments_and_kwargs():
    tool = ScriptedTool("echo", schema=fn_schema("echo", {"x": {"type": "integer"}}, ["x"]))
    rt = ToolRuntime([tool])
    assert rt.names == ["echo"] and rt.schemas[0]["function"]["name"] == "echo"
    kwargs = {"echo": {"create_kwargs": {"seed": 7}, "execute_kwargs": {"flag": "on"}}}
    async with rt.session("traj-1", kwargs) as s:
        r1 = await s.call("echo", '{"x": 1}')
        r2 = await s.call("echo", {"x": 2})
    assert (r1.status, r2.status) == ("ok", "ok")
    assert r1.observation == "echo {'x': 1}" and r1.arguments == {"x": 1} and r1.step_reward == 0.5
    assert r1.metrics == {"ok": True} and r1.latency_s >= 0
    iid = tool.created[0]
    assert iid.startswith("traj-1/echo/") and tool.create_kwargs[iid] == {"seed": 7}
    assert tool.executed[0]["flag"] == "on" and tool.released == [iid]
    snap = rt.metrics.snapshot()
    assert snap["tools/echo/calls"] == 2 and snap["tools/calls"] == 2 and snap["tools/echo/ok_mean"] == 1.0
    assert snap["tools/echo/latency_p50_s"] <= snap["tools/echo/latency_p99_s"]


async def test_tool_raises_becomes_error_observation():
    async def boom(*a, **k):
        raise ValueError("disk on fire")
    rt, rec = await run_one(ScriptedTool("boom", boom))
    assert rec.status == "exception" and rec.observation.startswith("Error:") and "disk on fire" in rec.observation
    assert rt.metrics.snapshot()["tools/boom/errors/exception"] == 1


async def test_tool_hangs_forever():
    t0 = time.perf_counter()
    rt, rec = await run_one(ScriptedTool("slow", hang_forever, timeout_s=0.1))
    assert rec.status == "timeout" and rec.observation.startswith("Error:") and "timed out" in rec.observation
    assert time.perf_counter() - t0 < 2.0
    assert rt.metrics.snapshot()["tools/errors/timeout"] == 1


async def test_tool_that_swallows_cancellation_is_abandoned():
    body = IgnoresCancel()
    t0 = time.perf_counter()
    try:
        rt, rec = await run_one(ScriptedTool("stubborn", body, timeout_s=0.1))
        assert rec.status == "timeout" and body.cancels >= 1
        assert time.perf_counter() - t0 < 0.1 + CANCEL_GRACE_S + 1.5
    finally:
        body.stop()
    await asyncio.sleep(0.05)


async def test_slow_tool_times_out():
    async def slow(*a, **k):
        await asyncio.sleep(5)
        return "late", 0.0, {}
    t0 = time.perf_counter()
    _, rec = await run_one(ScriptedTool("slow", slow, timeout_s=0.1))
    assert rec.status == "timeout" and time.perf_counter() - t0 < 2.0


async def test_malformed_json_arguments():
    tool = ScriptedTool("echo")
    _, rec = await run_one(tool, arguments='{"x": 1,,}')
    assert rec.status == "invalid_arguments" and rec.observation.startswith("Error:")
    assert "not valid JSON" in rec.observation and rec.arguments == '{"x": 1,,}' and not tool.executed
    _, rec = await run_one(ScriptedTool("echo"), arguments="[1, 2]")
    assert rec.status == "invalid_arguments" and "must be a JSON object, got array" in rec.observation


@pytest.mark.parametrize("args, needle", [
    ({}, "'mode' is a required property"),
    ({"mode": "medium"}, "field 'mode': 'medium' is not one of ['fast', 'slow']"),
    ({"mode": "fast", "count": 0}, "field 'count': 0 is less than the minimum of 1"),
    ({"mode": "fast", "items": [1, "two"]}, "field 'items[1]': 'two' is not of type 'number'"),
    ({"mode": "fast", "options": {"unit": "mile"}}, "field 'options.unit': 'mile' is not one of ['m', 'km']"),
    ({"mode": "fast", "options": {}}, "field 'options': 'unit' is a required property"),
])
async def test_schema_violation_names_field(args, needle):
    tool = ScriptedTool("rich", schema=RICH_SCHEMA)
    rt, rec = await run_one(tool, arguments=json.dumps(args))
    assert rec.status == "invalid_arguments", rec
    assert rec.observation.startswith("Error: invalid arguments for rich:") and needle in rec.observation, rec.observation
    assert not tool.executed and rt.metrics.snapshot()["tools/rich/errors/invalid_arguments"] == 1


async def test_unknown_tool():
    rt, rec = await run_one(ScriptedTool("echo"), name="nope")
    assert rec.status == "unknown_tool" and rec.observation.startswith("Error: unknown tool 'nope'")
    assert "Available tools: echo" in rec.observation
    snap = rt.metrics.snapshot()
    assert snap["tools/errors/unknown_tool"] == 1 and "tools/nope/calls" not in snap


async def test_huge_response_is_truncated():
    async def huge(*a, **k):
        return ToolResponse(text="x" * 1_000_000), 0.0, {}
    t0 = time.perf_counter()
    rt, rec = await run_one(ScriptedTool("huge", huge), max_tool_response_tokens=100)
    assert rec.status == "ok" and len(rec.observation) <= 100 and "...[truncated" in rec.observation
    assert rec.metrics["truncated_tokens"] > 999_000 and rt.metrics.snapshot()["tools/huge/truncated"] == 1
    assert time.perf_counter() - t0 < 2


async def test_non_utf8_bytes_are_decoded_with_replacement():
    async def raw(*a, **k):
        return b"caf\xc3\xa9 \xff\xfe ok", 0.0, {}
    rt, rec = await run_one(ScriptedTool("raw", raw))
    assert rec.status == "ok" and rec.observation == "café \ufffd\ufffd ok"
    assert rt.metrics.snapshot()["tools/raw/errors/non_utf8"] == 1


@pytest.mark.parametrize("result, needle", [
    ((None, 0.0, {}), "no text"),
    ((ToolResponse(text=None), 0.0, {}), "no text"),
    ((42, 0.0, {}), "text must be str"),
    ("just a string", "execute must return"),
    (None, "execute must return"),
])
async def test_bad_responses(result, needle):
    async def bad(*a, **k):
        return result
    rt, rec = await run_one(ScriptedTool("bad", bad))
    assert rec.status == "bad_response" and rec.observation.startswith("Error:") and needle in rec.observation


async def test_bad_step_reward_is_zeroed_and_counted():
    async def nan_reward(*a, **k):
        return "fine", float("nan"), {}
    rt, rec = await run_one(ScriptedTool("nanr", nan_reward))
    assert rec.status == "ok" and rec.step_reward == 0.0
    assert rt.metrics.snapshot()["tools/nanr/errors/bad_step_reward"] == 1


async def test_slow_create_fails_the_tool_but_not_the_session():
    async def slow_create(*a, **k):
        await asyncio.sleep(10)
    tool = ScriptedTool("sc", create=slow_create, create_timeout_s=0.1)
    other = ScriptedTool("fine")
    rt = ToolRuntime([tool, other])
    t0 = time.perf_counter()
    async with rt.session("t", {}) as s:
        assert "timed out" in s.create_errors["sc"]
        rec = await s.call("sc", {})
        ok = await s.call("fine", {})
        rewards = await s.calc_rewards()
    assert time.perf_counter() - t0 < 2
    assert rec.status == "create_failed" and rec.observation.startswith("Error:") and not tool.executed
    assert ok.status == "ok" and rewards == {"sc": 0.0, "fine": 1.0}
    assert len(tool.released) == 1 and len(other.released) == 1
    assert rt.metrics.snapshot()["tools/sc/errors/create_error"] == 1


async def test_create_raising_and_bad_tools_kwargs():
    async def bad_create(*a, **k):
        raise KeyError("ground_truth")
    tool = ScriptedTool("bc", create=bad_create)
    other = ScriptedTool("kw")
    rt = ToolRuntime([tool, other])
    async with rt.session("t", {"kw": {"create_kwargs": "not a dict"}}) as s:
        assert "KeyError" in s.create_errors["bc"] and "create_kwargs must be a mapping" in s.create_errors["kw"]
        assert (await s.call("kw", {})).status == "create_failed"
    assert tool.released and other.released and not other.created


async def test_failing_and_hanging_release_are_counted_never_raised():
    async def bad_release(*a, **k):
        raise RuntimeError("release broke")
    bad = ScriptedTool("br", release=bad_release)
    hung = ScriptedTool("hr", release=hang_forever, release_timeout_s=0.1)
    rt = ToolRuntime([bad, hung])
    t0 = time.perf_counter()
    async with rt.session("t", {}) as s:
        await s.call("br", {})
    assert time.perf_counter() - t0 < 2
    snap = rt.metrics.snapshot()
    assert snap["tools/br/errors/release_failed"] == 1 and snap["tools/hr/errors/release_failed"] == 1
    assert len(bad.released) == 1 and len(hung.released) == 1


async def test_release_runs_on_exception_in_body():
    tool = ScriptedTool("e")
    rt = ToolRuntime([tool])
    with pytest.raises(KeyError):
        async with rt.session("t", {}) as s:
            await s.call("e", {})
            raise KeyError("agent loop bug")
    assert tool.released == tool.created and len(tool.released) == 1


async def test_release_runs_once_on_cancellation_during_call():
    started = asyncio.Event()

    async def wait(*a, **k):
        started.set()
        await asyncio.Event().wait()
    tool = ScriptedTool("w", wait, timeout_s=60)
    rt = ToolRuntime([tool])

    async def trajectory():
        async with rt.session("t", {}) as s:
            await s.call("w", {})

    task = asyncio.create_task(trajectory())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(tool.released) == 1 and tool.released == tool.created
    assert rt.metrics.snapshot()["tools/w/errors/cancelled"] == 1
    await rt.close()


async def test_release_runs_on_cancellation_during_create():
    started = asyncio.Event()

    async def slow_create(*a, **k):
        started.set()
        await asyncio.sleep(60)
    slow = ScriptedTool("slowc", create=slow_create, create_timeout_s=60)
    fast = ScriptedTool("fastc")
    rt = ToolRuntime([slow, fast])

    async def trajectory():
        async with rt.session("t", {}):
            pytest.fail("body must not run")

    task = asyncio.create_task(trajectory())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(slow.released) == 1 and len(fast.released) == 1


async def test_release_continues_when_cancelled_while_releasing():
    gate = asyncio.Event()
    finished = []

    async def slow_release(tool, iid, **k):
        await gate.wait()
        finished.append(iid)
    tool = ScriptedTool("sr", release=slow_release, release_timeout_s=10)
    rt = ToolRuntime([tool])

    async def trajectory():
        async with rt.session("t", {}):
            pass

    task = asyncio.create_task(trajectory())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    gate.set()
    await rt.close()
    assert finished == tool.created


async def test_calls_per_second_is_time_based_and_shared_across_runtimes():
    starts = []

    async def quick(*a, **k):
        starts.append(time.monotonic())
        return "ok", 0.0, {}
    rate = 20.0
    # two runtimes, one process-wide limiter for the tool name
    rts = [ToolRuntime([ScriptedTool("ratelimited_t1", quick, calls_per_second=rate)]) for _ in range(2)]

    async def one(rt, i):
        async with rt.session(f"t{i}", {}) as s:
            assert (await s.call("ratelimited_t1", {})).status == "ok"

    t0 = time.monotonic()
    await asyncio.gather(*(one(rts[i % 2], i) for i in range(10)))
    starts.sort()
    # the k-th call may not start before its slot: t0 + k / rate (burst 1)
    for k, t in enumerate(starts):
        assert t >= t0 + k / rate - 0.005, (k, t - t0)
    assert starts[-1] - t0 >= 9 / rate - 0.005


async def run_concurrently(config, n_runtimes=2, calls=8):
    """`calls` calls of a slow tool named after `config` spread over `n_runtimes` runtimes -> max in flight
    over all of them (no timing assertion: the count is taken inside the fake tool)."""
    counter = {"now": 0, "max": 0}

    async def counted(*a, **k):
        counter["now"] += 1
        counter["max"] = max(counter["max"], counter["now"])
        await asyncio.sleep(0.01)
        counter["now"] -= 1
        return "ok", 0.0, {}
    name = "verl_" + "_".join(f"{k}_{v}" for k, v in config.items())
    rts = [ToolRuntime([ScriptedTool(name, counted, max_concurrency=None, **config)]) for _ in range(n_runtimes)]

    async def one(i):
        async with rts[i % n_runtimes].session(f"t{i}", {}) as s:
            return (await s.call(name, {})).status
    assert await asyncio.gather(*(one(i) for i in range(calls))) == ["ok"] * calls
    return counter["max"]


async def test_verl_rate_limit_caps_concurrent_calls_across_runtimes():
    # verl's rate_limit is a semaphore (TokenBucketWorker), not calls per second
    assert await run_concurrently({"rate_limit": 2}) == 2
    assert await run_concurrently({"rate_limit": 2, "enable_global_rate_limit": True}, n_runtimes=1, calls=3) == 2
    # verl: enable_global_rate_limit false means no rate limiter at all
    assert await run_concurrently({"rate_limit": 2, "enable_global_rate_limit": False}) == 8


async def test_concurrency_cap():
    async def slowish(*a, **k):
        await asyncio.sleep(0.02)
        return "ok", 0.0, {}
    tool = ScriptedTool("capped", slowish, max_concurrency=2)
    rt = ToolRuntime([tool])
    async with rt.session("t", {}) as s:
        recs = await asyncio.gather(*(s.call("capped", {}) for _ in range(8)))
    assert all(r.status == "ok" for r in recs) and tool.max_in_flight == 2


async def test_transient_errors_are_retried_with_backoff():
    attempts = []

    async def flaky(*a, **k):
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise TransientToolError("503 try again")
        return "finally", 0.0, {}
    t0 = time.monotonic()
    rt, rec = await run_one(ScriptedTool("flaky", flaky, max_retries=3, retry_backoff_s=0.05))
    assert rec.status == "ok" and rec.observation == "finally" and rec.metrics["retries"] == 2
    assert attempts[1] - attempts[0] >= 0.045 and attempts[2] - attempts[1] >= 0.095  # 0.05, then doubled
    assert time.monotonic() - t0 >= 0.14 and rt.metrics.snapshot()["tools/flaky/retries"] == 2


async def test_transient_retries_exhausted_and_plain_errors_not_retried():
    calls = []

    async def always(*a, **k):
        calls.append(1)
        raise TransientToolError("still down")
    _, rec = await run_one(ScriptedTool("down", always, max_retries=1, retry_backoff_s=0.01))
    assert rec.status == "exception" and "after 2 attempts" in rec.observation and len(calls) == 2
    calls.clear()

    async def fatal(*a, **k):
        calls.append(1)
        raise ValueError("bad input")
    _, rec = await run_one(ScriptedTool("fatal", fatal, max_retries=3, retry_backoff_s=0.01))
    assert rec.status == "exception" and len(calls) == 1


async def test_calc_rewards_errors_become_zero():
    async def broken(*a, **k):
        raise RuntimeError("no reward")

    async def weird(*a, **k):
        return "high"
    rt = ToolRuntime([ScriptedTool("a"), ScriptedTool("b", calc_reward=broken), ScriptedTool("c", calc_reward=weird)])
    async with rt.session("t", {}) as s:
        assert await s.calc_rewards() == {"a": 1.0, "b": 0.0, "c": 0.0}
    snap = rt.metrics.snapshot()
    assert snap["tools/b/errors/calc_reward_failed"] == 1 and snap["tools/c/errors/calc_reward_failed"] == 1


async def test_metrics_record_error_and_reset():
    rt, _ = await run_one(ScriptedTool("m"))
    rt.metrics.record_error(None, "parse_error")
    rt.metrics.record_error("m", "parse_error")
    snap = rt.metrics.snapshot(reset=True)
    assert snap["tools/errors/parse_error"] == 2 and snap["tools/m/errors/parse_error"] == 1 and snap["tools/m/calls"] == 1
    assert rt.metrics.snapshot() == {"tools/calls": 0}


async def test_session_misuse_is_a_clear_error():
    rt = ToolRuntime([ScriptedTool("x")])
    s = rt.session("t", {})
    with pytest.raises(RuntimeError, match="outside"):
        await s.call("x", {})
    with pytest.raises(ValueError, match="truncate_side"):
        ToolRuntime([], truncate_side="left")


def test_rate_limiter_burst_with_fake_clock():
    from agent_rl.tool_runtime.limits import RateLimiter

    now = [100.0]
    lim = RateLimiter(rate=10, burst=3, clock=lambda: now[0])
    assert [round(lim.reserve(), 6) for _ in range(5)] == [0.0, 0.0, 0.0, 0.1, 0.2]
    now[0] += 10.0            # idle time refills the burst, no more
    assert [round(lim.reserve(), 6) for _ in range(4)] == [0.0, 0.0, 0.0, 0.1]
    with pytest.raises(ValueError):
        RateLimiter(rate=0)



# -- huge responses (issue 19, item 8) ------------------------------------------------------------------------------

class GatedTokenizer:
    """Wraps a real tokenizer. `encode` of a text longer than `block_over` characters waits, in whatever thread
    calls it, until `gate` is set (at most 10 s, then `gate_timed_out`); the longest text encoded is recorded."""

    def __init__(self, tok, block_over=1000):
        self.tok, self.block_over = tok, block_over
        self.gate, self.blocked = threading.Event(), threading.Event()
        self.gate_timed_out = False
        self.max_len = 0
        self.threads = set()

    def get_vocab(self):
        return self.tok.get_vocab()

    def encode(self, text, add_special_tokens=False):
        self.max_len = max(self.max_len, len(text))
        if len(text) > self.block_over:
            self.threads.add(threading.get_ident())
            self.blocked.set()
            if not self.gate.wait(10):
                self.gate_timed_out = True
        return self.tok.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids):
        return self.tok.decode(ids)


BIG = "lorem ipsum dolor " * 1_200_000      # 21.6 MB


async def big_response(*a, **k):
    return ToolResponse(text=BIG), 0.0, {}


async def test_huge_response_does_not_delay_a_hanging_calls_timeout(tokenizer):
    """20 MB from one tool while another call (timeout 1 s) hangs. Tokenizing the big response blocks until the
    hanging call has been reported as timed out: that only happens if tokenization runs off the event loop and
    the loop keeps running its timers meanwhile (no wall-clock assertion: the order is what is checked)."""
    spy = GatedTokenizer(tokenizer)
    rt = ToolRuntime([ScriptedTool("huge", big_response, timeout_s=60), ScriptedTool("hang", hang_forever, timeout_s=1)],
                     tokenizer=spy, max_tool_response_tokens=64)
    order, ticks = [], [0]

    async def ticker():          # event-loop progress while the big response is being tokenized
        while not spy.gate.is_set():
            await asyncio.sleep(0.005)
            if spy.blocked.is_set() and not spy.gate.is_set():
                ticks[0] += 1

    async with rt.session("t", {}) as s:
        async def big_call():
            rec = await s.call("huge", {})
            order.append("huge")
            return rec

        async def hang_call():
            rec = await s.call("hang", {})
            order.append("hang")
            spy.gate.set()
            return rec
        try:
            huge, hang, _ = await asyncio.gather(big_call(), hang_call(), ticker())
        finally:
            spy.gate.set()
    assert not spy.gate_timed_out and order == ["hang", "huge"] and ticks[0] > 0
    assert threading.get_ident() not in spy.threads
    assert hang.status == "timeout" and hang.observation == "Error: hang timed out after 1 s."
    assert huge.status == "ok" and "...[truncated about " in huge.observation and huge.metrics["truncated_tokens"] > 1_000_000
    assert huge.observation.startswith("lorem ipsum") and huge.observation.rstrip().endswith("dolor")
    assert len(tokenizer.encode(huge.observation, add_special_tokens=False)) <= 66
    assert spy.max_len < 50_000          # only bounded windows were tokenized, never the 21.6 MB
    snap = rt.metrics.snapshot()
    assert snap["tools/hang/errors/timeout"] == 1 and snap["tools/huge/truncated"] == 1


async def test_truncation_runs_inside_the_time_limit(tokenizer):
    spy = GatedTokenizer(tokenizer)             # tokenization never finishes within the call's timeout
    try:
        rt, rec = await run_one(ScriptedTool("huge", big_response, timeout_s=0.3), tokenizer=spy,
                                max_tool_response_tokens=64)
    finally:
        spy.gate.set()
    assert rec.status == "timeout" and rt.metrics.snapshot()["tools/huge/errors/timeout"] == 1


async def test_huge_response_without_tokenizer_is_cut_by_characters():
    rt, rec = await run_one(ScriptedTool("huge", big_response), max_tool_response_tokens=100, truncate_side="tail")
    assert rec.status == "ok" and len(rec.observation) <= 100 and rec.observation.startswith("lorem ipsum")
    assert rec.metrics["truncated_tokens"] > len(BIG) - 100


# -- BaseException, caps, counting (issue 19, item 9) ---------------------------------------------------------------

def raiser(exc):
    async def body(*a, **k):
        raise exc
    return body


@pytest.mark.parametrize("exc", [SystemExit(3), SystemExit(), GeneratorExit(), StopAsyncIteration("x")])
async def test_base_exception_from_execute_is_an_error_record(exc):
    rt, rec = await run_one(ScriptedTool("dies", raiser(exc)))
    name = type(exc).__name__
    assert rec.status == "exception" and rec.observation.startswith(f"Error: dies failed: {name}"), rec.observation
    assert rt.metrics.snapshot()["tools/dies/errors/exception"] == 1
    await asyncio.sleep(0)            # the loop (and this process) is still alive
    assert (await run_one(ScriptedTool("after")))[1].status == "ok"


async def test_system_exit_in_lifecycle_methods_is_counted_not_raised():
    create_dies = ScriptedTool("cd", create=raiser(SystemExit(1)))
    others_die = ScriptedTool("od", release=raiser(SystemExit(2)), calc_reward=raiser(SystemExit(4)))

    class SyncExitTool(BaseTool):
        def execute(self, instance_id, arguments, **kwargs):    # not even a coroutine function
            raise SystemExit(5)

    sync = SyncExitTool({}, fn_schema("se"))
    rt = ToolRuntime([create_dies, others_die, sync])
    async with rt.session("t", {}) as s:
        assert "SystemExit: 1" in s.create_errors["cd"]
        assert (await s.call("cd", {})).status == "create_failed"
        assert (await s.call("se", {})).observation == "Error: se failed: SystemExit: 5"
        assert await s.calc_rewards() == {"cd": 0.0, "od": 0.0, "se": 0.0}
    snap = rt.metrics.snapshot()
    assert snap["tools/cd/errors/create_error"] == 1 and snap["tools/od/errors/calc_reward_failed"] == 1
    assert snap["tools/od/errors/release_failed"] == 1 and snap["tools/se/errors/exception"] == 1


def test_keyboard_interrupt_from_a_tool_still_propagates():
    async def main():
        await run_one(ScriptedTool("ctrl_c", raiser(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())


class SysExitTool(BaseTool):
    """For the CLI test (loaded by class_name test_tool_runtime.SysExitTool)."""

    async def execute(self, instance_id, arguments, **kwargs):
        raise SystemExit(3)


def test_tools_call_cli_survives_system_exit(tmp_path, capsys):
    from agent_rl.cli.main import main

    cfg = tmp_path / "exit.yaml"
    cfg.write_text("tools:\n  - class_name: test_tool_runtime.SysExitTool\n    config: {type: native}\n"
                   "    tool_schema: {type: function, function: {name: quits, description: d, parameters: {type: object}}}\n")
    assert main(["tools", "call", str(cfg), "quits", "{}"]) == 1
    out = capsys.readouterr().out
    assert "Error: quits failed: SystemExit: 3" in out and "status: exception" in out
    assert '"tools/quits/errors/exception": 1' in out


class LingersAfterCancel:
    """A tool body that ignores cancellation and ends `extra` loop turns after the first one."""

    def __init__(self, extra=20):
        self.extra = extra

    async def __call__(self, *a, **k):
        left = None
        while left is None or left > 0:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                left = self.extra if left is None else left
            if left is not None:
                left -= 1
        return "late", 0.0, {}


@pytest.mark.parametrize("config", [{"max_concurrency": 4}, {"max_concurrency": None, "rate_limit": 4}])
async def test_cap_holds_while_timed_out_tasks_ignore_cancellation(monkeypatch, config):
    monkeypatch.setattr(bounded_mod, "CANCEL_GRACE_S", 0.02)
    name = "linger_" + "_".join(f"{k}_{v}" for k, v in config.items())
    tool = ScriptedTool(name, LingersAfterCancel(), timeout_s=0.05, **config)
    rt = ToolRuntime([tool])
    async with rt.session("t", {}) as s:
        recs = await asyncio.gather(*(s.call(name, {}) for _ in range(16)))
    assert [r.status for r in recs] == ["timeout"] * 16
    assert tool.max_in_flight == 4, tool.max_in_flight       # abandoned tasks kept their slots
    assert await rt.close() == 0 and tool.in_flight == 0
    snap = rt.metrics.snapshot()
    assert snap[f"tools/{name}/calls"] == 16 and snap[f"tools/{name}/errors/timeout"] == 16


@pytest.mark.parametrize("stubborn", [False, True])
async def test_every_cancelled_call_is_counted_and_the_cap_holds(monkeypatch, stubborn):
    monkeypatch.setattr(bounded_mod, "CANCEL_GRACE_S", 0.02)
    body = IgnoresCancel() if stubborn else hang_forever
    tool = ScriptedTool("many", body, timeout_s=60, max_concurrency=16)
    rt = ToolRuntime([tool])
    try:
        async with rt.session("t", {}) as s:
            tasks = [asyncio.create_task(s.call("many", {})) for _ in range(64)]
            while tool.in_flight < 16:
                await asyncio.sleep(0.005)
            for t in tasks:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
            assert rt.metrics.snapshot()["tools/many/errors/cancelled"] == 64
            assert rt.abandoned_running == (16 if stubborn else 0)
            late = asyncio.create_task(s.call("many", {}))
            for _ in range(5):
                await asyncio.sleep(0.01)
            if stubborn:
                # the 16 abandoned tasks still hold the 16 slots: the new call cannot start until they end
                assert len(tool.executed) == 16 and tool.in_flight == 16
                body.stop()
                assert (await late).status == "ok"
            else:
                assert len(tool.executed) == 17
                late.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await late
    finally:
        if stubborn:
            body.stop()
    assert await rt.close() == 0 and tool.in_flight == 0 and tool.max_in_flight == 16
    snap = rt.metrics.snapshot()
    assert snap["tools/many/errors/cancelled"] == (64 if stubborn else 65)
    assert snap.get("tools/many/calls", 0) == (1 if stubborn else 0)


async def test_close_waits_for_abandoned_tasks_and_reports_the_rest(monkeypatch):
    monkeypatch.setattr(bounded_mod, "CANCEL_GRACE_S", 0.02)
    lingers, forever = LingersAfterCancel(extra=5), IgnoresCancel()
    a = ScriptedTool("lingers", lingers, timeout_s=0.05)
    b = ScriptedTool("forever", forever, timeout_s=0.05)
    rt = ToolRuntime([a, b])
    try:
        async with rt.session("t", {}) as s:
            recs = await asyncio.gather(s.call("lingers", {}), s.call("forever", {}))
        assert [r.status for r in recs] == ["timeout", "timeout"]
        assert await rt.close(timeout=0.3) == 1          # `forever` never ends; `lingers` was waited for
        assert a.in_flight == 0 and b.in_flight == 1 and rt.abandoned_running == 1
    finally:
        forever.stop()
    while rt.abandoned_running:
        await asyncio.sleep(0.01)


async def test_every_call_has_exactly_one_counted_outcome(monkeypatch):
    monkeypatch.setattr(bounded_mod, "CANCEL_GRACE_S", 0.02)
    started = asyncio.Event()

    async def mixed(tool, iid, args, **k):
        kind = args.get("kind")
        if kind == "exit":
            raise SystemExit(1)
        if kind == "boom":
            raise ValueError("boom")
        if kind == "hang":
            started.set()
            await asyncio.Event().wait()
        if kind == "bad":
            return None
        return "fine", 0.0, {}
    tool = ScriptedTool("mix", mixed, timeout_s=0.1, max_concurrency=2,
                        schema=fn_schema("mix", {"kind": {"type": "string"}}))
    rt = ToolRuntime([tool])
    kinds = ["ok", "exit", "boom", "hang", "bad", "ok", "exit", "hang"]
    async with rt.session("t", {}) as s:
        tasks = [asyncio.create_task(s.call("mix", {"kind": k})) for k in kinds]
        tasks += [asyncio.create_task(s.call("mix", {"kind": "hang"})) for _ in range(4)]
        await started.wait()
        for t in tasks[-4:]:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
    snap = rt.metrics.snapshot()
    assert cancelled == 4 and snap["tools/mix/calls"] + snap["tools/mix/errors/cancelled"] == len(tasks)
    assert snap["tools/mix/errors/exception"] == 3 and snap["tools/mix/errors/timeout"] == 2
    assert snap["tools/mix/errors/bad_response"] == 1 and snap["tools/mix/calls"] == 8


async def test_inherited_lifecycle_hooks_run_nothing(monkeypatch):
    """A tool that keeps BaseTool's create / release / calc_reward gets the same outcome without the bounded task
    (no run_bounded call); one that overrides any of them, on its class or its object, is run as before."""
    import agent_rl.tool_runtime.session as session_mod
    from agent_rl.tool_runtime.base import BaseTool, ToolResponse

    bounded = []
    real = session_mod.run_bounded

    async def counting(make_coro, timeout, on_abandon=None):
        bounded.append(make_coro)
        return await real(make_coro, timeout, on_abandon=on_abandon)

    monkeypatch.setattr(session_mod, "run_bounded", counting)

    class Plain(BaseTool):
        async def execute(self, instance_id, arguments, **kw):
            return ToolResponse(text="ok"), 0.5, {}

    schema = {"type": "function", "function": {"name": "plain", "description": "d",
                                               "parameters": {"type": "object", "properties": {}}}}
    rt = ToolRuntime([Plain({}, schema)])
    async with rt.session("t1", {}) as s:
        rec = await s.call("plain", {})
        assert await s.calc_rewards() == {"plain": 0.0}
    assert rec.status == "ok" and rec.observation == "ok" and rec.step_reward == 0.5
    assert len(bounded) == 1          # the execute only

    events = []
    tool = Plain({}, schema)

    async def create(instance_id, **kw):
        events.append("create")

    async def release(instance_id, **kw):
        events.append("release")

    tool.create, tool.release = create, release
    rt = ToolRuntime([tool])
    bounded.clear()
    async with rt.session("t2", {}) as s:
        assert await s.calc_rewards() == {"plain": 0.0}
    assert events == ["create", "release"] and len(bounded) == 2
