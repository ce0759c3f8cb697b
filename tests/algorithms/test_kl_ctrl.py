import json
import math

import pytest

from agent_rl.algorithms.kl_ctrl import (AdaptiveKLController, FixedKLController, TargetRangeKLController,
                                         build_kl_controller, kl_coef_metrics)
from agent_rl.config.schema import KLCtrlConfig


def test_fixed_never_moves_and_ignores_saved_value():
    c = FixedKLController(0.001)
    assert c.update(5.0, 256) == 0.001 and c.value == 0.001
    c.load_state_dict({"type": "fixed", "value": 0.5})  # the configured coefficient wins on resume
    assert c.value == 0.001
    with pytest.raises(ValueError, match="adaptive"):
        c.load_state_dict({"type": "adaptive", "value": 0.5})


def test_adaptive_follows_verl_rule_by_hand():
    c = AdaptiveKLController(init_kl_coef=0.001, target_kl=0.1, horizon=10000)
    # KL 0.15: error 0.5 clipped to 0.2; mult = 1 + 0.2 * 256 / 10000 = 1.00512
    assert c.update(0.15, 256) == pytest.approx(0.001 * 1.00512, rel=1e-12)
    # KL 0.02: error -0.8 clipped to -0.2; mult = 1 - 0.00512 = 0.99488
    assert c.update(0.02, 256) == pytest.approx(0.001 * 1.00512 * 0.99488, rel=1e-12)
    v = c.value
    # on target: no change
    assert c.update(0.1, 256) == pytest.approx(v, rel=1e-15)
    # inside the clip: error 0.05, mult = 1 + 0.05 * 1000 / 10000 = 1.005
    assert c.update(0.105, 1000) == pytest.approx(v * 1.005, rel=1e-12)
    # no measurement: unchanged
    v = c.value
    assert c.update(math.nan, 256) == v


def test_adaptive_matches_the_reference_formula_over_many_steps():
    import numpy as np

    def verl_update(value, current_kl, n_steps, target=0.05, horizon=500):
        proportional_error = np.clip(current_kl / target - 1, -0.2, 0.2)
        return value * (1 + proportional_error * n_steps / horizon)

    c = AdaptiveKLController(0.01, 0.05, 500)
    ref = 0.01
    for i, kl in enumerate([0.0, 0.01, 0.04, 0.05, 0.051, 0.06, 0.5, -0.01, 0.07]):
        ref = verl_update(ref, kl, 8 + i)
        assert c.update(kl, 8 + i) == pytest.approx(float(ref), rel=1e-12)


def test_adaptive_rejects_bad_settings():
    with pytest.raises(ValueError, match="horizon"):
        AdaptiveKLController(0.001, 0.1, 0)
    with pytest.raises(ValueError, match="target_kl"):
        AdaptiveKLController(0.001, 0.0, 10)


def test_adaptive_state_round_trips_through_json():
    c = AdaptiveKLController(0.001, 0.1, 100)
    c.update(1.0, 50)
    state = json.loads(json.dumps(c.state_dict()))
    d = AdaptiveKLController(0.001, 0.1, 100)
    d.load_state_dict(state)
    assert d.value == c.value == pytest.approx(0.0011)


def test_range_controller_moves_each_objective_by_hand():
    c = TargetRangeKLController({"answer": 0.01, "format": 0.1}, target_range=[0.01, 0.05], factor=2.0,
                                min_coef=0.001, max_coef=0.15)
    assert c.value == 0.01  # the first objective
    # both above hi: x2, format hits the upper bound
    assert c.update({"answer": 0.1, "format": 0.1}) == {"answer": 0.02, "format": 0.15}
    # answer below lo: /2; format not measured: unchanged
    assert c.update({"answer": 0.001}) == {"answer": 0.01, "format": 0.15}
    # inside [lo, hi] (edges included) and NaN: unchanged
    assert c.update({"answer": 0.03, "format": math.nan}) == {"answer": 0.01, "format": 0.15}
    assert c.update({"answer": 0.05, "format": 0.01}) == {"answer": 0.01, "format": 0.15}
    # repeatedly too low: down to the floor and no further
    for _ in range(10):
        c.update({"answer": 0.0})
    assert c.coefs["answer"] == 0.001
    # a plain number is the first objective's KL
    c.update(1.0)
    assert c.coefs == {"answer": 0.002, "format": 0.15}
    with pytest.raises(KeyError, match="unknown KL objective"):
        c.update({"length": 0.2})


def test_range_controller_state_and_validation():
    c = TargetRangeKLController({"a": 0.01, "b": 0.02}, [0.0, 0.1], factor=1.5)
    c.update({"a": 1.0})
    d = TargetRangeKLController({"a": 0.01, "b": 0.02}, [0.0, 0.1], factor=1.5)
    d.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert d.coefs == {"a": pytest.approx(0.015), "b": 0.02}
    with pytest.raises(ValueError, match="objectives"):
        TargetRangeKLController({"a": 0.01}, [0.0, 0.1]).load_state_dict(c.state_dict())
    with pytest.raises(ValueError, match="lo < hi"):
        TargetRangeKLController({"a": 0.01}, [0.1, 0.1])
    with pytest.raises(ValueError, match="factor"):
        TargetRangeKLController({"a": 0.01}, [0.0, 0.1], factor=1.0)
    # a starting value outside the bounds is clamped
    assert TargetRangeKLController({"a": 5.0}, [0.0, 0.1], max_coef=1.0).value == 1.0


def test_build_from_config_and_metrics():
    fixed = build_kl_controller(KLCtrlConfig(), default_coef=0.003)
    assert isinstance(fixed, FixedKLController) and fixed.value == 0.003
    assert kl_coef_metrics(fixed) == {"actor/kl_coef": 0.003}
    ad = build_kl_controller(KLCtrlConfig(type="adaptive", kl_coef=0.02, target_kl=0.5, horizon=40), 0.003)
    assert isinstance(ad, AdaptiveKLController) and (ad.value, ad.target, ad.horizon) == (0.02, 0.5, 40)
    rg = build_kl_controller(KLCtrlConfig(type="range", target_range=[0.01, 0.02], factor=3.0), 0.003)
    assert isinstance(rg, TargetRangeKLController) and rg.coefs == {"kl": 0.003} and rg.factor == 3.0
    assert kl_coef_metrics(rg) == {"actor/kl_coef": 0.003, "actor/kl_coef/kl": 0.003}
    with pytest.raises(ValueError, match="not one of"):
        build_kl_controller(KLCtrlConfig(type="pid"), 0.001)


@pytest.mark.parametrize("override, match", [
    (["algorithm.kl_ctrl.type=pid"], "algorithm.kl_ctrl.type"),
    (["algorithm.kl_ctrl.type=adaptive", "algorithm.kl_ctrl.horizon=0"], "algorithm.kl_ctrl.horizon"),
    (["algorithm.kl_ctrl.type=adaptive", "actor.use_kl_loss=false"], "actor.use_kl_loss"),
    (["algorithm.kl_ctrl.type=range", "algorithm.kl_ctrl.target_range=[0.1,0.01]"], "algorithm.kl_ctrl.target_range"),
    (["algorithm.kl_ctrl.type=range", "algorithm.kl_ctrl.factor=0.5"], "algorithm.kl_ctrl.factor"),
])
def test_config_errors_name_the_key(override, match):
    from agent_rl.config.load import ConfigError, compose

    with pytest.raises(ConfigError, match=match):
        compose(override, check_paths=False)
    assert compose(["algorithm.kl_ctrl.type=adaptive"], check_paths=False).algorithm.kl_ctrl.horizon == 10000
