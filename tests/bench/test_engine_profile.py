"""`--engine-profile`: the engine's profiler around an extra, unmeasured run of a mode, and the trace summary."""
import asyncio
import gzip
import json
import os

import pytest

from agent_rl.bench import engine_profile as ep
from agent_rl.bench.instrument import InstrumentedEngine
from agent_rl.bench.modes import parse_modes
from agent_rl.bench.report import summary_markdown
from agent_rl.bench.sim_engine import SimEngine
from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings
from agent_rl.bench.workload import Dist, Workload
from agent_rl.cli.main import main as cli_main
from agent_rl.config.schema import RolloutConfig
from agent_rl.engines import sglang_engine
from agent_rl.engines.sglang_engine import SGLangEngine



def _trace(path, gz=True):
    ev = [  # microseconds; two overlapping kernels, a 10 ms idle gap, a third kernel, a memcpy, CPU ops
        {"ph": "X", "cat": "kernel", "name": "attn", "ts": 0, "dur": 10_000},
        {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 5_000, "dur": 15_000},
        {"ph": "X", "cat": "kernel", "name": "attn", "ts": 30_000, "dur": 10_000},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "ts": 40_000, "dur": 500},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 1_000, "dur": 2_000},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 41_000, "dur": 9_000},
        {"ph": "i", "cat": "marker", "name": "ignored", "ts": 99_000},
    ]
    opener = gzip.open if gz else open
    with opener(path, "wt") as f:
        json.dump({"traceEvents": ev}, f)
    return path


def test_summary_of_a_trace(tmp_path):
    t = ep.summarize_trace(_trace(str(tmp_path / "x.trace.json.gz")))
    assert t["window_s"] == pytest.approx(0.050) and t["gpu_window_s"] == pytest.approx(0.0405)
    assert t["gpu_busy_s"] == pytest.approx(0.0305)      # 0-20 ms (union), 30-40.5 ms
    assert t["gpu_busy_frac"] == pytest.approx(0.0305 / 0.0405)
    assert t["gpu_idle_gaps"] == {"over_ms": 1.0, "count": 1, "total_s": pytest.approx(0.010), "max_ms": pytest.approx(10.0)}
    assert [k["name"] for k in t["top_kernels"]] == ["attn", "gemm"] and t["top_kernels"][0]["count"] == 2
    assert t["top_cpu_ops"] == [{"name": "aten::mm", "total_ms": pytest.approx(11.0), "count": 2}]
    assert ep.summarize_trace(_trace(str(tmp_path / "y.trace.json"), gz=False))["gpu_kernels"] == 3
    (tmp_path / "empty.trace.json").write_text('{"traceEvents": []}')
    with pytest.raises(ValueError, match="no complete events"):
        ep.summarize_trace(str(tmp_path / "empty.trace.json"))


