"""Training-side cost of one GRPO step, full fine-tuning against LoRA (`agent-rl bench actor`).

Each variant builds the actor and its reference as a training worker does (`Actor.from_config`,
`ReferenceModel.from_config`: a LoRA actor's reference is its own model with the adapter off), then runs
`--steps` steps on one seeded synthetic batch (random token ids, a prompt part and a trained response part):
old log-probs, reference log-probs, the actor update. Reported per variant: the median seconds of each phase
over the steps after the first (the first pays allocator and kernel warm-up), peak accelerator memory
(`torch.cuda.max_memory_allocated`, reset before each variant; none on CPU), trainable and total parameters.
Variants run one after the other in one process; everything of a variant is freed before the next starts.
"""
from __future__ import annotations

import gc
import statistics
import time
from typing import Dict, List, Optional, Sequence

import torch

PHASES = ("old_logprob_s", "ref_s", "update_s", "step_s")


def synthetic_batch(batch: int, seq_len: int, prompt_len: int, vocab_size: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """`batch` rows of `seq_len` random ids; the loss covers the ids after `prompt_len`; advantages +-1."""
    if not 0 < prompt_len < seq_len:
        raise ValueError(f"need 0 < prompt_len < seq_len, got prompt_len={prompt_len}, seq_len={seq_len}")
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch, seq_len), generator=g)
    mask = torch.zeros(batch, seq_len, dtype=torch.long)
    mask[:, prompt_len:] = 1
    adv = torch.where(torch.arange(batch) % 2 == 0, 1.0, -1.0)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": mask,
            "position_ids": torch.arange(seq_len).expand(batch, seq_len).clone(), "advantages": adv}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _params(model) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params_total": int(total), "params_trainable": int(trainable)}


def run_variant(overrides: Sequence[str], batch_size: int, seq_len: int, prompt_len: int, steps: int,
                device: torch.device, seed: int = 0) -> Dict[str, object]:
    """One variant: config overrides -> actor + reference -> `steps` timed steps."""
    from agent_rl.config.load import compose
    from agent_rl.training.actor import Actor
    from agent_rl.training.ref import ReferenceModel

    cfg = compose(list(overrides), check_paths=False)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    actor = Actor.from_config(cfg, device=device)
    ref = ReferenceModel.from_config(cfg, device=device, actor=actor) if cfg.actor.use_kl_loss else None
    vocab = int(actor.policy.model.config.vocab_size)
    batch = synthetic_batch(batch_size, seq_len, prompt_len, vocab, seed)
    times: Dict[str, List[float]] = {k: [] for k in PHASES}
    last: Dict[str, float] = {}
    for _ in range(steps):
        b = dict(batch)
        _sync(device)
        t_step = t0 = time.perf_counter()
        b["old_logprobs"], _ = actor.compute_log_probs(b, with_entropy=False, positions="loss_mask")
        _sync(device)
        times["old_logprob_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        if ref is not None:
            b["ref_logprobs"] = ref.compute_ref_log_probs(b, positions="loss_mask")
        _sync(device)
        times["ref_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        last = actor.update(b)
        _sync(device)
        now = time.perf_counter()
        times["update_s"].append(now - t0)
        times["step_s"].append(now - t_step)
    timed = {k: (v[1:] if len(v) > 1 else v) for k, v in times.items()}
    out: Dict[str, object] = {k: statistics.median(v) for k, v in timed.items()}
    out.update(_params(actor.policy.model))
    out["peak_memory_gib"] = (torch.cuda.max_memory_allocated(device) / 2**30) if device.type == "cuda" else None
    out["grad_norm_last"] = float(last.get("actor/grad_norm", float("nan")))
    out["lora"] = bool(getattr(actor.policy, "lora", False))
    del actor, ref, batch, b
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def compare(variants: Dict[str, Sequence[str]], batch_size: int, seq_len: int, prompt_len: int, steps: int,
            device: torch.device, seed: int = 0) -> Dict[str, object]:
    """Every variant on the same batch; `ratios` compare each variant to the first (time and memory)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    results = {name: run_variant(ov, batch_size, seq_len, prompt_len, steps, device, seed)
               for name, ov in variants.items()}
    names = list(results)
    base = results[names[0]]
    ratios: Dict[str, Dict[str, Optional[float]]] = {}
    for name in names[1:]:
        r = results[name]
        ratios[name] = {
            "step_time_vs_" + names[0]: r["step_s"] / base["step_s"] if base["step_s"] else None,
            "peak_memory_vs_" + names[0]: (r["peak_memory_gib"] / base["peak_memory_gib"]
                                           if r["peak_memory_gib"] and base["peak_memory_gib"] else None),
        }
    return {"variants": results, "ratios": ratios,
            "batch": {"rows": batch_size, "seq_len": seq_len, "prompt_len": prompt_len, "steps": steps}}


def summary_markdown(result: Dict[str, object], header: Dict[str, object]) -> str:
    lines = [f"# actor step: {header.get('model')}", "", f"command: `{header.get('command')}`", "",
             "| variant | trainable params | old log-prob s | ref s | update s | step s | peak memory GiB |",
             "|---|---|---|---|---|---|---|"]
    for name, r in result["variants"].items():
        mem = "n/a" if r["peak_memory_gib"] is None else f"{r['peak_memory_gib']:.2f}"
        lines.append(f"| {name} | {r['params_trainable']:,} of {r['params_total']:,} | {r['old_logprob_s']:.3f} | "
                     f"{r['ref_s']:.3f} | {r['update_s']:.3f} | {r['step_s']:.3f} | {mem} |")
    for name, rr in result["ratios"].items():
        parts = [f"{k} {v:.2f}x" for k, v in rr.items() if v is not None]
        if parts:
            lines.append(f"\n{name}: " + ", ".join(parts))
    b = result["batch"]
    lines.append(f"\nbatch: {b['rows']} rows x {b['seq_len']} tokens ({b['seq_len'] - b['prompt_len']} trained), "
                 f"median of steps 2..{b['steps']}")
    return "\n".join(lines) + "\n"
