"""LLM-as-judge reward: an OpenAI-compatible chat endpoint grades each finished trajectory.

    reward.functions.my_source=agent_rl.tasks.judge:judge_reward
    reward.judge.base_url=http://127.0.0.1:8000/v1          # e.g. `agent-rl serve MODEL --port 8000`

`judge_reward(traj, reward_cfg)` is a coroutine function: the rollout scheduler awaits it on its event loop
(`tasks.rewards.compute_reward_async`), so judge requests never block the loop that feeds the engine, and many
trajectories are judged at once, at most `reward.judge.max_concurrency` requests in flight per process.

The request is `POST <base_url>/chat/completions` with `prompt_template` filled from the trajectory ({question},
{response}, {answer}, {ground_truth}); the reply's `choices[0].message.content` is scored by `score_regex` (a number
between score_min and score_max, normalised to [0, 1]) or by `parser` (a function of the text). Timeouts,
connection errors and HTTP 408 / 429 / 5xx are retried `max_retries` times with exponential backoff; identical
requests are answered once per process (`cache`; concurrent identical requests share one HTTP call).

It never raises into the step: any failure (after the retries, an unparseable reply, a malformed response, a bad
row) gives `fallback_score` and the component `judge_failed` = 1. Components: `judge_score` (the reward given),
`judge_failed`, `judge_cached` (answered without an HTTP request of its own), `judge_attempts` (HTTP attempts of
this call), `judge_latency_s`. `FAILURES` counts failures by kind in this process; failures are logged (first few of
each kind, then every 100th) on the `agent_rl.tasks.judge` logger.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
import re
import time
from typing import Any, Dict, Optional, Tuple

from agent_rl.rollout.parser import extract_answer

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 429})          # and every 5xx
FAILURES: collections.Counter = collections.Counter()   # failure kind -> count, in this process
STATS: collections.Counter = collections.Counter()      # requests (HTTP attempts), cache_hits, calls
_CACHE: "collections.OrderedDict[str, str]" = collections.OrderedDict()   # request key -> reply text (LRU)
_STATES: Dict[Any, "_LoopState"] = {}          # event loop -> its session, semaphores and in-flight requests
_WARNED_KEY_ENV = set()


class JudgeError(Exception):
    def __init__(self, kind: str, message: str, attempts: int = 0):
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts


class _LoopState:
    """One aiohttp session per event loop (a session is bound to its loop). It is closed when the loop shuts down
    its async generators (`asyncio.run` does), through the holder generator below, or by `close_sessions()`."""

    def __init__(self, session):
        self.session = session
        self.semaphores: Dict[int, asyncio.Semaphore] = {}
        self.inflight: Dict[str, asyncio.Future] = {}
        self.holder = None

    def semaphore(self, cap: int) -> asyncio.Semaphore:
        if cap not in self.semaphores:
            self.semaphores[cap] = asyncio.Semaphore(cap)
        return self.semaphores[cap]


async def _session_holder(state: _LoopState):
    try:
        yield
    finally:
        await state.session.close()


async def _state() -> _LoopState:
    import aiohttp

    loop = asyncio.get_running_loop()
    for other in [lp for lp in _STATES if lp.is_closed()]:
        _STATES.pop(other, None)
    state = _STATES.get(loop)
    if state is None or state.session.closed:
        state = _LoopState(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        state.holder = _session_holder(state)
        await state.holder.__anext__()
        _STATES[loop] = state
    return state


async def close_sessions() -> None:
    """Close the judge's session of the running loop (also done when `asyncio.run` ends)."""
    state = _STATES.pop(asyncio.get_running_loop(), None)
    if state is not None:
        await state.holder.aclose()


def clear_cache() -> None:
    _CACHE.clear()


# ---------------------------------------------------------------------------------------------- prompt and score
def _text(content) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    try:   # a list of parts ({"type": "text", "text": ...}) or an array of them from parquet
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    except TypeError:
        return str(content)


