"""`http` engine: aiohttp client of an external SGLang server (`python -m sglang.launch_server ...`).

Endpoints (sglang 0.5.x `entrypoints/http_server.py`):

* `POST /generate` `{input_ids, sampling_params, return_logprob: true, rid}` -> `{output_ids,
  meta_info: {finish_reason: {type, ...}, output_token_logprobs: [[logprob, id, text], ...]}}`
* `POST /abort_request` `{rid}` (the server matches rids by prefix: we send fixed-length uuids). An abort that lands
  before the request reached the scheduler makes `/generate` answer HTTP 400 "Request ... was aborted": that
  request returns an empty aborted output, as in the in-process engine.
* `POST /update_weights_from_disk` `{model_path, load_format?}` -> `{success, message, num_paused_requests}`
  (HTTP 400 when `success` is false; the server keeps its previous weights then). The server waits for
  running requests, loads the safetensors of `model_path` from ITS filesystem and flushes its prefix cache
  itself (`flush_cache` defaults to true), so no `/flush_cache` call follows.
* `POST /flush_cache`, `POST /release_memory_occupation`, `POST /resume_memory_occupation`

Weight sync goes through disk (`training.weight_sync.sync_weights_from_disk`): the trainer writes an HF folder
and calls `update_weights_from_disk(path)`. `update_weights(named_tensors)` raises NotImplementedError: the
server's `/update_weights_from_tensor` takes tensors serialized as process-local handles (CUDA IPC, same host
and a pickle the server unpickles), not tensor bytes. `shutdown()` closes the client; the server keeps running.
The log-prob convention is the server's: see `sglang_engine.py` (log_softmax(logits / T) unless the
server runs with SGLANG_RETURN_ORIGINAL_LOGPROB).
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams
from agent_rl.engines.kv_sessions import CAPACITY, KVSessions, generate as in_session
from agent_rl.engines.sglang_engine import (FLUSH_WAIT_S, MEMORY_TAGS, parse_generate_output, pool_info, profile_request,
                                           sampling_params_dict)


log = logging.getLogger(__name__)
KEEPALIVE_S = 1.0   # an idle connection is reused for this long (sglang's server keeps it 5 s)


class HTTPEngineError(RuntimeError):
    pass


def _error_text(text: str) -> str:
    """One line: the `message` of a JSON error body (sglang: `{success, message}` or `{error: {message}}`),
    else the text."""
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error")
        msg = obj.get("message") or (err.get("message") if isinstance(err, dict) else err)
        text = str(msg) if msg else text
    return " ".join(text.split())[:500]


class HTTPEngine(Engine):
    name = "http"
    server_per_rank = False   # every training rank talks to the same server (weight_sync.sync_weights_from_disk)
    weights_from_disk = True

    def __init__(self, base_url: str, timeout_s: float = 3600.0, api_key: Optional[str] = None,
                 abort_retry_s: float = 0.2, abort_retries: int = 50, eos_token_ids: Iterable[int] = (),
                 send_priority: bool = True):
        """`eos_token_ids`: stop tokens of every request (as the sglang engine's: a server started with
        `skip_tokenizer_init` knows no tokenizer eos); `send_priority`: pass `SamplingParams.priority` on (a server
        without priority scheduling may refuse it)."""
        self.base_url = base_url.rstrip("/")
        self.eos_token_ids = [int(t) for t in eos_token_ids]
        self.send_priority = bool(send_priority)
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.abort_retry_s = abort_retry_s
        self.abort_retries = abort_retries
        self._session = None
        self._inflight: Dict[str, Tuple[str, asyncio.Event]] = {}   # request id -> (rid, done)
        self._aborted: set = set()   # request ids in flight that abort() was called for
        self._kv: Optional[KVSessions] = None   # `enable_sessions`
        self.kv_sessions = False

    def enable_sessions(self) -> None:
        """Requests with `sampling.session` continue their trajectory's sglang streaming session (engines/kv_sessions.py;
        the server must run with `--enable-streaming-session`, else the first request fails with its answer)."""
        async def open_session(sid: str) -> None:
            got = await self._post("/open_session", {"capacity_of_str_len": CAPACITY, "session_id": sid,
                                                     "streaming": True})
            if got != sid:
                raise HTTPEngineError(f"/open_session did not open session {sid} (answered {got!r})")

        async def close_session(sid: str) -> None:
            await self._post("/close_session", {"session_id": sid})

        async def pool_size() -> Dict[str, Optional[int]]:
            session = await self._http()
            async with session.get(self.base_url + "/server_info") as resp:
                info = json.loads(await resp.read())
            return pool_info((info.get("internal_states") or [{}])[0], info)

        self._kv = KVSessions(open_session, close_session, pool_size)
        self.kv_sessions = True

    def session_stats(self) -> Optional[Dict[str, int]]:
        return self._kv.stats() if self._kv is not None else None

    async def end_session(self, session: str) -> None:
        if self._kv is not None:
            self._kv.drop(session)

    async def _http(self):
        import aiohttp

        if self._session is None or self._session.closed:
            # no connection cap: aiohttp's default (100) would hold every request beyond 100 in the client; idle
            # connections are dropped well before sglang's uvicorn drops them (SGLANG_TIMEOUT_KEEP_ALIVE, 5 s: the
            # server counts from its answer, we from reading it, later when this loop lags), and `_post` sends a
            # request again whose connection the server closed before answering
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  headers=self.headers, connector=connector)
        return self._session

    async def _post(self, path: str, payload: Optional[Dict[str, Any]] = None) -> Any:
        """POST `payload` as JSON; the answer's JSON (or text, or None). Sent a second time where the server closed the
        connection without answering (a kept-alive connection it was closing as the request went out: it never
        read it); a second such close is raised."""
        import aiohttp

        try:
            return await self._post_once(path, payload)
        except aiohttp.ServerDisconnectedError:
            log.info("POST %s: the server closed the connection without answering; sending it again", path)
            return await self._post_once(path, payload)

    async def _post_once(self, path: str, payload: Optional[Dict[str, Any]]) -> Any:
        session = await self._http()
        async with session.post(self.base_url + path, json=payload if payload is not None else {}) as resp:
            body = await resp.read()
            if resp.status >= 400:
                raise HTTPEngineError(f"POST {path}: HTTP {resp.status}: {_error_text(body.decode(errors='replace'))}")
            if not body:
                return None
            try:
                return json.loads(body)
            except ValueError:
                return body.decode(errors="replace")

    # ------------------------------------------------------------------ generation
    async def generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str) -> GenerateOutput:
        return await in_session(self._kv if self.kv_sessions else None, input_ids, sampling, request_id, self._generate)

    async def _generate(self, input_ids: List[int], sampling: SamplingParams, request_id: str,
                        session_id: Optional[str] = None, context_len: Optional[int] = None) -> GenerateOutput:
        """One request; in sglang session `session_id` (`input_ids` then extends what it holds to `context_len`)."""
        if request_id in self._inflight:
            raise ValueError(f"request id already in flight: {request_id}")
        rid = uuid.uuid4().hex
        done = asyncio.Event()
        self._inflight[request_id] = (rid, done)
        try:
            body = {"input_ids": [int(t) for t in input_ids],
                    "sampling_params": sampling_params_dict(sampling, self.eos_token_ids),
                    "return_logprob": True, "rid": rid, "stream": False}
            if sampling.priority is not None and self.send_priority:  # honoured with --enable-priority-scheduling
                body["priority"] = int(sampling.priority)
            if session_id is not None:
                body["session_params"] = {"id": session_id}
            out = await self._post("/generate", body)
        except HTTPEngineError:
            # an abort that lands before the request reached the scheduler: sglang answers HTTP 400 "Request ... was
            # aborted" (its RequestAbortedError), where the in-process engine raises: an aborted, empty output
            if request_id in self._aborted:
                return GenerateOutput([], [], "abort", prompt_tokens=context_len or len(input_ids))
            raise
        finally:
            done.set()
            self._inflight.pop(request_id, None)
            self._aborted.discard(request_id)
        if not isinstance(out, dict):
            raise HTTPEngineError(f"/generate returned {type(out).__name__}, expected a JSON object")
        return parse_generate_output(out, context_len or len(input_ids))

    async def abort(self, request_id: str) -> None:
        entry = self._inflight.get(request_id)
        if entry is None:
            return
        rid, done = entry
        self._aborted.add(request_id)
        # The server ignores an abort for a rid it has not registered yet: repeat until the request ends.
        for _ in range(self.abort_retries):
            await self._post("/abort_request", {"rid": rid})
            try:
                await asyncio.wait_for(done.wait(), timeout=self.abort_retry_s)
                return
            except asyncio.TimeoutError:
                continue

    # ------------------------------------------------------------------ profile
    async def start_profile(self, output_dir: str, passes: int) -> None:
        """sglang's torch profiler in the server's scheduler (`/start_profile`): CPU and GPU activity of the next
        `passes` forward passes, a Chrome trace in `output_dir` on the server's filesystem."""
        await self._post("/start_profile", profile_request(output_dir, passes))

    async def stop_profile(self) -> None:
        await self._post("/stop_profile")

    # ------------------------------------------------------------------ weights and memory
    async def update_weights(self, named_tensors: Iterable[Tuple[str, torch.Tensor]]) -> None:
        raise NotImplementedError("the http engine cannot send tensors to an external SGLang server: weights go "
                                  "through disk (training.weight_sync.sync_weights_from_disk)")

    async def update_weights_from_disk(self, model_path: str, load_format: Optional[str] = None) -> None:
        """Have the server load the HF folder `model_path` (a path on the server's filesystem)."""
        payload: Dict[str, Any] = {"model_path": model_path}
        if load_format:
            payload["load_format"] = load_format
        try:
            out = await self._post("/update_weights_from_disk", payload)
        except HTTPEngineError as e:
            raise HTTPEngineError(f"update_weights_from_disk({model_path}) failed: {e} (the server must see this "
                                  "path: same filesystem, see docs/training.md)") from None
        if isinstance(out, dict) and not out.get("success", True):
            raise HTTPEngineError(f"update_weights_from_disk({model_path}) failed: "
                                  f"{_error_text(str(out.get('message')))}")

    async def flush_cache(self) -> bool:
        """The server waits up to `FLUSH_WAIT_S` for running requests to end (sglang 0.5.17's `timeout`; older
        servers ignore it) and refuses (HTTP 400) while requests still run: that is logged and returned as False."""
        if self._kv is not None:   # the sessions' KV is the old policy's: closed first
            await self._kv.close_all()
        try:
            await self._post(f"/flush_cache?timeout={FLUSH_WAIT_S:g}")
        except HTTPEngineError as e:
            if "HTTP 400" not in str(e):
                raise
            log.warning("flush_cache not performed: %s", e)
            return False
        return True

    async def release_memory(self) -> None:
        if self._kv is not None:
            await self._kv.close_all()
        await self._post("/release_memory_occupation", {"tags": list(MEMORY_TAGS)})

    async def resume_memory(self) -> None:
        await self._post("/resume_memory_occupation", {"tags": list(MEMORY_TAGS)})

    async def shutdown(self) -> None:
        for request_id in list(self._inflight):
            try:
                await self.abort(request_id)
            except Exception:
                pass
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
