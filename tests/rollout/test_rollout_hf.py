"""Integration: the real `hf` engine (tiny random Llama) + the real ToolRuntime + the scheduler.

A random model never writes tool calls, so the parse hook forces them (two calls per trajectory);
they still go through ToolRuntime sessions. The sampling hook forces short turns (and long ones for
the groups that over-sampling must cut)."""
import time

import pytest
import torch

from agent_rl.config.schema import MultiTurnConfig, RolloutConfig
from agent_rl.engines.base import SamplingParams
from agent_rl.engines.hf import HFEngine
from agent_rl.rollout.agent_loop import LoopHooks
from agent_rl.rollout.batch import build_batch
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.rollout.parser import ParsedCall, ParseResult
from agent_rl.rollout.scheduler import RolloutScheduler
from rollout_tools import sleep_runtime

TOOL_DELAY = 0.5


def rows(k):
    return [{"prompt": [{"role": "user", "content": f"question {i}?"}], "data_source": "arith_synth",
             "reward_model": {"ground_truth": str(i)}, "extra_info": {"index": i}} for i in range(k)]


def force_two_calls(traj, text, turn):
    return ParseResult(calls=[ParsedCall("sleep", {"x": f"t{turn}"}, "")] if turn < 2 else [], content=text)


class Recording:
    """Engine proxy that records what the engine returned per request."""

    def __init__(self, engine):
        self.engine, self.outputs = engine, {}

    async def generate(self, ids, sp, rid):
        out = await self.engine.generate(ids, sp, rid)
        self.outputs[rid] = (list(ids), list(out.output_ids), list(out.logprobs))
        return out

    async def abort(self, rid):
        await self.engine.abort(rid)


def cfg(**kw):
    base = dict(n=2, progress_bar=False, max_model_len=2048, max_concurrent_trajectories=256,
                multi_turn=MultiTurnConfig(max_assistant_turns=4, max_new_tokens_per_turn=64))
    base.update(kw)
    return RolloutConfig(**base)


@pytest.fixture(scope="module")
def engine(tiny_model_path):
    return HFEngine(tiny_model_path, device="cpu", max_batch_size=64, seed=0)


def no_running(engine):
    return not engine._by_id and not engine._pending and all(r.finish_reason is not None for r in engine._batch.rows)


async def test_tool_calls_overlap(engine, tokenizer):
    """32 trajectories x 2 tool calls of 0.5 s: far below the 32 s the calls take one after another."""
    rt, tool = sleep_runtime(tokenizer, delay=TOOL_DELAY)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    hooks = LoopHooks(parse=force_two_calls,  # greedy one-token turns keep the (shared, 2-core) CPU cost small
                      sampling=lambda traj, turn: SamplingParams(max_new_tokens=1, temperature=0.0,
                                                                 stop_token_ids=renderer.stop_token_ids))
    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2), hooks=hooks)
    t0 = time.perf_counter()
    res = await sched.run_step(rows(16), step=0)
    elapsed = time.perf_counter() - t0
    assert len(res.trajectories) == 32 and tool.executed == 64
    assert all(len(t.turns) == 3 and [len(u.tool_calls) for u in t.turns] == [1, 1, 0] for t in res.trajectories)
    serial = 32 * 2 * TOOL_DELAY
    assert elapsed < 0.25 * serial, f"{elapsed:.1f} s vs serial tool time {serial} s"
    assert res.metrics["rollout/tool_calls/sleep/ok"] == 64
    await rt.close()
    assert tool.created == tool.released == 32 and not tool.live


