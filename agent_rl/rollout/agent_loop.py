"""The multi-turn agent loop: one asyncio task per trajectory, token in / token out.

    generate -> decode (for parsing only) -> parse tool calls (format `cfg.format`) -> run the turn's
    calls concurrently through the trajectory's tool session -> append the observation ids (loss
    mask 0) -> repeat

The trained sequence is `prompt_ids + response_ids`; `loss_mask` is 1 exactly on the ids the engine
sampled and `rollout_logprobs` holds the engine's log-prob of each of them (0.0 elsewhere). Nothing
decoded is ever re-tokenised: observation ids come from `ChatRenderer.observation_ids`.

Stopping (`traj.stop_reason`):
  answer                   the turn made no tool call (the model answered or just stopped)
  max_new_tokens_per_turn  the turn hit its per-turn token limit without a tool call
  max_assistant_turns      the last allowed turn still made tool calls (they are not executed)
  max_tool_calls           a turn made tool calls although the tool-call budget was already spent
  max_response_tokens      no response-token budget left for a sampled token / the next observation
  max_model_len            no context left for a sampled token / the next observation
  abort                    the engine aborted the request (the scheduler cut the group)

Tool-call budget: every call the model writes (malformed ones included) counts toward
`max_tool_calls`. When a turn's calls do not fit in what is left, the first ones that fit run and
each extra call gets the observation "tool-call budget exhausted ..." (status "budget") so the
model can still answer in its next turn; a turn that makes calls once the budget is spent ends the
trajectory (`max_tool_calls`).

Stop strings (`cfg.stop_strings`, e.g. `["</tool_call>"]`): a turn ends with the first sampled token
whose decoded prefix holds one of them; the ids (and log-probs) sampled after it are dropped, the
turn's finish_reason becomes "stop", and the chat template closes the turn before the observation.
With `</tool_call>` a model makes one call per turn and never writes the tool's answer itself.

Malformed calls (`ParsedCall.error`) become `parse_error` observations the model sees; unknown
tools, invalid arguments, timeouts and exceptions are turned into observations by the tool session.

Resuming (carry-over): a trajectory with `status == "carried"` continues where it stopped. If the
last turn was cut mid-generation (`finish_reason == "abort"`) its sampled ids and log-probs are
kept and generation continues from `prompt_ids + response_ids` with that turn's remaining per-turn
budget; if it was cut while its tools ran, the calls of that turn are run again (the scheduler hands
back the trajectory's own tool session, so per-instance tool state from before the cut is kept).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from agent_rl.engines.base import SamplingParams
from agent_rl.rollout.formats import get_parser
from agent_rl.rollout.parser import ParseResult
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import BUDGET, PARSE_ERROR, ToolCallRecord

BUDGET_OBSERVATION = "Error: tool-call budget exhausted ({limit} calls per trajectory); this call was not run. Give your final answer."


@dataclass
class LoopHooks:
    """Injection points (the benchmark forces turns and lengths through these).

    parse(traj, text, turn_index) -> ParseResult  replaces the parser of `cfg.format`
    sampling(traj, turn_index) -> SamplingParams  replaces the per-turn sampling params; its
        max_new_tokens is still clamped to the remaining budgets, stop ids are kept as given.
    """

    parse: Optional[Callable[[Trajectory, str, int], ParseResult]] = None
    sampling: Optional[Callable[[Trajectory, int], SamplingParams]] = None


class LoopControl:
    """Shared between a running loop and the scheduler: which request is in flight, which phase
    the loop is in, and whether it was asked to stop (checked after every await)."""

    def __init__(self) -> None:
        self.phase = "idle"            # idle | generate | tools | done
        self.request_id: Optional[str] = None
        self.stop_requested = False


def _decode(renderer, ids: List[int]) -> str:
    decode = getattr(renderer, "decode", None)
    return decode(ids) if decode is not None else renderer.tokenizer.decode(ids, skip_special_tokens=False)


def _strip_stop(ids: List[int], stop_ids: List[int]) -> List[int]:
    return ids[:-1] if ids and ids[-1] in stop_ids else ids


def _stop_string_cut(renderer, ids: List[int], stops: List[str]) -> Optional[int]:
    """The shortest prefix length of `ids` whose decoded text holds one of `stops` (None: no stop)."""
    if not stops or not ids or not any(s in _decode(renderer, ids) for s in stops):
        return None
    lo, hi = 1, len(ids)  # holding a stop string is monotone in the prefix length
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in _decode(renderer, ids[:mid]) for s in stops):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _turn_sampling(base: Any, traj: Trajectory, turn: int, hooks: Optional[LoopHooks], max_new: int,
                   stop_ids: List[int], per_turn: Dict[str, Any]) -> SamplingParams:
    """The turn's SamplingParams, a new object: `per_turn` (affinity, session, priority) set on it."""
    if hooks is not None and hooks.sampling is not None:
        sp = hooks.sampling(traj, turn)
        if not isinstance(sp, SamplingParams):
            raise TypeError(f"LoopHooks.sampling must return a SamplingParams, not {type(sp).__name__}")
        return sp.copy_with(max_new_tokens=max(0, min(sp.max_new_tokens, max_new)), **per_turn)
    if isinstance(base, SamplingParams):
        merged = list(base.stop_token_ids) + [t for t in stop_ids if t not in base.stop_token_ids]
        return base.copy_with(max_new_tokens=max_new, stop_token_ids=merged, **per_turn)
    # SamplingConfig-like (temperature, top_p, top_k)
    return SamplingParams(max_new_tokens=max_new, temperature=float(getattr(base, "temperature", 1.0)),
                          top_p=float(getattr(base, "top_p", 1.0)), top_k=int(getattr(base, "top_k", -1)),
                          stop_token_ids=list(stop_ids), seed=getattr(base, "seed", None), **per_turn)


