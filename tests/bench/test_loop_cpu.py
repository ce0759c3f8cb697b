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
