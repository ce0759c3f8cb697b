"""The http engine against a fake SGLang server on loopback that speaks sglang 0.5.17's JSON shapes."""
import asyncio
import contextlib
import json
import math
import os
import threading

import pytest
from aiohttp import web

from agent_rl.config.schema import RolloutConfig
from agent_rl.engines import build_engine
from agent_rl.engines.base import SamplingParams
from agent_rl.engines.http import HTTPEngine, HTTPEngineError

VOCAB = 1000
EOS = 2


class FakeSGLang:
    """Deterministic 'model': next token = (last token * 7 + 3) % VOCAB, log-prob -0.1 * (k + 1).
    A rid becomes known 30 ms after /generate arrives (aborts before that are ignored, like sglang's)."""

    def __init__(self):
        self.requests = []
        self.known = set()
        self.aborted = set()
        self.abort_calls = 0
        self.calls = []
        self.queries = []
        self.fail_generate = False
        self.sessions, self.contexts, self.session_calls = {}, [], []

    async def open_session(self, request):
        body = await request.json()
        self.session_calls.append(("open", body))
        if not body.get("streaming"):
            return web.json_response({"error": {"message": "not streaming"}}, status=400)
        self.sessions[body["session_id"]] = []
        return web.json_response(body["session_id"])

    async def close_session(self, request):
        body = await request.json()
        self.session_calls.append(("close", body))
        self.sessions.pop(body["session_id"], None)
        return web.Response(status=200)

    async def server_info(self, request):
        # sglang's /server_info: its ServerArgs at the top, the scheduler's states inside
        return web.json_response({"pp_max_micro_batch_size": 6,
                                  "internal_states": [{"effective_max_running_requests_per_dp": 16,
                                                       "memory_usage": {"token_capacity": 5000}}]})

    async def generate(self, request):
        body = await request.json()
        self.requests.append(body)
        if self.fail_generate:
            return web.json_response({"error": {"message": "boom"}}, status=400)
        rid, sp, ids = body["rid"], body["sampling_params"], list(body["input_ids"])
        sid = (body.get("session_params") or {}).get("id")
        if sid is not None:   # a streaming session: the request extends what the session holds
            if sid not in self.sessions:
                return web.json_response({"error": {"message": f"session id {sid} does not exist"}}, status=400)
            ids = self.sessions[sid] + ids
        self.contexts.append((sid, list(ids)))
        await asyncio.sleep(0.03)
        self.known.add(rid)
        out, lps, finish = [], [], None
        stop = set(sp.get("stop_token_ids") or [])
        if not sp.get("ignore_eos"):
            stop.add(EOS)
        while finish is None:
            if rid in self.aborted:
                finish = {"type": "abort", "message": "Abort before prefill", "status_code": None, "err_type": None}
                break
            tok = ((out or ids)[-1] * 7 + 3) % VOCAB
            out.append(tok)
            lps.append([-0.1 * len(out), tok, None])
            if tok in stop:
                finish = {"type": "stop", "matched": tok}
            elif len(out) >= sp["max_new_tokens"]:
                finish = {"type": "length", "length": len(out)}
            await asyncio.sleep(0.002)
        self.known.discard(rid)
        if sid is not None and finish["type"] != "abort":
            self.sessions[sid] = ids + out
        return web.json_response({"text": "", "output_ids": out, "meta_info": {
            "id": rid, "finish_reason": finish, "prompt_tokens": len(ids), "completion_tokens": len(out),
            "output_token_logprobs": lps, "cached_tokens": 0, "e2e_latency": 0.01}})

    async def abort_request(self, request):
        body = await request.json()
        self.abort_calls += 1
        if body.get("rid") in self.known:
            self.aborted.add(body["rid"])
        return web.Response(status=200)

    async def update_weights_from_disk(self, request):
        body = await request.json()
        self.calls.append(("update_weights_from_disk", body))
        ok = body["model_path"] != "/missing"
        return web.json_response({"success": ok, "message": "ok" if ok else "no such path", "num_paused_requests": 0},
                                 status=200 if ok else 400)

    def simple(self, name, status=200):
        async def handler(request):
            self.calls.append((name, await request.read()))
            self.queries.append((name, dict(request.query)))
            return web.Response(status=status, text="Cache flushed.\n" if status == 200 else "flush failed")
        return handler