async def test_token_in_token_out(engine, tokenizer):
    rt, tool = sleep_runtime(tokenizer, delay=0.0)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    rec = Recording(engine)
    hooks = LoopHooks(parse=force_two_calls,
                      sampling=lambda traj, turn: SamplingParams(max_new_tokens=6, temperature=1.0,
                                                                 stop_token_ids=renderer.stop_token_ids))
    sched = RolloutScheduler(rec, renderer, rt, cfg(n=2), hooks=hooks)
    res = await sched.run_step(rows(2), step=0)
    trajs = res.trajectories
    assert len(trajs) == 4
    for t in trajs:
        assert t.status == "finished" and len(t.turns) == 3
        # the training ids are the engine's sampled ids plus the observation ids, nothing else
        expect = []
        for u in t.turns:
            ids_in, out_ids, lps = rec.outputs[f"{t.id}@0-t{u.index}"]
            assert ids_in == t.prompt_ids + expect          # the engine saw exactly the trajectory so far
            assert u.output_ids == out_ids and u.logprobs == lps
            if u.tool_calls:
                ended = bool(out_ids) and out_ids[-1] in renderer.stop_token_ids
                assert u.observation_ids == renderer.observation_ids(
                    [{"role": "tool", "name": c.name, "content": c.observation} for c in u.tool_calls], assistant_ended=ended)
            expect += out_ids + u.observation_ids
        assert t.response_ids == expect
        sampled = [i for u in t.turns for i in u.output_ids]
        assert [i for i, m in zip(t.response_ids, t.loss_mask) if m] == sampled and sum(t.loss_mask) == len(sampled)
        assert all(lp == 0.0 for lp, m in zip(t.rollout_logprobs, t.loss_mask) if not m)

    # the engine's log-probs match a teacher-forced forward of the training batch (fp32 CPU)
    batch = build_batch(trajs, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = engine.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["loss_mask"][:, 1:].bool()
    diff = (lp[mask] - batch["rollout_logprobs"][:, 1:][mask]).abs()
    assert mask.sum() >= 4 * 3 and diff.max().item() < 1e-3
    await rt.close()


async def test_over_sampling_aborts_for_real(engine, tokenizer):
    rt, tool = sleep_runtime(tokenizer, delay=0.05)
    renderer = ChatRenderer(tokenizer, rt.schemas)

    def sampling(traj, turn):
        slow = traj.row["extra_info"]["index"] >= 3
        return SamplingParams(max_new_tokens=2000 if slow else 4, ignore_eos=slow, stop_token_ids=renderer.stop_token_ids)

    sched = RolloutScheduler(engine, renderer, rt, cfg(n=2, over_sample_rate=1.0,
                                                       multi_turn=MultiTurnConfig(max_new_tokens_per_turn=2000,
                                                                                  max_response_tokens=4000)),
                             hooks=LoopHooks(parse=force_two_calls, sampling=sampling))
    aborted_before = engine.stats.aborted
    res = await sched.run_step(rows(6), step=0)
    assert {t.row["extra_info"]["index"] for t in res.trajectories} == {0, 1, 2}
    assert all(t.status == "finished" for t in res.trajectories)
    for g in range(3):  # every kept group is whole
        assert sorted(t.sample_index for t in res.trajectories if t.row["extra_info"]["index"] == g) == [0, 1]
    assert len(res.dropped) == 6 and all(t.status == "aborted" for t in res.dropped)
    assert engine.stats.aborted > aborted_before
    assert no_running(engine)                                  # aborted requests really stopped
    assert all(len(t.response_ids) < 2000 for t in res.dropped)
    await rt.close()
    assert tool.created == tool.released == 12 and not tool.live


async def test_carry_over_resumes_on_the_engine(engine, tokenizer):
    rt, tool = sleep_runtime(tokenizer, delay=0.0)
    renderer = ChatRenderer(tokenizer, rt.schemas)
    slow = {"on": True}

    def sampling(traj, turn):
        s = slow["on"] and traj.row["extra_info"]["index"] >= 2
        return SamplingParams(max_new_tokens=2000 if s else 3, ignore_eos=s, stop_token_ids=renderer.stop_token_ids)

    sched = RolloutScheduler(engine, renderer, rt, cfg(n=1, over_sample_rate=1.0, partial_rollout=True,
                                                       multi_turn=MultiTurnConfig(max_new_tokens_per_turn=2000,
                                                                                  max_response_tokens=4000)),
                             hooks=LoopHooks(parse=force_two_calls, sampling=sampling))
    res = await sched.run_step(rows(4), step=0, batch_size=2)
    assert {t.row["extra_info"]["index"] for t in res.trajectories} == {0, 1}
    carried = res.carried
    assert len(carried) == 2 and all(t.status == "carried" for t in carried) and no_running(engine)
    snap = {t.id: (list(t.response_ids), list(t.rollout_logprobs)) for t in carried}
    slow["on"] = False
    assert sched.rows_needed(2) == 2
    res2 = await sched.run_step([], step=1, batch_size=2)
    assert {t.id for t in res2.trajectories} == set(snap)
    for t in res2.trajectories:
        ids0, lps0 = snap[t.id]
        assert t.status == "finished" and t.response_ids[:len(ids0)] == ids0 and t.rollout_logprobs[:len(lps0)] == lps0
    # resumed tokens and the kept prefix are one consistent sample of the (unchanged) policy
    batch = build_batch(res2.trajectories, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = engine.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).logits.float()
    lp = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["loss_mask"][:, 1:].bool()
    assert (lp[mask] - batch["rollout_logprobs"][:, 1:][mask]).abs().max().item() < 1e-3
    await rt.close()
    assert tool.created == tool.released and not tool.live
