"""Several engines behind one (`engines/replicas.py`, `rollout.engine_replicas`): routing by affinity and load, aborts
that follow their request, weights / flushes / memory / shutdown on every replica, the memory split, and
`build_engine` starting them (hf on the tiny model; the fake sglang for the in-process engine's start arguments)."""
import asyncio
import json
import os

import pytest

from agent_rl.config.load import ConfigError, validate
from agent_rl.config.schema import RolloutConfig
from agent_rl.engines import build_engine
from agent_rl.engines.base import Engine, GenerateOutput, SamplingParams
from agent_rl.engines.replicas import ReplicaEngine, replica_mem_fractions, replicas_of


class Held(Engine):
    """Answers a request when the test releases it (or on abort); records what it was asked."""

    name = "held"

    def __init__(self, flush_result=True):
        self.gates, self.seen, self.aborted, self.weights, self.calls = {}, [], [], [], []
        self.flush_result = flush_result

    async def generate(self, input_ids, sampling, request_id):
        self.seen.append(request_id)
        gate = self.gates[request_id] = asyncio.Event()
        await gate.wait()
        reason = "abort" if request_id in self.aborted else "stop"
        return GenerateOutput([1, 2], [-0.1, -0.2], reason, len(input_ids))

    def release(self, request_id):
        self.gates.pop(request_id).set()

    async def abort(self, request_id):
        self.aborted.append(request_id)
        if request_id in self.gates:
            self.release(request_id)

    async def update_weights(self, named_tensors):
        self.weights.append([n for n, _ in named_tensors])

    async def flush_cache(self):
        self.calls.append("flush")
        return self.flush_result

    async def release_memory(self):
        self.calls.append("release")

    async def resume_memory(self):
        self.calls.append("resume")

    async def start_profile(self, output_dir, passes):
        self.calls.append(("profile", output_dir, passes))

    async def stop_profile(self):
        self.calls.append("stop_profile")

    async def shutdown(self):
        self.calls.append("shutdown")


def sp(affinity=None):
    return SamplingParams(max_new_tokens=4, affinity=affinity)


async def settle():
    for _ in range(5):
        await asyncio.sleep(0)


def test_memory_fractions_give_each_replica_an_equal_share_of_the_memory_free_at_the_first_start():
    assert replica_mem_fractions(0.5, 1) == [0.5]
    fractions = replica_mem_fractions(0.6, 3)
    free, taken = 100.0, []
    for f in fractions:   # sglang 0.5.17: an engine's budget is its start's free memory times its fraction
        taken.append(free * f)
        free -= taken[-1]
    assert taken == pytest.approx([20.0, 20.0, 20.0]) and free == pytest.approx(40.0)
    for bad in [(0.6, 0), (0.0, 2), (1.0, 2)]:
        with pytest.raises(ValueError):
            replica_mem_fractions(*bad)


async def test_a_group_stays_on_one_replica_and_new_groups_go_to_the_least_loaded():
    a, b = Held(), Held()
    eng = ReplicaEngine([a, b])
    t0 = asyncio.ensure_future(eng.generate([1], sp("g0"), "g0/0-t0"))
    t1 = asyncio.ensure_future(eng.generate([1], sp("g1"), "g1/0-t0"))
    t2 = asyncio.ensure_future(eng.generate([1], sp("g0"), "g0/1-t0"))
    await settle()
    assert a.seen == ["g0/0-t0", "g0/1-t0"] and b.seen == ["g1/0-t0"]   # g1 found b empty; g0's second stays on a
    assert eng.load() == [2, 1]
    t3 = asyncio.ensure_future(eng.generate([1], sp("g2"), "g2/0-t0"))   # the least loaded: b
    t4 = asyncio.ensure_future(eng.generate([1], sp(), "plain-1"))       # no affinity: placed on its own (a, b tie at 2)
    await settle()
    assert b.seen == ["g1/0-t0", "g2/0-t0"] and a.seen[-1] == "plain-1"
    for e in (a, b):
        for rid in list(e.gates):
            e.release(rid)
    outs = await asyncio.gather(t0, t1, t2, t3, t4)
    assert [o.output_ids for o in outs] == [[1, 2]] * 5 and eng.load() == [0, 0]
    # the next turn of g1 goes back to b although b is not less loaded than a
    t5 = asyncio.ensure_future(eng.generate([1, 1, 2], sp("g1"), "g1/0-t1"))
    await settle()
    assert b.seen[-1] == "g1/0-t1"
    b.release("g1/0-t1")
    await t5


