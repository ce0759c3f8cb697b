import os

import pytest
import torch

from ranks import run_ranks


@pytest.mark.slow
def test_two_gloo_ranks_fsdp2_match_single_process(tiny_model_path, tmp_path):
    run_ranks("dist_worker.py", [tiny_model_path, str(tmp_path / "ws2")], 2)
    run_ranks("dist_worker.py", [tiny_model_path, str(tmp_path / "ws1")], 1)
    r0 = torch.load(tmp_path / "ws2" / "result_ws2_rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "ws2" / "result_ws2_rank1.pt", weights_only=False)
    single = torch.load(tmp_path / "ws1" / "result_ws1_rank0.pt", weights_only=False)
    assert r0["packing"] and single["packing"]
    # both ranks end with the same full parameters
    assert set(r0["params"]) == set(r1["params"])
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"])
    # ... equal to one process training on the whole batch (losses normalised over all ranks' tokens)
    for k, v in single["params"].items():
        assert torch.allclose(r0["params"][k], v, atol=2e-5, rtol=1e-4), (k, (r0["params"][k] - v).abs().max())
    for m2, m1 in zip(r0["metrics"], single["metrics"]):
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "actor/entropy", "actor/clip_frac",
                    "mismatch/abs_logp_diff_mean"):
            assert m2[key] == pytest.approx(m1[key], rel=1e-4, abs=1e-6), key
        assert m2["actor/optimizer_steps"] == m1["actor/optimizer_steps"] == 1
    assert r0["metrics"][1]["actor/kl_loss"] > 0
    # weight sync under FSDP: rank 0 pushed the gathered parameters, rank 1 took part without an engine
    assert set(r0["sent"]) == set(single["sent"]) and r1["sent"] == {}
    assert all(torch.equal(r0["sent"][k], r0["params"][k]) for k in r0["sent"])
    # sharded checkpoint (one optimizer file per rank) restores the same parameters
    assert r0["same_after_load"] and r1["same_after_load"]
    assert sorted(os.listdir(tmp_path / "ws2" / "ckpt" / "global_step_2" / "optim")) == ["rank_00000.pt", "rank_00001.pt"]