def _pending_tool_turn(traj: Trajectory) -> bool:
    """A carried trajectory whose last turn finished generating but whose tools did not finish."""
    if not traj.turns:
        return False
    last = traj.turns[-1]
    return last.finish_reason != "abort" and not last.observation_ids and not traj.stop_reason


async def _run_calls(parsed: ParseResult, session, cfg, used: int, sem_cap: int) -> List[ToolCallRecord]:
    """Run one turn's calls concurrently (at most `sem_cap` at once), budget-checked, in parse order."""
    left = max(0, cfg.max_tool_calls - used)
    if len(parsed.calls) == 1:  # the common case: no gather, no semaphore, no extra task
        return [await _one_call(0, parsed.calls[0], session, cfg, left, None)]
    sem = asyncio.Semaphore(max(1, sem_cap))
    return list(await asyncio.gather(*(_one_call(i, c, session, cfg, left, sem) for i, c in enumerate(parsed.calls))))


async def _one_call(i: int, call, session, cfg, left: int, sem: Optional[asyncio.Semaphore]) -> ToolCallRecord:
    if i >= left:
        return ToolCallRecord(name=call.name, arguments=call.arguments if call.ok else call.raw,
                              observation=BUDGET_OBSERVATION.format(limit=cfg.max_tool_calls), status=BUDGET)
    if not call.ok:
        return ToolCallRecord(name=call.name, arguments=call.raw, observation=f"Error: {call.error}",
                              status=PARSE_ERROR)
    if sem is None:
        return await _timed_call(session, call)
    async with sem:
        return await _timed_call(session, call)


async def _timed_call(session, call) -> ToolCallRecord:
    t0 = time.perf_counter()
    rec = await session.call(call.name, call.arguments)
    if not rec.latency_s:
        rec.latency_s = time.perf_counter() - t0
    return rec


async def run_trajectory(traj: Trajectory, engine, renderer, tool_session, cfg, sampling, request_id: str,
                         hooks: Optional[LoopHooks] = None, *, max_model_len: Optional[int] = None,
                         control: Optional[LoopControl] = None, policy_version: int = 0,
                         priority: Optional[int] = None) -> Trajectory:
    """`_run_trajectory`; its requests carry `request_id` as their session (`SamplingParams.session`), ended with it
    however it ends (a carried trajectory resumes under another request id)."""
    try:
        return await _run_trajectory(traj, engine, renderer, tool_session, cfg, sampling, request_id, hooks,
                                     max_model_len=max_model_len, control=control, policy_version=policy_version,
                                     priority=priority)
    finally:
        end = getattr(engine, "end_session", None)
        if end is not None:
            await end(request_id)


