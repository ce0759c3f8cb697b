"""Shared fixtures. Models come from the SmolLM2 tokenizer (fetched once into the agent-rl cache)."""
import os

import pytest


def _cuda_and_sglang() -> bool:
    try:
        import torch

        if not torch.cuda.is_available():
            return False
        import sglang  # noqa: F401
        return True
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _cuda_and_sglang():
        return
    skip = pytest.mark.skip(reason="needs CUDA and sglang")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_path():
    from agent_rl.model.prepare import tokenizer_dir

    return tokenizer_dir()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_path)


@pytest.fixture(scope="session")
def tiny_model_path():
    """A tiny random Llama (2 layers, hidden 64) with the SmolLM2 tokenizer and our chat template."""
    from agent_rl.model.prepare import cache_dir, tiny_model_dir

    return tiny_model_dir(os.path.join(cache_dir(), "test-models", "tiny-llama-h64-l2"))