def trajectory_fields(traj) -> Dict[str, str]:
    """{question, response, answer, ground_truth} of a trajectory, as the template sees them."""
    row = traj.row or {}
    question = ""
    for m in list(row.get("prompt") if row.get("prompt") is not None else []):
        if isinstance(m, dict) and m.get("role") == "user":
            question = _text(m.get("content"))
    response = traj.turns[-1].text if traj.turns else ""
    answer = extract_answer(response)
    gt = (row.get("reward_model") or {}).get("ground_truth")
    if gt is None:
        gt_text = ""
    elif isinstance(gt, str):
        gt_text = gt
    else:
        try:
            gt_text = " | ".join(str(g) for g in list(gt))
        except TypeError:
            gt_text = str(gt)
    return {"question": question, "response": response, "answer": response if answer is None else answer,
            "ground_truth": gt_text}


def fill_template(template: str, fields: Dict[str, str]) -> str:
    """Replace {question}, {response}, {answer}, {ground_truth}; every other brace stays (JSON examples in a
    template need no escaping)."""
    return re.sub(r"\{(question|response|answer|ground_truth)\}", lambda m: fields[m.group(1)], template)


def parse_score(text: str, jc) -> Optional[float]:
    """The reply's score in [0, 1], or None when it has none."""
    if jc.parser:
        from agent_rl.tasks.registry import load_callable

        value = load_callable(jc.parser, "reward.judge.parser")(text)
        if value is None:
            return None
        return min(1.0, max(0.0, float(value)))
    m = re.search(jc.score_regex, text or "")
    if m is None:
        return None
    try:
        raw = float(m.group(1) if m.groups() else m.group(0))
    except (TypeError, ValueError):
        return None
    lo, hi = float(jc.score_min), float(jc.score_max)
    return min(1.0, max(0.0, (raw - lo) / (hi - lo)))


YES_NO_RE = re.compile(r"^\W*(yes|no|correct|incorrect|true|false)\b", re.IGNORECASE)
YES = {"yes", "correct", "true"}


def yes_no(text: str) -> Optional[float]:
    """A parser for judges asked a yes/no question (`reward.judge.parser=agent_rl.tasks.judge:yes_no`): 1 when the
    reply starts with yes / correct / true, 0 with no / incorrect / false (case and leading punctuation ignored),
    None (a failed judgment) otherwise."""
    m = YES_NO_RE.match(text or "")
    if m is None:
        return None
    return 1.0 if m.group(1).lower() in YES else 0.0


# ---------------------------------------------------------------------------------------------- HTTP
def request_payload(prompt: str, jc) -> Dict[str, Any]:
    messages = ([{"role": "system", "content": jc.system_prompt}] if jc.system_prompt else []) + \
               [{"role": "user", "content": prompt}]
    payload: Dict[str, Any] = {"messages": messages, "max_tokens": int(jc.max_tokens),
                               "temperature": float(jc.temperature), "n": 1}
    if jc.model:
        payload["model"] = jc.model
    return payload


def _headers(jc) -> Dict[str, str]:
    if not jc.api_key_env:
        return {}
    key = os.environ.get(jc.api_key_env)
    if not key:
        if jc.api_key_env not in _WARNED_KEY_ENV:
            _WARNED_KEY_ENV.add(jc.api_key_env)
            log.warning("reward.judge.api_key_env: environment variable %s is not set; judge requests go without a key",
                        jc.api_key_env)
        return {}
    return {"Authorization": f"Bearer {key}"}


