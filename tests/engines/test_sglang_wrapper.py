"""The sglang wrapper's request handling against a fake in-process sglang.Engine (no GPU needed)."""
import asyncio
import os
import re

import pytest

from agent_rl.engines.base import SamplingParams
from agent_rl.engines.sglang_engine import (GRAPH_BS_LIMIT, SGLangEngine, sampling_params_dict, scheduling_info,
                                           scheduling_kwargs)


class FakeTM:
    """Registers a rid 20 ms after the request starts; drops the first abort it gets for a known rid
    (as sglang does when the scheduler has not queued the request yet)."""

    def __init__(self):
        self.rid_to_state, self.aborts, self.dropped = {}, [], 0

    def abort_request(self, rid="", abort_all=False):
        self.aborts.append(rid)
        if rid in self.rid_to_state and self.dropped == 0:
            self.dropped += 1
            return
        if rid in self.rid_to_state:
            self.rid_to_state[rid] = "abort"


class FakeEngine:
    def __init__(self):
        self.tokenizer_manager = FakeTM()
        self.seen = []

    async def async_generate(self, input_ids, sampling_params, return_logprob, rid, **extra):
        self.seen.append((rid, sampling_params))
        self.extra = extra
        await asyncio.sleep(0.02)
        tm = self.tokenizer_manager
        tm.rid_to_state[rid] = "run"
        out = []
        while len(out) < sampling_params["max_new_tokens"] and tm.rid_to_state[rid] != "abort":
            out.append(len(out) + 10)
            await asyncio.sleep(0.005)
        reason = {"type": "abort"} if tm.rid_to_state.pop(rid) == "abort" else {"type": "length", "length": len(out)}
        return {"output_ids": out, "meta_info": {"finish_reason": reason, "prompt_tokens": len(input_ids),
                                                 "output_token_logprobs": [(-0.5, t, None) for t in out]}}


def _engine():
    eng = SGLangEngine.wrap(FakeEngine())
    eng.abort_retry_s, eng.abort_retries = 0.02, 200
    return eng


async def test_abort_is_repeated_until_the_request_ends():
    eng = _engine()
    task = asyncio.ensure_future(eng.generate([1, 2], SamplingParams(max_new_tokens=10 ** 6), "a1"))
    other = asyncio.ensure_future(eng.generate([1], SamplingParams(max_new_tokens=30), "a10"))
    await asyncio.sleep(0)
    await asyncio.wait_for(eng.abort("a1"), 5)      # rid unknown at first, then the first abort is dropped
    out = await task
    assert out.finish_reason == "abort" and len(out.logprobs) == len(out.output_ids)
    assert len(eng._engine.tokenizer_manager.aborts) >= 2
    assert (await other).finish_reason == "length"  # "a1" is a prefix of "a10": unaffected
    rids = [r for r, _ in eng._engine.seen]
    assert len(set(rids)) == 2 and all(len(r) == 32 for r in rids)
    await eng.abort("a1")                            # finished: no-op
    assert eng._rids == {}


async def test_duplicate_request_id_rejected():
    eng = _engine()
    t = asyncio.ensure_future(eng.generate([1], SamplingParams(max_new_tokens=5), "x"))
    await asyncio.sleep(0)
    with pytest.raises(ValueError):
        await eng.generate([1], SamplingParams(max_new_tokens=5), "x")
    assert len((await t).output_ids) == 5


def test_sampling_params_dict_greedy_and_defaults():
    d = sampling_params_dict(SamplingParams(max_new_tokens=3, temperature=0.0, top_k=0))
    assert d == {"max_new_tokens": 3, "temperature": 0.0, "top_p": 1.0, "top_k": -1, "ignore_eos": False,
                 "skip_special_tokens": False, "no_stop_trim": True}


