"""The hf engine passes the KV cache under the name the installed transformers wants: no `past_key_values is
deprecated` FutureWarning (nor transformers' own log line) on every run."""
import asyncio
import inspect
import logging
import warnings

import pytest
import torch
from transformers import AutoModelForCausalLM

from agent_rl.engines.base import SamplingParams
from agent_rl.engines.hf import HFEngine, cache_argument


@pytest.fixture(scope="module")
def model(tiny_model_path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()


def test_cache_argument_follows_the_signature(model):
    params = inspect.signature(model.forward).parameters
    assert cache_argument(model) == ("cache" if "cache" in params else "past_key_values")

    class Old(torch.nn.Module):
        def forward(self, input_ids=None, past_key_values=None, use_cache=None):
            return None

    assert cache_argument(Old()) == "past_key_values"


def test_generation_passes_no_deprecated_argument(model, tiny_model_path):
    expected = cache_argument(model)
    seen = []
    original = model.forward

    def spy(*args, **kwargs):
        seen.append(set(kwargs))
        return original(*args, **kwargs)

    records = []

    class Grab(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Grab()
    tf_logger = logging.getLogger("transformers")
    tf_logger.addHandler(handler)

    async def go():
        eng = HFEngine(tiny_model_path, model=model, device="cpu", dtype=torch.float32, max_batch_size=4, seed=0,
                       num_threads=1)
        assert eng._cache_kw == expected
        model.forward = spy        # after the engine read the signature
        try:
            sp = SamplingParams(max_new_tokens=4, temperature=1.0, ignore_eos=True)
            return await asyncio.gather(*[eng.generate([1, 2, 3, 4 + i], sp, f"r{i}") for i in range(3)])
        finally:
            await eng.shutdown()

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            outs = asyncio.run(go())
    finally:
        tf_logger.removeHandler(handler)
        model.forward = original
    assert all(len(o.output_ids) == 4 for o in outs)
    assert seen and all(expected in kw for kw in seen)
    if expected == "cache":     # the installed transformers (5.x): the deprecated name is never passed
        assert all("past_key_values" not in kw for kw in seen)
    noisy = [str(w.message) for w in caught if "past_key_values" in str(w.message)]
    assert noisy == [], noisy
    assert not [m for m in records if "past_key_values" in m], records
