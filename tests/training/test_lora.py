"""LoRA actor (`actor.lora.*`): only adapters train, the reference is the base model (adapter off), the engine gets
merged weights, checkpoints hold the adapter (peft layout) + a merged HF folder, resume is exact, FSDP2 on 2 gloo
ranks matches one process."""
import asyncio
import json
import os

import pytest
import torch

from agent_rl.config.schema import LoraConfig
from agent_rl.training import checkpoint as C
from agent_rl.training.actor import Actor
from agent_rl.training.lora import iter_merged_params
from agent_rl.training.ref import AdapterOffReference, ReferenceModel
from agent_rl.training.weight_sync import sync_weights

from conftest import make_batch, make_cfgs
from ranks import run_ranks

pytest.importorskip("peft")

CPU = torch.device("cpu")
RANK, ALPHA = 4, 16.0


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _actor(path, seed=0, lr=5e-2, **lora):
    torch.manual_seed(seed)
    model, actor_cfg, algo, ref_cfg = make_cfgs(path, lr=lr)
    actor_cfg.lora = LoraConfig(**{"rank": RANK, "alpha": ALPHA, **lora})
    return Actor(model, actor_cfg, algo, device=CPU), model, ref_cfg


def _lora_params(actor):
    return {n: p.detach().clone() for n, p in actor.model.named_parameters() if "lora_" in n}


