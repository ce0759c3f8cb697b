"""KV sessions (engines/kv_sessions.py) against a stand-in for sglang's streaming sessions: what each request sends,
what the stand-in then holds, and that every turn is generated on exactly the context a plain request would have."""
import asyncio

import pytest

from agent_rl.engines.base import GenerateOutput
from agent_rl.engines.kv_sessions import DEFAULT_POOL, KVSessions, session_limit


class Streaming:
    """sglang 0.5.17's streaming-session semantics: a session's request extends what the session holds (its last
    finished request's context + output); an abort leaves it as it was; `extra` > 0 makes a faulty server that holds
    `extra` more tokens than it returned."""

    def __init__(self, pool=64, extra=0, running=None, kv_tokens=None):
        self.held, self.opened, self.closed, self.sent, self.contexts = {}, [], [], [], []
        self.pool, self.running, self.extra, self.abort_next, self.fail_next = pool, running, extra, False, False
        self.kv_tokens = kv_tokens

    async def open(self, sid):
        await asyncio.sleep(0)
        assert sid not in self.held
        self.held[sid] = []
        self.opened.append(sid)

    async def close(self, sid):
        self.held.pop(sid, None)
        self.closed.append(sid)

    async def pool_size(self):
        return {"pool": self.pool, "running_cap": self.running, "kv_tokens": self.kv_tokens}

    async def send(self, ids, sid):
        self.sent.append((list(ids), sid))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("connection lost")
        full = (self.held[sid] if sid is not None else []) + list(ids)
        self.contexts.append(full)
        if self.abort_next:
            self.abort_next = False
            return GenerateOutput([], [], "abort", prompt_tokens=len(full))
        out = [(sum(full) * 7 + len(full) + k) % 997 for k in range(3)]
        if sid is not None:
            self.held[sid] = full + out + [5] * self.extra
        return GenerateOutput(out, [-0.1] * 3, "length", prompt_tokens=len(full))


async def _turns(kv, srv, key, prompt, observations, cut=None):
    """A trajectory as the agent loop runs it: context = prompt + outputs + observations; `cut` drops that turn's
    last sampled id before the next (a stop string)."""
    ctx, outs = list(prompt), []
    for i, obs in enumerate(observations):
        out = await kv.generate(key, ctx, srv.send)
        ids = out.output_ids[:-1] if cut == i else out.output_ids
        outs.append(list(out.output_ids))
        ctx += ids + obs
    return ctx, outs


async def test_turns_send_only_their_new_tokens_and_see_the_plain_context():
    srv = Streaming(kv_tokens=1000)
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    _, outs = await _turns(kv, srv, "t1", [1, 2, 3], [[7, 8], [9], []])
    assert [s for _, s in srv.sent] == [srv.opened[0]] * 3
    assert [len(ids) for ids, _ in srv.sent] == [3, 2, 1]          # prompt, then each observation alone
    plain = Streaming()
    _, ref = await _turns(KVSessions(plain.open, plain.close, plain.pool_size), plain, "t1", [1, 2, 3], [[7, 8], [9], []])
    assert outs == ref and srv.contexts[-1] == [1, 2, 3] + ref[0] + [7, 8] + ref[1] + [9]
    assert kv.counts["started"] == 1 and kv.counts["appended"] == 2 and kv.limit == 32
    assert kv.held == len(srv.held[srv.opened[0]]) == 3 + 3 + 2 + 3 + 1 + 3    # what sglang holds, counted
    kv.drop("t1")
    await kv.close_all()
    assert srv.closed == srv.opened and len(kv) == 0


async def test_a_context_that_no_longer_extends_what_sglang_holds_starts_a_new_session():
    srv = Streaming()
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    ctx, outs = await _turns(kv, srv, "t", [4, 5], [[6, 6, 6], [7], []], cut=0)   # turn 0's last id cut off: a
    # longer context than sglang holds, but not an extension of it
    assert kv.counts["restarted"] == 1 and len(srv.opened) == 2 and srv.closed[:1] == srv.opened[:1]
    expected_second = [4, 5] + outs[0][:-1] + [6, 6, 6]
    assert srv.sent[1] == (expected_second, srv.opened[1])          # the whole context, in the new session
    assert srv.contexts[1] == expected_second and srv.contexts[2][:len(expected_second)] == expected_second


async def test_an_abort_drops_the_session_and_the_resumed_turn_sends_its_whole_context():
    srv = Streaming()
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    first = await kv.generate("t", [1, 2], srv.send)
    srv.abort_next = True
    ctx = [1, 2] + first.output_ids + [3]
    assert (await kv.generate("t", ctx, srv.send)).finish_reason == "abort"
    assert kv.counts["aborted"] == 1 and len(kv) == 0
    await kv.close_all()
    assert srv.closed == srv.opened
    out = await kv.generate("t", ctx, srv.send)
    assert srv.sent[-1] == (ctx, srv.opened[-1]) and srv.contexts[-1] == ctx and out.finish_reason == "length"


