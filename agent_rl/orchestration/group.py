"""Placing the workers: one per GPU (or one per CPU rank) in a Ray placement group, or in-process.

`WorkerGroup(worker_cls, world_size, ...)` creates `world_size` instances of `worker_cls(rank,
world_size, *args)`:

- `use_ray=True`: Ray actors (`num_gpus=1` on GPU, `num_cpus=1` on CPU) in a placement group with one
  bundle per rank, `PACK` strategy (fills a node before the next one). `ray_address` joins an
  existing cluster (`ray start --head` / `ray start --address=...`, see docs/multinode.md); otherwise a
  local Ray instance is started, watched by a reaper process (reaper.py) that ends Ray's processes within a few
  seconds if the driver dies without `shutdown` (SIGKILL), and is stopped by `shutdown`. Rank 0 reports its node
  IP and a free port, which every worker uses as MASTER_ADDR / MASTER_PORT for torch.distributed.
- `use_ray=False`: one instance in this process (world size 1), for debugging with pdb.

`call(method, *args)` runs a method on every worker with the same arguments, `call_each(method,
per_rank_args)` with one argument tuple per rank; both return the results in rank order and
re-raise a worker's exception in the driver.
"""
from __future__ import annotations

import os
import socket
from typing import Any, Dict, List, Optional, Sequence, Tuple


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:
        return "127.0.0.1"


def master_endpoint() -> Tuple[str, int]:
    """(IP of this node, a free port on it): rank 0 answers this for the process group rendezvous."""
    return node_ip(), free_port()


def package_root() -> str:
    import agent_rl

    return os.path.dirname(os.path.dirname(os.path.abspath(agent_rl.__file__)))


def quiet_auth_env() -> Dict[str, str]:
    """RAY_AUTH_MODE=token when this process is about to start a new local Ray cluster and the user left it unset.

    Ray (2.60 here) turns token authentication on by default for a new local cluster and then warns on every start
    ("Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt out"); an explicit
    RAY_AUTH_MODE silences it. `token` is what Ray does anyway, so nothing changes but the warning. It goes into
    this process's environment (ray.init reads it here) and into the returned env for the workers. Left alone when
    ray.init will join an existing cluster (RAY_ADDRESS, a running local one): that cluster decides. Ray reads its
    config once at import, so the variable alone would leave this process in `disabled` mode while the cluster it
    starts requires tokens; it is re-read here exactly as Ray's own token set-up does (`_enable_token_auth`)."""
    if "RAY_AUTH_MODE" in os.environ:
        return {}
    try:
        from ray._private.services import canonicalize_bootstrap_address
        from ray._raylet import Config

        if canonicalize_bootstrap_address(None) is not None:   # ray.init() would connect, not start
            return {}
    except Exception:  # noqa: BLE001 - another Ray: keep its default (and its warning)
        return {}
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        Config.initialize("")   # Ray caches its config at import: re-read it, as Ray does when it enables token auth
    except Exception:  # noqa: BLE001
        del os.environ["RAY_AUTH_MODE"]
        return {}
    return {"RAY_AUTH_MODE": "token"}


