"""Two steps of training with two real sglang 0.5.17 engines on a CPU as `rollout.engine_replicas=2` (run by
test_real_sglang.py in a process of its own). Prints one JSON line: requests per replica and, per replica and
parameter, the largest difference from the actor's weights and from the initial ones. argv: KIND MODEL_DIR OUT_DIR."""
import json
import os
import sys

from engine_checks import CPU_KWARGS

REWARD = '''
def parity(traj, cfg):
    ids = [t for t, m in zip(traj.response_ids, traj.loss_mask) if m]
    return float(bool(ids) and ids[0] % 2 == 0), {}
'''
NAMES = ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight")


def served(worker, replica, name):
    """The parameter as the replica holds it (sglang's get_weights_by_name, in process or over HTTP)."""
    import torch

    inner = getattr(replica, "_engine", None)
    if inner is not None:
        from sglang.srt.managers.io_struct import GetWeightsByNameReqInput

        got = worker._run(inner.tokenizer_manager.get_weights_by_name(
            GetWeightsByNameReqInput(name=name, truncate_size=1 << 30), None))
    else:
        import urllib.request

        req = urllib.request.Request(replica.base_url + "/get_weights_by_name", method="POST",
                                     data=json.dumps({"name": name, "truncate_size": 1 << 30}).encode(),
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        got = json.loads(opener.open(req, timeout=60).read())
    return torch.tensor(got).float()


def two_replica_config(folder: str, model: str, engine: str, overrides=()):
    """The config of a two-step training run of `model` on two `engine` replicas: 16 toy prompts and a parity reward
    written into `folder`, the run's output in `folder`/run (also tests/orchestration/test_replicas_e2e.py)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agent_rl.config.load import compose

    os.makedirs(folder, exist_ok=True)
    with open(f"{folder}/rw.py", "w") as f:
        f.write(REWARD)
    rows = [{"prompt": [{"role": "user", "content": f"Say something, number {i}."}], "data_source": "toy",
             "ability": "toy", "reward_model": {"style": "rule", "ground_truth": "-"}, "extra_info": {"index": i}}
            for i in range(16)]
    pq.write_table(pa.Table.from_pylist(rows), f"{folder}/train.parquet")
    return compose([f"model.path={model}", "model.dtype=float32", "model.gradient_checkpointing=false",
                    f"data.train_files=[{folder}/train.parquet]", f"data.val_files=[{folder}/train.parquet]",
                    "data.shuffle=false", "data.generate_if_missing=null", "tools.config_path=null",
                    "trainer.use_ray=false", "data.train_batch_size=4", "actor.ppo_mini_batch_size=4", "rollout.n=2",
                    f"rollout.engine={engine}", "rollout.engine_replicas=2",
                    "rollout.multi_turn.max_new_tokens_per_turn=6", "rollout.multi_turn.max_assistant_turns=1",
                    "actor.optim.lr=5e-2", "trainer.total_training_steps=2", "trainer.val_before_train=false",
                    "trainer.test_freq=-1", "trainer.save_freq=-1", "logger.backends=[jsonl]", "logger.plot=false",
                    "rollout.progress_bar=false", f"trainer.output_dir={folder}/run", "trainer.resume=disable",
                    f"reward.objectives.parity.function={folder}/rw.py:parity", *overrides])


def main(kind: str, model: str, out: str) -> dict:
    from safetensors.torch import load_file

    from agent_rl.engines.replicas import ReplicaEngine
    from agent_rl.orchestration.trainer import Trainer

    kwargs = "{" + ",".join(f"{k}:{str(v).lower() if isinstance(v, bool) else v}" for k, v in CPU_KWARGS.items()) + "}"
    cfg = two_replica_config(out, model, kind, [f"++rollout.engine_kwargs={kwargs}", "rollout.free_cache_engine=false"])
    said = []
    trainer = Trainer(cfg, echo=said.append)
    res = {"kind": kind, "said_sessions": any("with KV sessions" in line for line in said)}
    try:
        trainer.fit()
        worker = trainer.group.workers[0]
        engine = worker.engine
        assert isinstance(engine, ReplicaEngine), type(engine)
        res["replicas"] = [type(r).__name__ for r in engine.replicas]
        res["routed"] = list(engine.routed)
        res["server_gc_frozen"] = [getattr(getattr(r, "server", None), "gc_frozen", None) for r in engine.replicas]
        actor = {k: v.detach().float().cpu() for k, v in worker.actor.policy.model.state_dict().items()}
        initial = load_file(os.path.join(model, "model.safetensors"))
        res["weights"] = {}
        for i, replica in enumerate(engine.replicas):
            for name in NAMES:
                got = served(worker, replica, name).reshape(actor[name].shape)
                first = initial.get(name, initial.get("model.embed_tokens.weight")).float()   # tied lm_head
                res["weights"][f"{i}:{name}"] = [float((got - actor[name]).abs().max()),
                                                 float((got - first).abs().max())]
    finally:
        trainer.close()
    with open(f"{out}/run/metrics.jsonl") as f:
        rows = [r for r in map(json.loads, f) if "actor/pg_loss" in r]
    res["steps"] = [r["step"] for r in rows]
    res["sessions"] = [{k.rsplit("/", 1)[-1]: v for k, v in r.items() if k.startswith("rollout/kv_sessions/")}
                       for r in rows]
    return res


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])), flush=True)
