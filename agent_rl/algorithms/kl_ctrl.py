"""KL coefficient controllers (`algorithm.kl_ctrl`): the coefficient of the KL loss, step by step.

verl's controllers (verl/trainer/ppo/core_algos.py, `FixedKLController`, `AdaptiveKLController`,
`get_kl_controller`; the rule of Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, section 2.2, also in
TRL and OpenRLHF):

    fixed:     value = kl_coef, never changes
    adaptive:  proportional_error = clip(current_kl / target_kl - 1, -0.2, 0.2)
               mult = 1 + proportional_error * n_steps / horizon
               value *= mult
               (horizon > 0; verl calls `update(current_kl, n_steps=batch_size)` once per step, after the step
               used `value`; batch_size = the step's trajectories)

What differs here: verl applies `kl_ctrl` to the KL *penalty in the reward* (`algorithm.use_kl_in_reward`), with
`current_kl` the batch mean of per-sequence token means of `kl_penalty(old_logp, ref_logp)`. We have no in-reward
KL: the controller sets the coefficient of the KL *loss* (`actor.kl_loss_coef` is its starting value). Step t
trains with `value_t`; after the update, the step's measured KL (`actor/kl_loss`: `actor.kl_loss_type` of the
policy being trained against the reference, aggregated with `actor.loss_agg_mode`, the mean over the step's
optimizer steps) and `n_steps` = the step's trajectories give `value_{t+1}`. The update rule is verl's, unchanged.

`TargetRangeKLController` is the per-objective variant: a dict objective -> coefficient, each moved toward a
target KL range [lo, hi] on its own: multiplied by `factor` when its measured KL is above `hi`, divided by it when
below `lo`, left alone inside the range (or with no finite measurement), and kept within [min_coef, max_coef].
Without `reward.objectives` the trainer uses one objective, `kl` (measured as `actor/kl_loss`); with them, one
coefficient per reward objective, each moved by the KL measured on the tokens of the trajectories that objective
applies to (`actor/kl/<name>`), and each trajectory's KL loss weighted by the mean coefficient of its objectives
(docs/training.md, Multi-objective rewards).

All controllers are pure Python (no torch) and expose `value` (the coefficient the loss uses now), `update(...)`,
`state_dict()` / `load_state_dict()` (saved with the trainer state in `extra_state.json`, restored at resume).
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence, Union

KL_CTRL_TYPES = ("fixed", "adaptive", "range")


class FixedKLController:
    """verl's fixed controller: the coefficient never moves."""

    kind = "fixed"

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        return {"type": self.kind, "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore: a fixed coefficient is the configured one (a resumed run may change it)."""
        _check_type(self.kind, state)


class AdaptiveKLController:
    """verl's adaptive controller (see the module docstring for the rule and where it comes from)."""

    kind = "adaptive"

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: float):
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        if not target_kl > 0:
            raise ValueError(f"target_kl must be > 0, got {target_kl}")
        self.value = float(init_kl_coef)
        self.target = float(target_kl)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """One step's measured KL and its number of samples -> the next coefficient. A non-finite KL (no
        trained token) leaves the coefficient as it is."""
        current_kl = float(current_kl)
        if not math.isfinite(current_kl):
            return self.value
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        mult = 1.0 + proportional_error * n_steps / self.horizon
        self.value *= mult
        return self.value

    def state_dict(self) -> Dict[str, Any]:
        return {"type": self.kind, "value": self.value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_type(self.kind, state)
        self.value = float(state["value"])


class TargetRangeKLController:
    """Per-objective coefficients, each kept so that its measured KL stays in [lo, hi].

    update({name: kl}): kl > hi -> coef * factor; kl < lo -> coef / factor; else unchanged; then clamped to
    [min_coef, max_coef]. Objectives without a (finite) measurement keep their coefficient. `value` is the
    coefficient of the first objective (the one the trainer's KL loss uses)."""

    kind = "range"

    def __init__(self, coefs: Mapping[str, float], target_range: Sequence[float], factor: float = 1.5,
                 min_coef: float = 0.0, max_coef: float = math.inf):
        if not coefs:
            raise ValueError("at least one objective is needed")
        lo, hi = (float(x) for x in target_range)
        if not 0 <= lo < hi:
            raise ValueError(f"target range must be 0 <= lo < hi, got [{lo}, {hi}]")
        if not factor > 1:
            raise ValueError(f"factor must be > 1, got {factor}")
        if not 0 <= min_coef <= max_coef:
            raise ValueError(f"bounds must be 0 <= min_coef <= max_coef, got [{min_coef}, {max_coef}]")
        self.lo, self.hi, self.factor = lo, hi, float(factor)
        self.min_coef, self.max_coef = float(min_coef), float(max_coef)
        self.coefs: Dict[str, float] = {str(k): self._clamp(float(v)) for k, v in coefs.items()}
        self.primary = next(iter(self.coefs))

    def _clamp(self, c: float) -> float:
        return min(max(c, self.min_coef), self.max_coef)

    @property
    def value(self) -> float:
        return self.coefs[self.primary]

    def update(self, measured: Union[float, Mapping[str, float]], n_steps: Optional[int] = None) -> Dict[str, float]:
        """`measured`: {objective: KL} (a plain number is the first objective's KL). `n_steps` is unused (the step
        is per update, whatever the batch size). Unknown objective names are an error."""
        if not isinstance(measured, Mapping):
            measured = {self.primary: measured}
        unknown = [k for k in measured if k not in self.coefs]
        if unknown:
            raise KeyError(f"unknown KL objective(s) {unknown}; known: {list(self.coefs)}")
        for name, kl in measured.items():
            kl = float(kl) if kl is not None else math.nan
            if not math.isfinite(kl):
                continue
            c = self.coefs[name]
            if kl > self.hi:
                c *= self.factor
            elif kl < self.lo:
                c /= self.factor
            self.coefs[name] = self._clamp(c)
        return dict(self.coefs)

    def state_dict(self) -> Dict[str, Any]:
        return {"type": self.kind, "coefs": dict(self.coefs)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_type(self.kind, state)
        saved = dict(state["coefs"])
        if set(saved) != set(self.coefs):
            raise ValueError(f"saved KL objectives {sorted(saved)} differ from the configured {sorted(self.coefs)}")
        self.coefs = {k: float(saved[k]) for k in self.coefs}


KLController = Union[FixedKLController, AdaptiveKLController, TargetRangeKLController]


def _check_type(kind: str, state: Mapping[str, Any]) -> None:
    if state.get("type") != kind:
        raise ValueError(f"saved KL controller is {state.get('type')!r}, the config asks for {kind!r}")


def build_kl_controller(kl_ctrl, default_coef: float, objectives: Sequence[str] = ()) -> KLController:
    """The controller of `algorithm.kl_ctrl` (verl's `get_kl_controller`); its starting coefficient is
    `kl_ctrl.kl_coef`, or `default_coef` (`actor.kl_loss_coef`) when that is null. `range` keeps one coefficient per
    name of `objectives` (the reward objectives), or one named `kl` when there are none."""
    coef = float(default_coef if kl_ctrl.kl_coef is None else kl_ctrl.kl_coef)
    if kl_ctrl.type == "fixed":
        return FixedKLController(coef)
    if kl_ctrl.type == "adaptive":
        return AdaptiveKLController(coef, kl_ctrl.target_kl, kl_ctrl.horizon)
    if kl_ctrl.type == "range":
        return TargetRangeKLController({name: coef for name in (objectives or ["kl"])}, kl_ctrl.target_range,
                                       kl_ctrl.factor, kl_ctrl.min_coef, kl_ctrl.max_coef)
    raise ValueError(f"algorithm.kl_ctrl.type: {kl_ctrl.type!r} is not one of {', '.join(KL_CTRL_TYPES)}")


def kl_coef_metrics(ctrl: KLController) -> Dict[str, float]:
    """`actor/kl_coef` (the coefficient in use) and, for per-objective controllers, `actor/kl_coef/<name>`."""
    out = {"actor/kl_coef": float(ctrl.value)}
    for name, c in getattr(ctrl, "coefs", {}).items():
        out[f"actor/kl_coef/{name}"] = float(c)
    return out
