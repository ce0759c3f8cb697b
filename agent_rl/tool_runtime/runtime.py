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
import logging
from typing import Any, Dict, Iterable, List, Optional, Tuple

from agent_rl.tool_runtime import errors as E
from agent_rl.tool_runtime.arguments import ArgumentValidator
from agent_rl.tool_runtime.limits import LoopSemaphore, RateLimiter, shared_rate_limiter, shared_semaphore
from agent_rl.tool_runtime.loader import load_tool_specs_and_tools, schema_validator
from agent_rl.tool_runtime.metrics import ToolMetrics
from agent_rl.tool_runtime.options import RuntimeOptions, options_from_config
from agent_rl.tool_runtime.truncate import SIDES, truncate_text, truncate_text_async
from agent_rl.tool_runtime.bounded import run_bounded
from agent_rl.tool_runtime.session import ToolSession

logger = logging.getLogger(__name__)


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
            self._validators[name] = ArgumentValidator(schema_validator(schema["function"].get("parameters") or {"type": "object"}))
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
