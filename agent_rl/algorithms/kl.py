"""KL estimators between the policy and the reference, per token (verl's kl_penalty).

`logp` = log pi(token), `ref_logp` = log pi_ref(token), both for tokens sampled from pi.
- `k1` / `kl`: logp - ref_logp (unbiased, high variance, can be negative)
- `abs`: |logp - ref_logp|
- `mse` / `k2`: 0.5 (logp - ref_logp)^2
- `low_var_kl` / `k3`: exp(ref - logp) - (ref - logp) - 1 with `ref - logp` clamped to [-20, 20] before the
  exp and the value clamped to [-10, 10] (>= 0, low variance; finite value and gradient for any input)
- `low_var_kl+` / `k3+`: value of k3, gradient of k2, i.e. d/dlogp = logp - ref (verl's straight-through
  `k3+`: pulls toward the reference with a gradient that does not blow up where k3's exp would)
"""
from __future__ import annotations

import torch

KL_KINDS = ("low_var_kl", "k3", "k1", "kl", "abs", "mse", "k2", "low_var_kl+", "k3+")


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    d = torch.clamp(ref_logp - logp, min=-20.0, max=20.0)
    return torch.clamp(torch.exp(d) - d - 1.0, min=-10.0, max=10.0)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    if kind in ("k1", "kl"):
        return logp - ref_logp
    if kind == "abs":
        return (logp - ref_logp).abs()
    if kind in ("mse", "k2"):
        return 0.5 * (logp - ref_logp) ** 2
    if kind in ("low_var_kl", "k3"):
        return k3(logp, ref_logp)
    if kind in ("low_var_kl+", "k3+"):
        k2 = 0.5 * (logp - ref_logp) ** 2
        return k3(logp, ref_logp).detach() + k2 - k2.detach()
    raise ValueError(f"unknown kl_loss_type {kind!r} ({' | '.join(KL_KINDS)})")


def objective_kl_coef(coefs: torch.Tensor, applies: torch.Tensor) -> torch.Tensor:
    """Per-sample KL loss coefficient [B] from per-objective coefficients [K] and which objectives apply to each
    row [B, K] (1 / 0): the mean coefficient of the row's objectives (every objective's mean for a row with none)."""
    a = applies.to(torch.float64)
    c = coefs.to(torch.float64)
    n = a.sum(-1)
    mean_all = c.mean() if c.numel() else torch.zeros((), dtype=torch.float64)
    per_row = (a @ c) / n.clamp(min=1)
    return torch.where(n > 0, per_row, mean_all.expand_as(per_row))   # float64: logged exactly