FIELDS_0517 = {"cuda_graph_max_bs_decode", "max_running_requests", "enable_priority_scheduling", "schedule_policy",
               "schedule_low_priority_values_first", "disable_priority_preemption", "default_priority_value",
               "disable_cuda_graph", "attention_backend", "enable_prefill_delayer", "prefill_delayer_queue_min_ratio",
               "prefill_delayer_max_delay_passes", "disable_prefill_cuda_graph"}


def test_scheduling_kwargs_cover_the_concurrency_with_cuda_graphs():
    k = scheduling_kwargs(384, {"attention_backend": "triton"}, FIELDS_0517)
    assert k["cuda_graph_max_bs_decode"] == 384 and "max_running_requests" not in k
    assert k["enable_priority_scheduling"] and k["schedule_low_priority_values_first"] and k["disable_priority_preemption"]
    assert k["attention_backend"] == "triton"
    assert k["enable_prefill_delayer"] is True and k["prefill_delayer_max_delay_passes"] == 20
    assert k["prefill_delayer_queue_min_ratio"] == 0.25
    assert k["disable_prefill_cuda_graph"] is True        # eager prefill passes (docs/benchmarks-log.md, 2026-12-03)
    assert scheduling_kwargs(100, {}, FIELDS_0517)["cuda_graph_max_bs_decode"] == 128      # rounded up to 32
    big = scheduling_kwargs(1536, {}, FIELDS_0517)      # more than we capture: cap the running batch there
    assert big["cuda_graph_max_bs_decode"] == GRAPH_BS_LIMIT and big["max_running_requests"] == GRAPH_BS_LIMIT
    assert "pp_max_micro_batch_size" not in scheduling_kwargs(1536, {}, FIELDS_0517 | {"pp_max_micro_batch_size"})


def test_with_kv_sessions_the_running_cap_leaves_a_request_pool_entry_for_every_trajectory_s_session():
    fields = FIELDS_0517 | {"pp_max_micro_batch_size", "enable_streaming_session"}
    k = scheduling_kwargs(1536, {"enable_streaming_session": True}, fields)
    assert k["pp_max_micro_batch_size"] == GRAPH_BS_LIMIT and k["max_running_requests"] == GRAPH_BS_LIMIT + 1536
    assert k["cuda_graph_max_bs_decode"] == GRAPH_BS_LIMIT
    info = scheduling_info(k, True)
    assert info["max_running_requests"] == GRAPH_BS_LIMIT                      # the running cap, not the pool
    assert "pp_max_micro_batch_size" not in scheduling_kwargs(512, {"enable_streaming_session": True}, fields)
    for user in ({"max_running_requests": 900}, {"pp_max_micro_batch_size": 512}, {"pp_size": 2}):
        k = scheduling_kwargs(1536, {"enable_streaming_session": True, **user}, fields)
        assert {x: k.get(x) for x in user} == user                             # the user's settings win
        assert k.get("pp_max_micro_batch_size") in (None, 512) and k.get("max_running_requests") != GRAPH_BS_LIMIT + 1536
    older = scheduling_kwargs(1536, {"enable_streaming_session": True}, FIELDS_0517 | {"enable_streaming_session"})
    assert older["max_running_requests"] == GRAPH_BS_LIMIT and "pp_max_micro_batch_size" not in older


