"""`sample_gumbel`: sglang 0.5.17 samples a token from the softmax probabilities of a batch without top-k / top-p /
min-p (the rollout's sampling: temperature only) with `torch.multinomial(probs, 1)`, whatever its sampling backend
(`sampler.sampling_from_probs_torch`). For one sample PyTorch draws it as argmax(probs / q), q ~ Exp(1) (the Gumbel
trick; `aten/src/ATen/native/Distributions.cpp`, `multinomial_out`'s fast path), after validity checks of the whole
batch: a min/max reduction, a row-sum reduction and two device asserts. That is 14 tensor operations a decode pass
launched from sglang's scheduler thread, the engine's bottleneck (`sampling_from_probs_torch` alone held 5.7% of that
thread in the H100 stack samples of the twenty-sixth session, async instant tools, 135M), and two extra passes over
the batch's probabilities on the GPU.

Patched, the same draw without the checks: `torch.empty_like(probs).exponential_(1)`, then `probs / q`, argmax. The
generator's draws are the same, so the tokens are the same as sglang's (checked on a CPU with real sglang:
`tests/sglang_cpu/sample_checks.py`). What goes is the device assert on NaN / inf / negative probabilities or a row of
zeros, which would stop the scheduler; such a row now yields a token (argmax over NaN) instead. A seeded batch
(`sampling_seed`, deterministic inference) keeps sglang's own function.
"""
from __future__ import annotations

# sha256 (first 16 hex digits, `source_digest`) of sglang 0.5.17's `sampling_from_probs_torch`: the function this
# patch was written against; another sglang's is left as it is
SAMPLE_SHA256 = "513f91265a303db5"


def patch() -> bool:
    """Patch `sglang.srt.layers.sampler.sampling_from_probs_torch`; False where the installed sglang has none, or
    another version of it."""
    from agent_rl.engines.sglang_patches import install, source_digest, unpatched

    try:
        from sglang.srt.layers import sampler
    except ImportError:
        return False
    original = unpatched(sampler, "sampling_from_probs_torch")
    if isinstance(original, bool):
        return original
    if source_digest(original) != SAMPLE_SHA256:
        return False
    import torch

    def sampling_from_probs_torch(probs, sampling_seed=None, positions=None):
        if sampling_seed is not None:
            return original(probs, sampling_seed=sampling_seed, positions=positions)
        q = torch.empty_like(probs).exponential_(1)
        return torch.div(probs, q, out=q).argmax(dim=-1).to(torch.int32)

    return install(sampler, "sampling_from_probs_torch", sampling_from_probs_torch, original)