async def _run_trajectory(traj: Trajectory, engine, renderer, tool_session, cfg, sampling, request_id: str,
                          hooks: Optional[LoopHooks] = None, *, max_model_len: Optional[int] = None,
                          control: Optional[LoopControl] = None, policy_version: int = 0,
                          priority: Optional[int] = None) -> Trajectory:
    """Run (or resume) one trajectory to its end. `cfg` is a MultiTurnConfig; `sampling` a SamplingParams
    (its max_new_tokens is replaced per turn) or a SamplingConfig. `tool_session` None (or
    `cfg.enable` False) means single-turn: the first turn ends the trajectory.

    `priority` is passed to the engine with every request (lower = served first when requests queue).
    Returns `traj` with status "finished", or "aborted" (stop_reason "abort") when the engine aborted
    the request or `control.stop_requested` was set; the scheduler decides what an aborted one becomes.
    Cancellation propagates (the caller's tool-session context releases the instances); the
    trajectory is left consistent (whole turns, or the partial ids of an aborted generation).
    """
    ctl = control or LoopControl()
    multi_turn = tool_session is not None and getattr(cfg, "enable", True)
    stop_ids = list(renderer.stop_token_ids)
    stop_strings = list(getattr(cfg, "stop_strings", None) or [])
    if hooks is not None and hooks.parse is not None:
        parse = hooks.parse
    else:
        parse_text = get_parser(getattr(cfg, "format", None))  # rollout.multi_turn.format (None: hermes)
        parse = lambda traj, text, turn: parse_text(text)  # noqa: E731
    tool_cap = int(cfg.max_parallel_tool_calls)
    limit_len = max_model_len if max_model_len is not None else 1 << 62
    if not traj.start_time:
        traj.start_time = time.perf_counter()
        traj.policy_version = policy_version
    if traj.stop_reason == "abort":  # resuming a carried trajectory
        traj.stop_reason = ""
    if traj.stop_reason:  # already finished: nothing to do
        traj.status = "finished"
        return traj
    traj.status = "running"

    def finish(reason: str) -> Trajectory:
        traj.stop_reason = reason
        traj.status = "aborted" if reason == "abort" else "finished"
        traj.end_time = time.perf_counter()
        ctl.phase = "done"
        return traj

    def aborted() -> Trajectory:
        traj.stop_reason = "abort"
        traj.status = "aborted"
        ctl.phase = "done"
        return traj

    async def tool_phase(turn: TurnRecord, parsed: ParseResult) -> Optional[str]:
        """Run the calls of `turn`, append the observation. Returns a stop reason or None."""
        turn.tool_calls = []  # a resumed turn runs its calls again
        used = sum(len(t.tool_calls) for t in traj.turns)
        if used >= cfg.max_tool_calls:
            return "max_tool_calls"
        ctl.phase = "tools"
        t0 = time.perf_counter()
        records = await _run_calls(parsed, tool_session, cfg, used, tool_cap)
        turn.tool_latency_s = time.perf_counter() - t0
        turn.tool_calls = records
        tool_msgs = [{"role": "tool", "name": r.name, "content": r.observation} for r in records]
        # closed as the template closes a turn; a length cut or another terminator (e.g. Llama 3's <|end_of_text|>
        # where the template writes <|eot_id|>) gets the end-of-turn ids first
        closed = renderer.turn_closed(turn.output_ids)
        obs = list(renderer.observation_ids(tool_msgs, assistant_ended=closed))
        total = len(traj.prompt_ids) + len(traj.response_ids) + len(obs)
        if len(traj.response_ids) + len(obs) >= cfg.max_response_tokens:
            return "max_response_tokens"
        if total >= limit_len:
            return "max_model_len"
        turn.observation_ids = obs
        traj.response_ids.extend(obs)
        traj.loss_mask.extend([0] * len(obs))
        traj.rollout_logprobs.extend([0.0] * len(obs))
        traj.messages.extend(tool_msgs)
        return None

    # set on every turn's SamplingParams: the group's turns on one engine replica (one prefix cache), this
    # trajectory's turns in one KV session where the engine keeps them, the scheduler's priority
    per_turn: Dict[str, Any] = {"affinity": traj.uid, "session": request_id}
    if priority is not None:
        per_turn["priority"] = priority
    if not traj.messages:
        traj.messages = renderer.with_system(traj.row.get("prompt", [])) if hasattr(renderer, "with_system") \
            else [dict(m) for m in traj.row.get("prompt", [])]

    while True:
        if ctl.stop_requested:
            return aborted()
        # A carried trajectory cut while its last turn's tools ran skips generation and runs them again.
        if not (traj.turns and _pending_tool_turn(traj)):
            partial = traj.turns[-1] if traj.turns and traj.turns[-1].finish_reason == "abort" else None
            turn_index = partial.index if partial is not None else len(traj.turns)
            if partial is None and turn_index >= cfg.max_assistant_turns:
                return finish("max_assistant_turns")
            done_in_turn = len(partial.output_ids) if partial is not None else 0
            budget_left = cfg.max_response_tokens - len(traj.response_ids)
            room = limit_len - len(traj.prompt_ids) - len(traj.response_ids)
            max_new = min(cfg.max_new_tokens_per_turn - done_in_turn, budget_left, room)
            if max_new <= 0:
                if budget_left <= 0:
                    return finish("max_response_tokens")
                if room <= 0:
                    return finish("max_model_len")
                partial.finish_reason = "length"  # the carried partial turn had used its whole per-turn budget
            else:
                sp = _turn_sampling(sampling, traj, turn_index, hooks, max_new, stop_ids, per_turn)
                rid = f"{request_id}-t{turn_index}" + (f"-r{done_in_turn}" if partial is not None else "")
                ctl.request_id, ctl.phase = rid, "generate"
                t0 = time.perf_counter()
                out = await engine.generate([*traj.prompt_ids, *traj.response_ids], sp, rid)
                latency = time.perf_counter() - t0
                ctl.request_id, ctl.phase = None, "idle"
                ids, lps = list(out.output_ids), list(map(float, out.logprobs))
                if len(lps) != len(ids):
                    raise RuntimeError(f"engine returned {len(ids)} ids but {len(lps)} log-probs for {rid}")
                if partial is None:   # the turn owns these lists: a stop-string cut below rebinds ids / lps first
                    partial = TurnRecord(turn_index, ids, lps, out.finish_reason, "", gen_latency_s=latency,
                                         policy_version=policy_version)
                    traj.turns.append(partial)
                else:
                    partial.output_ids.extend(ids)
                    partial.logprobs.extend(lps)
                    partial.gen_latency_s += latency
                    partial.finish_reason = out.finish_reason
                    if partial.policy_version is None:
                        partial.policy_version = policy_version
                cut = _stop_string_cut(renderer, partial.output_ids, stop_strings)
                if cut is not None:  # the turn ends at its stop string: later samples are dropped
                    drop = len(partial.output_ids) - cut
                    ids, lps = ids[:len(ids) - drop], lps[:len(lps) - drop]
                    del partial.output_ids[cut:], partial.logprobs[cut:]
                    partial.finish_reason = "stop"
                traj.response_ids.extend(ids)
                traj.loss_mask.extend([1] * len(ids))
                traj.rollout_logprobs.extend(lps)
                partial.text = _decode(renderer, _strip_stop(partial.output_ids, stop_ids))
                if partial.finish_reason == "abort":
                    return finish("abort")
            traj.messages.append({"role": "assistant", "content": partial.text})

        turn = traj.turns[-1]
        ended = bool(turn.output_ids) and turn.output_ids[-1] in stop_ids
        if not multi_turn:
            return finish("answer" if ended else _length_reason(traj, cfg, limit_len, turn))
        parsed = parse(traj, turn.text, turn.index)
        turn.calls_parsed = len(parsed.calls)
        if not parsed.has_calls:
            return finish("answer" if ended else _length_reason(traj, cfg, limit_len, turn))
        if turn.index + 1 >= cfg.max_assistant_turns:
            return finish("max_assistant_turns")
        if ctl.stop_requested:
            return aborted()
        reason = await tool_phase(turn, parsed)
        ctl.phase = "idle"
        if reason:
            return finish(reason)


def _length_reason(traj: Trajectory, cfg, limit_len: int, turn: TurnRecord) -> str:
    """Why a turn stopped without its end-of-turn token."""
    if turn.finish_reason != "length":
        return "answer"
    if len(traj.response_ids) >= cfg.max_response_tokens:
        return "max_response_tokens"
    if len(traj.prompt_ids) + len(traj.response_ids) >= limit_len:
        return "max_model_len"
    return "max_new_tokens_per_turn"