async def test_aborts_follow_their_request_and_ids_in_flight_are_refused():
    a, b = Held(), Held()
    eng = ReplicaEngine([a, b])
    ta = asyncio.ensure_future(eng.generate([1], sp("x"), "x-t0"))
    tb = asyncio.ensure_future(eng.generate([1], sp("y"), "y-t0"))
    await settle()
    with pytest.raises(ValueError, match="already in flight"):
        await eng.generate([1], sp("x"), "x-t0")
    await eng.abort("y-t0")
    await eng.abort("unknown")   # nothing in flight under it: no replica is asked
    assert (await tb).finish_reason == "abort" and b.aborted == ["y-t0"] and a.aborted == []
    a.release("x-t0")
    assert (await ta).finish_reason == "stop"
    await eng.abort("x-t0")      # finished: no replica is asked
    assert a.aborted == []


async def test_weights_memory_profile_and_shutdown_reach_every_replica():
    a, b = Held(), Held()
    eng = ReplicaEngine([a, b])
    import torch

    bucket = ((f"w{i}", torch.zeros(1)) for i in range(3))   # a generator: read once
    await eng.update_weights(bucket)
    assert a.weights == b.weights == [["w0", "w1", "w2"]]
    await eng.release_memory()
    await eng.resume_memory()
    await eng.start_profile("/tmp/prof", 50)
    await eng.stop_profile()
    await eng.shutdown()
    for i, e in enumerate((a, b)):
        assert e.calls == ["release", "resume", ("profile", f"/tmp/prof/replica-{i}", 50), "stop_profile", "shutdown"]


async def test_flush_says_false_when_any_replica_did_not_and_forgets_the_groups():
    a, b = Held(), Held(flush_result=False)
    eng = ReplicaEngine([a, b])
    assert await eng.flush_cache() is False
    b.flush_result = True
    assert await eng.flush_cache() is True

    class NoFlush(Held):
        async def flush_cache(self):
            return None

    assert await ReplicaEngine([NoFlush(), NoFlush()]).flush_cache() is None
    t = asyncio.ensure_future(eng.generate([1], sp("g"), "g-t0"))
    await settle()
    a.release("g-t0")
    await t
    assert eng.replica_for(sp("g")) == 0
    busy = asyncio.ensure_future(eng.generate([1], sp("g"), "g-t1"))   # on a, where g is
    await settle()
    await eng.flush_cache()   # a new step: "g" is placed afresh, on the idle replica b
    assert eng.replica_for(sp("g")) == 1
    a.release("g-t1")
    await busy


async def test_shutdown_stops_every_replica_when_one_fails():
    class Broken(Held):
        async def shutdown(self):
            self.calls.append("shutdown")
            raise RuntimeError("boom")

    a, b = Held(), Broken()
    with pytest.raises(RuntimeError, match="boom"):
        await ReplicaEngine([a, b]).shutdown()
    assert a.calls == b.calls == ["shutdown"]


def test_replicas_of_unwraps_only_replica_engines():
    a, b = Held(), Held()
    assert replicas_of(ReplicaEngine([a, b])) == [a, b] and replicas_of(a) == [a]
    info = ReplicaEngine([a, b]).scheduling_info()
    assert info == {"replicas": 2}


def test_config_checks_the_replica_count_and_refuses_http():
    with pytest.raises(ConfigError, match="rollout.engine_replicas: must be >= 1"):
        validate({"rollout": {"engine_replicas": 0}}, check_paths=False)
    with pytest.raises(ConfigError, match="rollout.engine=http talks to the one server"):
        validate({"rollout": {"engine_replicas": 2, "engine": "http", "server_url": "http://x"}}, check_paths=False)
    assert validate({"rollout": {"engine_replicas": 2, "engine": "hf"}}, check_paths=False).rollout.engine_replicas == 2
    with pytest.raises(ConfigError, match=r"^rollout.gpu_memory_utilization: must be in \(0, 1\) to split between 2"):
        validate({"rollout": {"engine_replicas": 2, "gpu_memory_utilization": 1.5}}, check_paths=False)
    with pytest.raises(ValueError, match="rollout.engine=http talks to the one server"):
        build_engine(RolloutConfig(engine="http", server_url="http://127.0.0.1:1", engine_replicas=2), "m")


