"""What a finished or stopped run prints (`run_summary`): the last complete checkpoint and its `hf/` folder, the
warm-started model, the best validation reward and its step (`best_validation`), the metrics file."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _val_reward_key(records: Sequence[Dict[str, Any]], prefix: str = "val/") -> Optional[str]:
    """The headline validation reward: `val/all/reward` with several data sources, else `val/<source>/reward`."""
    keys = sorted({k for r in records for k in r if k.startswith(prefix) and k.endswith("/reward")
                   and len(k[len(prefix):].split("/")) == 2})
    if not keys:
        return None
    all_key = f"{prefix}all/reward"
    return all_key if all_key in keys else keys[0]


def best_validation(output_dir: str) -> Optional[Dict[str, Any]]:
    """The best validation reward in `<output_dir>/metrics.jsonl`: {key, value, step, label}; None without one.
    The warm-started model's validation (`sft/val/*`, step 0) counts, labelled `after the warm-start`."""
    from agent_rl.metrics.jsonl import read_jsonl

    path = os.path.join(output_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    records = read_jsonl(path)
    key = _val_reward_key(records)
    best = None
    for r in records:
        step = int(r.get("step", 0))
        cands = [(key, r.get(key), "before training" if step == 0 else f"step {step}")]
        if step == 0:
            sk = _val_reward_key([r], "sft/val/")
            cands.append((sk, r.get(sk) if sk else None, "step 0, after the warm-start"))
        for k, v, label in cands:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
                continue
            if best is None or v > best["value"]:   # ties: the earliest
                best = {"key": k, "value": float(v), "step": step, "label": label}
    return best


def run_summary(output_dir: str, *, step: Optional[int] = None, elapsed_s: Optional[float] = None,
                interrupted: Optional[str] = None, save_freq: Optional[int] = None) -> List[str]:
    """The lines printed when a run ends: how it ended, the last complete checkpoint (and its HF folder), the
    warm-started model, the best validation reward. `interrupted`: the signal's name when a signal stopped it."""
    from agent_rl.training.checkpoint import find_latest_checkpoint, list_checkpoints

    root = os.path.join(output_dir, "checkpoints")
    took = f" after {_fmt_s(elapsed_s)}" if elapsed_s is not None else ""
    if interrupted:
        done = "" if step is None else f" ({step} step(s) complete)"
        lines = [f"run stopped by {interrupted}{took}{done}"]
    else:
        lines = [f"run finished{took}" + ("" if step is None else f": {step} step(s)")]
    latest = find_latest_checkpoint(root)
    if latest:
        ck_step = dict((p, s) for s, p in list_checkpoints(root)).get(latest)
        lines.append(f"  last checkpoint: {latest} (step {ck_step})")
        adapter_only = (os.path.isdir(os.path.join(latest, "adapter"))
                        and not os.path.isfile(os.path.join(latest, "hf", "model.safetensors")))
        if not adapter_only:
            lines.append(f"  model: {os.path.join(latest, 'hf')}  "
                         "(transformers: AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained)")
        else:  # a LoRA actor with actor.lora.save_merged=false: the adapter is the model
            lines.append(f"  adapter: {os.path.join(latest, 'adapter')}  (peft: PeftModel.from_pretrained(base model, "
                         "path); tokenizer in hf/)")
        if interrupted:
            lines.append(f"  saved: the checkpoint of step {ck_step}; "
                         + ("nothing after it" if step is None or step <= (ck_step or 0) else
                            f"steps {ck_step + 1}..{step} are logged in metrics.jsonl but not saved")
                         + "; run the same command again to resume from it (trainer.resume=auto)")
    sft_dir = os.path.join(output_dir, "sft")
    sft = find_latest_checkpoint(sft_dir) if os.path.isdir(sft_dir) else None
    if not latest:
        why = " (trainer.save_freq <= 0)" if save_freq is not None and save_freq <= 0 else ""
        if not interrupted:
            lines.append("  no checkpoint saved" + why)
        elif sft:
            lines.append("  saved: only the warm-started model, no RL checkpoint yet" + why
                         + "; run the same command again to start RL from it")
        else:
            lines.append("  nothing was saved: no complete checkpoint" + why)
    if sft:
        lines.append(f"  warm-started model: {os.path.join(sft, 'hf')}")
    best = best_validation(output_dir)
    if best:
        lines.append(f"  best validation reward: {best['value']:.4g} ({best['label']}; {best['key']})")
    else:
        lines.append("  best validation reward: none (no validation ran)")
    lines.append(f"  metrics: {os.path.join(output_dir, 'metrics.jsonl')}")
    return lines
