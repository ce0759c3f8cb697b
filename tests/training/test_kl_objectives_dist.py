"""Per-objective KL over data-parallel ranks: two gloo ranks with different shards report the same
`actor/kl/<name>`, the KL aggregated (actor.loss_agg_mode) over the union of both shards' rows the objective applies
to, over the whole update (several mini-batches, 2 epochs): sum of numerators / sum of denominators over all ranks,
not a mean of per-rank values."""
import os
import sys

import pytest
import torch

from agent_rl.algorithms.kl import k3

sys.path.insert(0, os.path.dirname(__file__))
from kl_objectives_dist_worker import MODES, NAMES  # noqa: E402
from ranks import run_ranks  # noqa: E402


def _by_hand(shards, k, mode):
    """Objective k's KL over the rows of `shards` it applies to, from the per-token k3 values: token-mean = all their
    trained tokens' mean; seq-mean-token-mean = mean over those rows of each row's token mean. None: no such row."""
    rows = []   # (token sum, token count) of each applicable row with a trained token
    for s in shards:
        kl = k3(s["logprobs"].double(), s["ref"].double())
        mask = s["loss_mask"].double()
        for i in range(kl.shape[0]):
            if s["applies"][i, k] > 0 and mask[i].sum() > 0:
                rows.append((float((kl[i] * mask[i]).sum()), float(mask[i].sum())))
    if not rows:
        return None
    if mode == "token-mean":
        return sum(t for t, _ in rows) / sum(n for _, n in rows)
    return sum(t / n for t, n in rows) / len(rows)


@pytest.mark.slow
def test_objective_kl_is_aggregated_over_the_union_of_the_ranks_shards(tiny_model_path, tmp_path):
    run_ranks("kl_objectives_dist_worker.py", [tiny_model_path, str(tmp_path)], 2)
    r0, r1 = [torch.load(os.path.join(str(tmp_path), f"kl_rank{r}.pt"), weights_only=False) for r in range(2)]
    assert r0["loss_mask"].sum() != r1["loss_mask"].sum()          # the shards differ in token counts ...
    assert not torch.equal(r0["applies"], r1["applies"][:3])       # ... and in memberships
    for mode in MODES:
        m0, m1 = r0["metrics"][mode], r1["metrics"][mode]
        assert m0["actor/optimizer_steps"] == m1["actor/optimizer_steps"] == 10   # 5 mini-batches x 2 epochs
        for k, name in enumerate(NAMES):
            key = f"actor/kl/{name}"
            want = _by_hand([r0, r1], k, mode)
            if want is None:                      # "unused": no row on any rank -> no metric on any rank
                assert key not in m0 and key not in m1, (mode, name)
                continue
            # both ranks report the same value, the union's; "judge" has no row on rank 0 and is still reported there
            assert m0[key] == pytest.approx(want, rel=1e-4), (mode, name)
            assert m1[key] == pytest.approx(want, rel=1e-4), (mode, name)
            per_rank = [v for v in (_by_hand([r0], k, mode), _by_hand([r1], k, mode)) if v is not None]
            if len(per_rank) == 2:   # the test tells the union's aggregate from the mean of per-rank values
                assert sum(per_rank) / 2 != pytest.approx(want, rel=1e-3), (mode, name)
                assert per_rank[0] != pytest.approx(want, rel=1e-3), (mode, name)
