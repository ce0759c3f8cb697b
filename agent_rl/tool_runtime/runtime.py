"""The tool runtime: every tool call of the agent loop goes through here.

    rt = ToolRuntime.from_yaml(path, tokenizer=tok, max_tool_response_tokens=256, truncate_side="middle")
    async with rt.session(traj_id, row["extra_info"].get("tools_kwargs", {})) as s:
        rec = await s.call("calculator", '{"expression": "2+2"}')   # ToolCallRecord, never raises
        rewards = await s.calc_rewards()                              # {tool name: float}
    snapshot = rt.metrics.snapshot(reset=True)
    await rt.close()

Around each call: argument parsing (JSON text or dict) and JSON-Schema validation, a per-tool
timeout, a per-runtime concurrency cap (`max_concurrency`), an optional process-wide one (verl's
`rate_limit`), an optional process-wide calls-per-second limit (`calls_per_second`), retries with
exponential backoff of `TransientToolError`, response normalisation and truncation in tokens, and
metrics. Every failure becomes an observation starting with `Error:` and a counted error kind;
only `asyncio.CancelledError` propagates (after the session has released its instances), and
`KeyboardInterrupt` (so Ctrl-C works). Any other `BaseException` a tool raises (`SystemExit`,
`GeneratorExit`, ...) is contained: it is an ordinary tool failure. Every call ends in exactly one
counted outcome: a record (`tools/<name>/calls`, plus `errors/<status>` unless ok) or
`errors/cancelled`. A task that ignores its cancellation keeps its concurrency slots until it really
ends, so `max_concurrency` / `rate_limit` are never exceeded.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

from agent_rl.tool_runtime import errors as E
from agent_rl.tool_runtime import record as R
from agent_rl.tool_runtime.arguments import ArgumentError, parse_arguments, validate_arguments
from agent_rl.tool_runtime.base import ToolResponse, TransientToolError
from agent_rl.tool_runtime.limits import LoopSemaphore, RateLimiter, shared_rate_limiter, shared_semaphore
from agent_rl.tool_runtime.loader import load_tool_specs_and_tools, schema_validator
from agent_rl.tool_runtime.metrics import ToolMetrics
from agent_rl.tool_runtime.options import RuntimeOptions, options_from_config
from agent_rl.tool_runtime.record import ToolCallRecord
from agent_rl.tool_runtime.truncate import SIDES, truncate_text, truncate_text_async

logger = logging.getLogger(__name__)

CANCEL_GRACE_S = 0.5        # how long a timed-out task gets to honour its cancellation
MAX_ERROR_DETAIL = 500      # characters of an exception message shown to the model
KWARG_KEYS = ("create_kwargs", "execute_kwargs", "calc_reward_kwargs", "release_kwargs")


class _Timeout(Exception):
    pass


class ToolBaseException(Exception):
    """A tool raised a BaseException that is not an Exception (SystemExit, GeneratorExit, ...): contained
    here so that it neither stops the event loop nor escapes `ToolSession.call`. `.original` holds it."""

    def __init__(self, original: BaseException):
        super().__init__(*getattr(original, "args", ()))
        self.original = original

    def __str__(self) -> str:
        return str(self.original)


async def _contained(make_coro):
    """Run `make_coro()` (also its synchronous part) and turn a foreign BaseException into an Exception.
    This must happen inside the task: asyncio re-raises SystemExit from a task out of the event loop."""
    try:
        return await make_coro()
    except (asyncio.CancelledError, KeyboardInterrupt, Exception):
        raise
    except BaseException as e:       # SystemExit, GeneratorExit, other BaseException subclasses
        raise ToolBaseException(e) from None


def _retrieve(task: "asyncio.Future") -> None:
    """Mark a finished task's outcome as retrieved (no 'exception was never retrieved' warning)."""
    if not task.cancelled():
        task.exception()


def _abandon(task: "asyncio.Future", on_abandon=None) -> None:
    """Forget a task that ignored its cancellation, without a 'never retrieved' warning; `on_abandon(task)`
    lets the owner keep its slots until the task really ends."""
    task.add_done_callback(_retrieve)
    if on_abandon is not None:
        on_abandon(task)


