"""One trajectory's tool session: creates its tool instances, runs every call (parse, validate, limits, timeout,
retries, truncation, metrics) and releases the instances on exit, also on abort. See `runtime.py`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from agent_rl.tool_runtime import errors as E
from agent_rl.tool_runtime import record as R
from agent_rl.tool_runtime.arguments import ArgumentError, parse_arguments, validate_arguments
from agent_rl.tool_runtime.base import BaseTool, ToolResponse, TransientToolError
from agent_rl.tool_runtime.record import ToolCallRecord
from agent_rl.tool_runtime.truncate import truncate_text
from agent_rl.tool_runtime.bounded import (KWARG_KEYS, Slots, ToolTimeout, error_detail, response_text,
                                           run_bounded)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # pragma: no cover
    from agent_rl.tool_runtime.runtime import ToolRuntime


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
        if _inherited(tool, "create"):           # BaseTool's no-op: nothing to run, bound or time
            return
        kwargs = self._kwargs[name]["create_kwargs"]
        try:
            await run_bounded(lambda: tool.create(self.instance_ids[name], **kwargs), opts.create_timeout,
                              on_abandon=rt._track_abandoned)
        except ToolTimeout:
            self.create_errors[name] = f"create timed out after {opts.create_timeout:g} s"
            rt.metrics.record_error(name, E.CREATE_ERROR)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.create_errors[name] = f"create failed: {error_detail(e)}"
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
            except Exception:   # ToolTimeout or the tool's exception
                rt.metrics.record_error(name, E.RELEASE_FAILED)

        names = [n for n in self._attempted if not _inherited(rt._tools[n], "release")]   # BaseTool's is a no-op
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
        slots = Slots()

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
                except ToolTimeout:
                    return self._record(name, args, f"Error: {name} timed out after {opts.timeout_s:g} s.", R.TIMEOUT, t0,
                                        metrics={"retries": retries} if retries else None)
                except TransientToolError as e:
                    if retries < opts.max_retries:
                        rt.metrics.record_retry(name)
                        await asyncio.sleep(opts.backoff(retries))
                        retries += 1
                        continue
                    return self._record(name, args, f"Error: {name} failed after {retries + 1} attempts: {error_detail(e)}",
                                        R.EXCEPTION, t0, metrics={"retries": retries} if retries else None)
                except Exception as e:
                    return self._record(name, args, f"Error: {name} failed: {error_detail(e)}", R.EXCEPTION, t0,
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
        text = response_text(text)
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
        if all(_inherited(rt._tools[n], "calc_reward") for n in names):   # BaseTool's: 0.0, nothing to run
            return {n: 0.0 for n in names}
        values = await asyncio.gather(*(one(n) for n in names))
        return dict(zip(names, values))


def _inherited(tool, method: str) -> bool:
    """Whether `tool` keeps BaseTool's own lifecycle `method` (create / release: nothing; calc_reward: 0.0)."""
    bound = getattr(tool, method, None)   # looked up on the instance: a method set on the object itself counts
    return getattr(bound, "__func__", None) is getattr(BaseTool, method)
