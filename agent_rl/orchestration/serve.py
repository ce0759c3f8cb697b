"""An OpenAI-compatible chat-completions server over our engines (`agent-rl serve`, docs/serve.md).

    POST /v1/chat/completions   messages, max_tokens (max_completion_tokens), temperature, top_p, top_k, n, stop,
                                seed -> OpenAI's `chat.completion` object (choices[i].message.content,
                                finish_reason stop | length, usage)
    GET  /v1/models             the served model
    GET  /health                {"status": "ok", ...} once the engine is up (with the engine's batching counters)

Messages are rendered by the rollout's `ChatRenderer`, so a checkpoint sees the prompt format it was trained on
(the model's own chat template when it renders tools, else the project's Hermes / Qwen2.5 template). Requests are
served concurrently: every completion is one `engine.generate` call on the server's event loop, so the hf engine
batches concurrent requests (continuous batching) and sglang schedules them as usual. `stop` strings end a
completion at their first occurrence (a stop string that is one token also stops generation there; longer ones are
cut after generation, which then runs to max_tokens or an end-of-turn token).

A bad request gets HTTP 400 with an OpenAI error object `{"error": {"message", "type", "param", "code"}}`; an
unknown model 404; an engine failure 500. `stream`, `tools` and `logprobs` are refused (400), other unknown
fields are ignored, as OpenAI-compatible servers do.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from typing import List, Optional

from agent_rl.engines.base import SamplingParams
from agent_rl.orchestration.serve_request import RequestError, cut_at_stop, error_body, parse_request


def resolve_model_path(model: str) -> str:
    """An HF folder, a checkpoint `global_step_N` (its `hf/` model) or `embedded` (prepared when missing)."""
    if model == "embedded":
        from agent_rl.model.prepare import prepare_embedded

        return prepare_embedded(log=lambda *_: None)
    if not os.path.isfile(os.path.join(model, "config.json")) and os.path.isfile(os.path.join(model, "hf", "config.json")):
        return os.path.join(model, "hf")
    return model


class ChatServer:
    """The HTTP face of one engine. `engine` is any `Engine`; `tokenizer` the model's."""

    def __init__(self, engine, tokenizer, model_name: str, model_path: str, max_model_len: int,
                 default_max_tokens: int = 1024, max_n: int = 16):
        from agent_rl.rollout.chat import ChatRenderer

        self.engine = engine
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.model_path = model_path
        self.names = [model_name] + [x for x in (model_path, os.path.basename(os.path.normpath(model_path)))
                                     if x != model_name]
        self.max_model_len = int(max_model_len)
        self.default_max_tokens = int(default_max_tokens)
        self.max_n = int(max_n)
        self.renderer = ChatRenderer(tokenizer, None, None, model_path=model_path)
        self.created = int(time.time())
        self.in_flight = 0
        self.served = 0
        self.closing = False

    # ------------------------------------------------------------------ app
    def app(self):
        from aiohttp import web

        @web.middleware
        async def errors(request, handler):
            try:
                return await handler(request)
            except web.HTTPException as e:   # unknown route / method: the same error shape
                if e.status < 400:
                    raise
                return web.json_response(error_body(f"{request.method} {request.path}: {e.reason}",
                                                    type_="invalid_request_error" if e.status < 500 else "server_error"),
                                         status=e.status)

        app = web.Application(middlewares=[errors], client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        return app

    async def health(self, request):
        from aiohttp import web

        stats = getattr(self.engine, "stats", None)
        body = {"status": "closing" if self.closing else "ok", "model": self.model_name,
                "engine": getattr(self.engine, "name", "?"), "in_flight": self.in_flight, "served": self.served}
        if stats is not None and hasattr(stats, "as_dict"):
            body["engine_stats"] = stats.as_dict()
        return web.json_response(body, status=503 if self.closing else 200)

    async def models(self, request):
        from aiohttp import web

        return web.json_response({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "agent-rl",
             "root": self.model_path, "max_model_len": self.max_model_len}]})

    async def chat_completions(self, request):
        import json

        from aiohttp import web

        def fail(e: RequestError):
            return web.json_response(error_body(str(e), e.param, e.type, e.code), status=e.status)

        if self.closing:
            return fail(RequestError("the server is shutting down", status=503, type_="server_error"))
        try:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise RequestError(f"the request body is not JSON: {e}") from None
            req = parse_request(body, self.names, self.max_n)
            prompt_ids = self._prompt_ids(req["messages"])
        except RequestError as e:
            return fail(e)
        room = self.max_model_len - len(prompt_ids)
        if room < 1:
            return fail(RequestError(f"the prompt has {len(prompt_ids)} tokens; this model's context is "
                                     f"{self.max_model_len} tokens", "messages", code="context_length_exceeded"))
        max_tokens = req["max_tokens"]
        if max_tokens is None:
            max_tokens = min(room, self.default_max_tokens)
        elif max_tokens > room:
            return fail(RequestError(f"max_tokens: {max_tokens} + {len(prompt_ids)} prompt tokens exceed this model's "
                                     f"context of {self.max_model_len} tokens", "max_tokens", code="context_length_exceeded"))
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        self.in_flight += 1
        try:
            outs = await asyncio.gather(*[self.engine.generate(prompt_ids, self._sampling(req, max_tokens, i), f"{cid}-{i}")
                                          for i in range(req["n"])])
        except Exception as e:
            print(f"agent-rl serve: generation failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}",
                  file=sys.stderr, flush=True)
            return fail(RequestError(f"generation failed: {type(e).__name__}: {e}", status=500, type_="server_error"))
        finally:
            self.in_flight -= 1
        if any(o.finish_reason == "abort" for o in outs):
            return fail(RequestError("the request was aborted (the server is shutting down)", status=503,
                                     type_="server_error"))
        self.served += 1
        choices, completion_tokens = [], 0
        for i, o in enumerate(outs):
            text = self.tokenizer.decode(o.output_ids, skip_special_tokens=True)
            text, stopped = cut_at_stop(text, req["stop"])
            completion_tokens += len(o.output_ids)
            reason = "stop" if (stopped or o.finish_reason == "stop") else "length"
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                            "finish_reason": reason})
        return web.json_response({
            "id": cid, "object": "chat.completion", "created": int(time.time()), "model": self.model_name,
            "choices": choices, "system_fingerprint": None,
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": completion_tokens,
                      "total_tokens": len(prompt_ids) + completion_tokens}})

    # ------------------------------------------------------------------ helpers
    def _prompt_ids(self, messages) -> List[int]:
        try:
            return self.renderer.prompt_ids(messages)
        except Exception as e:   # a template that refuses the conversation (e.g. roles out of order)
            raise RequestError(f"messages: the chat template cannot render them: {type(e).__name__}: "
                               f"{' '.join(str(e).split())[:300]}", "messages") from None

    def _stop_ids(self, stops: List[str]) -> List[int]:
        ids = list(self.renderer.stop_token_ids)
        for s in stops:
            enc = self.tokenizer.encode(s, add_special_tokens=False)
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(enc[0])
        return ids

    def _sampling(self, req, max_tokens: int, i: int) -> SamplingParams:
        seed = req["seed"]
        return SamplingParams(max_new_tokens=int(max_tokens), temperature=req["temperature"], top_p=req["top_p"],
                              top_k=req["top_k"], stop_token_ids=self._stop_ids(req["stop"]),
                              seed=None if seed is None else int(seed) + i)


