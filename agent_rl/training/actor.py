"""The FSDP2 actor: log-prob recomputation and the GRPO/PPO update.

`update(batch)` consumes the training batch of docs/architecture.md plus `advantages` ([B, L] or [B]),
`old_logprobs` (recomputed here when absent), `ref_logprobs` (when the KL loss is on) and
`rollout_logprobs` (TIS + mismatch metrics). Each rank passes its own shard of the batch; losses are
normalised by mini-batch totals over all ranks, so accumulating micro-batches on several ranks gives
the gradient of one big batch.

Per-objective KL (`reward.objectives` with `algorithm.kl_ctrl.type=range`): the batch may hold `kl_coef` [B] (each
row's KL loss coefficient; the KL term is then aggregate(coef_row * kl) instead of coef * aggregate(kl)) and
`kl_objectives` [B, K] (1 where objective k applies to the row); with the objectives' names, `update` logs
`actor/kl/<name>`: the KL (`actor.kl_loss_type`, aggregated with `actor.loss_agg_mode`) over the tokens of the rows the
objective applies to, over the whole update (all mini-batches, epochs and ranks).
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Sequence

import torch

from agent_rl.algorithms.aggregate import aggregate, row_terms
from agent_rl.algorithms.entropy import entropy_bonus
from agent_rl.algorithms.kl import kl_penalty
from agent_rl.algorithms.mismatch import mismatch_metrics, truncated_importance_weights
from agent_rl.algorithms.policy_loss import ppo_clip_loss
from agent_rl.training import dist as D
from agent_rl.training.microbatch import plan_micro_batches, split_even
from agent_rl.training.optim import build_optimizer, build_scheduler
from agent_rl.training.policy import PolicyModel, select_rows


def grad_norm_value(norm) -> float:
    """A clip_grad_norm_ result as a float (a DTensor under FSDP2 is gathered first)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def compute_log_probs_with(policy: PolicyModel, batch: Dict[str, torch.Tensor], temperature: float,
                           budget: int, with_entropy: bool = True, positions: str = "all"):
    """(logprobs [B, L], entropy [B, L] or None) on CPU, fp32, by token-budget micro-batches."""
    am = batch["attention_mask"]
    B, L = am.shape
    keep_all = batch["loss_mask"] if positions == "loss_mask" else am
    lengths = am.sum(-1).tolist()
    plan = plan_micro_batches(lengths, budget, D.all_reduce_max_int)
    out_lp = torch.zeros(B, L)
    out_ent = torch.zeros(B, L) if with_entropy else None
    was_training = policy.model.training
    policy.model.eval()
    try:
        with torch.no_grad():
            for rows in plan:
                mb = select_rows(batch, rows) if rows else {k: batch[k][:0] for k in ("input_ids", "attention_mask")}
                keep = keep_all[rows] if rows else am[:0]
                lp, ent = policy.token_stats(mb["input_ids"], mb["attention_mask"], mb.get("position_ids"), keep,
                                             temperature, with_entropy)
                if rows:
                    idx = torch.as_tensor(rows)
                    out_lp[idx] = lp.float().cpu()
                    if with_entropy:
                        out_ent[idx] = ent.float().cpu()
    finally:
        D.reshard_all(policy.model)
        policy.model.train(was_training)
    return out_lp, out_ent


def total_optimizer_steps(cfg) -> Optional[int]:
    """trainer.total_training_steps x mini-batches per step x ppo_epochs (None without a step limit)."""
    steps = cfg.trainer.total_training_steps
    if not steps:
        return None
    minis = max(1, math.ceil(cfg.data.train_batch_size / max(1, cfg.actor.ppo_mini_batch_size)))
    return int(steps) * minis * max(1, cfg.actor.ppo_epochs)


METRIC_KEYS = ("actor/pg_loss", "actor/kl_loss", "actor/entropy", "_tok/actor/clip_frac", "_tok/actor/ppo_kl",
               "_tok/actor/dual_clip_frac", "_tok/n")


