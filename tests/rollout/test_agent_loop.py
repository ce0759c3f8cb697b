"""Agent loop on a scripted engine (real tokenizer + ChatRenderer): token bookkeeping, budgets, errors, resume."""
import asyncio
import re
import time

import pytest

from agent_rl.config.schema import MultiTurnConfig
from agent_rl.engines.base import SamplingParams
from agent_rl.rollout.agent_loop import LoopControl, LoopHooks, run_trajectory
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.rollout.parser import ParsedCall, ParseResult
from agent_rl.rollout.trajectory import Trajectory
from rollout_fakes import FakeSession, ScriptedEngine, call_text

TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "math",
                                           "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}]
ROW = {"prompt": [{"role": "user", "content": "What is 2+3?"}], "data_source": "arith_synth",
       "reward_model": {"ground_truth": "5"}}


def turn_of(rid: str) -> int:
    return int(re.search(r"-t(\d+)", rid).group(1))


@pytest.fixture(scope="module")
def renderer(tokenizer):
    return ChatRenderer(tokenizer, TOOLS)


def new_traj(renderer):
    return Trajectory(uid="g0", sample_index=0, row=ROW, prompt_ids=renderer.prompt_ids(ROW["prompt"]))


def check_invariants(traj, engine, renderer):
    """Token in, token out: response = concat(turn sampled ids + observation ids); mask 1 exactly on sampled."""
    expect_ids, expect_mask, expect_lp = [], [], []
    for t in traj.turns:
        expect_ids += t.output_ids + t.observation_ids
        expect_mask += [1] * len(t.output_ids) + [0] * len(t.observation_ids)
        expect_lp += t.logprobs + [0.0] * len(t.observation_ids)
    assert traj.response_ids == expect_ids
    assert traj.loss_mask == expect_mask
    assert traj.rollout_logprobs == expect_lp
    sampled = [i for c in engine.calls for i in c["output_ids"]]
    assert [i for i, m in zip(traj.response_ids, traj.loss_mask) if m] == sampled
    # every generate call saw exactly the trajectory so far
    for c in engine.calls:
        n = len(c["input_ids"])
        assert c["input_ids"] == (traj.prompt_ids + traj.response_ids)[:n]