async def run_bounded(make_coro, timeout: Optional[float], on_abandon=None):
    """Await `make_coro()` in its own task, at most `timeout` seconds. On timeout the task is
    cancelled and given CANCEL_GRACE_S to stop; a task that ignores cancellation is abandoned (handed
    to `on_abandon(task)`), so this never hangs. Raises _Timeout, the coroutine's exception (a
    BaseException other than KeyboardInterrupt / CancelledError as ToolBaseException), or
    CancelledError when the caller is cancelled (the inner task is cancelled too)."""
    task = asyncio.ensure_future(_contained(make_coro))
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
        if not task.done():
            _abandon(task, on_abandon)
        else:
            _retrieve(task)
        raise
    if not done:
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=CANCEL_GRACE_S)
        except asyncio.CancelledError:
            if not task.done():
                _abandon(task, on_abandon)
            else:
                _retrieve(task)
            raise
        if not task.done():
            _abandon(task, on_abandon)
        else:
            _retrieve(task)
        raise _Timeout()
    if task.cancelled():
        # The tool cancelled itself (nobody cancelled us): an ordinary failure.
        raise RuntimeError("the tool's task was cancelled")
    return task.result()


class _Slots:
    """The concurrency slots one call holds. Released when the call ends, or, when the call abandoned a
    task that ignored its cancellation, only when that task really ends (so the cap is never exceeded)."""

    def __init__(self) -> None:
        self._held: List[asyncio.Semaphore] = []

    async def acquire(self, sems: Iterable[Optional[asyncio.Semaphore]]) -> None:
        for sem in sems:
            if sem is not None:
                await sem.acquire()
                self._held.append(sem)

    def hold_until_done(self, task: "asyncio.Future") -> None:
        held, self._held = self._held, []
        if held:
            task.add_done_callback(lambda _t: _release_all(held))

    def release(self) -> None:
        held, self._held = self._held, []
        _release_all(held)


def _release_all(sems: List[asyncio.Semaphore]) -> None:
    for sem in reversed(sems):
        sem.release()


def _detail(e: BaseException) -> str:
    if isinstance(e, ToolBaseException):
        e = e.original
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return text if len(text) <= MAX_ERROR_DETAIL else text[: MAX_ERROR_DETAIL - 3] + "..."


