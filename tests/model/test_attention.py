"""SDPA's cuDNN backend keeps a cuDNN graph per attention shape and never evicts one (agent_rl/model/attention.py): on an
H200 it grew the trainer worker's RSS ~0.3 GB a step on the KG task. The actor / reference model and the hf engine
switch it off when they are built, so none of their attention calls can pick it. (CPU torch has the same switch; the
growth itself needs CUDA and cuDNN.)"""
import pytest
import torch
import torch.nn.functional as F

from agent_rl.engines.base import SamplingParams
from agent_rl.engines.hf import HFEngine
from agent_rl.model.attention import avoid_cudnn_attention
from agent_rl.training.policy import PolicyModel


@pytest.fixture
def cudnn_sdp_on():
    """The backend on, as torch starts; back on afterwards (the switch is process-wide)."""
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(True)


@pytest.fixture
def sdpa_calls(monkeypatch):
    """Whether the cuDNN backend was allowed at each scaled_dot_product_attention call."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(torch.backends.cuda.cudnn_sdp_enabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


def test_avoid_cudnn_attention_switches_it_off_once(cudnn_sdp_on):
    assert avoid_cudnn_attention() is True
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert avoid_cudnn_attention() is False


def test_policy_attention_never_allows_cudnn(tiny_model_path, cudnn_sdp_on, sdpa_calls):
    policy = PolicyModel(tiny_model_path, dtype="float32", device=torch.device("cpu"), remove_padding=True)
    am = torch.tensor([[1] * 9 + [0] * 3, [1] * 12])          # padded rows: the attention call gets a mask
    ids = torch.randint(3, 400, am.shape) * am
    lp, _ = policy.token_stats(ids, am, (am.cumsum(-1) - 1).clamp(min=0), am, with_entropy=False)
    lp.sum().backward()
    assert sdpa_calls and not any(sdpa_calls)


async def test_hf_engine_attention_never_allows_cudnn(tiny_model_path, cudnn_sdp_on, sdpa_calls):
    eng = HFEngine(tiny_model_path, device="cpu", dtype=torch.float32, seed=0, num_threads=1)
    try:
        out = await eng.generate([1, 4093, 198, 42], SamplingParams(max_new_tokens=3, ignore_eos=True), "r0")
    finally:
        await eng.shutdown()
    assert len(out.output_ids) == 3
    assert sdpa_calls and not any(sdpa_calls)


@pytest.fixture
def sdpa_args(monkeypatch):
    """(mask given, is_causal) of each scaled_dot_product_attention call."""
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, *args, **kwargs):
        seen.append((attn_mask is not None, bool(kwargs.get("is_causal"))))
        return real(q, k, v, attn_mask, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return seen


def test_right_padded_rows_run_causal_attention_without_a_mask(tiny_model_path, sdpa_args, monkeypatch):
    """The actor's padded micro-batches (rollout/batch.pad_sequences: real tokens numbered 0.., then padding) run
    SDPA causal with no [rows, 1, W, W] mask, and every log-prob and entropy equals the masked call's."""
    import agent_rl.training.policy as P

    policy = PolicyModel(tiny_model_path, dtype="float32", device=torch.device("cpu"), remove_padding=True)
    am = torch.tensor([[1] * 9 + [0] * 5, [1] * 14, [1] * 3 + [0] * 11])
    pos = (am.cumsum(-1) - 1).clamp(min=0) * am                    # pad_sequences: 0 on the padding
    ids = torch.randint(3, 400, am.shape) * am
    lp, ent = policy.token_stats(ids, am, pos, am, with_entropy=True)
    assert sdpa_args and all(c == (False, True) for c in sdpa_args)  # no mask, causal kernel
    sdpa_args.clear()
    monkeypatch.setattr(P, "causal_positions", lambda a, p: None)   # the masked call, as before
    lp_m, ent_m = policy.token_stats(ids, am, pos, am, with_entropy=True)
    assert sdpa_args and all(mask for mask, _ in sdpa_args)
    assert torch.allclose(lp, lp_m, atol=1e-5) and torch.allclose(ent, ent_m, atol=1e-5)
    assert (lp[am == 0] == 0).all() and (lp[:, 1:][am[:, 1:] == 1] != 0).all()


def test_causal_positions_only_for_right_padded_rows_numbered_from_zero():
    from agent_rl.training.policy import causal_positions

    am = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    pos = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 3]])
    assert causal_positions(am, pos).tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert causal_positions(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 1, 2]])) is None   # left padding
    assert causal_positions(torch.tensor([[1, 0, 1, 0]]), torch.tensor([[0, 0, 1, 0]])) is None   # a hole
    assert causal_positions(am, torch.tensor([[5, 6, 7, 0], [0, 1, 2, 3]])) is None              # offset positions
    assert causal_positions(torch.tensor([[1]]), torch.tensor([[0]])).tolist() == [[0]]
