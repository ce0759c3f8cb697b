"""metrics.png of a short run: every panel spans the run's steps, few points get markers (and values), a flat
series gets a y axis from 0 instead of matplotlib's value +- 0.1."""
import json

import pytest

from agent_rl.metrics import plot_metrics
from agent_rl.metrics.plot import _flat_y_limits, _x_limits


def test_flat_series_y_limits_include_zero():
    assert _flat_y_limits([0.0, 0.0]) == pytest.approx((-0.05, 1.05))      # a flat 0 on 0..1
    assert _flat_y_limits([2.0]) == pytest.approx((-0.1, 2.1))             # a flat 2 on 0..2
    assert _flat_y_limits([-3.0, -3.0]) == pytest.approx((-3.15, 0.15))
    assert _flat_y_limits([0.0, 0.5]) is None                              # not flat: matplotlib decides
    assert _flat_y_limits([]) is None


def test_x_limits_span_the_run():
    assert _x_limits([2, 2]) == (1, 3)                                     # one step: one either side
    lo, hi = _x_limits([1, 2, 2])
    assert lo < 1 and 2 < hi < 3
    lo, hi = _x_limits([0, 100])
    assert -4 < lo < 0 and 100 < hi < 104


def test_two_step_run_reads_well(tmp_path, monkeypatch):
    """The first-hour run: reward 0 at steps 1 and 2, one validation point at step 2. Every panel shows steps 1..2,
    the reward panel is 0..1, points have markers, a lone point its value."""
    from matplotlib.figure import Figure

    p = tmp_path / "metrics.jsonl"
    recs = [{"step": 0, "sft/loss_first": 0.3, "timing/sft_s": 90.0},     # not drawn: the axes start at step 1
            {"step": 1, "reward/mean": 0.0, "actor/entropy": 2.6},
            {"step": 2, "reward/mean": 0.0, "actor/entropy": 2.8, "val/kg_synth/reward": 0.0,
             "val/kg_synth/answer_rate": 0.25}]
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    seen = {}
    real_savefig = Figure.savefig

    def savefig(fig, *a, **k):
        for ax in fig.axes:
            if ax.get_title():
                seen[ax.get_title()] = (ax.get_xlim(), ax.get_ylim(), [ln.get_marker() for ln in ax.lines],
                                        [t.get_text() for t in ax.texts])
        return real_savefig(fig, *a, **k)

    monkeypatch.setattr(Figure, "savefig", savefig)
    assert plot_metrics(str(p), str(tmp_path / "m.png")) == str(tmp_path / "m.png")
    assert (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    for title in ("reward", "validation answer rate", "entropy"):
        (x0, x1), _, markers, _ = seen[title]
        assert 0 < x0 < 1 and 2 < x1 < 3, title                           # steps 1..2, not 1.9..2.1
        assert all(m == "o" for m in markers)
    assert seen["reward"][1] == pytest.approx((-0.05, 1.05))
    assert seen["validation answer rate"][3] == ["0.25"]
    p.write_text(json.dumps({"step": 1, "reward/mean": 0.05}) + "\n" + json.dumps({"step": 2, "reward/mean": 0.175}) + "\n")
    plot_metrics(str(p), str(tmp_path / "m2.png"))
    assert seen["reward"][1][0] == 0                                       # rewards and rates: from 0
    lo, hi = seen["entropy"][1]
    assert lo < 2.6 and hi > 2.8 and hi - lo < 1                           # a moving series keeps its own scale