class Actor:
    def __init__(self, model_cfg, actor_cfg, algo_cfg, *, rollout_n: int = 1, temperature: float = 1.0,
                 total_optimizer_steps: Optional[int] = None, device: Optional[torch.device] = None):
        self.cfg, self.algo = actor_cfg, algo_cfg
        self.rollout_n = rollout_n
        self.temperature = temperature if temperature and temperature > 0 else 1.0
        self.policy = PolicyModel(model_cfg.path, dtype=model_cfg.dtype, mixed_precision=actor_cfg.mixed_precision,
                                  device=device, trust_remote_code=model_cfg.trust_remote_code,
                                  gradient_checkpointing=model_cfg.gradient_checkpointing,
                                  remove_padding=model_cfg.remove_padding, cpu_offload=actor_cfg.param_offload,
                                  lora=getattr(actor_cfg, "lora", None))
        self.model = self.policy.model
        # only trainable parameters (with LoRA: the adapters) get gradients, optimizer state and grad-norm clipping
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(self.trainable, actor_cfg.optim)
        # needed by warmup_ratio and the cosine schedule (one optimizer step per mini-batch and epoch)
        self.scheduler = build_scheduler(self.optimizer, actor_cfg.optim, total_optimizer_steps)
        self.global_steps = 0

    @classmethod
    def from_config(cls, cfg, device=None) -> "Actor":
        return cls(cfg.model, cfg.actor, cfg.algorithm, rollout_n=cfg.rollout.n,
                   temperature=cfg.rollout.sampling.temperature,
                   total_optimizer_steps=total_optimizer_steps(cfg), device=device)

    # ------------------------------------------------------------------ log-probs
    def compute_log_probs(self, batch: Dict[str, torch.Tensor], temperature: Optional[float] = None,
                          with_entropy: bool = True, positions: str = "all"):
        """(logprobs [B, L], entropy [B, L]) with logprobs[:, t] = log p(token t | < t) under
        log_softmax(logits / temperature); `positions="loss_mask"` computes only trained tokens."""
        t = self.temperature if temperature is None else temperature
        return compute_log_probs_with(self.policy, batch, t, self.cfg.ppo_max_token_len_per_gpu, with_entropy, positions)

    # ------------------------------------------------------------------ update
    def _num_mini_batches(self, local_rows: int) -> int:
        per_rank = max(1, math.ceil(self.cfg.ppo_mini_batch_size * self.rollout_n / D.get_world_size()))
        return D.all_reduce_max_int(max(1, math.ceil(local_rows / per_rank)))

    def _micro_loss(self, mb: Dict[str, torch.Tensor], n_tok: float, n_seq: float, acc: Dict[str, float],
                    kl_coef: Optional[float] = None, kl_obj: Optional[torch.Tensor] = None):
        cfg = self.cfg
        mask = mb["loss_mask"].to(self.policy.device).float()
        need_ent = cfg.entropy_coeff != 0.0
        logp, ent = self.policy.token_stats(mb["input_ids"], mb["attention_mask"], mb.get("position_ids"),
                                            mb["loss_mask"], self.temperature, with_entropy=True)
        dev = logp.device
        if mb["input_ids"].shape[0] == 0:
            return logp.sum() + (ent.sum() if ent is not None else 0.0)  # dummy: zero, but keeps FSDP in step
        old = mb["old_logprobs"].to(dev)
        adv = mb["advantages"].to(dev)
        weights = mb["tis_weights"].to(dev) if "tis_weights" in mb else None
        agg = dict(global_tokens=n_tok, global_seqs=n_seq)
        pg_loss, m = ppo_clip_loss(logp, old, adv, mask, cfg.clip_ratio_low, cfg.clip_ratio_high, cfg.clip_ratio_c,
                                   cfg.loss_agg_mode, weights, **agg)
        loss = pg_loss
        if cfg.use_kl_loss:
            kl = kl_penalty(logp, mb["ref_logprobs"].to(dev), cfg.kl_loss_type)
            kl_loss = aggregate(kl, mask, cfg.loss_agg_mode, **agg)
            if "kl_coef" in mb:   # per-sample coefficients (per-objective KL control)
                loss = loss + aggregate(kl * mb["kl_coef"].to(dev, kl.dtype)[:, None], mask, cfg.loss_agg_mode, **agg)
            else:
                loss = loss + (cfg.kl_loss_coef if kl_coef is None else kl_coef) * kl_loss
            acc["actor/kl_loss"] += kl_loss.item()
            if kl_obj is not None and "kl_objectives" in mb:
                num, den = row_terms(kl.detach().double(), mask, cfg.loss_agg_mode)
                applies = mb["kl_objectives"].to(dev, torch.float64)
                kl_obj += torch.stack([num @ applies, den @ applies]).cpu()
        ent_in = ent if need_ent else ent.detach()
        ent_term, ent_val = entropy_bonus(ent_in, mask, cfg.entropy_coeff, "token-mean", global_tokens=n_tok)
        if need_ent:
            loss = loss + ent_term
        ntok_local = mask.sum().item()
        acc["actor/pg_loss"] += pg_loss.item()
        acc["actor/entropy"] += ent_val.item()
        for k in ("clip_frac", "ppo_kl", "dual_clip_frac"):
            acc[f"_tok/actor/{k}"] += m[k].item() * ntok_local
        acc["_tok/n"] += ntok_local
        return loss

    def update(self, batch: Dict[str, torch.Tensor], kl_coef: Optional[float] = None,
               kl_objectives: Optional[Sequence[str]] = None) -> Dict[str, float]:
        """`kl_coef`: the KL loss coefficient of this update (the trainer's `algorithm.kl_ctrl`); None =
        `actor.kl_loss_coef`; a per-sample `batch["kl_coef"]` [B] wins over it. `kl_objectives`: the names of the
        columns of `batch["kl_objectives"]` [B, K], each measured as `actor/kl/<name>` (module docstring)."""
        cfg = self.cfg
        batch = dict(batch)
        B, L = batch["input_ids"].shape
        mask = batch["loss_mask"].float()
        adv = batch["advantages"].float()
        batch["advantages"] = adv[:, None] * mask if adv.dim() == 1 else adv * mask
        metrics: Dict[str, float] = {}
        if "old_logprobs" not in batch:
            batch["old_logprobs"], _ = self.compute_log_probs(batch, with_entropy=False, positions="loss_mask")
        if cfg.use_kl_loss and "ref_logprobs" not in batch:
            raise KeyError("actor.use_kl_loss is on but the batch has no ref_logprobs")
        if "rollout_logprobs" in batch:
            mm = mismatch_metrics(batch["old_logprobs"], batch["rollout_logprobs"], mask, self.algo.tis.cap)
            metrics.update(self._global_mismatch(mm))
            if self.algo.tis.enable:
                batch["tis_weights"] = truncated_importance_weights(batch["old_logprobs"], batch["rollout_logprobs"],
                                                                    mask, self.algo.tis.cap)
        lengths = batch["attention_mask"].sum(-1).tolist()
        minis = split_even(B, self._num_mini_batches(B))
        ws = D.get_world_size()
        acc: Dict[str, float] = {k: 0.0 for k in METRIC_KEYS}  # same keys on every rank (all-reduced)
        names = list(kl_objectives or []) if cfg.use_kl_loss else []
        kl_obj = torch.zeros(2, len(names), dtype=torch.float64) if names else None   # [numerator, denominator] x K
        steps, grad_norms, skipped, n_micro = 0, [], 0, 0
        self.model.train()
        for _ in range(cfg.ppo_epochs):
            for mini in minis:
                m_mask = mask[mini] if mini else mask[:0]
                n_tok = float(D.all_reduce_sum(m_mask.sum()).item())
                n_seq = float(D.all_reduce_sum((m_mask.sum(-1) > 0).sum()).item())
                plan = plan_micro_batches([lengths[i] for i in mini], cfg.ppo_max_token_len_per_gpu, D.all_reduce_max_int)
                self.optimizer.zero_grad(set_to_none=True)
                for part in plan:
                    rows = [mini[i] for i in part]
                    mb = select_rows(batch, rows) if rows else {k: v[:0] for k, v in batch.items()
                                                                if isinstance(v, torch.Tensor) and v.dim() >= 1
                                                                and v.shape[0] == B}
                    loss = self._micro_loss(mb, n_tok, n_seq, acc, kl_coef, kl_obj)
                    # FSDP averages gradients over ranks; the loss is already a share of the global mean
                    (loss * ws).backward()
                    n_micro += 1
                D.reshard_all(self.model)
                norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(self.trainable, cfg.optim.grad_clip))
                if math.isfinite(norm):
                    self.optimizer.step()
                else:
                    skipped += 1
                grad_norms.append(norm)
                self.scheduler.step()
                steps += 1
        self.global_steps += 1
        if kl_obj is not None:
            metrics.update(self._objective_kl(names, kl_obj))
        return {**metrics, **self._reduce_metrics(acc, steps), "actor/grad_norm": sum(grad_norms) / max(len(grad_norms), 1),
                "actor/lr": self.optimizer.param_groups[0]["lr"], "actor/optimizer_steps": float(steps),
                "actor/skipped_steps": float(skipped), "actor/micro_batches": float(n_micro)}

    @staticmethod
    def _reduce_metrics(acc: Dict[str, float], steps: int) -> Dict[str, float]:
        keys = list(METRIC_KEYS)
        vals = D.all_reduce_sum(torch.tensor([acc[k] for k in keys], dtype=torch.float64)).tolist()
        tot = dict(zip(keys, vals))
        out = {k: v / max(steps, 1) for k, v in tot.items() if not k.startswith("_tok/")}
        n = tot.get("_tok/n", 0.0)
        for k, v in tot.items():
            if k.startswith("_tok/actor/"):
                out[k[len("_tok/"):]] = v / max(n, 1.0)
        return out

    @staticmethod
    def _objective_kl(names: Sequence[str], kl_obj: torch.Tensor) -> Dict[str, float]:
        """actor/kl/<name> over all ranks; an objective without a trained token in the update is left out."""
        tot = D.all_reduce_sum(kl_obj.reshape(-1)).reshape(2, -1)
        return {f"actor/kl/{n}": float(tot[0, k] / tot[1, k]) for k, n in enumerate(names) if tot[1, k] > 0}

    @staticmethod
    def _global_mismatch(mm: Dict[str, float]) -> Dict[str, float]:
        """Rank-local quantiles; means are token-weighted over ranks."""
        if D.get_world_size() == 1:
            return mm
        n = mm.get("mismatch/tokens", 0.0)
        keys = ["mismatch/abs_logp_diff_mean", "mismatch/tis_clip_frac", "mismatch/kl_k3"]
        vec = torch.tensor([n] + [mm.get(k, 0.0) * n for k in keys], dtype=torch.float64)
        tot = D.all_reduce_sum(vec).tolist()
        out = dict(mm)
        for i, k in enumerate(keys):
            out[k] = tot[i + 1] / max(tot[0], 1.0)
        out["mismatch/tokens"] = tot[0]
        return out