async def test_two_tool_turns_then_answer(tokenizer, renderer):
    script = {0: call_text("calculator", '{"expression": "2+3"}'),
              1: call_text("calculator", '{"expression": "5*1"}') + call_text("calculator", '{"expression": "1"}'),
              2: "<answer>5</answer>"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession(delay=0.05)
    before = time.perf_counter()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, MultiTurnConfig(),
                                SamplingParams(max_new_tokens=1), "r0")
    # on the perf_counter clock, the bench's: its latencies and its step bounds come from one clock
    assert before <= traj.start_time <= traj.end_time - 0.1 <= time.perf_counter()   # two tool turns of 0.05 s
    assert traj.status == "finished" and traj.stop_reason == "answer"
    assert len(traj.turns) == 3 and [len(t.tool_calls) for t in traj.turns] == [1, 2, 0]
    assert session.max_active == 2  # the two calls of turn 1 ran concurrently
    assert traj.turns[1].tool_latency_s < 0.09
    check_invariants(traj, engine, renderer)
    assert all(t.output_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") for t in traj.turns)
    obs_text = tokenizer.decode(traj.turns[0].observation_ids)
    assert "<tool_response>" in obs_text and "result of" in obs_text and obs_text.endswith("<|im_start|>assistant\n")
    assert traj.turns[2].text == "<answer>5</answer>"
    assert renderer.drift(traj.messages, traj.prompt_ids + traj.response_ids) == 0
    assert traj.messages[-1] == {"role": "assistant", "content": "<answer>5</answer>"}


async def test_malformed_and_unknown_calls_become_observations(tokenizer, renderer):
    script = {0: '<tool_call>{"name": "calculator", "arguments": {oops</tool_call>' + call_text("nosuch", "{}"),
              1: "done"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, MultiTurnConfig(),
                                SamplingParams(max_new_tokens=1), "r0")
    assert traj.stop_reason == "answer" and len(traj.turns) == 2
    recs = traj.turns[0].tool_calls
    assert [r.status for r in recs] == ["parse_error", "unknown_tool"]
    obs = tokenizer.decode(traj.turns[0].observation_ids)
    assert "invalid JSON" in obs and "unknown tool" in obs
    assert session.calls == [("nosuch", {})]  # the malformed call never reached the session
    check_invariants(traj, engine, renderer)


async def test_budgets(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "1"}')
    # tool-call budget: 3 calls allowed; turn0 makes 2, turn1 makes 2 (1 runs, 1 gets budget), turn2 calls again -> stop
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call + call)
    cfg = MultiTurnConfig(max_tool_calls=3, max_assistant_turns=10, max_response_tokens=100000)
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), cfg, SamplingParams(1), "r")
    assert traj.stop_reason == "max_tool_calls" and len(traj.turns) == 3
    assert [r.status for r in traj.turns[1].tool_calls] == ["ok", "budget"]
    assert "budget exhausted" in traj.turns[1].tool_calls[1].observation
    check_invariants(traj, engine, renderer)

    # assistant-turn budget: the last turn's calls are not run
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call)
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(),
                                MultiTurnConfig(max_assistant_turns=2), SamplingParams(1), "r")
    assert traj.stop_reason == "max_assistant_turns" and len(traj.turns) == 2 and not traj.turns[1].tool_calls

    # response-token budget: per-turn max_new_tokens shrinks to what is left
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "word " * 50)
    cfg = MultiTurnConfig(max_new_tokens_per_turn=30, max_response_tokens=20)
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), cfg, SamplingParams(1), "r")
    assert engine.calls[0]["max_new_tokens"] == 20 and len(traj.response_ids) == 20
    assert traj.stop_reason == "max_response_tokens" and traj.turns[0].finish_reason == "length"

    # per-turn budget without a tool call
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "word " * 50)
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(),
                                MultiTurnConfig(max_new_tokens_per_turn=7), SamplingParams(1), "r")
    assert traj.stop_reason == "max_new_tokens_per_turn" and len(traj.response_ids) == 7

    # context limit: room = max_model_len - prompt
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "word " * 50)
    p = len(new_traj(renderer).prompt_ids)
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), MultiTurnConfig(),
                                SamplingParams(1), "r", max_model_len=p + 5)
    assert engine.calls[0]["max_new_tokens"] == 5 and traj.stop_reason == "max_model_len"

    # an observation that would overflow the response budget is not appended
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call)
    n_call = len(tokenizer(call, add_special_tokens=False)["input_ids"]) + 1
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(),
                                MultiTurnConfig(max_response_tokens=n_call + 5), SamplingParams(1), "r")
    assert traj.stop_reason == "max_response_tokens" and len(traj.response_ids) == n_call
    assert traj.turns[0].tool_calls and not traj.turns[0].observation_ids


async def test_truncated_turn_with_call_is_closed_by_template(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "1"}')
    n_call = len(tokenizer(call, add_special_tokens=False)["input_ids"])
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call + " trailing words that get cut" if turn_of(rid) == 0 else "ok")
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(),
                                MultiTurnConfig(max_new_tokens_per_turn=n_call + 2), SamplingParams(1), "r")
    assert traj.turns[0].finish_reason == "length" and traj.turns[0].tool_calls[0].status == "ok"
    assert traj.turns[0].observation_ids[:1] == renderer.end_of_turn_ids
    assert renderer.drift(traj.messages, traj.prompt_ids + traj.response_ids) == 0
    check_invariants(traj, engine, renderer)


