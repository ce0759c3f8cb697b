import asyncio

import pytest
import torch
from transformers import AutoModelForCausalLM

from agent_rl.config.schema import RolloutConfig
from agent_rl.engines import build_engine
from agent_rl.engines.base import SamplingParams
from agent_rl.engines.hf import HFEngine

PROMPTS = [
    [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198],
    [1, 4093, 198, 1689, 314, 216, 33, 33, 2, 198, 1, 520, 9531, 198],
    [1, 4093, 198, 42, 2, 198, 1, 520, 9531, 198, 900, 901, 902],
    [5, 6, 7],
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """2 contended OpenMP threads are ~10x slower than 1 on the shared 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ref_model(tiny_model_path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()


@pytest.fixture
async def engine(tiny_model_path):
    eng = HFEngine(tiny_model_path, device="cpu", dtype=torch.float32, max_batch_size=32, seed=0, num_threads=1)
    yield eng
    await eng.shutdown()


def _teacher_forced_logprobs(model, prompt, output, temperature=1.0):
    ids = torch.tensor([prompt + output])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    logp = torch.log_softmax(logits / temperature, dim=-1)
    return [logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(output)]


async def test_build_engine_hf(tiny_model_path):
    eng = build_engine(RolloutConfig(engine="hf", hf_max_batch_size=7), tiny_model_path, device="cpu")
    assert isinstance(eng, HFEngine) and eng.max_batch_size == 7
    await eng.shutdown()
    with pytest.raises(ValueError):
        build_engine(RolloutConfig(engine="nope"), tiny_model_path)


async def test_concurrent_requests_are_batched(engine, ref_model):
    n = 16
    sp = SamplingParams(max_new_tokens=12, temperature=1.0, seed=None, ignore_eos=True)
    outs = await asyncio.gather(*[engine.generate(PROMPTS[i % 4], sp, f"r{i}") for i in range(n)])
    assert all(len(o.output_ids) == 12 and o.finish_reason == "length" for o in outs)
    assert engine.stats.max_rows >= n            # all decoded together
    assert engine.stats.mean_rows_per_step > 1
    assert engine.stats.prefill_forwards < n     # prefilled in batches, not one by one
    # sampled outputs' log-probs still match a teacher-forced forward
    for i, o in enumerate(outs[:4]):
        ref = _teacher_forced_logprobs(ref_model, PROMPTS[i % 4], o.output_ids)
        assert max(abs(a - b) for a, b in zip(ref, o.logprobs)) < 1e-4


async def test_greedy_matches_model_generate_and_logprobs(engine, ref_model):
    sp = SamplingParams(max_new_tokens=16, temperature=0.0, ignore_eos=True)
    outs = await asyncio.gather(*[engine.generate(p, sp, f"g{i}") for i, p in enumerate(PROMPTS)])
    for p, o in zip(PROMPTS, outs):
        with torch.no_grad():
            ref = ref_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     max_new_tokens=16, do_sample=False, min_new_tokens=16)[0, len(p):].tolist()
        assert o.output_ids == ref
        tf = _teacher_forced_logprobs(ref_model, p, o.output_ids)
        assert max(abs(a - b) for a, b in zip(tf, o.logprobs)) < 1e-4


async def test_temperature_logprob_convention_and_seed(engine, ref_model):
    sp = SamplingParams(max_new_tokens=10, temperature=0.7, top_p=0.9, top_k=50, seed=123, ignore_eos=True)
    a, b = await asyncio.gather(engine.generate(PROMPTS[0], sp, "a"), engine.generate(PROMPTS[1], sp, "b"))
    tf = _teacher_forced_logprobs(ref_model, PROMPTS[0], a.output_ids, temperature=0.7)
    assert max(abs(x - y) for x, y in zip(tf, a.logprobs)) < 1e-4   # log_softmax(logits / T), before top-p/top-k
    again = await engine.generate(PROMPTS[0], sp, "a2")              # alone this time: same seed, same tokens
    assert again.output_ids == a.output_ids


async def test_stop_tokens_and_max_new_tokens(engine):
    greedy = await engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True), "x")
    stop_tok = greedy.output_ids[3]
    first = greedy.output_ids.index(stop_tok)
    out = await engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=8, temperature=0.0, stop_token_ids=[stop_tok]), "y")
    assert out.finish_reason == "stop" and out.output_ids == greedy.output_ids[:first + 1]   # stop token included
    out = await engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=5, temperature=0.0, ignore_eos=True), "z")
    assert out.finish_reason == "length" and len(out.output_ids) == 5 and len(out.logprobs) == 5


async def test_eos_from_model_config_stops(engine):
    # make EOS the greedy choice: stop immediately with EOS included
    eos = next(iter(engine.eos_token_ids))
    greedy = await engine.generate(PROMPTS[3], SamplingParams(max_new_tokens=1, temperature=0.0, ignore_eos=True), "e0")
    engine.eos_token_ids = {greedy.output_ids[0]}
    try:
        out = await engine.generate(PROMPTS[3], SamplingParams(max_new_tokens=6, temperature=0.0), "e1")
        assert out.output_ids == greedy.output_ids and out.finish_reason == "stop"
    finally:
        engine.eos_token_ids = {eos}


async def test_abort_stops_running_request(engine):
    sp_long = SamplingParams(max_new_tokens=100000, temperature=1.0, ignore_eos=True)
    sp_short = SamplingParams(max_new_tokens=6, temperature=1.0, ignore_eos=True)
    long_task = asyncio.ensure_future(engine.generate(PROMPTS[0], sp_long, "long"))
    short = await engine.generate(PROMPTS[1], sp_short, "short")   # runs alongside the long one
    assert short.finish_reason == "length"
    await engine.abort("long")
    out = await asyncio.wait_for(long_task, timeout=10)
    assert out.finish_reason == "abort"
    assert 0 < len(out.output_ids) < 1000 and len(out.logprobs) == len(out.output_ids)
    await engine.abort("long")          # unknown / finished: no-op
    await engine.abort("never-existed")
    # the engine keeps serving
    again = await engine.generate(PROMPTS[0], sp_short, "after")
    assert len(again.output_ids) == 6


async def test_cancelling_generate_frees_the_row(engine):
    task = asyncio.ensure_future(engine.generate(PROMPTS[0], SamplingParams(max_new_tokens=100000, ignore_eos=True), "c"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    out = await asyncio.wait_for(engine.generate(PROMPTS[1], SamplingParams(max_new_tokens=3, ignore_eos=True), "d"), 10)
    assert len(out.output_ids) == 3
    assert "c" not in engine._by_id


async def test_update_weights_changes_outputs(engine, ref_model):
    sp = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
    before = await engine.generate(PROMPTS[0], sp, "w0")
    original = {n: p.detach().clone() for n, p in engine.model.named_parameters()}
    g = torch.Generator().manual_seed(7)
    new = [(n, torch.randn(t.shape, generator=g) * 0.5) for n, t in original.items()]
    new.append(("lm_head.weight", dict(new)["model.embed_tokens.weight"]))  # tied name accepted
    await engine.update_weights(iter(new))
    changed = await engine.generate(PROMPTS[0], sp, "w1")
    assert changed.logprobs != before.logprobs
    await engine.update_weights(original.items())
    restored = await engine.generate(PROMPTS[0], sp, "w2")
    assert restored.output_ids == before.output_ids
    assert max(abs(a - b) for a, b in zip(restored.logprobs, before.logprobs)) < 1e-6
    with pytest.raises(KeyError):
        await engine.update_weights([("no.such.weight", torch.zeros(1))])
    await engine.flush_cache()
    await engine.release_memory()
    await engine.resume_memory()


async def test_continuous_admission_and_context_limit(tiny_model_path):
    eng = HFEngine(tiny_model_path, device="cpu", dtype=torch.float32, max_batch_size=2, max_model_len=20, num_threads=1)
    try:
        sp = SamplingParams(max_new_tokens=4, temperature=0.0, ignore_eos=True)
        outs = await asyncio.gather(*[eng.generate(PROMPTS[i % 4], sp, f"q{i}") for i in range(5)])
        assert eng.stats.max_rows == 2                 # capped by max_batch_size, others admitted later
        assert all(len(o.output_ids) == 4 for o in outs)
        lim = await eng.generate(PROMPTS[2], SamplingParams(max_new_tokens=50, temperature=0.0, ignore_eos=True), "lim")
        assert len(PROMPTS[2]) + len(lim.output_ids) == 20 and lim.finish_reason == "length"
    finally:
        await eng.shutdown()


def _hf_greedy(model, prompt, n):
    with torch.no_grad():
        return model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              max_new_tokens=n, do_sample=False, min_new_tokens=n)[0, len(prompt):].tolist()


async def test_midflight_admission_keeps_greedy_exact(engine, ref_model):
    """Rows joining a running batch (different lengths, left padding merged) and rows leaving early
    must not change anyone's greedy tokens."""
    first = asyncio.ensure_future(engine.generate(PROMPTS[3], SamplingParams(max_new_tokens=30, temperature=0.0,
                                                                             ignore_eos=True), "first"))
    while engine.stats.steps < 3:
        await asyncio.sleep(0.005)
    later = [asyncio.ensure_future(engine.generate(PROMPTS[i], SamplingParams(max_new_tokens=n, temperature=0.0,
                                                                             ignore_eos=True), f"m{i}"))
             for i, n in ((0, 5), (1, 20), (2, 12))]
    outs = await asyncio.gather(first, *later)
    assert engine.stats.admitted_midflight >= 3
    for (p, n), o in zip([(PROMPTS[3], 30), (PROMPTS[0], 5), (PROMPTS[1], 20), (PROMPTS[2], 12)], outs):
        assert o.output_ids == _hf_greedy(ref_model, p, n)
        tf = _teacher_forced_logprobs(ref_model, p, o.output_ids)
        assert max(abs(a - b) for a, b in zip(tf, o.logprobs)) < 1e-4