def test_scheduling_kwargs_user_settings_win():
    k = scheduling_kwargs(512, {"cuda_graph_max_bs": 256, "max_running_requests": 300, "schedule_policy": "lpm"}, FIELDS_0517)
    assert k["cuda_graph_max_bs_decode"] == 256 and "cuda_graph_max_bs" not in k and k["max_running_requests"] == 300
    assert "enable_priority_scheduling" not in k              # lpm cannot do priority scheduling
    assert "cuda_graph_max_bs_decode" not in scheduling_kwargs(512, {"disable_cuda_graph": True}, FIELDS_0517)
    older = scheduling_kwargs(512, {}, {"cuda_graph_max_bs", "max_running_requests"})   # an sglang with the old names
    assert older == {"cuda_graph_max_bs": 512}                # ... and without the prefill delayer
    assert scheduling_kwargs(64, {"enable_prefill_delayer": False}, FIELDS_0517)["enable_prefill_delayer"] is False
    assert "enable_prefill_delayer" not in scheduling_kwargs(64, {"disable_overlap_schedule": True}, FIELDS_0517)
    assert "enable_prefill_delayer" not in scheduling_kwargs(64, {"dp_size": 2}, FIELDS_0517)
    assert scheduling_kwargs(None, {"x": 1}, FIELDS_0517)["x"] == 1
    preempt = scheduling_kwargs(64, {"disable_priority_preemption": False}, FIELDS_0517)    # priority on, preemption kept
    assert preempt["enable_priority_scheduling"] is True and preempt["disable_priority_preemption"] is False
    passes = scheduling_kwargs(64, {"prefill_delayer_max_delay_passes": 10}, FIELDS_0517)   # the delayer on, its passes kept
    assert passes["enable_prefill_delayer"] is True and passes["prefill_delayer_max_delay_passes"] == 10
    assert scheduling_info(passes, True)["prefill_delayer_passes"] == 10                  # and the summary says so
    assert "prefill_delayer_passes" not in scheduling_info({"enable_prefill_delayer": False}, True)
    assert scheduling_kwargs(64, {"disable_prefill_cuda_graph": False}, FIELDS_0517)["disable_prefill_cuda_graph"] is False


def test_engine_env_turns_partial_outputs_off_unless_the_user_set_them():
    from agent_rl.engines.sglang_engine import apply_engine_env, scheduling_info

    env = {"PATH": "/bin"}
    assert apply_engine_env(env) == {"SGLANG_FORCE_STREAM_INTERVAL": "1000000000"}
    assert env["PATH"] == "/bin" and env["SGLANG_FORCE_STREAM_INTERVAL"] == "1000000000"
    mine = {"SGLANG_FORCE_STREAM_INTERVAL": "50"}
    assert apply_engine_env(mine) == mine == {"SGLANG_FORCE_STREAM_INTERVAL": "50"}   # the user's value wins
    args = {"cuda_graph_max_bs": 64}
    assert scheduling_info(args, False, env)["partial_output_every"] is None
    assert scheduling_info(args, False, mine)["partial_output_every"] == 50
    assert scheduling_info(args, False, {"SGLANG_FORCE_STREAM_INTERVAL": ""})["partial_output_every"] == 50   # sglang's default
    assert "partial_output_every" not in scheduling_info(args, False)   # an engine started elsewhere: unknown


def test_scheduling_info_reports_how_prefill_passes_run():
    from types import SimpleNamespace as NS

    from agent_rl.engines.sglang_engine import scheduling_info

    def resolved(backend, off):   # sglang 0.5.17's resolved ServerArgs: a CudaGraphConfig per phase
        return NS(cuda_graph_config=NS(decode=NS(max_bs=256), prefill=NS(backend=backend)), disable_cuda_graph=False,
                  disable_prefill_cuda_graph=off, max_running_requests=None, enable_prefill_delayer=True)

    assert scheduling_info(resolved("breakable", False), True)["prefill_cuda_graph"] == "breakable"
    assert scheduling_info(resolved("disabled", True), True)["prefill_cuda_graph"] == "disabled"
    as_dict = {"cuda_graph_config": {"decode": {"max_bs": 256}, "prefill": {"backend": "breakable"}},
               "disable_prefill_cuda_graph": False}                       # a server's /server_info
    info = scheduling_info(as_dict, False)
    assert info["prefill_cuda_graph"] == "breakable" and info["cuda_graph_max_bs"] == 256
    assert scheduling_info({"cuda_graph_max_bs": 64}, False)["prefill_cuda_graph"] is None   # an sglang without them