async def test_stop_string_ends_turn_and_drops_later_samples(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "2+3"}')
    hallucinated = "\nTool: 5\n" + call_text("calculator", '{"expression": "9"}') + "<answer>9</answer>"
    script = {0: "Let me compute.\n" + call + hallucinated, 1: "<answer>5</answer>"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession()
    cfg = MultiTurnConfig(stop_strings=["</tool_call>"])
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, cfg, SamplingParams(max_new_tokens=1), "r0")
    assert traj.stop_reason == "answer" and len(traj.turns) == 2
    first = traj.turns[0]
    assert first.finish_reason == "stop" and first.text.rstrip().endswith("</tool_call>")
    assert "Tool: 5" not in first.text
    assert session.calls == [("calculator", {"expression": "2+3"})]  # the hallucinated second call never ran
    # the kept ids are the engine's first sampled ids, with their log-probs; the rest is gone
    sampled0 = engine.calls[0]["output_ids"]
    n = len(first.output_ids)
    assert 0 < n < len(sampled0) and first.output_ids == sampled0[:n]
    assert first.logprobs == [-(k + 1) / 100 for k in range(n)]
    assert "</tool_call>" not in tokenizer.decode(first.output_ids[:-1])
    # the template closes the cut turn; mask / log-probs line up; the next turn saw exactly the kept prefix
    assert first.observation_ids[:1] == renderer.end_of_turn_ids
    expect_mask = []
    for t in traj.turns:
        expect_mask += [1] * len(t.output_ids) + [0] * len(t.observation_ids)
    assert traj.loss_mask == expect_mask and len(traj.rollout_logprobs) == len(traj.response_ids)
    assert engine.calls[1]["input_ids"] == traj.prompt_ids + traj.response_ids[:len(engine.calls[1]["input_ids"]) - len(traj.prompt_ids)]
    assert renderer.drift(traj.messages, traj.prompt_ids + traj.response_ids) == 0


async def test_without_stop_strings_the_whole_turn_is_kept(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "2+3"}')
    script = {0: call + "\nTool: 5\n" + call, 1: "<answer>5</answer>"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, MultiTurnConfig(), SamplingParams(1), "r0")
    assert len(session.calls) == 2 and traj.turns[0].finish_reason == "stop"
    check_invariants(traj, engine, renderer)


async def test_hooks_force_calls_and_lengths(tokenizer, renderer):
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "no calls here at all, just words")

    def parse(traj, text, turn):
        return ParseResult(calls=[ParsedCall("calculator", {"expression": str(turn)}, "")] if turn < 2 else [])

    hooks = LoopHooks(parse=parse, sampling=lambda traj, turn: SamplingParams(max_new_tokens=3 + turn, stop_token_ids=[2]))
    session = FakeSession()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, MultiTurnConfig(), SamplingParams(1), "r",
                                hooks=hooks)
    assert [c["max_new_tokens"] for c in engine.calls] == [3, 4, 5]
    assert session.calls == [("calculator", {"expression": "0"}), ("calculator", {"expression": "1"})]
    assert len(traj.turns) == 3


async def test_abort_mid_turn_then_resume_keeps_prefix(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "1"}')
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call if turn_of(rid) == 0 else "the final answer is <answer>5</answer>",
                            token_delay=0.01)
    traj = new_traj(renderer)
    ctl = LoopControl()
    task = asyncio.ensure_future(run_trajectory(traj, engine, renderer, FakeSession(), MultiTurnConfig(),
                                                SamplingParams(1), "r", control=ctl, policy_version=3))
    while not (len(traj.turns) == 1 and traj.turns[0].observation_ids and ctl.phase == "generate"):
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # a few tokens of turn 1
    ctl.stop_requested = True
    await engine.abort(ctl.request_id)
    await task
    assert traj.status == "aborted" and traj.stop_reason == "abort" and not engine.running
    partial = traj.turns[1]
    assert partial.finish_reason == "abort" and 0 < len(partial.output_ids) < 12
    before = (list(traj.response_ids), list(traj.rollout_logprobs), list(traj.loss_mask))
    n_before = len(partial.output_ids)

    traj.status = "carried"
    done = await run_trajectory(traj, engine, renderer, FakeSession(), MultiTurnConfig(), SamplingParams(1), "r2",
                                policy_version=4)
    assert done.status == "finished" and done.stop_reason == "answer" and len(done.turns) == 2
    assert done.response_ids[:len(before[0])] == before[0]
    assert done.rollout_logprobs[:len(before[1])] == before[1] and done.loss_mask[:len(before[2])] == before[2]
    # resumed generation continued the same turn from prompt + response so far, with the turn's remaining budget
    last = engine.calls[-1]
    assert last["input_ids"] == traj.prompt_ids + before[0]
    assert last["max_new_tokens"] == MultiTurnConfig().max_new_tokens_per_turn - n_before
    assert done.policy_version == 3 and done.turns[1].policy_version == 3