def _app(fake):
    app = web.Application()
    app.router.add_post("/generate", fake.generate)
    app.router.add_post("/abort_request", fake.abort_request)
    app.router.add_post("/open_session", fake.open_session)
    app.router.add_post("/close_session", fake.close_session)
    app.router.add_get("/server_info", fake.server_info)
    app.router.add_post("/update_weights_from_disk", fake.update_weights_from_disk)
    app.router.add_post("/flush_cache", fake.simple("flush_cache"))
    app.router.add_post("/release_memory_occupation", fake.simple("release"))
    app.router.add_post("/resume_memory_occupation", fake.simple("resume"))
    app.router.add_post("/start_profile", fake.simple("start_profile"))
    app.router.add_post("/stop_profile", fake.simple("stop_profile"))
    return app


@contextlib.asynccontextmanager
async def serving(app):
    """`app` on a loopback port: its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def server():
    fake = FakeSGLang()
    async with serving(_app(fake)) as url:
        yield fake, url


def _expected(prompt, n):
    out = []
    for _ in range(n):
        out.append(((out or prompt)[-1] * 7 + 3) % VOCAB)
    return out


async def test_generate_concurrent_and_params(server):
    fake, url = server
    eng = build_engine(RolloutConfig(engine="http", server_url=url + "/"), "unused")
    assert isinstance(eng, HTTPEngine)
    sp = SamplingParams(max_new_tokens=5, temperature=0.7, top_p=0.9, top_k=20, stop_token_ids=[999], ignore_eos=True, seed=3)
    outs = await asyncio.gather(*[eng.generate([10 + i], sp, f"r{i}") for i in range(8)])
    for i, o in enumerate(outs):
        assert o.output_ids == _expected([10 + i], 5) and o.finish_reason == "length"
        assert o.logprobs == pytest.approx([-0.1 * (k + 1) for k in range(5)]) and o.prompt_tokens == 1
    body = fake.requests[0]
    assert body["return_logprob"] is True and len(body["rid"]) == 32
    assert len({b["rid"] for b in fake.requests}) == 8                     # fresh rid per request
    assert body["sampling_params"] == {"max_new_tokens": 5, "temperature": 0.7, "top_p": 0.9, "top_k": 20,
                                       "ignore_eos": True, "skip_special_tokens": False, "no_stop_trim": True,
                                       "stop_token_ids": [999], "sampling_seed": 3}
    greedy = await eng.generate([10], SamplingParams(max_new_tokens=2, temperature=0.0), "g")
    assert fake.requests[-1]["sampling_params"]["temperature"] == 0.0 and fake.requests[-1]["sampling_params"]["top_k"] == -1
    assert greedy.output_ids == _expected([10], 2)
    await eng.shutdown()


async def test_stop_token_included(server):
    fake, url = server
    eng = HTTPEngine(url)
    seq = _expected([10], 6)
    out = await eng.generate([10], SamplingParams(max_new_tokens=6, stop_token_ids=[seq[2]]), "s")
    assert out.finish_reason == "stop" and out.output_ids == seq[:3] and len(out.logprobs) == 3
    await eng.shutdown()


async def test_abort_early_and_running(server):
    fake, url = server
    eng = HTTPEngine(url, abort_retry_s=0.05)
    long = SamplingParams(max_new_tokens=10 ** 6, ignore_eos=True)
    task = asyncio.ensure_future(eng.generate([5], long, "early"))
    await asyncio.sleep(0.005)                 # the server does not know the rid yet: first abort is ignored
    await eng.abort("early")
    out = await asyncio.wait_for(task, 5)
    assert out.finish_reason == "abort" and fake.abort_calls >= 2
    task = asyncio.ensure_future(eng.generate([5], long, "running"))
    await asyncio.sleep(0.2)
    await eng.abort("running")
    out = await asyncio.wait_for(task, 5)
    assert out.finish_reason == "abort" and len(out.output_ids) > 3 and len(out.logprobs) == len(out.output_ids)
    await eng.abort("unknown")                 # no-op
    await eng.shutdown()


async def test_weights_memory_and_errors(server):
    fake, url = server
    eng = HTTPEngine(url)
    with pytest.raises(NotImplementedError, match="sync_weights_from_disk"):
        await eng.update_weights([("w", None)])
    await eng.update_weights_from_disk("/ckpt/step_3")
    assert fake.calls[-1] == ("update_weights_from_disk", {"model_path": "/ckpt/step_3"})
    with pytest.raises(HTTPEngineError, match="no such path") as e:
        await eng.update_weights_from_disk("/missing")
    assert "\n" not in str(e.value) and '"success"' not in str(e.value)  # one line: the server's message, not its JSON
    assert await eng.flush_cache() is True
    assert fake.queries[-1] == ("flush_cache", {"timeout": "10"})   # the server waits for aborted requests to leave
    await eng.release_memory()
    await eng.resume_memory()
    assert [c[0] for c in fake.calls[-3:]] == ["flush_cache", "release", "resume"]
    # KV cache and weights only: no tags would also release the CUDA graphs' memory (docs/results.md section 7)
    assert [json.loads(c[1]) for c in fake.calls[-2:]] == [{"tags": ["kv_cache", "weights"]}] * 2
    await eng.start_profile("/tmp/prof", 50)   # sglang's ProfileReq fields, as /start_profile reads them
    await eng.stop_profile()
    assert fake.calls[-2][0] == "start_profile" and fake.calls[-1][0] == "stop_profile"
    assert json.loads(fake.calls[-2][1]) == {"output_dir": "/tmp/prof", "num_steps": 50, "activities": ["CPU", "GPU"],
                                             "with_stack": False, "record_shapes": False, "profile_prefix": "agent-rl"}
    fake.fail_generate = True
    with pytest.raises(HTTPEngineError, match="HTTP 400"):
        await eng.generate([1], SamplingParams(max_new_tokens=1), "bad")
    await eng.shutdown()


async def test_flush_refused_while_requests_run_is_false_not_an_error():
    """sglang answers HTTP 400 when requests still run after the flush's wait: logged, returned as False."""
    fake = FakeSGLang()
    app = web.Application()
    app.router.add_post("/flush_cache", fake.simple("flush_cache", status=400))
    async with serving(app) as url:
        eng = HTTPEngine(url)
        assert await eng.flush_cache() is False
        await eng.shutdown()