def test_build_engine_starts_hf_replicas_that_generate(tiny_model_path):
    cfg = RolloutConfig(engine="hf", engine_replicas=2, max_model_len=256)
    eng = build_engine(cfg, tiny_model_path, device="cpu", seed=5)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(eng, ReplicaEngine) and len(eng.replicas) == 2 and eng.name == "hf"
        async def four():
            return await asyncio.gather(*(eng.generate([1, 2, 3], SamplingParams(max_new_tokens=3, ignore_eos=True,
                                                                                 affinity=f"g{i}"), f"r{i}")
                                          for i in range(4)))

        outs = loop.run_until_complete(four())
        assert all(len(o.output_ids) == 3 and len(o.logprobs) == 3 for o in outs)
        assert not eng.weights_from_disk and eng.load() == [0, 0]
    finally:
        loop.run_until_complete(eng.shutdown())
        loop.close()


def test_a_replica_that_fails_to_start_stops_the_ones_before_it(monkeypatch):
    import agent_rl.engines as engines

    started = []

    def fake_build(kind, cfg, model_path, device, seed, dtype, log_dir, fraction, share, log_tag=None):
        if started:
            raise RuntimeError("out of memory")
        started.append(Held())
        return started[-1]

    monkeypatch.setattr(engines, "_build_one", fake_build)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_engine(RolloutConfig(engine="hf", engine_replicas=2), "m")
    assert started[0].calls == ["shutdown"]


