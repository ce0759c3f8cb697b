"""A trajectory's KV cache kept between its turns in an sglang streaming session (`rollout.kv_sessions`).

Without it every turn is a new request for the whole context: sglang's scheduler matches it against its radix tree,
prefills the new tokens, inserts the request into the tree after its prefill and again when it finishes, and
releases it (~0.9 ms of scheduler work an admitted request on the H200, docs/benchmarks-log.md, seventeenth session).
A streaming session (sglang >= 0.5.17, `enable_streaming_session`) holds the finished turn's KV in a slot of its
own: the next turn sends only its new tokens (the observation and the next assistant header), and sglang appends
them to what it holds, with no tree match or insert.

What sglang holds after a finished turn is that request's context plus its output ids; a request extends it only
when our next context starts with exactly those ids. Where it does not (a stop string cut sampled ids off, a resumed
carried turn), the session is closed and a new one starts from the full context. After each request sglang's
`prompt_tokens` must equal our context's length, else the session is dropped and the caller generates again
without one. An abort drops the session (sglang may have released its slot). Sessions end with their trajectory
(`Engine.end_session`) or at the next cache flush (after each weight update: the held KV is the old policy's).

A held slot keeps one entry of sglang's request pool, and sglang admits a request (a session's too, which reuses
its slot) only while the pool has a free entry: sessions may hold what the running requests cannot fill (`limit`,
`session_limit`), the other requests go without one, so held slots can never starve admission. sglang sizes the pool
by `max_running_requests`; where a running cap below it is set (`pp_max_micro_batch_size`, as `scheduling_kwargs`
does with sessions when it caps the running requests for CUDA-graph coverage), sessions hold the rest of the pool,
else half of it. Held KV is not evictable (sglang 0.5.17 never evicts a session, unlike its radix cache): sessions
may hold at most half of the KV pool's tokens (`kv_limit`; by each session's context, reserved when its request
is sent), a trajectory past it goes on without one (`kv_full`), so running requests always find KV to grow into.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict, List, Optional, Set, Tuple

log = logging.getLogger(__name__)

SESSION_KINDS = ("sglang", "sglang-server", "http")   # engines that can keep them
DEFAULT_POOL = 2048   # sglang 0.5.17's smallest request pool without a running-request cap
KV_SHARE = 0.5   # of the KV pool's tokens, the most that sessions may hold
STATE_KEYS = ("open", "limit", "kv_limit", "held")   # of `KVSessions.stats`: its state now; the other keys count events
CAPACITY = 1 << 30   # sglang's `capacity_of_str_len` (unused with token ids; it must be given)


def needs_session_engine(key: str, engine: str) -> str:
    """The error for `key` asking an engine that cannot keep KV sessions (`engine`: how the caller names it) for them."""
    return f"{key}: needs an sglang engine ({', '.join(SESSION_KINDS)}), not {engine}"


def session_limit(pool: int, running_cap: Optional[int] = None) -> int:
    """The sessions that may hold an entry of sglang's request pool of `pool`: the entries its running cap leaves
    (`pool - running_cap`, where a cap below the pool is set), else half of the pool; at least one."""
    pool = int(pool)
    if running_cap and 0 < int(running_cap) < pool:
        return max(1, pool - int(running_cap))
    return max(1, pool // 2)


@dataclass
class Session:
    sid: str
    ctx: Optional[List[int]] = None   # what sglang holds: the last finished request's context + output ids
    busy: bool = False
    held: int = 0   # its tokens counted against `kv_limit`: its context (reserved when a request is sent)


class KVSessions:
    """The sessions of one engine. `open_fn(sid)` / `close_fn(sid)` talk to sglang (in-process or HTTP)."""

    def __init__(self, open_fn: Callable[[str], Awaitable[Any]], close_fn: Callable[[str], Awaitable[Any]],
                 pool_fn: Optional[Callable[[], Awaitable[Dict[str, Optional[int]]]]] = None):
        """`pool_fn()`: {"pool": the size of sglang's request pool, "running_cap": its running cap where one below
        the pool is set, "kv_tokens": its KV pool's tokens}, read once, before the first session (unknown: the
        pool `DEFAULT_POOL`, no token limit)."""
        self._open, self._close, self._pool_fn = open_fn, close_fn, pool_fn
        self.limit: Optional[int] = None
        self.kv_limit: Optional[int] = None   # tokens sessions may hold (None: unknown, not limited)
        self.held = 0                         # tokens they hold (Session.held summed)
        self._limit_task: Optional[asyncio.Future] = None
        self._by_key: Dict[str, Session] = {}
        self._closing: Set[asyncio.Task] = set()
        self.counts: Counter = Counter()   # appended | started | restarted | full | kv_full | redone | aborted

    def __len__(self) -> int:
        return len(self._by_key)

    async def generate(self, key: str, input_ids: List[int],
                       send: Callable[[List[int], Optional[str]], Awaitable[Any]]) -> Any:
        """`send(ids, session id or None)` -> a GenerateOutput, for the request of `key`'s trajectory on context
        `input_ids`: in its session, only the ids sglang does not hold yet."""
        if self.limit is None:
            if self._limit_task is None:
                self._limit_task = asyncio.ensure_future(self._read_limit())
            await asyncio.shield(self._limit_task)
        s, ids = await self.begin(key, input_ids)
        if s is None:
            return await send(input_ids, None)
        try:
            out = await send(ids, s.sid)
        except BaseException:
            self.failed(key, s)
            raise
        if not self.finish(key, s, input_ids, out.output_ids, out.finish_reason, out.prompt_tokens):
            return await send(input_ids, None)
        return out

    async def _read_limit(self) -> None:
        info: Dict[str, Optional[int]] = {}
        if self._pool_fn is not None:
            try:
                info = await self._pool_fn()
            except Exception as e:   # an older sglang, a server without the route: the default
                log.warning("could not read sglang's request pool size (%s); sessions capped at %d", e,
                            DEFAULT_POOL // 2)
        tokens = info.get("kv_tokens")
        self.kv_limit = int(int(tokens) * KV_SHARE) if tokens else None
        self.limit = session_limit(info.get("pool") or DEFAULT_POOL, info.get("running_cap"))

    async def begin(self, key: str, input_ids: List[int]) -> Tuple[Optional[Session], List[int]]:
        """The session for `key`'s next request and the ids to send (only the new ones when sglang holds the rest);
        (None, input_ids) for a request without one (the limit reached)."""
        s = self._by_key.get(key)
        if s is not None and s.ctx is not None and not s.busy:
            n = len(s.ctx)
            if len(input_ids) > n and input_ids[:n] == s.ctx:
                if self._fits(len(input_ids) - s.held):
                    s.busy = True
                    self._hold(s, len(input_ids))
                    self.counts["appended"] += 1
                    return s, input_ids[n:]
            else:
                self.counts["restarted"] += 1
        if s is not None:
            self.drop(key)
        if self.limit is not None and len(self._by_key) >= self.limit:
            self.counts["full"] += 1
            return None, input_ids
        if not self._fits(len(input_ids)):
            self.counts["kv_full"] += 1
            return None, input_ids
        s = Session(uuid.uuid4().hex, busy=True)
        self._by_key[key] = s
        self._hold(s, len(input_ids))
        try:
            await self._open(s.sid)
        except BaseException:
            if self._by_key.get(key) is s:
                self._by_key.pop(key)
                self._hold(s, 0)
            raise
        self.counts["started"] += 1
        return s, input_ids

    def finish(self, key: str, s: Session, input_ids: List[int], output_ids: List[int], finish_reason: str,
               prompt_tokens: int) -> bool:
        """Record what sglang now holds. False when its prompt was not `input_ids`: the session is dropped and the
        output must not be used (the caller generates again without a session)."""
        s.busy = False
        if self._by_key.get(key) is not s:
            return True
        if finish_reason == "abort":
            self.counts["aborted"] += 1
            self.drop(key)
            return True
        if prompt_tokens != len(input_ids):
            self.counts["redone"] += 1
            log.warning("sglang session %s held a context of another length (%d prompt tokens, ours %d): dropped, "
                        "the turn generates again without it", s.sid, prompt_tokens, len(input_ids))
            self.drop(key)
            return False
        s.ctx = [*input_ids, *output_ids]
        self._hold(s, len(s.ctx))
        return True

    def _fits(self, more: int) -> bool:
        return self.kv_limit is None or self.held + more <= self.kv_limit

    def _hold(self, s: Session, tokens: int) -> None:
        self.held += tokens - s.held
        s.held = tokens

    def failed(self, key: str, s: Session) -> None:
        """The request raised or was cancelled: what sglang holds is unknown."""
        s.busy = False
        if self._by_key.get(key) is s:
            self.drop(key)

    def drop(self, key: str) -> None:
        s = self._by_key.pop(key, None)
        if s is not None:
            self._hold(s, 0)
            self._close_later(s.sid)

    def _close_later(self, sid: str) -> None:
        try:
            task = asyncio.ensure_future(self._close(sid))
        except RuntimeError:   # no running loop (interpreter shutdown): sglang closes it with the engine
            return
        self._closing.add(task)
        task.add_done_callback(self._closed)

    def _closed(self, task: asyncio.Task) -> None:
        self._closing.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("closing an sglang session failed: %s", task.exception())

    async def close_all(self) -> None:
        """Close every session not in a request (before a cache flush, a weight update, releasing memory) and wait
        until the closes were sent."""
        for key in [k for k, s in self._by_key.items() if not s.busy]:
            self.drop(key)
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)

    def stats(self) -> Dict[str, int]:
        return {"open": len(self._by_key), "limit": self.limit if self.limit is not None else -1,
                "kv_limit": self.kv_limit if self.kv_limit is not None else -1, "held": self.held, **self.counts}


async def generate(kv: Optional[KVSessions], input_ids: List[int], sampling: Any, request_id: str,
                   one: Callable[..., Awaitable[Any]]) -> Any:
    """An engine's `generate`: in `sampling.session`'s session where `kv` (None: sessions off) keeps them.
    `one(ids, sampling, request_id, session_id=None, context_len=None)` sends one request."""
    if kv is None or not sampling.session:
        return await one(input_ids, sampling, request_id)
    return await kv.generate(sampling.session, input_ids,
                             lambda ids, sid: one(ids, sampling, request_id, sid, len(input_ids)))