def test_forward_passes_by_mode_with_the_gpu_time_they_launched(tmp_path):
    def launch(ts, corr):
        return {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": ts, "dur": 5, "args": {"correlation": corr}}

    def kernel(ts, dur, corr):
        return {"ph": "X", "cat": "kernel", "name": "k", "ts": ts, "dur": dur, "args": {"correlation": corr}}

    ev = [  # a prefill pass (two kernels), two decode passes (one kernel each, one a graph launch), scheduler spans
        {"ph": "X", "cat": "user_annotation", "name": "step[EXTEND bs=40 toks=1200]", "ts": 0, "dur": 20_000},
        launch(1_000, 1), launch(2_000, 2), kernel(3_000, 4_000, 1), kernel(7_000, 2_000, 2),
        {"ph": "X", "cat": "user_annotation", "name": "step[DECODE bs=64]", "ts": 60_000, "dur": 1_000},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "ts": 60_500, "dur": 10, "args": {"correlation": 3}},
        kernel(61_000, 3_000, 3),
        {"ph": "X", "cat": "gpu_user_annotation", "name": "step[DECODE bs=64]", "ts": 61_000, "dur": 3_000},
        {"ph": "X", "cat": "user_annotation", "name": "step[DECODE bs=32]", "ts": 65_000, "dur": 1_000},
        launch(65_100, 4), kernel(65_200, 1_000, 4),
        launch(90_000, 5), kernel(90_100, 500, 5),        # launched outside every pass: no pass's GPU time
        {"ph": "X", "cat": "user_annotation", "name": "scheduler.run_batch", "ts": 0, "dur": 21_000},
        {"ph": "X", "cat": "user_annotation", "name": "scheduler.run_batch", "ts": 59_000, "dur": 3_000},
        # the same span again on the GPU timeline: not counted
        {"ph": "X", "cat": "gpu_user_annotation", "name": "scheduler.run_batch", "ts": 61_000, "dur": 3_000},
        {"ph": "X", "cat": "user_annotation", "name": "scheduler.process_input_requests", "ts": 40_000, "dur": 15_000},
    ]
    path = tmp_path / "p.trace.json"
    path.write_text(json.dumps({"traceEvents": ev}))
    t = ep.summarize_trace(str(path))
    ext, dec = t["steps"]["EXTEND"], t["steps"]["DECODE"]
    assert ext["passes"] == 1 and ext["bs_mean"] == 40 and ext["tokens_mean"] == 1200
    assert ext["gpu_ms_mean"] == pytest.approx(6.0) and ext["cpu_ms_mean"] == pytest.approx(20.0)
    assert ext["period_ms_mean"] == pytest.approx(60.0)                 # start to the next pass's start
    assert dec["passes"] == 2 and dec["bs_mean"] == 48 and dec["gpu_ms_mean"] == pytest.approx(2.0)
    assert dec["period_ms_median"] == pytest.approx(5.0) and dec["period_s_total"] == pytest.approx(0.005)
    assert t["scheduler_ms"] == {"scheduler.run_batch": pytest.approx(24.0),
                                 "scheduler.process_input_requests": pytest.approx(15.0)}
    md = ep.profile_markdown("async", {"passes": 3, "traces": [t]})
    assert "EXTEND: 1 passes, batch 40, 1200 new tokens; GPU 6.0 ms, CPU launch 20.0 ms, next pass after 60.0 ms" in md
    assert "scheduler: run_batch 24 ms, process_input_requests 15 ms" in md
    two = ep.profile_markdown("async", {"passes": 3, "traces": [dict(t, trace="replica-0/a.trace.json"),
                                                                dict(t, trace="replica-1/b.trace.json")]})
    heads = [line for line in two.splitlines() if not line.startswith("  ")]
    assert len(heads) == 2 and all(h.startswith("- async: 3 forward passes") for h in heads)   # each names the mode
    assert "`replica-1/b.trace.json`" in heads[1]


class ProfilingEngine(SimEngine):
    """sglang's behaviour: the trace is written into output_dir when the profile stops."""

    def __init__(self):
        super().__init__(fixed_s=0.001, per_row_s=0.0)
        self.calls = []
        self.profiling = False
        self.requests = 0

    async def generate(self, input_ids, sampling, request_id):
        self.requests += 1
        if self.profiling:               # like sglang's torch profiler: every pass much slower while it records
            await asyncio.sleep(0.2)
        return await super().generate(input_ids, sampling, request_id)

    async def start_profile(self, output_dir, passes):
        self.calls.append(("start", passes, self.requests))
        self.dir = output_dir
        self.profiling = True

    async def stop_profile(self):
        self.calls.append(("stop",))
        self.profiling = False
        _trace(os.path.join(self.dir, f"agent-rl-{len(self.calls)}-TP-0.trace.json.gz"))