async def test_priority_is_passed_only_with_priority_scheduling():
    eng = _engine()
    await eng.generate([1], SamplingParams(max_new_tokens=2, priority=3), "p0")
    assert eng._engine.extra == {}
    eng.priority_scheduling = True
    await eng.generate([1], SamplingParams(max_new_tokens=2, priority=3), "p1")
    assert eng._engine.extra == {"priority": 3}


async def test_release_and_resume_name_the_kv_cache_and_weights_only(monkeypatch):
    """No tags would release every region incl. the CUDA graphs' pool: 4 H200 runs died in release that way."""
    import sys
    import types

    class Req:
        def __init__(self, tags=None):
            self.tags = tags

    io = types.ModuleType("sglang.srt.managers.io_struct")
    io.ReleaseMemoryOccupationReqInput = io.ResumeMemoryOccupationReqInput = Req
    for name in ("sglang", "sglang.srt", "sglang.srt.managers"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name) or types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sglang.srt.managers.io_struct", io)
    seen = []

    async def record(req, _request):
        seen.append(req.tags)

    eng = _engine()
    eng._engine.tokenizer_manager.release_memory_occupation = record
    eng._engine.tokenizer_manager.resume_memory_occupation = record
    await eng.release_memory()
    await eng.resume_memory()
    assert seen == [["kv_cache", "weights"], ["kv_cache", "weights"]]


def test_sglang_engine_start_leaves_our_logging_alone(caplog):
    """sglang.Engine's configure_logger does basicConfig(level=ERROR, force=True): our warnings must survive it."""
    import logging

    from agent_rl.engines.sglang_engine import _keep_root_logging

    root = logging.getLogger()
    before_level, before_handlers = root.level, list(root.handlers)
    with _keep_root_logging():
        logging.basicConfig(level=logging.ERROR, format="[sglang] %(message)s", force=True)   # what sglang does
        assert root.level == logging.ERROR
    assert root.level == before_level and root.handlers == before_handlers
    with caplog.at_level(logging.WARNING):
        logging.getLogger("agent_rl.tasks.judge").warning("LLM judge failed")
    assert "LLM judge failed" in caplog.text


async def test_input_ids_reach_sglang_as_a_list_of_plain_ints():
    import numpy as np

    from agent_rl.bench.loop_cpu import InstantSGLang

    seen = []

    class Recording(InstantSGLang):
        async def async_generate(self, input_ids, sampling_params, return_logprob=False, rid=None, **extra):
            seen.append(input_ids)
            return await super().async_generate(input_ids, sampling_params, return_logprob, rid, **extra)

    eng = SGLangEngine.wrap(Recording([9]))
    plain = [1, 2, 3]
    for given in (plain, (1, 2, 3), [np.int64(1), 2, 3], np.array([1, 2, 3]), [True, 2, 3]):
        out = await eng.generate(given, SamplingParams(max_new_tokens=1), "r")
        assert out.prompt_tokens == 3
    assert all(s == [1, 2, 3] and type(s) is list and all(type(t) is int for t in s) for s in seen)
    assert seen[0] is not plain


async def test_flush_waits_for_the_scheduler_to_go_idle_and_says_whether_it_flushed():
    """sglang 0.5.17 flushes only an idle scheduler; asked with `timeout_s` it waits for aborted requests to leave.
    An older tokenizer manager without the argument is called without it. A refusal is False, not an error."""
    from types import SimpleNamespace

    from agent_rl.engines.sglang_engine import FLUSH_WAIT_S

    eng = _engine()
    seen = []

    async def flush_new(timeout_s=None):
        seen.append(timeout_s)
        return SimpleNamespace(success=len(seen) == 1, message="Timed out waiting for idle state.")

    eng._engine.tokenizer_manager.flush_cache = flush_new
    assert await eng.flush_cache() is True and seen == [FLUSH_WAIT_S]
    assert await eng.flush_cache() is False

    async def flush_old():
        seen.append("old")
        return SimpleNamespace(success=True)

    eng._engine.tokenizer_manager.flush_cache = flush_old
    assert await eng.flush_cache() is True and seen[-1] == "old"