async def test_http_needs_url():
    with pytest.raises(ValueError, match="server_url"):
        build_engine(RolloutConfig(engine="http"), "unused")


def test_parse_generate_output_shapes():
    from agent_rl.engines.sglang_engine import parse_generate_output

    out = parse_generate_output({"output_ids": [1, 2], "meta_info": {
        "finish_reason": {"type": "abort", "message": "x"}, "output_token_logprobs": [[-0.5, 1, None]]}}, 4)
    assert out.output_ids == [1] and out.logprobs == [-0.5] and out.finish_reason == "abort" and out.prompt_tokens == 4
    out = parse_generate_output({"output_ids": [7], "meta_info": {"finish_reason": {"type": "stop", "matched": 7},
                                                                  "output_token_logprobs": [(math.log(0.5), 7, "a")]}}, 1)
    assert out.finish_reason == "stop" and out.logprobs == [pytest.approx(math.log(0.5))]
    out = parse_generate_output({"output_ids": [3, "4", 5], "meta_info": {   # a None log-prob reads as 0.0
        "finish_reason": {"type": "length"}, "output_token_logprobs": [(-1, 3, None), (None, 4, None), ("-0.25", 5, None)]}}, 2)
    assert out.output_ids == [3, 4, 5] and out.logprobs == [-1.0, 0.0, -0.25]
    assert all(type(x) is float for x in out.logprobs) and all(type(x) is int for x in out.output_ids)