async def test_the_named_mode_runs_once_more_under_the_profiler_outside_the_figures(tokenizer, tmp_path):
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=0)
    eng = ProfilingEngine()
    s = RolloutBenchSettings(workload=w, steps=1, progress=False, rounds=2, ceiling=False, engine_profile=("async",),
                             engine_profile_passes=40, profile_dir=str(tmp_path / "engine-profile"))
    res = await RolloutBench(InstrumentedEngine(eng), tokenizer, s, RolloutConfig(engine="hf")).run(
        parse_modes("turn-batched,async"))
    assert eng.calls == [("start", 40, 0), ("stop",)]                 # one mode, one extra run
    tb, asy = res["modes"]
    assert "engine_profile" not in tb
    prof = asy["engine_profile"]
    # the profiled run (2 turns, each at least 0.2 s slower) is not among the measured steps of either round
    assert prof["profiled_step_wall_s_mean"] >= 0.4
    assert len(asy["step_wall_s"]) == 2 and max(asy["step_wall_s"]) < 0.4 and len(asy["rounds"]) == 2
    assert prof["passes"] == 40 and "error" not in prof and prof["dir"].endswith("engine-profile/async")
    assert prof["traces"][0]["gpu_busy_frac"] == pytest.approx(0.0305 / 0.0405)
    md = summary_markdown({"kind": "rollout", "command": "t", "engine": "step", "model": "m", "workload": w.to_json(),
                           "environment": {"device": "cpu", "python": "3", "torch": "x", "transformers": "y", "sglang": None}, **res})
    assert "## Engine profile" in md and "- async: 40 forward passes traced" in md and "GPU busy 75%" in md


async def test_a_profiled_carry_over_mode_starts_the_profiler_after_its_warm_up_step(tokenizer, tmp_path):
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("uniform:lo=1,hi=40"),
                 tool_latency=Dist.parse("0"), seed=0)
    eng = ProfilingEngine()
    s = RolloutBenchSettings(workload=w, steps=1, progress=False, ceiling=False, engine_profile=("carryover",),
                             engine_profile_passes=40, profile_dir=str(tmp_path / "engine-profile"))
    res = await RolloutBench(InstrumentedEngine(eng), tokenizer, s, RolloutConfig(engine="hf")).run(
        parse_modes("carryover", "0.5"))
    (start, _passes, before), stop = eng.calls
    assert start == "start" and stop == ("stop",) and before >= 6   # the warm-up step's 3 groups x 2 samples ran first
    assert "error" not in res["modes"][0]["engine_profile"]


async def test_a_profiler_that_fails_to_start_leaves_the_benchmark_running(tmp_path):
    class NoProfiler(SimEngine):
        async def start_profile(self, output_dir, passes):
            raise RuntimeError("Profiling is already in progress")

    async def run(start):
        await start()
        return {"ok": True}

    out, prof = await ep.profiled(NoProfiler(), str(tmp_path), 10, run)
    assert out == {"ok": True} and prof["error"].startswith("start_profile failed: Profiling is already")
    assert "engine profile incomplete" in ep.profile_markdown("async", prof)


async def test_in_process_sglang_profile_goes_through_the_tokenizer_manager(monkeypatch):
    calls = []

    class TM:
        async def start_profile(self, req):
            calls.append(("start", req))

        async def stop_profile(self):
            calls.append(("stop",))

    class Eng:
        tokenizer_manager = TM()

    monkeypatch.setattr(sglang_engine, "_profile_req", lambda **f: f)   # sglang's ProfileReq takes these fields
    eng = SGLangEngine.wrap(Eng())
    await eng.start_profile("/tmp/p", 25)
    await eng.stop_profile()
    assert calls == [("start", {"output_dir": "/tmp/p", "num_steps": 25, "activities": ["CPU", "GPU"],
                                "with_stack": False, "record_shapes": False, "profile_prefix": "agent-rl"}), ("stop",)]


def test_cli_refuses_a_profile_it_cannot_take(tmp_path, tiny_model_path, capsys):
    base = ["bench", "rollout", "--model", tiny_model_path, "--out", str(tmp_path)]
    assert cli_main(base + ["--engine", "sim", "--engine-profile", "async"]) == 2
    assert cli_main(base + ["--engine", "sglang", "--engine-profile", "asink"]) == 2
    assert cli_main(base + ["--engine", "sglang", "--engine-profile", "async", "--engine-profile-passes", "0"]) == 2
    err = capsys.readouterr().err
    assert "--engine-profile needs an sglang engine" in err and "--engine-profile 'asink'" in err
    assert "--engine-profile-passes must be >= 1" in err