async def test_cancel_during_tools_then_resume_reruns_calls(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "1"}')
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call if turn_of(rid) == 0 else "<answer>1</answer>")
    traj = new_traj(renderer)
    ctl = LoopControl()
    slow = FakeSession(delay=5)
    task = asyncio.ensure_future(run_trajectory(traj, engine, renderer, slow, MultiTurnConfig(), SamplingParams(1),
                                                "r", control=ctl))
    while ctl.phase != "tools":
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(traj.turns) == 1 and not traj.turns[0].tool_calls and not traj.turns[0].observation_ids
    n = len(traj.response_ids)
    traj.status, traj.stop_reason = "carried", "abort"
    session = FakeSession()
    await run_trajectory(traj, engine, renderer, session, MultiTurnConfig(), SamplingParams(1), "r2")
    assert traj.stop_reason == "answer" and session.calls == [("calculator", {"expression": "1"})]
    assert len(engine.calls) == 2 and engine.calls[1]["input_ids"][len(traj.prompt_ids):][:n] == traj.response_ids[:n]
    check_invariants(traj, engine, renderer)


async def test_single_turn_without_tools(tokenizer, renderer):
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call_text("calculator", "{}"))
    traj = await run_trajectory(new_traj(renderer), engine, renderer, None, MultiTurnConfig(), SamplingParams(1), "r")
    assert traj.stop_reason == "answer" and len(traj.turns) == 1 and not traj.turns[0].tool_calls


async def test_llama3_json_format_calls_reach_the_tool(tokenizer, renderer):
    """rollout.multi_turn.format=llama3_json: a Llama-style call (with and without <|python_tag|>, two
    calls separated by `;`, one malformed) runs through the tool session like a Hermes one."""
    script = {0: '{"name": "calculator", "parameters": {"expression": "2+3"}}',
              1: '<|python_tag|>{"name": "calculator", "parameters": {"expression": "5*1"}}; '
                 '{"name": "calculator", "parameters": {"expression": }',
              2: "<answer>5</answer>"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, MultiTurnConfig(format="llama3_json"),
                                SamplingParams(max_new_tokens=1), "r0")
    assert traj.stop_reason == "answer" and len(traj.turns) == 3
    assert session.calls == [("calculator", {"expression": "2+3"}), ("calculator", {"expression": "5*1"})]
    assert [r.status for r in traj.turns[1].tool_calls] == ["ok", "parse_error"]
    assert "invalid JSON" in tokenizer.decode(traj.turns[1].observation_ids)
    check_invariants(traj, engine, renderer)
    # the same text under the default (hermes) format makes no call: the first turn is the answer
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, MultiTurnConfig(),
                                SamplingParams(max_new_tokens=1), "r1")
    assert traj.stop_reason == "answer" and len(traj.turns) == 1 and session.calls == []


async def test_format_falls_back_to_hermes_without_the_attribute(tokenizer, renderer):
    """A MultiTurnConfig-like object without `format` (older callers) parses Hermes calls."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(**{k: v for k, v in vars(MultiTurnConfig()).items() if k != "format"})
    script = {0: call_text("calculator", '{"expression": "2+3"}'), 1: "<answer>5</answer>"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
    session = FakeSession()
    traj = await run_trajectory(new_traj(renderer), engine, renderer, session, cfg, SamplingParams(1), "r0")
    assert session.calls == [("calculator", {"expression": "2+3"})] and traj.stop_reason == "answer"


async def test_a_turn_ended_by_another_terminator_is_closed_before_the_observation(tokenizer, tmp_path):
    """generation_config eos_token_id = [<|im_end|>, <|endoftext|>]: a turn that stops on <|endoftext|> ends (its
    calls run, the terminator stays in the trained ids but not in the text) and the observation starts with the
    template's end-of-turn ids; a turn that stops on <|im_end|> gets none."""
    import json

    im_end, eot = tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [im_end, eot]}))
    r = ChatRenderer(tokenizer, TOOLS, model_path=str(tmp_path))
    assert eot in r.stop_token_ids and r.end_of_turn_ids == [im_end]
    call = call_text("calculator", '{"expression": "2+3"}')
    script = {0: call + "<|endoftext|>", 1: call + "<|im_end|>", 2: "<answer>5</answer><|im_end|>"}
    engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)], add_stop=False)
    traj = await run_trajectory(new_traj(r), engine, r, FakeSession(), MultiTurnConfig(),
                                SamplingParams(max_new_tokens=1), "r0")
    assert traj.stop_reason == "answer" and len(traj.turns) == 3
    t0, t1 = traj.turns[0], traj.turns[1]
    assert t0.finish_reason == "stop" and t0.output_ids[-1] == eot and len(t0.tool_calls) == 1
    assert t0.text == call and "<|endoftext|>" not in t0.text
    assert t0.observation_ids[:1] == [im_end] and t1.observation_ids[:1] != [im_end]
    assert t0.observation_ids[1:] == t1.observation_ids
    check_invariants(traj, engine, r)