def test_sglang_replicas_start_one_after_the_other_with_their_memory_and_request_shares(fake_sglang, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    cfg = RolloutConfig(engine="sglang", engine_replicas=2, gpu_memory_utilization=0.6, max_concurrent_trajectories=100)
    eng = build_engine(cfg, str(model), seed=3)
    records = [json.loads(line) for line in open(fake_sglang / "engine_starts.jsonl")]
    starts = [r["kwargs"] for r in records]
    assert [s["mem_fraction_static"] for s in starts] == pytest.approx([0.3, 0.3 / 0.7])
    # each replica's processes log with its tag (sglang-log --replica); the variable is gone after the starts
    assert [r["log_config"]["formatters"]["tagged"]["format"] for r in records] == \
        ["[%(asctime)s R0] %(message)s", "[%(asctime)s R1] %(message)s"]
    assert "SGLANG_LOGGING_CONFIG_PATH" not in os.environ
    assert [s["random_seed"] for s in starts] == [3, 4]
    # each covers all 100 trajectories (routing by group may give one more than half): graphs for 128 rows
    assert all(s["cuda_graph_max_bs_decode"] == 128 and "max_running_requests" not in s for s in starts)
    assert eng.scheduling_info()["replicas"] == 2
    files = [r._log_config for r in eng.replicas]
    assert all(os.path.exists(f) for f in files)   # a detokenizer may still read it: kept until the shutdown
    loop = asyncio.new_event_loop()
    loop.run_until_complete(eng.shutdown())
    loop.close()
    assert not any(os.path.exists(f) for f in files)


async def test_an_sglang_replica_stops_only_its_own_processes_and_first_its_watchdog():
    """sglang's own shutdown ends every child of the process (the other replica's too), so a replica with neighbours
    ends only the processes it started; first it stops sglang's subprocess watchdog, which would otherwise take their
    end for a crash and SIGQUIT the whole process."""
    import subprocess
    import sys as _sys
    from types import SimpleNamespace

    import psutil

    from agent_rl.engines.sglang_engine import SGLangEngine

    mine = subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(60)"])
    other = subprocess.Popen([_sys.executable, "-c", "import time; time.sleep(60)"])
    events = []

    class Watchdog:
        def stop(self):
            events.append(("watchdog stopped", mine.poll() is None))

    class Fake:
        tokenizer_manager = SimpleNamespace(_subprocess_watchdog=Watchdog())

        def shutdown(self):
            events.append("sglang shutdown")   # would end `other` too

    eng = SGLangEngine.wrap(Fake())
    eng._own_children = {mine.pid}
    try:
        await eng.shutdown()
        assert events == [("watchdog stopped", True)]   # before its processes went; sglang's own shutdown not called
        assert mine.wait(timeout=30) is not None and other.poll() is None
        assert psutil.pid_exists(other.pid)
    finally:
        for p in (mine, other):
            if p.poll() is None:
                p.kill()
                p.wait()


async def test_server_replicas_each_load_the_synced_folder(monkeypatch):
    """`sglang-server` replicas: weights through disk, and every replica's server loads the folder (any rank)."""
    import torch

    from agent_rl.training import weight_sync

    class Server(Held):
        weights_from_disk, server_per_rank = True, True

        async def update_weights_from_disk(self, path):
            self.calls.append(("load", path))

    monkeypatch.setattr(weight_sync, "save_hf_model", lambda *a, **k: 0)
    monkeypatch.setattr(weight_sync.D, "get_rank", lambda: 1)
    monkeypatch.setattr(weight_sync.D, "barrier", lambda: None)
    a, b = Server(), Server()
    eng = ReplicaEngine([a, b])
    assert eng.weights_from_disk and eng.server_per_rank and not ReplicaEngine([Held()]).weights_from_disk
    await weight_sync.sync_weights_from_disk(torch.nn.Linear(1, 1), eng, "/tmp/ws")
    assert a.calls == b.calls == [("load", "/tmp/ws")]


def test_kv_sessions_start_sglang_with_streaming_sessions_and_are_refused_elsewhere(fake_sglang, tmp_path):
    from agent_rl.engines.kv_sessions import SESSION_KINDS

    model = tmp_path / "model"
    model.mkdir()
    for on in (True, False):
        eng = build_engine(RolloutConfig(engine="sglang", engine_replicas=2, kv_sessions=on), str(model))
        starts = [json.loads(line)["kwargs"] for line in open(fake_sglang / "engine_starts.jsonl")][-2:]
        assert [s.get("enable_streaming_session", False) for s in starts] == [on, on]
        assert [r.kv_sessions for r in eng.replicas] == [on, on]
        assert all((r.session_stats() is not None) == on for r in eng.replicas)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(eng.shutdown())   # removes each replica's log config from /tmp
        loop.close()
    assert "auto" not in SESSION_KINDS
    with pytest.raises(ConfigError, match=r"^rollout.kv_sessions: needs an sglang engine \(sglang, sglang-server, http\), "
                                          r"not rollout.engine=hf$"):
        validate({"rollout": {"kv_sessions": True, "engine": "hf"}}, check_paths=False)
    with pytest.raises(ConfigError, match="enable_streaming_session is false"):
        validate({"rollout": {"kv_sessions": True, "engine": "sglang",
                              "engine_kwargs": {"enable_streaming_session": False}}}, check_paths=False)
    assert validate({"rollout": {"kv_sessions": True, "engine": "auto"}}, check_paths=False).rollout.kv_sessions
    with pytest.raises(ValueError, match="rollout.kv_sessions: needs an sglang engine"):
        build_engine(RolloutConfig(engine="hf", kv_sessions=True), str(model))


def test_kv_sessions_by_default_on_for_the_sglang_engines_started_here_only(fake_sglang, tmp_path, monkeypatch):
    from agent_rl.engines import kv_sessions_on, sglang_engine

    model = tmp_path / "model"
    model.mkdir()
    assert RolloutConfig().kv_sessions is None                    # null: the engine decides
    eng = build_engine(RolloutConfig(engine="sglang"), str(model))
    start = [json.loads(line)["kwargs"] for line in open(fake_sglang / "engine_starts.jsonl")][-1]
    assert start["enable_streaming_session"] is True and eng.kv_sessions and eng.session_stats() is not None
    off = RolloutConfig(engine="sglang", engine_kwargs={"enable_streaming_session": False})
    assert kv_sessions_on("sglang", RolloutConfig()) and kv_sessions_on("sglang-server", RolloutConfig())
    assert not kv_sessions_on("sglang", off)                       # the user's engine setting wins
    assert not kv_sessions_on("hf", RolloutConfig()) and not kv_sessions_on("http", RolloutConfig())
    assert kv_sessions_on("http", RolloutConfig(kv_sessions=True))  # an external server: only when asked
    assert not kv_sessions_on("sglang", RolloutConfig(kv_sessions=False))
    monkeypatch.setattr(sglang_engine, "streaming_sessions_available", lambda: False)   # an sglang without them
    assert not kv_sessions_on("sglang", RolloutConfig())
    eng = build_engine(RolloutConfig(engine="sglang"), str(model))
    start = [json.loads(line)["kwargs"] for line in open(fake_sglang / "engine_starts.jsonl")][-1]
    assert "enable_streaming_session" not in start and not eng.kv_sessions and eng.session_stats() is None
