"""torch.distributed helpers. Everything here also works without an initialised process group
(single process: world size 1, the collectives are identities)."""
from __future__ import annotations

import datetime
import os
from typing import Optional, Tuple

import torch
import torch.distributed as dist


def init_distributed(backend: Optional[str] = None, timeout_s: float = 1800.0) -> Tuple[int, int]:
    """Join the process group described by RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT (and
    LOCAL_RANK for the CUDA device). backend: gloo on CPU, nccl on CUDA when None. Returns (rank, world).
    Idempotent; a no-op returning (0, 1) when WORLD_SIZE is unset."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "WORLD_SIZE" not in os.environ:
        return 0, 1
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    for key in ("MASTER_ADDR", "MASTER_PORT"):
        if key not in os.environ:
            raise RuntimeError(f"init_distributed: {key} is not set")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank % max(torch.cuda.device_count(), 1))))
    dist.init_process_group(backend=backend, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return rank, world


def close_distributed() -> None:
    """Leave the process group (a no-op without one). A process that exits while still in it can die in gloo's
    threads at exit ("terminate called without an active exception")."""
    if is_dist():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def collective_device() -> torch.device:
    if is_dist() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(x: float | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=torch.float64).clone().to(collective_device())
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu()


def all_reduce_max_int(x: int) -> int:
    t = torch.tensor([int(x)], dtype=torch.int64, device=collective_device())
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def barrier() -> None:
    if is_dist():
        dist.barrier()


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def reshard_all(module: torch.nn.Module) -> None:
    """Reshard every FSDP2 unit of `module`. The root unit stays unsharded after a forward (FSDP expects
    the backward next); after a forward-only pass its unsharded parameters would go stale once the
    optimizer updates the shards, so every no-grad pass and every read of the weights reshards first."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return
    for m in module.modules():
        if isinstance(m, FSDPModule):
            m.reshard()