def _plain(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def trained(tiny_model_path):
    """A LoRA actor after two updates (so lora_B, zero at init, and lora_A have both moved)."""
    actor, model_cfg, ref_cfg = _actor(tiny_model_path)
    base_before = {n: p.detach().clone() for n, p in actor.model.named_parameters() if not p.requires_grad}
    lora_before = _lora_params(actor)
    metrics = [actor.update(make_batch(seed=s)) for s in (0, 1)]
    return actor, model_cfg, ref_cfg, base_before, lora_before, metrics


def test_only_adapters_get_gradients_and_optimizer_state(trained):
    actor, _, _, base_before, lora_before, metrics = trained
    named = dict(actor.model.named_parameters())
    trainable = {n for n, p in named.items() if p.requires_grad}
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    assert len(trainable) == 2 * 7 * 2                      # 2 layers x 7 linear layers (all-linear) x (A, B)
    opt_params = {id(p) for g in actor.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(named[n]) for n in trainable}  # no optimizer state for base weights
    assert len(actor.optimizer.state) == len(trainable)
    for n, p in named.items():
        if n in base_before:
            assert p.grad is None, n
            assert torch.equal(p.detach(), base_before[n]), n  # the base is untouched
    moved = [n for n, v in _lora_params(actor).items() if not torch.equal(v, lora_before[n])]
    assert any("lora_A" in n for n in moved) and any("lora_B" in n for n in moved)
    assert all(0 < m["actor/grad_norm"] < float("inf") for m in metrics)


def test_merged_weights_equal_base_plus_scaled_BA(trained, tiny_model_path, tmp_path):
    from safetensors.torch import load_file

    from agent_rl.training.hf_folder import save_hf_model

    actor, *_ = trained
    merged = dict(iter_merged_params(actor.model))
    plain = _plain(tiny_model_path)
    # the engine's names: exactly the base model's parameters (tied lm_head left out), no adapter names
    assert set(merged) == {n for n, _ in plain.named_parameters()}
    assert not any("base_layer" in n or "lora_" in n for n in merged)
    q = actor.model.base_model.model.model.layers[1].self_attn.q_proj
    A, B = q.lora_A["default"].weight.detach(), q.lora_B["default"].weight.detach()
    assert B.abs().max() > 0
    by_hand = plain.model.layers[1].self_attn.q_proj.weight.detach() + (ALPHA / RANK) * B @ A
    assert torch.allclose(merged["model.layers.1.self_attn.q_proj.weight"], by_hand, atol=1e-6)
    assert torch.equal(merged["model.embed_tokens.weight"], plain.model.embed_tokens.weight.detach())
    # the http engine's path (an HF folder on disk) holds the same merged weights
    save_hf_model(actor.model, None, str(tmp_path / "sync"))
    on_disk = load_file(str(tmp_path / "sync" / "model.safetensors"))
    assert set(on_disk) == set(merged) and all(torch.equal(on_disk[n], merged[n]) for n in merged)
    # a plain transformers model with the merged weights computes what the adapted model computes
    plain.load_state_dict(merged, strict=False)
    x = torch.randint(0, 400, (2, 12))
    actor.model.eval()
    with torch.no_grad():
        assert torch.allclose(plain(x).logits, actor.model(input_ids=x).logits, atol=1e-5)


def test_reference_is_the_base_model_with_the_adapter_off(trained, tiny_model_path):
    from agent_rl.config.schema import TrainConfig

    actor, model_cfg, ref_cfg, *_ = trained
    cfg = TrainConfig()
    cfg.ref = ref_cfg
    ref = ReferenceModel.from_config(cfg, device=CPU, actor=actor)
    assert isinstance(ref, AdapterOffReference) and ref.model is actor.model  # no second copy of the weights
    batch = make_batch(seed=5)
    lp_ref = ref.compute_ref_log_probs(batch)
    base = ReferenceModel(model_cfg, ref_cfg, device=CPU)                  # the base model, loaded separately
    lp_base = base.compute_ref_log_probs(batch)
    lp_actor, _ = actor.compute_log_probs(batch, temperature=1.0, with_entropy=False)
    assert torch.allclose(lp_ref, lp_base, atol=1e-5)
    assert (lp_actor - lp_base).abs().max() > 1e-3                         # the adapter matters ...
    lp_again, _ = actor.compute_log_probs(batch, temperature=1.0, with_entropy=False)
    assert torch.equal(lp_actor, lp_again)                                 # ... and is on again afterwards


def test_weight_sync_engine_logprobs_equal_actor(tiny_model_path):
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.hf import HFEngine

    actor, *_ = _actor(tiny_model_path, seed=3, lr=1e-1)
    prompt = [1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]
    sp = SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True)

    def actor_logprobs(output):
        ids = torch.tensor([prompt + output])
        am = torch.ones_like(ids)
        lm = am.clone()
        lm[:, :len(prompt)] = 0
        lp, _ = actor.compute_log_probs({"input_ids": ids, "attention_mask": am, "loss_mask": lm,
                                         "position_ids": torch.arange(ids.shape[1])[None]},
                                        temperature=1.0, with_entropy=False)
        return lp[0, len(prompt):].tolist()

    async def go():
        engine = HFEngine(tiny_model_path, device="cpu", dtype=torch.float32, max_batch_size=4, seed=0, num_threads=1)
        try:
            for s in (0, 1):
                actor.update(make_batch(seed=s))
            stale = await engine.generate(prompt, sp, "before")
            stats = await sync_weights(actor, engine, bucket_mb=0.05)
            fresh = await engine.generate(prompt, sp, "after")
            return stale, fresh, stats
        finally:
            await engine.shutdown()

    stale, fresh, stats = asyncio.run(go())
    assert stats["weight_sync/tensors"] == 20      # the base model's tensors (tied head once), no adapter tensors
    want = actor_logprobs(fresh.output_ids)
    assert max(abs(a - b) for a, b in zip(want, fresh.logprobs)) < 1e-4
    # before the sync the engine still had the base weights: a different policy
    assert max(abs(a - b) for a, b in zip(actor_logprobs(stale.output_ids), stale.logprobs)) > 1e-3


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")  # peft reads the old property
def test_checkpoint_adapter_merged_folder_and_exact_resume(tiny_model_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    b1, b2 = make_batch(seed=1), make_batch(seed=2)
    a, *_ = _actor(tiny_model_path, seed=0)
    a.update(b1)
    ck = C.save_checkpoint(str(tmp_path / "ck"), 1, a, None, {"step": 1})
    assert sorted(os.listdir(os.path.join(ck, "adapter"))) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.load(open(os.path.join(ck, "meta.json")))["lora"]["rank"] == RANK
    assert C.V.verify_checkpoint(ck).ok
    x = torch.randint(0, 400, (2, 12))
    a.model.eval()
    with torch.no_grad():
        want = a.model(input_ids=x).logits
        # hf/ is a full model for plain transformers (no peft) ...
        merged = AutoModelForCausalLM.from_pretrained(os.path.join(ck, "hf"), dtype=torch.float32).eval()
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(x).logits, want, atol=1e-5)
        # ... and adapter/ is what peft's save_pretrained writes: peft loads it onto the base model
        with_adapter = PeftModel.from_pretrained(_plain(tiny_model_path), os.path.join(ck, "adapter")).eval()
        assert torch.allclose(with_adapter(input_ids=x).logits, want, atol=1e-5)
    m_cont = a.update(b2)
    after_cont = _lora_params(a)

    r, *_ = _actor(tiny_model_path, seed=123)        # another adapter init: everything must come from the checkpoint
    C.load_checkpoint(ck, r)
    m_res = r.update(b2)
    for key in ("actor/pg_loss", "actor/grad_norm", "actor/entropy", "actor/lr"):
        assert m_res[key] == pytest.approx(m_cont[key], rel=1e-6, abs=1e-9), key
    after_res = _lora_params(r)
    assert all(torch.allclose(after_res[n], after_cont[n], atol=1e-7) for n in after_cont)

    # a full-model actor refuses the LoRA checkpoint (one line), and the reverse
    full_model, full_cfg, algo, _ = make_cfgs(tiny_model_path)
    full = Actor(full_model, full_cfg, algo, device=CPU)
    with pytest.raises(C.CheckpointError, match="actor.lora.rank=4"):
        C.load_checkpoint(ck, full)
    plain_ck = C.save_checkpoint(str(tmp_path / "full"), 1, full, None, {"step": 1})
    with pytest.raises(C.CheckpointError, match="saved without LoRA"):
        C.load_checkpoint(plain_ck, r)