class SessionsOver(ScriptedEngine):
    """The scripted engine behind KV sessions (engines/kv_sessions.py) with sglang's streaming-session semantics:
    a request in a session extends what it holds; `calls` records the whole context each turn was generated on."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        from agent_rl.engines.kv_sessions import KVSessions

        self.held, self.sent, self.ended = {}, [], []

        async def opened(sid):
            self.held[sid] = []

        async def closed(sid):
            self.held.pop(sid, None)

        async def pool():
            return {"pool": 64}
        self.kv = KVSessions(opened, closed, pool)

    async def generate(self, input_ids, sampling, request_id):
        async def send(ids, sid):
            self.sent.append((sampling.session, list(ids), sid))
            full = self.held[sid] + list(ids) if sid else list(ids)
            out = await ScriptedEngine.generate(self, full, sampling, request_id)
            if sid and out.finish_reason != "abort":
                self.held[sid] = full + out.output_ids
            return out
        return await self.kv.generate(sampling.session, list(input_ids), send)

    async def end_session(self, session):
        self.ended.append(session)
        self.kv.drop(session)


async def test_turns_in_kv_sessions_see_exactly_the_plain_context_and_end_with_the_trajectory(tokenizer, renderer):
    script = {0: call_text("calculator", '{"expression": "2+3"}'), 1: call_text("calculator", '{"expression": "1"}'),
              2: "<answer>5</answer>"}
    engine = SessionsOver(tokenizer, lambda ids, rid: script[turn_of(rid)])
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), MultiTurnConfig(),
                                SamplingParams(max_new_tokens=1), "r0")
    assert traj.stop_reason == "answer" and len(traj.turns) == 3
    check_invariants(traj, engine, renderer)   # every turn generated on the trajectory so far
    assert {s for s, _, _ in engine.sent} == {"r0"} and engine.ended == ["r0"]
    assert engine.kv.counts["appended"] == 2 and len(engine.sent[2][1]) == len(traj.turns[1].observation_ids)
    await engine.kv.close_all()
    assert engine.held == {}

    # a stop string cuts sampled ids: the next turn no longer extends what the session holds, so it starts over
    call = call_text("calculator", '{"expression": "2+3"}')
    cut = {0: call + "\nTool: 5\n<answer>9</answer>", 1: "<answer>5</answer>"}
    engine = SessionsOver(tokenizer, lambda ids, rid: cut[turn_of(rid)])
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(),
                                MultiTurnConfig(stop_strings=["</tool_call>"]), SamplingParams(max_new_tokens=1), "r1")
    assert traj.stop_reason == "answer" and len(engine.calls) == 2 and engine.kv.counts["restarted"] == 1
    for c in engine.calls:   # each turn on exactly the trajectory so far (the cut ids gone)
        assert c["input_ids"] == (traj.prompt_ids + traj.response_ids)[:len(c["input_ids"])]


async def test_an_aborted_turn_in_a_kv_session_resumes_on_its_whole_context(tokenizer, renderer):
    call = call_text("calculator", '{"expression": "1"}')
    engine = SessionsOver(tokenizer, lambda ids, rid: call if turn_of(rid) == 0 else "the final answer is <answer>5</answer>",
                          token_delay=0.01)
    traj, ctl = new_traj(renderer), LoopControl()
    task = asyncio.ensure_future(run_trajectory(traj, engine, renderer, FakeSession(), MultiTurnConfig(),
                                                SamplingParams(1), "r", control=ctl))
    while not (len(traj.turns) == 1 and traj.turns[0].observation_ids and ctl.phase == "generate"):
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    ctl.stop_requested = True
    await engine.abort(ctl.request_id)
    await task
    assert traj.status == "aborted" and engine.ended == ["r"] and engine.kv.counts["aborted"] == 1
    traj.status = "carried"
    done = await run_trajectory(traj, engine, renderer, FakeSession(), MultiTurnConfig(), SamplingParams(1), "r2")
    assert done.stop_reason == "answer" and engine.ended == ["r", "r2"]
    assert engine.sent[-1][0] == "r2" and engine.sent[-1][1] == engine.calls[-1]["input_ids"]   # the whole context
    check_invariants(done, engine, renderer)


async def test_max_parallel_tool_calls_caps_a_turns_concurrent_calls(tokenizer, renderer):
    four = "".join(call_text("calculator", f'{{"expression": "{i}"}}') for i in range(4))
    script = {0: four, 1: call_text("calculator", '{"expression": "9"}'), 2: "<answer>5</answer>"}
    for cap, expect in ((2, 2), (1, 1), (8, 4)):
        engine = ScriptedEngine(tokenizer, lambda ids, rid: script[turn_of(rid)])
        session = FakeSession(delay=0.02)
        traj = await run_trajectory(new_traj(renderer), engine, renderer, session,
                                    MultiTurnConfig(max_parallel_tool_calls=cap), SamplingParams(max_new_tokens=1), "r")
        assert session.max_active == expect
        # every call ran, in parse order, and each record has its latency
        assert [a["expression"] for _, a in session.calls] == ["0", "1", "2", "3", "9"]
        assert [len(t.tool_calls) for t in traj.turns] == [4, 1, 0]
        assert all(r.status == "ok" and r.latency_s > 0 for t in traj.turns for r in t.tool_calls)


async def test_each_turn_gets_its_own_sampling_params_and_the_hooks_object_is_left_alone(tokenizer, renderer):
    engine = ScriptedEngine(tokenizer, lambda ids, rid: call_text("calculator", '{"expression": "1"}')
                            if turn_of(rid) == 0 else "<answer>1</answer>")
    seen = []
    original = engine.generate

    async def spy(input_ids, sp, rid):
        seen.append(sp)
        return await original(input_ids, sp, rid)

    engine.generate = spy
    shared = SamplingParams(max_new_tokens=10_000, temperature=0.5, stop_token_ids=[2], priority=9)
    hooks = LoopHooks(sampling=lambda traj, turn: shared)
    traj = await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), MultiTurnConfig(), SamplingParams(1),
                                "req", hooks=hooks, priority=3)
    assert len(seen) == 2 and seen[0] is not seen[1] and shared not in seen
    assert [(s.max_new_tokens, s.priority, s.session, s.affinity, s.temperature) for s in seen] == \
        [(MultiTurnConfig().max_new_tokens_per_turn, 3, "req", "g0", 0.5)] * 2
    # the hook's object is what it was
    assert (shared.max_new_tokens, shared.priority, shared.session, shared.affinity) == (10_000, 9, None, None)
    # without a priority the hook's own stays
    seen.clear()
    await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), MultiTurnConfig(), SamplingParams(1),
                         "req2", hooks=hooks)
    assert {s.priority for s in seen} == {9} and traj.status == "finished"


async def test_a_sampling_hook_returning_something_else_is_a_clear_error(tokenizer, renderer):
    engine = ScriptedEngine(tokenizer, lambda ids, rid: "<answer>1</answer>")
    hooks = LoopHooks(sampling=lambda traj, turn: {"max_new_tokens": 3})
    with pytest.raises(TypeError, match="LoopHooks.sampling must return a SamplingParams, not dict"):
        await run_trajectory(new_traj(renderer), engine, renderer, FakeSession(), MultiTurnConfig(), SamplingParams(1),
                             "r", hooks=hooks)
    assert engine.calls == []