class WorkerGroup:
    def __init__(self, worker_cls: type, world_size: int, args: Sequence[Any] = (), use_ray: bool = True,
                 device: str = "cpu", ray_address: Optional[str] = None, env: Optional[Dict[str, str]] = None,
                 name: str = "agent-rl"):
        self.world_size = world_size
        self.use_ray = use_ray
        self.device = device
        self._pg = None
        self._started_ray = False
        self._reaper = None    # watchdog that ends Ray's processes if this process dies (reaper.py)
        if not use_ray:
            if world_size != 1:
                raise ValueError(f"without Ray the trainer runs one process: world size must be 1, got {world_size} "
                                 "(set trainer.n_gpus_per_node=1 trainer.nnodes=1, or trainer.use_ray=true)")
            os.environ.update(env or {})
            self.workers = [worker_cls(0, 1, *args)]
            return
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        env = dict(env or {})
        root = package_root()
        env["PYTHONPATH"] = os.pathsep.join(p for p in [root, os.environ.get("PYTHONPATH", "")] if p)
        if not ray.is_initialized():
            if ray_address:
                ray.init(address=ray_address, runtime_env={"env_vars": env}, log_to_driver=True)
            else:
                # on CPU every rank takes one logical CPU, even on a machine with fewer cores
                num_cpus = max(world_size, os.cpu_count() or 1) if device == "cpu" else None
                env.update(quiet_auth_env())
                self._ray_init_local(ray, num_cpus=num_cpus, include_dashboard=False, runtime_env={"env_vars": env},
                                     log_to_driver=True)
            self._started_ray = True
        bundle = {"GPU": 1, "CPU": 1} if device == "cuda" else {"CPU": 1}
        self._pg = placement_group([dict(bundle) for _ in range(world_size)], strategy="PACK", name=f"{name}-pg")
        try:
            ray.get(self._pg.ready(), timeout=float(os.environ.get("AGENT_RL_PG_TIMEOUT_S", "600")))
        except Exception as e:
            total = ray.cluster_resources()
            raise RuntimeError(f"could not place {world_size} workers of {bundle} (cluster has {total}): {e}") from None
        remote_cls = ray.remote(worker_cls)
        opts = dict(num_gpus=1, num_cpus=1) if device == "cuda" else dict(num_cpus=1)
        self.workers = [
            remote_cls.options(
                **opts, runtime_env={"env_vars": env},
                scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=r),
            ).remote(r, world_size, *args)
            for r in range(world_size)
        ]

    def _ray_init_local(self, ray, **kwargs) -> None:
        """ray.init that starts (or joins) a local instance; when it started Ray's processes, a reaper (reaper.py) ends
        them if this process dies without `shutdown` (SIGKILL, os._exit). The processes are marked with a token
        (reaper.TOKEN_ENV, in the environment while ray.init starts them, inherited by the raylet's workers)."""
        from agent_rl.orchestration import reaper

        token = reaper.new_token()
        previous = os.environ.get(reaper.TOKEN_ENV)
        os.environ[reaper.TOKEN_ENV] = token
        try:
            ray.init(**kwargs)
        finally:
            if previous is None:
                os.environ.pop(reaper.TOKEN_ENV, None)
            else:
                os.environ[reaper.TOKEN_ENV] = previous
        try:
            node = ray._private.worker._global_node
            roots = [info.process.pid for infos in node.all_processes.values() for info in infos
                     if getattr(info, "process", None) is not None]   # none when ray.init joined a running cluster
            log_path = os.path.join(node.get_logs_dir_path(), "agent_rl_reaper.log")
            self._reaper = reaper.start(roots, token=token, log_path=log_path)
        except Exception as e:  # noqa: BLE001 - another Ray: the run goes on without the watchdog
            import logging

            logging.getLogger(__name__).warning("no reaper for Ray's processes: %s", e)

    # --------------------------------------------------------------- calls
    def call(self, method: str, *args, **kwargs) -> List[Any]:
        return self.call_each(method, [args] * self.world_size, kwargs)

    def call_each(self, method: str, per_rank_args: Sequence[Sequence[Any]], kwargs: Optional[Dict[str, Any]] = None) -> List[Any]:
        kwargs = kwargs or {}
        if len(per_rank_args) != self.world_size:
            raise ValueError(f"{method}: {len(per_rank_args)} argument sets for {self.world_size} workers")
        if not self.use_ray:
            return [getattr(w, method)(*a, **kwargs) for w, a in zip(self.workers, per_rank_args)]
        import ray

        refs = [getattr(w, method).remote(*a, **kwargs) for w, a in zip(self.workers, per_rank_args)]
        return ray.get(refs)

    def call_rank0(self, method: str, *args, **kwargs) -> Any:
        if not self.use_ray:
            return getattr(self.workers[0], method)(*args, **kwargs)
        import ray

        return ray.get(getattr(self.workers[0], method).remote(*args, **kwargs))

    def shutdown(self) -> None:
        if not self.use_ray:
            return
        import ray

        for w in self.workers:
            try:
                ray.kill(w)
            except Exception:
                pass
        self.workers = []
        if self._pg is not None:
            try:
                from ray.util.placement_group import remove_placement_group

                remove_placement_group(self._pg)
            except Exception:
                pass
            self._pg = None
        try:
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False
        finally:
            from agent_rl.orchestration import reaper

            reaper.stop(self._reaper)   # after ray.shutdown: a death during it is still cleaned up
            self._reaper = None