def _to_text(value: Any) -> str:
    """str with any lone surrogates replaced, so the text is always encodable as UTF-8."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")


class ToolRuntime:
    def __init__(self, tools: Iterable[Any], tokenizer: Any = None, max_tool_response_tokens: Optional[int] = 256,
                 truncate_side: str = "middle", options: Optional[Dict[str, RuntimeOptions]] = None,
                 default_options: Optional[Dict[str, Any]] = None):
        """`options[name]` overrides the options read from each tool's `config`;
        `default_options` (RuntimeOptions field -> value) apply where the config says nothing."""
        if truncate_side not in SIDES:
            raise ValueError(f"truncate_side must be one of {SIDES}, got {truncate_side!r}")
        if max_tool_response_tokens is not None and max_tool_response_tokens <= 0:
            raise ValueError(f"max_tool_response_tokens must be > 0 or None, got {max_tool_response_tokens}")
        self.tokenizer = tokenizer
        self.max_tool_response_tokens = max_tool_response_tokens
        self.truncate_side = truncate_side
        self.metrics = ToolMetrics()
        self._tools: Dict[str, Any] = {}
        self._options: Dict[str, RuntimeOptions] = {}
        self._validators: Dict[str, Any] = {}
        self._sems: Dict[str, List[LoopSemaphore]] = {}   # acquired in list order
        self._limiters: Dict[str, RateLimiter] = {}
        self._background: set = set()      # releases finishing after a cancellation
        self._abandoned: set = set()       # tool tasks that ignored their cancellation and still run
        for tool in tools:
            name = tool.name
            if name in self._tools:
                raise ValueError(f"duplicate tool name {name!r}")
            schema = tool.tool_schema
            self._tools[name] = tool
            self._validators[name] = schema_validator(schema["function"].get("parameters") or {"type": "object"})
            opts = (options or {}).get(name) or options_from_config(getattr(tool, "config", {}) or {}, f"tool {name}", default_options)
            self._options[name] = opts
            self._sems[name] = [LoopSemaphore(opts.max_concurrency)]
            if opts.concurrent_cap:
                self._sems[name].append(shared_semaphore(name, opts.concurrent_cap))
            if opts.calls_per_second:
                self._limiters[name] = shared_rate_limiter(name, opts.calls_per_second, opts.calls_per_second_burst)

    @classmethod
    def from_yaml(cls, path: str, tokenizer: Any = None, max_tool_response_tokens: Optional[int] = 256,
                  truncate_side: str = "middle", default_options: Optional[Dict[str, Any]] = None,
                  only: Optional[Iterable[str]] = None) -> "ToolRuntime":
        """Build the tools declared in `path` (`only`: just these names, each must be declared)."""
        pairs = load_tool_specs_and_tools(path, only)
        if default_options:
            options = {s.name: options_from_config(s.config, s.where, default_options) for s, _ in pairs}
        else:
            options = {s.name: s.options for s, _ in pairs}
        return cls([t for _, t in pairs], tokenizer=tokenizer, max_tool_response_tokens=max_tool_response_tokens,
                   truncate_side=truncate_side, options=options)

    @property
    def names(self) -> List[str]:
        return list(self._tools)

    @property
    def schemas(self) -> List[Dict[str, Any]]:
        return [self._tools[n].tool_schema for n in self._tools]

    @property
    def tools(self) -> Dict[str, Any]:
        return dict(self._tools)

    def options(self, name: str) -> RuntimeOptions:
        return self._options[name]

    def session(self, traj_id: str, tools_kwargs: Optional[Dict[str, Any]] = None) -> "ToolSession":
        return ToolSession(self, traj_id, tools_kwargs)

    def _limit(self, name: str) -> Optional[int]:
        limit = self._options[name].max_response_tokens if name in self._options else None
        return limit or self.max_tool_response_tokens

    def truncate(self, name: str, text: str) -> Tuple[str, int]:
        return truncate_text(text, self._limit(name), self.truncate_side, self.tokenizer)

    async def truncate_async(self, name: str, text: str) -> Tuple[str, int]:
        """`truncate` with long texts tokenized in a worker thread (off the event loop)."""
        return await truncate_text_async(text, self._limit(name), self.truncate_side, self.tokenizer)

    def _track_abandoned(self, task: "asyncio.Future") -> None:
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)

    @property
    def abandoned_running(self) -> int:
        """Tool tasks that ignored their cancellation and have not ended yet (each still holds its slots)."""
        return sum(1 for t in self._abandoned if not t.done())

    async def close(self, timeout: float = 5.0) -> int:
        """Wait (bounded) for releases still running after a cancellation and for abandoned tool tasks
        (cancelled once more), then close each tool's shared resources. -> the number of abandoned tasks
        still running after `timeout` (logged as a warning; they keep their slots until they end)."""
        for t in list(self._abandoned):
            t.cancel()
        pending = [t for t in self._background | self._abandoned if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for name, tool in self._tools.items():
            close = getattr(tool, "close", None)
            if close is None:
                continue
            try:
                await run_bounded(close, timeout, on_abandon=self._track_abandoned)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.metrics.record_error(name, E.CLOSE_FAILED)
        still = self.abandoned_running
        if still:
            logger.warning("tool runtime closed with %d tool task(s) that ignored cancellation still running", still)
        return still


class ToolSession:
    """One trajectory's tool instances. Use as `async with rt.session(...) as s:`."""

    def __init__(self, runtime: ToolRuntime, traj_id: str, tools_kwargs: Optional[Dict[str, Any]]):
        self._rt = runtime
        self.traj_id = str(traj_id)
        self.instance_ids: Dict[str, str] = {n: f"{self.traj_id}/{n}/{uuid.uuid4().hex[:8]}" for n in runtime.names}
        self.create_errors: Dict[str, str] = {}
        self.records: List[ToolCallRecord] = []
        self._kwargs: Dict[str, Dict[str, Dict[str, Any]]] = {}
        self._attempted: List[str] = []
        self._entered = False
        self._released = False
        self._parse_tools_kwargs(tools_kwargs)

    def _parse_tools_kwargs(self, tools_kwargs: Any) -> None:
        if tools_kwargs is None:
            tools_kwargs = {}
        if not isinstance(tools_kwargs, dict):
            for n in self._rt.names:
                self.create_errors[n] = f"tools_kwargs must be a mapping, got {type(tools_kwargs).__name__}"
            return
        for n in self._rt.names:
            entry = tools_kwargs.get(n) or {}
            if not isinstance(entry, dict):
                self.create_errors[n] = f"tools_kwargs[{n!r}] must be a mapping, got {type(entry).__name__}"
                continue
            kw = {}
            for key in KWARG_KEYS:
                val = entry.get(key) or {}
                if not isinstance(val, dict):
                    self.create_errors[n] = f"tools_kwargs[{n!r}].{key} must be a mapping, got {type(val).__name__}"
                    break
                kw[key] = val
            else:
                self._kwargs[n] = kw

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> "ToolSession":
        if self._entered:
            raise RuntimeError("a ToolSession can be entered once")
        self._entered = True
        names = self._rt.names
        try:
            if len(names) == 1:
                await self._create(names[0])
            else:
                await asyncio.gather(*(self._create(n) for n in names))
        except BaseException:
            await self.release()
            raise
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        await self.release()
        return False

    async def _create(self, name: str) -> None:
        rt = self._rt
        self._attempted.append(name)
        if name in self.create_errors:           # bad tools_kwargs: never call create
            rt.metrics.record_error(name, E.CREATE_ERROR)
            return
        tool, opts = rt._tools[name], rt._options[name]
        kwargs = self._kwargs[name]["create_kwargs"]
        try:
            await run_bounded(lambda: tool.create(self.instance_ids[name], **kwargs), opts.create_timeout,
                              on_abandon=rt._track_abandoned)
        except _Timeout:
            self.create_errors[name] = f"create timed out after {opts.create_timeout:g} s"
            rt.metrics.record_error(name, E.CREATE_ERROR)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.create_errors[name] = f"create failed: {_detail(e)}"
            rt.metrics.record_error(name, E.CREATE_ERROR)

    async def release(self) -> None:
        """Release every instance whose create was attempted, exactly once. Errors are counted;
        if the caller is cancelled meanwhile, the releases finish in the background."""
        if self._released:
            return
        self._released = True
        rt = self._rt

        async def one(name: str) -> None:
            tool, opts = rt._tools[name], rt._options[name]
            kwargs = self._kwargs.get(name, {}).get("release_kwargs", {})
            try:
                await run_bounded(lambda: tool.release(self.instance_ids[name], **kwargs), opts.release_timeout_s,
                                  on_abandon=rt._track_abandoned)
            except asyncio.CancelledError:
                raise
            except Exception:   # _Timeout or the tool's exception
                rt.metrics.record_error(name, E.RELEASE_FAILED)

        names = list(self._attempted)
        if not names:
            return
        task = asyncio.ensure_future(one(names[0]) if len(names) == 1 else asyncio.gather(*(one(n) for n in names), return_exceptions=True))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            rt._background.add(task)
            task.add_done_callback(rt._background.discard)
            raise

    # -- calls -----------------------------------------------------------------------------------

    def _record(self, name: str, arguments: Any, observation: str, status: str, t0: float, step_reward: float = 0.0,
                metrics: Optional[Dict[str, Any]] = None, tool_metrics: Optional[Dict[str, Any]] = None,
                count: bool = True, cut: Optional[int] = None) -> ToolCallRecord:
        """`cut`: the observation is already truncated (by `cut` tokens); otherwise it is truncated here
        (short error texts: inline)."""
        rt = self._rt
        if cut is None:
            observation, cut = rt.truncate(name, observation) if name in rt._tools else truncate_text(
                observation, rt.max_tool_response_tokens, rt.truncate_side, rt.tokenizer)
        metrics = dict(metrics or {})
        if cut:
            metrics["truncated_tokens"] = cut
            if name in rt._tools:
                rt.metrics.record_truncated(name)
        latency = time.perf_counter() - t0
        if count:
            rt.metrics.record_call(name, latency, status, tool_metrics)
        rec = ToolCallRecord(name=name, arguments=arguments, observation=observation, status=status,
                             step_reward=step_reward, latency_s=latency, metrics=metrics)
        self.records.append(rec)
        return rec

    async def call(self, name: str, arguments: Any) -> ToolCallRecord:
        """Run one tool call. Never raises except CancelledError / KeyboardInterrupt (and RuntimeError when
        misused). Each call is counted once: as a record, or (cancelled) as errors/cancelled."""
        if not self._entered or self._released:
            raise RuntimeError("ToolSession.call outside `async with rt.session(...)`")
        rt = self._rt
        t0 = time.perf_counter()
        if not isinstance(name, str) or name not in rt._tools:
            rt.metrics.record_error(None, R.UNKNOWN_TOOL)
            avail = ", ".join(rt.names) or "(none)"
            return self._record(str(name), arguments, f"Error: unknown tool {name!r}. Available tools: {avail}.",
                                R.UNKNOWN_TOOL, t0, count=False)
        try:
            args = parse_arguments(arguments)
        except ArgumentError as e:
            return self._record(name, arguments, f"Error: invalid arguments for {name}: {e}.", R.INVALID_ARGUMENTS, t0)
        ok, why = validate_arguments(rt._validators[name], args)
        if not ok:
            return self._record(name, args, f"Error: invalid arguments for {name}: {why}.", R.INVALID_ARGUMENTS, t0)
        if name in self.create_errors:
            return self._record(name, args, f"Error: tool {name} is unavailable in this trajectory ({self.create_errors[name]}).",
                                R.CREATE_FAILED, t0)
        try:
            return await self._execute(name, args, t0)
        except asyncio.CancelledError:
            # wherever it happened (waiting for a slot or the rate limit, running, backing off, truncating)
            rt.metrics.record_error(name, E.CANCELLED)
            raise

    async def _attempt(self, name: str, args: Dict[str, Any], kwargs: Dict[str, Any]):
        """One execute, then normalisation and truncation, all under the call's timeout.
        -> (observation, cut, step_reward, tool_metrics, problem or None)."""
        result = await self._rt._tools[name].execute(self.instance_ids[name], args, **kwargs)
        text, step_reward, tool_metrics, problem = self._normalise(name, result)
        if problem is not None:
            return "", 0, step_reward, tool_metrics, problem
        text, cut = await self._truncate(name, text)
        return text, cut, step_reward, tool_metrics, None

    async def _truncate(self, name: str, text: str) -> Tuple[str, int]:
        rt = self._rt
        try:
            return await rt.truncate_async(name, text)
        except asyncio.CancelledError:
            raise
        except Exception:       # a tokenizer failure must not lose the call: cut by characters instead
            return truncate_text(text, rt._limit(name), rt.truncate_side, None)

    async def _execute(self, name: str, args: Dict[str, Any], t0: float) -> ToolCallRecord:
        rt = self._rt
        opts = rt._options[name]
        kwargs = self._kwargs[name]["execute_kwargs"]
        limiter = rt._limiters.get(name)
        retries = 0
        slots = _Slots()

        def abandoned(task: "asyncio.Future") -> None:
            slots.hold_until_done(task)     # the slot stays taken while the task runs
            rt._track_abandoned(task)

        try:
            await slots.acquire(cap.get() for cap in rt._sems[name])
            while True:
                if limiter is not None:
                    await limiter.acquire()
                try:
                    out = await run_bounded(lambda: self._attempt(name, args, kwargs), opts.timeout_s, on_abandon=abandoned)
                    break
                except _Timeout:
                    return self._record(name, args, f"Error: {name} timed out after {opts.timeout_s:g} s.", R.TIMEOUT, t0,
                                        metrics={"retries": retries} if retries else None)
                except TransientToolError as e:
                    if retries < opts.max_retries:
                        rt.metrics.record_retry(name)
                        await asyncio.sleep(opts.backoff(retries))
                        retries += 1
                        continue
                    return self._record(name, args, f"Error: {name} failed after {retries + 1} attempts: {_detail(e)}",
                                        R.EXCEPTION, t0, metrics={"retries": retries} if retries else None)
                except Exception as e:
                    return self._record(name, args, f"Error: {name} failed: {_detail(e)}", R.EXCEPTION, t0,
                                        metrics={"retries": retries} if retries else None)
        finally:
            slots.release()
        text, cut, step_reward, tool_metrics, problem = out
        metrics = dict(tool_metrics)
        if retries:
            metrics["retries"] = retries
        if problem is not None:
            return self._record(name, args, f"Error: {name} returned a bad response ({problem}).", R.BAD_RESPONSE, t0,
                                metrics=metrics, tool_metrics=tool_metrics)
        return self._record(name, args, text, R.OK, t0, step_reward=step_reward, metrics=metrics, tool_metrics=tool_metrics,
                            cut=cut)

    def _normalise(self, name: str, result: Any) -> Tuple[str, float, Dict[str, Any], Optional[str]]:
        """-> (text, step_reward, metrics, problem or None). Bytes are decoded as UTF-8 with
        replacement characters (counted as errors/non_utf8, status stays ok); None, a missing text
        or another type is a bad_response."""
        if not isinstance(result, (tuple, list)) or len(result) != 3:
            return "", 0.0, {}, f"execute must return (response, step_reward, metrics), got {type(result).__name__}"
        response, step_reward, metrics = result
        if not isinstance(metrics, dict):
            metrics = {}
        if isinstance(response, ToolResponse) or (hasattr(response, "text") and not isinstance(response, (str, bytes))):
            text, images = response.text, getattr(response, "images", None) or []
            if text is None and images:
                text = ""
        else:
            text = response
        if text is None:
            return "", 0.0, metrics, "no text (None)"
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError:
                text = bytes(text).decode("utf-8", "replace")
                self._rt.metrics.record_error(name, E.NON_UTF8)
        if not isinstance(text, str):
            return "", 0.0, metrics, f"text must be str, got {type(text).__name__}"
        text = _to_text(text)
        if step_reward is None:
            reward = 0.0
        elif isinstance(step_reward, bool) or not isinstance(step_reward, (int, float)) or not math.isfinite(step_reward):
            self._rt.metrics.record_error(name, E.BAD_STEP_REWARD)
            reward = 0.0
        else:
            reward = float(step_reward)
        return text, reward, metrics, None

    async def calc_rewards(self) -> Dict[str, float]:
        """calc_reward of every tool (0.0 where create failed or calc_reward fails; failures counted)."""
        if not self._entered or self._released:
            raise RuntimeError("ToolSession.calc_rewards outside `async with rt.session(...)`")
        rt = self._rt

        async def one(name: str) -> float:
            if name in self.create_errors:
                return 0.0
            tool, opts = rt._tools[name], rt._options[name]
            kwargs = self._kwargs[name]["calc_reward_kwargs"]
            try:
                value = await run_bounded(lambda: tool.calc_reward(self.instance_ids[name], **kwargs), opts.timeout_s,
                                          on_abandon=rt._track_abandoned)
            except asyncio.CancelledError:
                raise
            except Exception:
                rt.metrics.record_error(name, E.CALC_REWARD_FAILED)
                return 0.0
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                rt.metrics.record_error(name, E.CALC_REWARD_FAILED)
                return 0.0
            return float(value)

        names = rt.names
        values = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, values))
