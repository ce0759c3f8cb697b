import asyncio
import json

import pytest

from agent_rl.bench.sim_engine import SimEngine
from agent_rl.cli.main import main as cli_main
from agent_rl.engines.base import SamplingParams


async def test_step_cost_grows_with_the_batch_and_the_queue_is_served_by_priority():
    eng = SimEngine(fixed_s=0.001, per_row_s=0.0, max_running=2)
    order = []

    async def one(rid, prio, n=3):
        out = await eng.generate([1], SamplingParams(max_new_tokens=n, priority=prio), rid)
        order.append(rid)
        return out

    outs = await asyncio.gather(one("a", 5), one("b", 5), one("c", 9), one("d", 1))
    assert all(len(o.output_ids) == 3 and o.finish_reason == "length" for o in outs)
    assert order == ["d", "a", "b", "c"]      # lower priority value first, then arrival
    assert eng.steps == 6 and eng.rows_sum == 12                    # two rows per step, never more


async def test_a_step_that_admits_requests_runs_one_prefill_pass_for_all_of_them():
    eng = SimEngine(fixed_s=0.0, per_row_s=0.0, prefill_s=0.01)
    outs = await asyncio.gather(*(eng.generate([1], SamplingParams(max_new_tokens=3), f"r{i}") for i in range(4)))
    assert all(len(o.output_ids) == 3 for o in outs)
    assert eng.prefills == 1 and eng.steps == 3          # four arrivals together: one pass
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await eng.generate([1], SamplingParams(max_new_tokens=2), "late")
    assert eng.prefills == 2 and loop.time() - t0 >= 0.01  # a later arrival pays a pass of its own


@pytest.mark.parametrize("notify,wakes", [(16, [16, 16, 8]), (64, [40])])
async def test_finished_requests_are_handed_over_as_sglangs_tokenizer_manager_does(notify, wakes):
    # 40 requests finish in one pass; their callers wake `batch_notify_size` at a time, one event-loop pass apart
    eng = SimEngine(fixed_s=0.0, per_row_s=0.0, batch_notify_size=notify)
    woken, passes = [], [0]

    async def one(rid):
        await eng.generate([1], SamplingParams(max_new_tokens=2), rid)
        woken.append(passes[0])

    async def count_passes():
        while len(woken) < 40:
            passes[0] += 1
            await asyncio.sleep(0)

    await asyncio.gather(count_passes(), *(one(f"r{i}") for i in range(40)))
    assert [len([w for w in woken if w == p]) for p in sorted(set(woken))] == wakes
    assert sorted(set(woken)) == list(range(min(woken), min(woken) + len(wakes)))   # consecutive passes
    assert not eng._outputs


async def test_a_prefill_pass_costs_more_for_each_row_it_admits():
    async def pass_time(rows):
        eng = SimEngine(fixed_s=0.0, per_row_s=0.0, prefill_s=0.0, prefill_row_s=0.01)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(eng.generate([1], SamplingParams(max_new_tokens=1), f"r{i}") for i in range(rows)))
        assert eng.prefills == 1
        return loop.time() - t0

    one, eight = await pass_time(1), await pass_time(8)
    assert 0.01 <= one < 0.05 and eight >= 0.08                   # one pass each, priced by its rows


async def test_the_prefill_delayer_holds_a_lone_arrival_for_at_most_its_passes():
    eng = SimEngine(fixed_s=0.001, per_row_s=0.0, prefill_s=0.0, delay_passes=3, queue_min_ratio=0.5)
    first = [asyncio.ensure_future(eng.generate([1], SamplingParams(max_new_tokens=20), f"r{i}")) for i in range(4)]
    await asyncio.sleep(0.005)
    steps_before = eng.steps
    late = await eng.generate([1], SamplingParams(max_new_tokens=1), "late")  # 1 queued < 0.5 x 4 running
    assert len(late.output_ids) == 1 and eng.prefills == 2
    assert eng.steps - steps_before >= 4                  # waited 3 decode passes, then its own step
    await asyncio.gather(*first)


@pytest.mark.parametrize("slot_delay", [False, True])
async def test_a_full_engine_admits_freed_rows_together_with_the_slot_condition(slot_delay):
    # 2 rows, 6 requests of different lengths: the queue always holds more than a quarter of the running rows, so only
    # the slot condition (as sglang's delayer has it where it sees the running cap: the delayer_cap patch) delays
    eng = SimEngine(fixed_s=0.0005, per_row_s=0.0, max_running=2, delay_passes=4, queue_min_ratio=0.25,
                    slot_delay=slot_delay)
    outs = await asyncio.gather(*(eng.generate([1], SamplingParams(max_new_tokens=3 + 2 * i), f"r{i}")
                                  for i in range(6)))
    assert [len(o.output_ids) for o in outs] == [3 + 2 * i for i in range(6)]
    # unpatched every freed row is admitted in a prefill of its own; with the slot condition rows wait to go together
    assert eng.prefills == (3 if slot_delay else 5)


