import os
import sys

import pytest

from agent_rl.orchestration.group import WorkerGroup, master_endpoint


class DistProbe:
    """Joins the gloo process group the way TrainWorker does and all-reduces its rank."""

    def __init__(self, rank, world_size, tag):
        self.rank, self.world_size, self.tag = rank, world_size, tag

    def endpoint(self):
        return master_endpoint()

    def join(self, addr, port):
        os.environ.update(RANK=str(self.rank), WORLD_SIZE=str(self.world_size), MASTER_ADDR=addr,
                          MASTER_PORT=str(port), LOCAL_RANK="0")
        import torch
        import torch.distributed as dist

        from agent_rl.training.dist import init_distributed

        init_distributed("gloo")
        t = torch.tensor([float(self.rank + 1)])
        dist.all_reduce(t)
        dist.destroy_process_group()
        return self.tag, self.rank, float(t.item()), os.environ.get("AGENT_RL_PROBE")

    def fail(self):
        raise RuntimeError(f"boom from rank {self.rank}")


def test_local_group_is_one_process():
    g = WorkerGroup(DistProbe, 1, args=("x",), use_ray=False)
    assert g.call_rank0("endpoint")[1] > 0
    with pytest.raises(ValueError, match="world size must be 1"):
        WorkerGroup(DistProbe, 2, args=("x",), use_ray=False)


@pytest.mark.slow
def test_ray_group_two_gloo_ranks():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    g = WorkerGroup(DistProbe, 2, args=("t",), use_ray=True, device="cpu", env={"AGENT_RL_PROBE": "yes"})
    try:
        addr, port = g.call_rank0("endpoint")
        res = g.call_each("join", [(addr, port), (addr, port)])
        assert res == [("t", 0, 3.0, "yes"), ("t", 1, 3.0, "yes")]
        with pytest.raises(Exception, match="boom from rank"):
            g.call("fail")
    finally:
        g.shutdown()