def test_save_merged_false_keeps_only_the_adapter(tiny_model_path, tmp_path):
    a, *_ = _actor(tiny_model_path, seed=0, save_merged=False)
    a.update(make_batch(seed=1))
    ck = C.save_checkpoint(str(tmp_path / "ck"), 1, a, None, {"step": 1})
    assert not os.path.exists(os.path.join(ck, "hf", "model.safetensors"))
    assert os.path.exists(os.path.join(ck, "hf", "config.json"))
    assert C.find_resumable_checkpoint(str(tmp_path / "ck")) == ck  # verifies without merged weights
    r, *_ = _actor(tiny_model_path, seed=7, save_merged=False)
    C.load_checkpoint(ck, r)
    assert all(torch.equal(v, _lora_params(a)[n]) for n, v in _lora_params(r).items())
    os.remove(os.path.join(ck, "adapter", "adapter_model.safetensors"))
    assert not C.V.verify_checkpoint(ck).ok                        # the adapter is what a resume needs


def test_config_errors_name_the_key(tiny_model_path, tmp_path, monkeypatch):
    from agent_rl.config.load import ConfigError, compose
    from agent_rl.tasks.generate import generate_dataset

    with pytest.raises(ConfigError, match=r"^actor\.lora\.rank: must be >= 0") as e:
        compose(["actor.lora.rank=-1"], check_paths=False)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"^actor\.lora\.alpha"):
        compose(["actor.lora.rank=8", "actor.lora.alpha=0"], check_paths=False)
    with pytest.raises(ConfigError, match=r"^actor\.lora\.rank: .*sft\.update_ref=false"):
        compose(["actor.lora.rank=8", "sft.steps=2"], check_paths=False)
    data = tmp_path / "data"
    generate_dataset("arith", str(data), sizes={"train": 4, "val": 2, "test": 0})
    common = [f"model.path={tiny_model_path}", f"data.train_files=[{data}/train.parquet]",
              f"data.val_files=[{data}/val.parquet]", "tools.config_path=configs/tool_config/arith_tool_config.yaml",
              "tools.kg_store=null", "actor.lora.rank=8"]
    with pytest.raises(ConfigError, match=r"^actor\.lora\.target_modules: no linear layer named 'qproj'") as e:
        compose(common + ["actor.lora.target_modules=[q_proj,qproj]"])
    assert "q_proj" in str(e.value) and "\n" not in str(e.value)   # lists the model's linear layers
    cfg = compose(common + ["actor.lora.target_modules=[q_proj,v_proj]"])
    assert cfg.actor.lora.target_modules == ["q_proj", "v_proj"]
    assert compose(common).actor.lora.target_modules == "all-linear"


@pytest.mark.slow
def test_fsdp2_two_gloo_ranks_match_one_process(tiny_model_path, tmp_path):
    run_ranks("lora_dist_worker.py", [tiny_model_path, str(tmp_path / "ws2")], 2)
    run_ranks("lora_dist_worker.py", [tiny_model_path, str(tmp_path / "ws1")], 1)
    r0, r1, one = (torch.load(tmp_path / d / f"result_rank{r}.pt", weights_only=False)
                   for d, r in (("ws2", 0), ("ws2", 1), ("ws1", 0)))
    assert r0["fsdp"] and not one["fsdp"]
    assert set(r0["adapter"]) == set(one["adapter"]) and r0["adapter"]
    for k, v in one["adapter"].items():
        assert torch.allclose(r0["adapter"][k], v, atol=2e-5, rtol=1e-4), k
        assert torch.equal(r0["adapter"][k], r1["adapter"][k])
    for m2, m1 in zip(r0["metrics"], one["metrics"]):
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm"):
            assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
    assert r0["metrics"][1]["actor/kl_loss"] > 0          # the reference (adapter off) differs from the actor
    assert r0["base_unchanged"] and r1["base_unchanged"]
    # the engine got merged weights under the base names, equal to one process's
    assert set(r0["sent"]) == set(one["sent"]) and r1["sent"] == {}
    assert not any("lora_" in n or "base_layer" in n for n in r0["sent"])
    for k, v in one["sent"].items():
        assert torch.allclose(r0["sent"][k], v, atol=2e-5), k
    assert r0["same_after_load"] and r1["same_after_load"]