@pytest.fixture
def threaded_server():
    """The fake server on its own event loop in a thread, for callers that run their own loop (TrainWorker)."""
    fake, loop, started = FakeSGLang(), asyncio.new_event_loop(), threading.Event()
    runner = web.AppRunner(_app(fake))
    box = {}

    async def start():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        started.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield fake, box["url"]
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_train_worker_syncs_http_engine_through_disk(threaded_server, tiny_model_path, tmp_path):
    """`agent-rl train` with rollout.engine=http: the worker writes the actor as an HF folder and the server loads it
    (at setup, so a server left with another run's weights starts from ours, and at every sync)."""
    import torch
    from safetensors.torch import load_file

    from agent_rl.config.load import compose
    from agent_rl.orchestration.worker import TrainWorker

    fake, url = threaded_server
    cfg = compose([f"model.path={tiny_model_path}", "model.dtype=float32", "model.gradient_checkpointing=false",
                   "rollout.engine=http", f"rollout.server_url={url}", "tools.config_path=null",
                   "actor.use_kl_loss=false", f"trainer.output_dir={tmp_path}/out"], check_paths=False)
    worker = TrainWorker(0, 1, cfg, "cpu")
    try:
        worker.setup("127.0.0.1", 0)
        sync_dir = os.path.join(str(tmp_path), "out", "weight_sync")
        assert fake.calls == [("update_weights_from_disk", {"model_path": sync_dir})]
        with torch.no_grad():
            for p in worker.actor.model.parameters():
                p.add_(0.5)
        m = worker.sync_weights(version=2)
        assert fake.calls[-1] == ("update_weights_from_disk", {"model_path": sync_dir}) and len(fake.calls) == 2
        assert m["weight_sync/bytes"] > 0 and worker.policy_version == 2
        written = load_file(os.path.join(sync_dir, "model.safetensors"))
        for name, p in worker.actor.model.named_parameters():
            assert torch.equal(written[name], p.detach()), name
        assert sorted(os.listdir(os.path.join(str(tmp_path), "out"))) == ["weight_sync"]
    finally:
        worker.shutdown()


async def test_more_than_a_hundred_requests_reach_the_server_at_once():
    """aiohttp's default connector holds all but 100 requests in the client: the rollout's 256-1024 would queue there."""
    n, state, all_in = 150, {"now": 0, "max": 0}, asyncio.Event()

    async def generate(request):
        body = await request.json()
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        if state["now"] == n:
            all_in.set()
        try:
            await asyncio.wait_for(all_in.wait(), 5)
        except asyncio.TimeoutError:
            pass
        state["now"] -= 1
        return web.json_response({"output_ids": [1], "meta_info": {"finish_reason": {"type": "length"},
                                                                   "output_token_logprobs": [[-1.0, 1, None]]}})

    app = web.Application()
    app.router.add_post("/generate", generate)
    async with serving(app) as url:
        eng = HTTPEngine(url)
        try:
            outs = await asyncio.gather(*[eng.generate([1], SamplingParams(max_new_tokens=1), f"r{i}")
                                          for i in range(n)])
            assert state["max"] == n and all(o.finish_reason == "length" for o in outs)
        finally:
            await eng.shutdown()