async def test_abort_running_and_queued():
    eng = SimEngine(fixed_s=0.001, per_row_s=0.0, max_running=1)
    t1 = asyncio.ensure_future(eng.generate([1], SamplingParams(max_new_tokens=10 ** 6), "r"))
    t2 = asyncio.ensure_future(eng.generate([1], SamplingParams(max_new_tokens=5), "q"))
    await asyncio.sleep(0.02)
    await eng.abort("q")
    await eng.abort("r")
    r, q = await t1, await t2
    assert r.finish_reason == q.finish_reason == "abort" and len(r.output_ids) > 0 and q.output_ids == []


def test_bench_rollout_on_the_sim_engine(tmp_path, tiny_model_path, capsys):
    out = tmp_path / "b"
    assert cli_main(["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path,
                     "--out", str(out), "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "4",
                     "--modes", "async,oversample", "--over-sample", "0.5", "--over-sample-max-load", "0.5",
                     "--steps", "1", "--no-progress"]) == 0
    assert "async+oversample 0.5" in (out / "summary.md").read_text()
    # every extra gated (--over-sample-max-load): the bounds, which start every group at once, do not describe it
    assert "tail_cut_bound" not in json.load(open(out / "rollout_bench.json"))
    assert cli_main(["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1,0.5,0.1", "--sim-max-running", "4",
                     "--model", tiny_model_path, "--out", str(out), "--prompts", "4", "--n", "2", "--turns", "2",
                     "--tokens-per-turn", "4", "--modes", "async", "--steps", "1", "--no-progress"]) == 0
    mode = json.load(open(out / "rollout_bench.json"))["modes"][0]   # the sim's own passes in the mode
    assert mode["sim_prefill_passes"] >= 2 and mode["sim_decode_passes"] >= 8   # 2 turns of 4 tokens, 8 requests
    for bad in (["--sim-cost", "x"], ["--sim-cost", "1,2,3,4,5"], ["--sim-cost", "1,2,-3"], ["--sim-max-running", "0"]):
        assert cli_main(["bench", "rollout", "--engine", "sim", *bad, "--model", tiny_model_path,
                         "--out", str(out)]) == 2, bad
    assert cli_main(["bench", "rollout", "--engine", "sim", "--over-sample-max-load", "0", "--model", tiny_model_path,
                     "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--sim-cost 'x'" in err and "--over-sample-max-load '0'" in err


async def test_replicas_share_the_gpu_part_of_each_pass(monkeypatch):
    """Two simulated engines on one GPU: each pass sleeps its CPU part outside the GPU lock and its GPU part inside
    it, never two replicas inside at once (no clock read: the sleeps are recorded, not slept)."""
    import asyncio

    from agent_rl.bench import sim_engine
    from agent_rl.bench.sim_engine import SimEngine
    from agent_rl.engines.base import SamplingParams

    slept, inside, overlap = [], [], []
    real_sleep = asyncio.sleep

    async def record(seconds):
        slept.append((round(seconds, 6), len(inside)))
        await real_sleep(0)

    class Gpu(asyncio.Lock):
        async def __aenter__(self):
            await super().__aenter__()
            overlap.append(len(inside))
            inside.append(1)

        async def __aexit__(self, *exc):
            inside.pop()
            return await super().__aexit__(*exc)

    monkeypatch.setattr(sim_engine.asyncio, "sleep", record)
    gpu = Gpu()
    a, b = (SimEngine(0.01, 0.0, gpu=gpu, gpu_share=0.25) for _ in range(2))
    await asyncio.gather(a.generate([1], SamplingParams(max_new_tokens=3), "a"),
                         b.generate([1], SamplingParams(max_new_tokens=3), "b"))
    slept[:] = [s for s in slept if s[0]]   # not the hand-over's passes of the event loop (sleep(0))
    assert sorted(d for d, _ in slept) == [0.0025] * 6 + [0.0075] * 6   # 3 passes each: its GPU and CPU parts
    assert all(held == 1 for d, held in slept if d == 0.0025)            # the GPU part holding the GPU
    assert overlap == [0] * 6                                        # one replica on the GPU at a time
    slept.clear()
    alone = SimEngine(0.01, 0.0)                                     # no shared GPU: the whole pass, as before
    await alone.generate([1], SamplingParams(max_new_tokens=2), "c")
    assert [s for s in slept if s[0]] == [(0.01, 0)] * 2


@pytest.mark.parametrize("patches, concurrency, slot", [
    (None, 64, True),                                  # the default set has delayer_cap
    ("delayer_gather,decode_rows", 64, False),         # a request pool above the cap, the delayer counting against it
    ("delayer_gather,decode_rows", 32, True),          # as many trajectories as rows: no pool, sglang's own condition
])
def test_the_sim_has_the_slot_condition_where_sglang_would(patches, concurrency, slot):
    import argparse

    from agent_rl.cli.bench import _build_engine, _rollout_config
    from agent_rl.cli.bench_args import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = ["--scheduler-patches", patches] if patches else []
    args = parser.parse_args(["rollout", "--engine", "sim", "--sim-max-running", "32", "--out", "x", *flags])
    engine = _build_engine(args, _rollout_config(args, concurrency), None)
    assert isinstance(engine, SimEngine) and engine.max_running == 32 and engine.slot_delay is slot