async def test_shutdown_removes_the_temporary_files_behind_sglangs_ipc_sockets(tmp_path):
    """sglang 0.5.17 names its in-process engine's zmq sockets after temporary files it never removes (five an engine
    start); the wrapper removes those in the temporary folder once the engine is down, and nothing else."""
    import tempfile
    from types import SimpleNamespace

    from agent_rl.engines.sglang_engine import ipc_socket_files

    elsewhere = tmp_path / "sub" / "user.sock"
    elsewhere.parent.mkdir()
    elsewhere.write_text("")
    down = []

    class Fake:
        def shutdown(self):
            down.append(all(os.path.exists(p) for p in ours))   # still there while sglang stops

    # sglang's own shutdown (no other engine's processes beside it), then a replica's (it ends only its own)
    for alone in (True, False):
        ours = [tempfile.NamedTemporaryFile(delete=False).name for _ in range(2)]
        port_args = SimpleNamespace(tokenizer_ipc_name=f"ipc://{ours[0]}", detokenizer_ipc_name=f"ipc://{ours[1]}",
                                    rpc_ipc_name=f"ipc://{elsewhere}", metrics_ipc_name="tcp://127.0.0.1:5000",
                                    tokenizer_worker_ipc_name=None, nccl_port=1234)
        assert ipc_socket_files(port_args) == ours
        fake = Fake()
        fake.port_args = port_args
        eng = SGLangEngine.wrap(fake)
        eng._child_pids = (lambda: set()) if alone else (lambda: {-1})   # -1: another engine's process
        await eng.shutdown()
        assert not any(os.path.exists(p) for p in ours) and elsewhere.exists()
    assert down == [True]                        # sglang's shutdown ran before, in the first case only
    assert ipc_socket_files(None) == []
    await SGLangEngine.wrap(Fake()).shutdown()   # an engine without port_args (stand-ins): nothing to remove


def test_tagged_logs_set_a_working_config_only_while_starting(tmp_path, monkeypatch):
    import io
    import json
    import logging
    import logging.config

    from agent_rl.engines.sglang_engine import LOG_CONFIG_ENV, tagged_logs

    monkeypatch.delenv(LOG_CONFIG_ENV, raising=False)
    with tagged_logs("R1", "info") as path:
        assert os.environ[LOG_CONFIG_ENV] == path
        config = json.load(open(path))
    assert LOG_CONFIG_ENV not in os.environ and os.path.exists(path)   # the engine removes it at shutdown
    os.unlink(path)
    config["handlers"]["stderr"]["stream"] = "ext://sys.stdout"
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    out = io.StringIO()
    try:
        monkeypatch.setattr("sys.stdout", out)
        logging.config.dictConfig(config)   # what sglang's configure_logger does with the file
        logging.getLogger("sglang.srt.managers.scheduler").info("Decode batch, #running-req: 3")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[1]:
            root.addHandler(h)
        root.setLevel(saved[0])
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d R1\] Decode batch, #running-req: 3\n", out.getvalue())

    with pytest.raises(RuntimeError):   # a start that fails leaves no file and no variable
        with tagged_logs("R0", "error") as path:
            raise RuntimeError("start failed")
    assert not os.path.exists(path) and LOG_CONFIG_ENV not in os.environ
    monkeypatch.setenv(LOG_CONFIG_ENV, str(tmp_path / "mine.json"))   # the user's own config wins
    with tagged_logs("R0", "error") as path:
        assert path is None and os.environ[LOG_CONFIG_ENV] == str(tmp_path / "mine.json")
    with tagged_logs(None, "error") as path:
        assert path is None