async def _post(state: _LoopState, url: str, payload: Dict[str, Any], jc) -> Tuple[str, int]:
    """(reply text, HTTP attempts); JudgeError after the retries."""
    import aiohttp

    last: Optional[JudgeError] = None
    attempts = 0
    sem = state.semaphore(max(1, int(jc.max_concurrency)))
    for attempt in range(int(jc.max_retries) + 1):
        if attempt:
            await asyncio.sleep(float(jc.backoff_s) * 2 ** (attempt - 1))
        attempts += 1
        try:
            async with sem:
                STATS["requests"] += 1
                async with state.session.post(url, json=payload, headers=_headers(jc),
                                              timeout=aiohttp.ClientTimeout(total=float(jc.timeout_s))) as resp:
                    status, body = resp.status, await resp.text()
        except (asyncio.TimeoutError, TimeoutError):
            last = JudgeError("timeout", f"no reply within {jc.timeout_s} s")
            continue
        except aiohttp.ClientError as e:
            last = JudgeError("connection", f"{type(e).__name__}: {e}")
            continue
        if status != 200:
            last = JudgeError("http", f"HTTP {status}: {' '.join(body.split())[:200]}")
            if status in RETRY_STATUS or status >= 500:
                continue
            break
        try:
            content = json.loads(body)["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            last = JudgeError("malformed", f"not a chat completion: {' '.join(body.split())[:200]}")
            break
        if not isinstance(content, str):
            last = JudgeError("malformed", f"choices[0].message.content is {type(content).__name__}, not a string")
            break
        return content, attempts
    last.attempts = attempts
    raise last


async def judge_text(prompt: str, jc) -> Tuple[str, bool, int]:
    """(reply text, answered from the cache or a concurrent identical request, HTTP attempts made by this call)."""
    state = await _state()
    url = jc.base_url.rstrip("/") + "/chat/completions"
    payload = request_payload(prompt, jc)
    key = hashlib.sha256(json.dumps([url, payload], sort_keys=True).encode()).hexdigest()
    if jc.cache:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            STATS["cache_hits"] += 1
            return _CACHE[key], True, 0
        pending = state.inflight.get(key)
        if pending is not None:
            STATS["cache_hits"] += 1
            return await asyncio.shield(pending), True, 0
    fut = asyncio.get_running_loop().create_future()
    if jc.cache:
        state.inflight[key] = fut
    try:
        text, attempts = await _post(state, url, payload, jc)
        fut.set_result(text)
    except BaseException as e:
        fut.set_exception(e if isinstance(e, Exception) else JudgeError("cancelled", "the judge call was cancelled"))
        fut.exception()   # retrieved: waiters get it, nobody else logs it
        raise
    finally:
        if jc.cache:
            state.inflight.pop(key, None)
    if jc.cache and jc.cache_size > 0:
        _CACHE[key] = text
        while len(_CACHE) > jc.cache_size:
            _CACHE.popitem(last=False)
    return text, False, attempts


def _record_failure(kind: str, message: str) -> None:
    FAILURES[kind] += 1
    n = FAILURES[kind]
    if n <= 3 or n % 100 == 0:
        log.warning("LLM judge failed (%s, %d so far): %s; the fallback score is used", kind, n, message)


async def judge_reward(traj, reward_cfg) -> Tuple[float, Dict[str, float]]:
    """The reward of `traj` from the judge of `reward_cfg.judge` (module docstring). Never raises (but is
    cancelled with its trajectory)."""
    jc = reward_cfg.judge
    t0 = time.perf_counter()
    STATS["calls"] += 1
    cached, attempts, score = False, 0, None
    try:
        if not jc.base_url:
            raise JudgeError("config", "reward.judge.base_url is not set")
        prompt = fill_template(jc.prompt_template, trajectory_fields(traj))
        text, cached, attempts = await judge_text(prompt, jc)
        score = parse_score(text, jc)
        if score is None:
            raise JudgeError("unparsed", f"no score in the reply {' '.join(text.split())[:120]!r}")
    except JudgeError as e:
        attempts = attempts or e.attempts
        _record_failure(e.kind, str(e))
    except Exception as e:   # a bad row, a parser that raises, ...: a failed judgment, never a failed step
        _record_failure("error", f"{type(e).__name__}: {e}")
    failed = score is None
    value = float(jc.fallback_score) if failed else float(score)
    return value, {"judge_score": value, "judge_failed": float(failed), "judge_cached": float(cached),
                   "judge_attempts": float(attempts), "judge_latency_s": time.perf_counter() - t0}