async def test_a_server_holding_another_context_is_caught_and_the_turn_generated_again_without_a_session(caplog):
    srv = Streaming(extra=1)   # it holds one token more than it returned
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    first = await kv.generate("t", [1, 2], srv.send)
    ctx = [1, 2] + first.output_ids + [3]
    out = await kv.generate("t", ctx, srv.send)
    assert kv.counts["redone"] == 1 and "another length" in caplog.text
    assert srv.sent[-1] == (ctx, None) and srv.contexts[-1] == ctx   # generated again, plainly, on the right context
    assert out.prompt_tokens == len(ctx) and len(kv) == 0


async def test_at_most_half_the_request_pool_is_held_by_sessions():
    srv = Streaming(pool=4)
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    await asyncio.gather(*(kv.generate(f"t{i}", [i + 1, 1], srv.send) for i in range(5)))
    assert kv.limit == 2 and len(srv.opened) == 2 and kv.counts["full"] == 3
    assert sorted(s is None for _, s in srv.sent) == [False, False, True, True, True]


async def test_under_a_running_cap_sessions_hold_the_rest_of_the_request_pool():
    srv = Streaming(pool=7, running=3)     # scheduling_kwargs with sessions: a pool of cap + concurrency
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    await asyncio.gather(*(kv.generate(f"t{i}", [i + 1, 1], srv.send) for i in range(5)))
    assert kv.limit == 4 and len(srv.opened) == 4 and kv.counts["full"] == 1


async def test_sessions_hold_at_most_half_the_kv_pool_s_tokens():
    srv = Streaming(kv_tokens=40)           # sessions may hold 20 tokens
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    for i in range(3):
        await kv.generate(f"t{i}", [i + 1] * 8, srv.send)
    assert kv.kv_limit == 20 and len(kv) == 2 and kv.counts["kv_full"] == 1 and kv.held == 2 * 11
    assert [sid is None for _, sid in srv.sent] == [False, False, True]
    ctx = srv.held[srv.opened[0]] + [4]     # t0's next turn: 12 tokens, one more than its session holds
    # t0 grows past the limit: its session is dropped and the turn goes plainly on its whole context
    await kv.generate("t0", ctx, srv.send)
    assert srv.sent[-1] == (ctx, None) and kv.counts["kv_full"] == 2 and len(kv) == 1 and kv.held == 11
    kv.drop("t1")
    assert kv.held == 0 and kv.stats()["held"] == 0 and kv.stats()["kv_limit"] == 20
    await kv.close_all()
    plain = Streaming()                     # no KV size known: no token limit
    kv2 = KVSessions(plain.open, plain.close, plain.pool_size)
    await kv2.generate("t", [1] * 500, plain.send)
    assert kv2.kv_limit is None and len(kv2) == 1


def test_session_limit():
    assert session_limit(1024) == 512 and session_limit(2560, 1024) == 1536
    assert session_limit(1024, 1024) == 512 and session_limit(1024, 4096) == 512   # no cap below the pool: half
    assert session_limit(1) == 1 and session_limit(2, 1) == 1


async def test_a_failed_request_drops_its_session_and_a_failed_open_raises_without_holding_one():
    srv = Streaming()
    kv = KVSessions(srv.open, srv.close, srv.pool_size)
    srv.fail_next = True
    with pytest.raises(RuntimeError, match="connection lost"):
        await kv.generate("t", [1], srv.send)
    await kv.close_all()
    assert len(kv) == 0 and srv.closed == srv.opened

    async def refuse(sid):
        raise RuntimeError("sessions disabled")
    kv2 = KVSessions(refuse, srv.close, srv.pool_size)
    with pytest.raises(RuntimeError, match="sessions disabled"):
        await kv2.generate("t", [1], srv.send)
    assert len(kv2) == 0


async def test_close_all_leaves_a_session_whose_request_runs_and_an_unknown_pool_size_uses_the_default(caplog):
    srv = Streaming()
    gate = asyncio.Event()

    async def slow_send(ids, sid):
        await gate.wait()
        return await srv.send(ids, sid)

    async def no_pool():
        raise KeyError("effective_max_running_requests_per_dp")
    kv = KVSessions(srv.open, srv.close, no_pool)
    await kv.generate("idle", [1], srv.send)
    running = asyncio.ensure_future(kv.generate("busy", [2], slow_send))
    await asyncio.sleep(0.01)
    await kv.close_all()
    assert srv.closed == [srv.opened[0]] and len(kv) == 1
    gate.set()
    await running
    assert kv.limit == DEFAULT_POOL // 2 and "request pool size" in caplog.text