class SessionTM(FakeTM):
    """sglang's tokenizer manager with streaming sessions: opened / closed ids, the pool size of get_internal_state."""

    def __init__(self):
        super().__init__()
        self.held, self.opened, self.closed = {}, [], []

    async def open_session(self, obj, request):
        assert obj.streaming
        self.held[obj.session_id] = []
        self.opened.append(obj.session_id)
        return obj.session_id

    async def close_session(self, obj, request):
        self.held.pop(obj.session_id, None)
        self.closed.append(obj.session_id)

    async def get_internal_state(self):
        return [{"effective_max_running_requests_per_dp": 8, "memory_usage": {"token_capacity": 100000}}]

    async def flush_cache(self):
        self.flushed_with_open = len(self.held)
        return type("R", (), {"success": True})()


class SessionEngine(FakeEngine):
    def __init__(self):
        self.tokenizer_manager = SessionTM()
        self.seen, self.server_args = [], type("SA", (), {"enable_streaming_session": True})()

    async def async_generate(self, input_ids, sampling_params, return_logprob, rid, **extra):
        sid = (extra.get("session_params") or {}).get("id")
        full = self.tokenizer_manager.held[sid] + list(input_ids) if sid else list(input_ids)
        self.seen.append((list(input_ids), sid, full))
        out = [(sum(full) + k) % 50 + 3 for k in range(sampling_params["max_new_tokens"])]
        if sid:
            self.tokenizer_manager.held[sid] = full + out
        return {"output_ids": out, "meta_info": {"finish_reason": {"type": "length"}, "prompt_tokens": len(full),
                                                 "output_token_logprobs": [(-0.5, t, None) for t in out]}}


async def test_a_trajectory_s_turns_run_in_one_session_sending_only_new_ids(session_requests):
    fake = SessionEngine()
    eng = SGLangEngine.wrap(fake)
    assert eng.kv_sessions and eng.session_stats()["open"] == 0
    sp = SamplingParams(max_new_tokens=2, session="traj-1")
    a = await eng.generate([1, 2, 3], sp, "r0")
    ctx = [1, 2, 3, *a.output_ids, 9]
    b = await eng.generate(ctx, sp, "r1")
    sid = fake.tokenizer_manager.opened[0]
    assert [(ids, s) for ids, s, _ in fake.seen] == [([1, 2, 3], sid), ([9], sid)]
    assert fake.seen[1][2] == ctx and b.prompt_tokens == len(ctx)
    await eng.generate([5], SamplingParams(max_new_tokens=2), "plain")          # no session key: a plain request
    assert fake.seen[-1][1] is None
    eng.kv_sessions = False                                                      # off: plain requests
    await eng.generate(ctx + b.output_ids + [4], sp, "r2")
    assert fake.seen[-1][1] is None and len(fake.seen[-1][0]) == len(ctx) + 3
    eng.kv_sessions = True
    await eng.end_session("traj-1")
    await eng.generate([7], SamplingParams(max_new_tokens=2, session="traj-2"), "r3")
    assert await eng.flush_cache()
    tm = fake.tokenizer_manager
    assert tm.flushed_with_open == 0 and sorted(tm.closed) == sorted(tm.opened) and len(tm.opened) == 2
    assert eng.session_stats()["limit"] == 4 and eng.session_stats()["kv_limit"] == 50000
    capped = SessionEngine()                          # a running cap below the pool: sessions hold the rest
    capped.server_args.pp_max_micro_batch_size = 2
    eng2 = SGLangEngine.wrap(capped)
    await eng2.generate([1], SamplingParams(max_new_tokens=1, session="t"), "c0")
    assert eng2.session_stats()["limit"] == 6


async def test_an_engine_without_streaming_sessions_sends_plain_requests():
    fake = FakeEngine()
    eng = SGLangEngine.wrap(fake)
    assert not eng.kv_sessions and eng.session_stats() is None
    eng.kv_sessions = True
    out = await eng.generate([1, 2], SamplingParams(max_new_tokens=3, session="t"), "r")
    assert len(out.output_ids) == 3 and "session_params" not in fake.extra
