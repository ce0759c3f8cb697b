"""The CPU cost harness (`agent-rl bench loop-cpu`): the instant stand-in for sglang.Engine behind the real sglang
wrapper, and a tiny run of every mode it measures."""
import asyncio

from agent_rl.bench import loop_cpu
from agent_rl.engines.base import SamplingParams
from agent_rl.engines.sglang_engine import SGLangEngine


def test_instant_engine_returns_sglang_shapes():
    fake = loop_cpu.InstantSGLang([5, 6, 7])
    eng = SGLangEngine.wrap(fake)
    out = asyncio.run(eng.generate([1, 2, 3], SamplingParams(max_new_tokens=5, ignore_eos=True), "r1"))
    assert out.output_ids == [6, 7, 5, 6, 7] and len(out.logprobs) == 5 and out.finish_reason == "length"
    assert out.prompt_tokens == 3 and fake.requests == 1 and eng._rids == {}
    lps = asyncio.run(fake.async_generate([1], {"max_new_tokens": 2}))["meta_info"]["output_token_logprobs"]
    assert [t[1:] for t in lps] == [(6, None), (7, None)]


def test_canned_text_ends_in_a_tool_call(tokenizer):
    ids = loop_cpu.canned_ids(tokenizer, tool_call=True, length=64)
    assert len(ids) >= 64 and tokenizer.decode(ids).endswith("</tool_call>")


def test_harness_runs_every_mode(tokenizer_path, capsys):
    for extra in ([], ["--real-parse", "--no-instrument", "--gc", "off"]):
        rc = loop_cpu.main(["--tokenizer", tokenizer_path, "--prompts", "2", "--n", "2", "--turns", "3",
                            "--tokens-per-turn", "48", "--steps", "1", "--warmup", "1",
                            "--modes", "turn-batched,async,carryover", *extra])
        assert rc == 0
        out = capsys.readouterr().out
        for mode in ("turn-batched", "async", "async+carryover 0.5"):
            assert any(line.startswith(mode + " ") and " 12 " in line for line in out.splitlines()), out


def test_turns_that_end_together_go_back_to_the_engine_one_by_one(tokenizer_path, eager_tool_tasks):
    """Instant engine, instant tools: every turn of a step ends in the same loop iteration. With eager tool tasks
    (tool_runtime/bounded.py) each trajectory sends its next turn before the loop wakes the next one: with sglang in
    other processes the engine starts on the first next turns while our thread works through the rest, instead of
    getting them all at the end."""
    from agent_rl.bench.modes import parse_modes

    bench, fake = loop_cpu.build(tokenizer_path, prompts=4, n=2, turns=3, tokens=16, observation_words=4,
                                 real_parse=False)
    bench.engine.inner.coalesce_submits = False   # each request on its own (the wrapper's batching: the next test)
    fake.events = []
    spec = parse_modes("async")[0]
    asyncio.run(loop_cpu.measure(bench, fake, spec, steps=1, warmup=0, real_parse=False))
    kinds = [kind for kind, _ in fake.events]
    assert kinds[:8] == ["submit"] * 8                      # the step's 8 first turns
    # then answer, submit, answer, submit, ...: each wake-up goes straight on to its next turn (a tool call's task
    # that starts on the loop's next iteration gives 8 answers, then 8 submits)
    assert kinds[8:16] == ["answer", "submit"] * 4, kinds


def test_the_wrapper_sends_the_next_turns_of_one_loop_pass_together(tokenizer_path, eager_tool_tasks):
    """With the sglang wrapper's batching (the default, engines/sglang_engine._Coalescer) the turns woken in one
    loop pass all run, then their requests go out back to back (at most 16 wait; sglang's own tokenizer manager
    wakes 16 at a time)."""
    from agent_rl.bench.modes import parse_modes

    bench, fake = loop_cpu.build(tokenizer_path, prompts=4, n=2, turns=3, tokens=16, observation_words=4,
                                 real_parse=False)
    assert bench.engine.inner.coalesce_submits
    fake.events = []
    asyncio.run(loop_cpu.measure(bench, fake, parse_modes("async")[0], steps=1, warmup=0, real_parse=False))
    kinds = [kind for kind, _ in fake.events]
    assert kinds[:24] == ["submit"] * 8 + ["answer"] * 8 + ["submit"] * 8, kinds


def test_without_eager_tool_tasks_the_next_turns_wait_for_the_whole_batch(tokenizer_path, monkeypatch):
    from agent_rl.bench.modes import parse_modes
    from agent_rl.tool_runtime import bounded

    monkeypatch.setattr(bounded, "_start", lambda loop, coro: loop.create_task(coro))   # Python 3.11's behaviour
    bench, fake = loop_cpu.build(tokenizer_path, prompts=4, n=2, turns=3, tokens=16, observation_words=4,
                                 real_parse=False)
    bench.engine.inner.coalesce_submits = False
    fake.events = []
    asyncio.run(loop_cpu.measure(bench, fake, parse_modes("async")[0], steps=1, warmup=0, real_parse=False))
    assert [kind for kind, _ in fake.events][8:16] == ["answer"] * 8


def test_real_parse_reads_the_text_with_the_projects_parser(tokenizer_path, monkeypatch):
    """`--real-parse`: the async modes' calls come from the Hermes parser reading the canned text (the workload's
    hooks otherwise decide them), so parsing is in the measured CPU."""
    from agent_rl.bench.modes import parse_modes
    from agent_rl.rollout import agent_loop

    calls = []
    real = agent_loop.get_parser

    def counting(fmt):
        parse = real(fmt)
        return lambda text: calls.append(text) or parse(text)

    monkeypatch.setattr(agent_loop, "get_parser", counting)
    for real_parse in (False, True):
        calls.clear()
        bench, fake = loop_cpu.build(tokenizer_path, prompts=2, n=2, turns=3, tokens=48, observation_words=4,
                                     real_parse=real_parse)
        asyncio.run(loop_cpu.measure(bench, fake, parse_modes("async")[0], steps=1, warmup=0, real_parse=real_parse))
        assert len(calls) == (12 if real_parse else 0)
        assert not real_parse or all(text.endswith("</tool_call>") for text in calls)
