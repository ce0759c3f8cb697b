"""Test doubles: a scripted engine (real tokenizer ids, per-token delay, abort) and a tool session."""
from __future__ import annotations

import asyncio
import time
from typing import Callable, Dict, List

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams
from agent_rl.tool_runtime.record import ToolCallRecord


class ScriptedEngine(Engine):
    """`script(input_ids, request_id) -> text`; the text is tokenised and emitted one token per
    `token_delay` seconds, followed by the first stop id (unless the budget runs out first).
    Log-prob of the k-th emitted token of a call = -(k + 1) / 100."""

    name = "scripted"

    def __init__(self, tokenizer, script: Callable[[List[int], str], str], token_delay: float = 0.0,
                 add_stop: bool = True):
        self.tok = tokenizer
        self.script = script
        self.token_delay = token_delay
        self.add_stop = add_stop
        self.running: Dict[str, bool] = {}
        self.calls: List[dict] = []
        self.starts: List[tuple] = []   # (request id, requests running once it started, priority)

    async def generate(self, input_ids, sampling: SamplingParams, request_id: str) -> GenerateOutput:
        assert request_id not in self.running, f"duplicate request id {request_id}"
        text = self.script(list(input_ids), request_id)
        ids = list(self.tok(text, add_special_tokens=False)["input_ids"])
        if self.add_stop and sampling.stop_token_ids:
            ids.append(sampling.stop_token_ids[0])
        out: List[int] = []
        finish = "stop"
        self.running[request_id] = True
        self.starts.append((request_id, len(self.running), sampling.priority))
        try:
            for t in ids:
                if len(out) >= sampling.max_new_tokens:
                    finish = "length"
                    break
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                else:
                    await asyncio.sleep(0)
                if not self.running.get(request_id):
                    finish = "abort"
                    break
                out.append(t)
            else:
                finish = "stop" if out and out[-1] in sampling.stop_token_ids else "length"
        finally:
            self.running.pop(request_id, None)
        self.calls.append({"request_id": request_id, "input_ids": list(input_ids), "output_ids": out,
                           "max_new_tokens": sampling.max_new_tokens, "finish": finish})
        return GenerateOutput(out, [-(k + 1) / 100 for k in range(len(out))], finish, len(input_ids))

    async def abort(self, request_id: str) -> None:
        if request_id in self.running:
            self.running[request_id] = False

    async def update_weights(self, named_tensors) -> None:
        pass


class FakeSession:
    """Tool session double: every call sleeps `delay` and echoes; `calculator` evaluates."""

    def __init__(self, delay: float = 0.0, tools=("calculator",)):
        self.delay = delay
        self.tools = set(tools)
        self.calls: List[tuple] = []
        self.active = 0
        self.max_active = 0

    async def call(self, name, arguments) -> ToolCallRecord:
        self.calls.append((name, arguments))
        if name not in self.tools:
            return ToolCallRecord(name=name, arguments=arguments, observation=f"Error: unknown tool {name!r}",
                                  status="unknown_tool")
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        t0 = time.perf_counter()
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
        return ToolCallRecord(name=name, arguments=arguments, observation=f"result of {arguments}", status="ok",
                              latency_s=time.perf_counter() - t0)

    async def calc_rewards(self):
        return {}


def call_text(name: str, args_json: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args_json}}}\n</tool_call>'