async def test_abort_before_the_scheduler_is_an_aborted_output_and_options_reach_the_body():
    """sglang answers HTTP 400 "Request ... was aborted" when the abort lands before the request reached its
    scheduler (RequestAbortedError); the in-process engine returns an aborted output then, and so does this one."""
    seen, aborted = [], asyncio.Event()

    async def generate(request):
        body = await request.json()
        seen.append(body)
        if body["sampling_params"]["max_new_tokens"] > 1:
            await asyncio.wait_for(aborted.wait(), 5)
            return web.json_response({"error": {"message": f"Request {body['rid']} was aborted"}}, status=400)
        return web.json_response({"error": {"message": "bad input"}}, status=400)

    async def abort_request(request):
        aborted.set()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/generate", generate)
    app.router.add_post("/abort_request", abort_request)
    async with serving(app) as url:
        eng = HTTPEngine(url, eos_token_ids=[2, 7], send_priority=False)
        try:
            task = asyncio.ensure_future(eng.generate([1, 2], SamplingParams(max_new_tokens=5, priority=3), "a"))
            while not seen:
                await asyncio.sleep(0.01)
            await eng.abort("a")
            out = await asyncio.wait_for(task, 5)
            assert (out.finish_reason, out.output_ids, out.prompt_tokens) == ("abort", [], 2)
            assert seen[0]["sampling_params"]["stop_token_ids"] == [2, 7] and "priority" not in seen[0]
            with pytest.raises(HTTPEngineError, match="bad input"):   # an error without an abort stays an error
                await eng.generate([1], SamplingParams(max_new_tokens=1), "b")
        finally:
            await eng.shutdown()


async def test_kv_sessions_send_each_turn_s_new_ids_and_end_with_the_trajectory(server):
    fake, url = server
    eng = build_engine(RolloutConfig(engine="http", server_url=url, kv_sessions=True), "unused")
    try:
        sp = SamplingParams(max_new_tokens=3, ignore_eos=True, session="traj")
        a = await eng.generate([5, 6], sp, "r0")
        ctx = [5, 6, *a.output_ids, 11, 12]
        b = await eng.generate(ctx, sp, "r1")
        assert b.output_ids == _expected(ctx, 3) and b.prompt_tokens == len(ctx)
        sid = fake.session_calls[0][1]["session_id"]
        assert [r["input_ids"] for r in fake.requests] == [[5, 6], [11, 12]]
        assert fake.contexts == [(sid, [5, 6]), (sid, ctx)]
        await eng.end_session("traj")
        await eng.generate([1], SamplingParams(max_new_tokens=2, ignore_eos=True, session="other"), "r2")
        assert await eng.flush_cache()
        await asyncio.sleep(0.05)
        opened = [b["session_id"] for c, b in fake.session_calls if c == "open"]
        closed = [b["session_id"] for c, b in fake.session_calls if c == "close"]
        assert fake.sessions == {} and len(opened) == 2 and sorted(closed) == sorted(opened)
        assert eng.session_stats()["limit"] == 10          # the pool of 16 less the running cap of 6
        assert eng.session_stats()["kv_limit"] == 2500     # half the KV pool's tokens
    finally:
        await eng.shutdown()


async def test_a_request_whose_connection_the_server_closes_unanswered_is_sent_again_once():
    """A kept-alive connection the server closes as a request goes out (its keep-alive timer ran out first: seen once
    on a loaded CI machine between two training steps) loses no work: the request goes out again, on a new
    connection; a server that closes every time is an error."""
    fake, drops = FakeSGLang(), {"left": 1, "seen": 0}

    async def close_session(request):
        drops["seen"] += 1
        if drops["left"]:
            drops["left"] -= 1
            request.transport.close()   # no answer: the client reads a closed connection
            return web.Response()
        return await fake.close_session(request)
    app = web.Application()
    app.router.add_post("/close_session", close_session)
    app.router.add_post("/open_session", fake.open_session)
    async with serving(app) as url:
        eng = HTTPEngine(url)
        assert await eng._post("/open_session", {"session_id": "s", "streaming": True}) == "s"
        await eng._post("/close_session", {"session_id": "s"})
        assert drops["seen"] == 2 and [c[0] for c in fake.session_calls] == ["open", "close"]
        drops["left"] = 2
        import aiohttp
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await eng._post("/close_session", {"session_id": "s"})
        assert drops["seen"] == 4   # once again, not more
        await eng.shutdown()
