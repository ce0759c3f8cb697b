"""The sglang engine on a GPU host (CUDA + sglang), with the embedded SmolLM2-135M-Instruct.

All calls run on ONE event loop owned by this module (sglang binds its response handling to the loop
of its first async call), so the tests are plain functions that run coroutines on it.
Run with output to a file (sglang's children keep stdout open):
    python -m pytest -m gpu tests/gpu -s > $OUT/gpu.log 2>&1
Set AGENT_RL_GGUF to the SmolLM2 GGUF when the agent-rl cache has none (e.g. the bundle's _models/).
"""
import asyncio
import glob
import os
import sys
import time

import pytest

pytestmark = pytest.mark.gpu

TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic",
                                           "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                          "required": ["expression"]}}}]


def _find_gguf():
    if os.environ.get("AGENT_RL_GGUF"):
        return os.environ["AGENT_RL_GGUF"]
    for entry in sys.path:
        found = glob.glob(os.path.join(entry, "_models", "*.gguf"))
        if found:
            return found[0]
    return None


@pytest.fixture(scope="module")
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture(scope="module")
def model_dir():
    from agent_rl.model.prepare import embedded_model_dir, is_complete, prepare_embedded

    if is_complete(embedded_model_dir()):
        return embedded_model_dir()
    return prepare_embedded(gguf=_find_gguf(), check=False)


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def hf(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()


@pytest.fixture(scope="module")
def engine(loop, model_dir):
    from agent_rl.config.schema import RolloutConfig
    from agent_rl.engines import build_engine
    from agent_rl.engines.sglang_engine import SGLangEngine

    cfg = RolloutConfig(engine="auto", gpu_memory_utilization=0.3, max_model_len=4096)
    cfg.engine_kwargs = dict(cfg.engine_kwargs, log_level="error", disable_cuda_graph=True)  # faster start in tests

    async def make():
        return build_engine(cfg, model_dir, seed=1)

    t = time.time()
    eng = loop.run_until_complete(make())
    print(f"\n[sglang] engine start {time.time() - t:.1f}s")
    assert isinstance(eng, SGLangEngine)
    yield eng
    loop.run_until_complete(eng.shutdown())


@pytest.fixture(scope="module")
def prompt(tok):
    from agent_rl.rollout.chat import ChatRenderer

    r = ChatRenderer(tok, TOOLS)
    return r, r.prompt_ids([{"role": "user", "content": "A shop sells 48 pens in April and half as many in May. "
                                                        "How many pens in total? Use the calculator."}])


def _ref_logprobs(hf, prompt_ids, out_ids, temperature=1.0):
    import torch

    with torch.no_grad():
        logits = hf(torch.tensor([prompt_ids + out_ids], device="cuda")).logits[0].float()
    lp = torch.log_softmax(logits[len(prompt_ids) - 1:-1] / temperature, -1)
    return lp.gather(-1, torch.tensor(out_ids, device="cuda")[:, None])[:, 0].cpu()


def _stats(a, b):
    import torch

    d = (torch.tensor(a) - b).abs()
    return d.mean().item(), d.max().item()


def test_generate_logprobs_match_transformers(loop, engine, hf, prompt):
    from agent_rl.engines.base import SamplingParams

    r, ids = prompt
    out = loop.run_until_complete(engine.generate(ids, SamplingParams(max_new_tokens=96, temperature=0.0,
                                                                      stop_token_ids=r.stop_token_ids), "greedy"))
    assert len(out.output_ids) == len(out.logprobs) > 0
    if out.finish_reason == "stop":
        assert out.output_ids[-1] in r.stop_token_ids          # the stop token is included
    mean, mx = _stats(out.logprobs, _ref_logprobs(hf, ids, out.output_ids))
    print(f"\n[sglang] greedy {len(out.output_ids)} tokens ({out.finish_reason}): log-prob |sglang - transformers bf16| "
          f"mean {mean:.4f} max {mx:.4f}")
    assert mean < 0.05 and mx < 0.5

    # temperature: sglang returns log_softmax(logits / T) (our convention), not the T=1 log-probs
    T = 0.7
    async def sample():
        return await asyncio.gather(*[engine.generate(ids, SamplingParams(max_new_tokens=64, temperature=T, top_p=0.95,
                                                                          ignore_eos=True), f"t{i}") for i in range(4)])

    outs = loop.run_until_complete(sample())
    scaled, plain = [], []
    for o in outs:
        assert len(o.output_ids) == 64 and o.finish_reason == "length"
        scaled.append(_stats(o.logprobs, _ref_logprobs(hf, ids, o.output_ids, T)))
        plain.append(_stats(o.logprobs, _ref_logprobs(hf, ids, o.output_ids, 1.0)))
    m_s = sum(s[0] for s in scaled) / len(scaled)
    m_p = sum(s[0] for s in plain) / len(plain)
    print(f"[sglang] T={T}: mean |Δ| vs log_softmax(logits/T) {m_s:.4f} (max {max(s[1] for s in scaled):.4f}); "
          f"vs log_softmax(logits) {m_p:.4f}")
    assert m_s < 0.05 and m_s < m_p / 2


def test_abort_running_and_prefix_safe_ids(loop, engine, prompt):
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sglang_cpu"))
    from engine_checks import abort_scenario   # the same scenario as real sglang on a CPU

    _, ids = prompt
    a1, a10, early = loop.run_until_complete(asyncio.wait_for(abort_scenario(engine, ids, 3000, 200, 0.3), 120))
    print(f"\n[sglang] aborted after {len(a1.output_ids)} tokens; early abort after {len(early.output_ids)}")
    assert a1.finish_reason == "abort" and len(a1.output_ids) < 3000 and len(a1.logprobs) == len(a1.output_ids)
    assert early.finish_reason == "abort" and len(early.output_ids) < 3000
    assert a10.finish_reason == "length" and len(a10.output_ids) == 200     # "a1" is a prefix of "a10": untouched
    loop.run_until_complete(engine.abort("a1"))                             # finished: no-op


def test_weight_update_release_resume(loop, engine, hf, prompt):
    import torch

    from agent_rl.engines.base import SamplingParams

    _, ids = prompt
    sp = SamplingParams(max_new_tokens=32, temperature=0.0, ignore_eos=True)
    gen = lambda rid: loop.run_until_complete(engine.generate(ids, sp, rid))  # noqa: E731
    base = gen("w0")
    original = [(n, p.detach().clone()) for n, p in hf.named_parameters()]
    g = torch.Generator(device="cuda").manual_seed(0)
    noisy = [(n, p + 0.05 * p.std() * torch.randn(p.shape, generator=g, device="cuda", dtype=p.dtype))
             for n, p in original]
    t = time.time()
    loop.run_until_complete(engine.update_weights(noisy))
    print(f"\n[sglang] update_weights {len(noisy)} tensors in {time.time() - t:.3f}s")
    changed = gen("w1")
    assert changed.output_ids != base.output_ids or max(abs(a - b) for a, b in zip(changed.logprobs, base.logprobs)) > 1e-2
    loop.run_until_complete(engine.update_weights(original))
    restored = gen("w2")
    assert restored.output_ids == base.output_ids

    free0 = torch.cuda.mem_get_info()[0]
    loop.run_until_complete(engine.release_memory())
    free1 = torch.cuda.mem_get_info()[0]
    loop.run_until_complete(engine.resume_memory())
    loop.run_until_complete(engine.update_weights(original))    # resume restores memory, not contents
    loop.run_until_complete(engine.flush_cache())
    print(f"[sglang] release freed {(free1 - free0) / 2**30:.2f} GiB")
    assert free1 - free0 > 2**28
    again = gen("w3")
    assert again.output_ids == base.output_ids
