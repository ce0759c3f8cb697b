"""rollout.engine_replicas through the whole trainer on CPU (hf engine, in-process worker, tiny model): both replicas
roll out, every weight sync reaches both, and training runs as with one engine."""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sglang_cpu"))
from replicas_train import two_replica_config  # noqa: E402 - the same run as on real sglang (tests/sglang_cpu)


def test_two_hf_replicas_train_and_receive_every_sync(tmp_path, tiny_model_path):
    from agent_rl.engines.replicas import ReplicaEngine
    from agent_rl.orchestration.trainer import Trainer

    cfg = two_replica_config(str(tmp_path), tiny_model_path, "hf")
    out = tmp_path / "run"
    trainer = Trainer(cfg, echo=lambda s: None)
    try:
        trainer.fit()
        w = trainer.group.workers[0]
        engine = w.engine
        assert isinstance(engine, ReplicaEngine) and len(engine.replicas) == 2
        assert min(engine.routed) > 0   # both rolled out
        served = [r.model.state_dict() for r in engine.replicas]
        actor = {k: v.detach().float().cpu() for k, v in w.actor.policy.model.state_dict().items()}
    finally:
        trainer.close()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "actor/pg_loss" in r] == [1, 2]
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(tiny_model_path, torch_dtype=torch.float32).state_dict()
    assert set(served[0]) <= set(actor)   # the same parameter names: every one is compared below
    moved = 0
    for k, v in served[0].items():
        assert torch.equal(v, served[1][k]), k     # both replicas hold the same weights ...
        assert torch.allclose(v.float(), actor[k], atol=1e-6), k   # ... the actor's after the last sync
        moved += not torch.equal(v.float(), initial[k].float())
    assert moved > 0   # which training changed: the syncs carried something
