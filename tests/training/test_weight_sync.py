import asyncio
import os

import torch

from agent_rl.engines.base import Engine
from agent_rl.training.weight_sync import iter_weight_buckets, sync_weights


class RecordingEngine(Engine):
    name = "fake"

    def __init__(self):
        self.buckets, self.flushed = [], 0

    async def generate(self, input_ids, sampling, request_id):  # pragma: no cover - unused
        raise NotImplementedError

    async def abort(self, request_id):  # pragma: no cover - unused
        pass

    async def update_weights(self, named_tensors):
        self.buckets.append([(n, t.clone()) for n, t in named_tensors])

    async def flush_cache(self):
        self.flushed += 1


def _model(path, tie=None):
    from transformers import AutoConfig, AutoModelForCausalLM

    if tie is None:
        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = AutoConfig.from_pretrained(path)
    cfg.tie_word_embeddings = tie
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)


def test_buckets_bounded_complete_equal_tied(tiny_model_path):
    model = _model(tiny_model_path)
    assert model.config.tie_word_embeddings
    engine = RecordingEngine()
    bucket_mb = 0.02  # 20 KiB: the 6 MiB embedding alone, layers in several buckets
    stats = asyncio.run(sync_weights(model, engine, bucket_mb=bucket_mb, dtype=torch.bfloat16))
    assert engine.flushed == 1 and stats["weight_sync/buckets"] == len(engine.buckets) > 2
    limit = bucket_mb * 1024 * 1024
    for b in engine.buckets:
        size = sum(t.numel() * t.element_size() for _, t in b)
        assert size <= limit or len(b) == 1  # a tensor above the bound travels alone
    sent = {n: t for b in engine.buckets for n, t in b}
    assert len(sent) == sum(len(b) for b in engine.buckets)  # no name twice
    expected = {n for n, _ in model.named_parameters()}  # tied: lm_head is not a separate parameter
    assert set(sent) == expected and "lm_head.weight" not in sent
    for n, p in model.named_parameters():
        assert sent[n].dtype == torch.bfloat16
        assert torch.equal(sent[n], p.detach().to(torch.bfloat16))
    # loading what was sent reproduces the model (in the engine dtype)
    clone = _model(tiny_model_path)
    clone.load_state_dict({n: t.float() for n, t in sent.items()}, strict=False)
    x = torch.randint(0, 100, (1, 8))
    ref = model.to(torch.bfloat16)(x).logits
    assert torch.allclose(clone.to(torch.bfloat16)(x).logits, ref)


def test_untied_sends_lm_head_and_no_engine_still_iterates(tiny_model_path):
    model = _model(tiny_model_path, tie=False)
    names = [n for b in iter_weight_buckets(model, 1.0) for n, _ in b]
    assert "lm_head.weight" in names and "model.embed_tokens.weight" in names
    stats = asyncio.run(sync_weights(model, None, bucket_mb=1.0))
    assert stats["weight_sync/tensors"] == len(names)


class DiskEngine(RecordingEngine):
    """An engine that loads weights from disk (like the http engine): records each folder's tensors."""

    def __init__(self):
        super().__init__()
        self.loaded = []

    async def update_weights(self, named_tensors):
        raise NotImplementedError

    async def update_weights_from_disk(self, model_path):
        from safetensors.torch import load_file

        self.loaded.append((model_path, load_file(os.path.join(model_path, "model.safetensors"))))


def test_sync_from_disk_replaces_hf_folder(tiny_model_path, tmp_path, monkeypatch):
    from agent_rl.training.weight_sync import sync_weights_from_disk

    model = _model(tiny_model_path)
    engine = DiskEngine()
    monkeypatch.chdir(tmp_path)
    stats = asyncio.run(sync_weights_from_disk(model, engine, "sync", dtype=torch.bfloat16))
    path, sent = engine.loaded[-1]
    assert path == str(tmp_path / "sync")                        # absolute: the server has its own working directory
    assert set(sent) == {n for n, _ in model.named_parameters()}  # tied lm_head not written
    assert all(torch.equal(sent[n], p.detach().to(torch.bfloat16)) for n, p in model.named_parameters())
    assert stats["weight_sync/bytes"] == sum(t.numel() * t.element_size() for t in sent.values())
    assert (tmp_path / "sync" / "config.json").exists() and engine.flushed == 0  # the server flushes its cache itself
    with torch.no_grad():
        model.model.embed_tokens.weight.add_(1.0)
    asyncio.run(sync_weights_from_disk(model, engine, str(tmp_path / "sync")))
    path, sent = engine.loaded[-1]
    assert torch.equal(sent["model.embed_tokens.weight"], model.model.embed_tokens.weight.detach())
    assert sorted(os.listdir(tmp_path)) == ["sync"]              # replaced in place, no temporary folder left