def build_engine_for(model_path: str, engine: str = "auto", max_model_len: Optional[int] = None,
                     max_batch_size: int = 64, gpu_memory_utilization: float = 0.8, seed: Optional[int] = None,
                     dtype: Optional[str] = None, device: Optional[str] = None, max_concurrency: int = 256):
    from types import SimpleNamespace

    import torch

    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines import build_engine

    # sglang gets the same engine defaults as a training run (attention / sampling / grammar backends that work
    # without FlashAttention-3 kernels, rollout.engine_kwargs' defaults)
    cfg = SimpleNamespace(engine=engine, max_model_len=max_model_len, hf_max_batch_size=max_batch_size,
                          gpu_memory_utilization=gpu_memory_utilization,
                          engine_kwargs=dict(RolloutConfig().engine_kwargs),
                          max_concurrent_trajectories=max_concurrency)
    return build_engine(cfg, model_path, device=device, seed=seed, dtype=getattr(torch, dtype) if dtype else None)


def context_length(model_path: str, engine, given: Optional[int]) -> int:
    if given:
        return int(given)
    n = getattr(engine, "max_model_len", None)
    if isinstance(n, int) and n < (1 << 30):
        return n
    import json

    try:
        with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        return int(cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get("max_position_embeddings") or 4096)
    except (OSError, ValueError, TypeError):
        return 4096


async def serve(model: str, host: str = "127.0.0.1", port: int = 8000, engine: str = "auto",
                served_model_name: Optional[str] = None, max_model_len: Optional[int] = None,
                default_max_tokens: int = 1024, max_batch_size: int = 64, gpu_memory_utilization: float = 0.8,
                seed: Optional[int] = None, dtype: Optional[str] = None, drain_s: float = 5.0, log=print) -> int:
    """Run the server until SIGINT / SIGTERM: stop accepting, let requests in flight finish for up to `drain_s`
    seconds, abort the rest (503), shut the engine down. Returns the exit status (0)."""
    from aiohttp import web
    from transformers import AutoTokenizer

    from agent_rl.engines import resolve_engine_kind

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = 0

    def on_signal(signum):
        nonlocal signals
        signals += 1
        if signals > 1:   # a second signal: no more waiting
            log(f"agent-rl serve: {signal.Signals(signum).name} again, exiting now")
            os._exit(130)
        stop.set()

    for s in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(s, on_signal, s)

    path = resolve_model_path(model)
    kind = resolve_engine_kind(engine)
    tokenizer = AutoTokenizer.from_pretrained(path)
    eng = build_engine_for(path, kind, max_model_len, max_batch_size, gpu_memory_utilization, seed, dtype)
    server = ChatServer(eng, tokenizer, served_model_name or model, path, context_length(path, eng, max_model_len),
                        default_max_tokens=default_max_tokens)
    runner = web.AppRunner(server.app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        await eng.shutdown()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    bound = runner.addresses[0][1] if runner.addresses else port   # the real port when --port 0
    log(f"agent-rl serve: {server.model_name} ({path}) on http://{host}:{bound}/v1 (engine {kind}, context "
        f"{server.max_model_len}); Ctrl-C stops")
    if stop.is_set() is False:
        await stop.wait()
    log(f"agent-rl serve: stopping ({server.in_flight} requests in flight)")
    server.closing = True
    await site.stop()
    t0 = time.monotonic()
    while server.in_flight and time.monotonic() - t0 < drain_s:
        await asyncio.sleep(0.05)
    await eng.shutdown()            # aborts what is left: those requests get 503
    await runner.cleanup()
    log(f"agent-rl serve: stopped after {server.served} completions")
    return 0
