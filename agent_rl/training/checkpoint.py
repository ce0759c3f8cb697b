"""Crash-safe checkpoints.

Layout of `<root>/global_step_<N>/`:
    hf/                       HF model folder (model.safetensors fp32, config, tokenizer, chat template); with a
                              LoRA actor the merged weights (`actor.lora.save_merged`, else config + tokenizer only)
    adapter/                  LoRA actor only: adapter_config.json + adapter_model.safetensors (peft's layout)
    optim/rank_<r>.pt         optimizer + lr-scheduler state of rank r (its FSDP shard)
    rng/rank_<r>.pt           python / numpy / torch / cuda RNG states of rank r (tensors, ints, strs, lists)
    extra_state.json          the caller's state (step, dataloader position, trainer state)
    meta.json                 step, world size
    MANIFEST.json             size and sha256 of every file above (ckpt_verify.py)
    COMPLETE                  written last, before the directory is renamed into place
and `<root>/latest` holds the name of the newest checkpoint.

A save is written to `<root>/.tmp-global_step_<N>`, renamed into place (atomic), and then the
`latest` pointer is replaced atomically. Killing the process at any moment leaves either the old or
the new checkpoint complete; `find_latest_checkpoint` ignores temporary and incomplete directories.
Ranks must share the filesystem of `root`. A save checks the free space first (fails in one line) and removes its
temporary directory when anything fails. The manifest is computed from the files read back from disk and checked
(every file present at its size) before the rename, so a checkpoint this process wrote counts as verified;
`find_resumable_checkpoint` verifies before resuming and falls back to the newest checkpoint that verifies;
pruning never removes the newest verified-good checkpoint.

`optim/` and `rng/` files are read with `torch.load(weights_only=True)`: tensors and plain Python values
only, so a tampered file is refused (`CheckpointError`), never executed. RNG files written before this
format hold numpy's state as an array: the three numpy types it needs are allow-listed for `rng/` alone.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from agent_rl.training import ckpt_verify as V
from agent_rl.training import dist as D
from agent_rl.training import lora as L
from agent_rl.training.ckpt_verify import CheckpointError, CheckpointSpaceError  # noqa: F401 - re-exported for callers
from agent_rl.training.hf_folder import (fsync_dir, fsync_tree, full_model_state_dict, load_model_weights,
                                         remove_dir, write_hf_folder, write_text_atomic)

STEP_RE = re.compile(r"^global_step_(\d+)$")
MARKER = "COMPLETE"
POINTER = "latest"
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- files


def _torch_save(obj: Any, path: str) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def step_dir_name(step: int) -> str:
    return f"global_step_{int(step)}"


def is_complete(path: str) -> bool:
    return (os.path.isfile(os.path.join(path, MARKER)) and os.path.isfile(os.path.join(path, "meta.json"))
            and os.path.isdir(os.path.join(path, "hf")))


def list_checkpoints(root: str) -> List[tuple]:
    """[(step, path)] of complete checkpoints, ascending by step."""
    if not os.path.isdir(root):
        return []
    out = []
    for name in os.listdir(root):
        m = STEP_RE.match(name)
        path = os.path.join(root, name)
        if m and is_complete(path):
            out.append((int(m.group(1)), path))
    return sorted(out)


def find_latest_checkpoint(root: str) -> Optional[str]:
    """The checkpoint the `latest` pointer names when it is complete, else the complete one with the
    highest step, else None."""
    ptr = os.path.join(root, POINTER)
    if os.path.isfile(ptr):
        try:
            name = open(ptr).read().strip()
        except OSError:
            name = ""
        path = os.path.join(root, name)
        if STEP_RE.match(name) and is_complete(path):
            return path
    found = list_checkpoints(root)
    return found[-1][1] if found else None


def find_resumable_checkpoint(root: str, warn=log.warning) -> Optional[str]:
    """The checkpoint to resume from: the one `find_latest_checkpoint` names when it verifies (every file present,
    same size and sha256 as saved), else the newest complete one that verifies, with a warning (`warn`) naming the
    failed checkpoints and files. None when there is no complete checkpoint; CheckpointError when none verifies."""
    latest = find_latest_checkpoint(root)
    if latest is None:
        return None
    return V.first_good([latest] + [p for _, p in reversed(list_checkpoints(root)) if p != latest], root, warn)


def prune_checkpoints(root: str, keep: int) -> List[str]:
    """Delete the oldest complete checkpoints beyond the newest `keep`: never the one `latest` names, and never the
    newest verified-good one when none of those kept is verified (by this process, or here)."""
    if not keep or keep <= 0:
        return []
    latest = find_latest_checkpoint(root)
    found = [p for _, p in list_checkpoints(root)]
    doomed = [p for p in found[:-keep] if p != latest] if len(found) > keep else []
    kept = [p for p in found if p not in doomed]
    doomed = V.spare_newest_verified(kept, doomed)
    for path in doomed:
        remove_dir(path)
    return doomed


def _clean_stale(root: str) -> None:
    for name in os.listdir(root):
        if name.startswith(".tmp-") or name.startswith(".trash-") or name.startswith(POINTER + ".tmp."):
            p = os.path.join(root, name)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


# ---------------------------------------------------------------------------------------------- state


def _local(obj):
    if isinstance(obj, torch.Tensor):
        if hasattr(obj, "to_local"):
            obj = obj.to_local()
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _local(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_local(v) for v in obj)
    return obj


def optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """This rank's optimizer state with DTensor shards turned into plain local CPU tensors."""
    return _local(optimizer.state_dict())


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of optimizer_state: local shards are wrapped back into DTensors like their parameters."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    new_state = {}
    for idx, st in state["state"].items():
        p = params[int(idx)]
        entry = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor) and hasattr(p, "to_local") and v.dim() > 0:
                from torch.distributed.tensor import DTensor

                local = p.to_local()
                v = DTensor.from_local(v.to(device=local.device, dtype=local.dtype), p.device_mesh, p.placements,
                                       run_check=False, shape=p.shape, stride=p.stride())
            entry[k] = v
        new_state[idx] = entry
    optimizer.load_state_dict({"state": new_state, "param_groups": state["param_groups"]})


def rng_state() -> dict:
    """Python, numpy, torch and cuda RNG states in types `torch.load(weights_only=True)` accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"python": random.getstate(), "torch": torch.get_rng_state(),
          "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    random.setstate(st["python"])
    torch.set_rng_state(st["torch"])
    name, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _legacy_numpy_globals() -> list:
    """What an RNG file of the previous format (numpy state as an ndarray) needs beyond plain types."""
    reconstruct = np.empty(0).__reduce__()[0]  # numpy.core (1.x) / numpy._core (2.x) .multiarray._reconstruct
    return [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def _load_state(path: str, allow: Sequence = ()) -> Any:
    """torch.load with weights_only=True (plus the `allow` globals); a refused file is a one-line CheckpointError."""
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]  # torch's 2nd line names the refused global
        raise CheckpointError(f"{path}: refused to load (only tensors and plain Python values are accepted): "
                              f"{lines[1] if len(lines) > 1 else str(e)}") from None
    except (RuntimeError, OSError, EOFError) as e:  # a truncated or damaged archive
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})") from None


# ---------------------------------------------------------------------------------------------- HF folder


# ---------------------------------------------------------------------------------------------- LoRA
ADAPTER_DIR = "adapter"


def _lora_meta(actor) -> Optional[Dict[str, Any]]:
    """What meta.json records of a LoRA actor (None without one)."""
    if not L.is_peft(actor.model):
        return None
    cfg = getattr(getattr(actor, "cfg", None), "lora", None)
    pc = actor.model.peft_config[L.ADAPTER]
    return {"rank": int(pc.r), "alpha": float(pc.lora_alpha), "save_merged": bool(getattr(cfg, "save_merged", True))}


def load_model_from_checkpoint(model: torch.nn.Module, path: str, meta: Optional[Dict[str, Any]] = None) -> None:
    """The trained weights of checkpoint `path` into `model`: the adapter (`adapter/`) into a LoRA model, else the HF
    folder. A LoRA checkpoint and a full model (or the reverse) do not mix: one-line CheckpointError."""
    meta = _read_json(os.path.join(path, "meta.json")) if meta is None else meta
    if L.is_peft(model):
        if "lora" not in meta:
            raise CheckpointError(f"{path} was saved without LoRA: it cannot resume an actor.lora.rank > 0 run "
                                  "(start afresh, or resume with actor.lora.rank=0)")
        L.load_adapter(model, os.path.join(path, ADAPTER_DIR))
    else:
        if "lora" in meta:
            raise CheckpointError(f"{path} was saved by a LoRA actor (rank {meta['lora'].get('rank')}): resume it with "
                                  f"actor.lora.rank={meta['lora'].get('rank')}, or load its merged hf/ folder as model.path")
        load_model_weights(model, os.path.join(path, "hf"))


# ---------------------------------------------------------------------------------------------- save / load
def _needed_bytes(root: str, actor) -> int:
    """Free space a save needs: the size of the newest complete checkpoint, else the model + optimizer state."""
    found = list_checkpoints(root)
    prev = V.dir_bytes(found[-1][1]) if found else 0
    return prev or V.state_bytes(actor.model, actor.optimizer) + (8 << 20)


def save_checkpoint(root: str, step: int, actor, tokenizer, extra_state: Optional[Dict[str, Any]] = None,
                    max_to_keep: Optional[int] = None) -> str:
    """Write `<root>/global_step_<step>` (every rank calls this). Returns its path. Fails before writing anything
    (CheckpointSpaceError) when the disk lacks the space; removes the temporary directory when anything fails."""
    rank, world = D.get_rank(), D.get_world_size()
    model = actor.model
    final = os.path.join(root, step_dir_name(step))
    tmp = os.path.join(root, ".tmp-" + step_dir_name(step))
    if rank == 0:
        os.makedirs(root, exist_ok=True)
        _clean_stale(root)
    D.barrier()
    V.check_free_space(root, _needed_bytes(root, actor), f"checkpoint {final}")  # every rank: no one waits alone
    try:
        if rank == 0:
            for sub in ("hf", "optim", "rng"):
                os.makedirs(os.path.join(tmp, sub), exist_ok=True)
        D.barrier()
        lora = _lora_meta(actor)
        sd = full_model_state_dict(model) if lora is None or lora["save_merged"] else None  # collective
        adapter = L.adapter_state_dict(model) if lora is not None else None  # collective
        if rank == 0:
            write_hf_folder(model, sd, tokenizer, os.path.join(tmp, "hf"))
            if adapter is not None:
                L.write_adapter(model, adapter, os.path.join(tmp, ADAPTER_DIR))
            with open(os.path.join(tmp, "extra_state.json"), "w") as f:
                json.dump(extra_state or {}, f, indent=1)
            meta = {"step": int(step), "world_size": world, "time": time.time()}
            if lora is not None:
                meta["lora"] = lora
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f)
        del sd, adapter
        sched = getattr(actor, "scheduler", None)
        _torch_save({"optimizer": optimizer_state(actor.optimizer), "scheduler": sched.state_dict() if sched else None,
                     "world_size": world}, os.path.join(tmp, "optim", f"rank_{rank:05d}.pt"))
        _torch_save(rng_state(), os.path.join(tmp, "rng", f"rank_{rank:05d}.pt"))
        D.barrier()
        if rank == 0:
            fsync_tree(tmp)
            V.write_manifest(tmp)  # digests of the files read back from disk
            verdict = V.verify_checkpoint(tmp, digests=False)
            if not verdict.ok:
                raise CheckpointError(f"checkpoint {final} was not written whole: {verdict.summary()}")
            with open(os.path.join(tmp, MARKER), "w") as f:
                f.write(str(step))
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(tmp)
            if os.path.exists(final):  # saving a step again (e.g. after resuming from an earlier one)
                remove_dir(final)
            os.rename(tmp, final)
            fsync_dir(root)
            V.mark_verified(final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint must not fill the disk
        if isinstance(e, OSError) and not isinstance(e, CheckpointError):
            raise CheckpointError(f"saving checkpoint {final} failed ({tmp} removed): "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        raise
    if rank == 0:
        write_text_atomic(os.path.join(root, POINTER), step_dir_name(step))
        if max_to_keep:
            prune_checkpoints(root, max_to_keep)
    D.barrier()
    return final


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None


def load_checkpoint(path: str, actor, load_optimizer: bool = True, load_rng: bool = True,
                    verify: str = "size") -> Dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG of this rank from `path`; return the extra state. `verify`:
    "size" (every file of the manifest present with its size; the default), "digest" (and its sha256), "none"."""
    if not is_complete(path):
        raise FileNotFoundError(f"not a complete checkpoint: {path}")
    if verify != "none":
        verdict = V.verify_checkpoint(path, digests=verify == "digest")
        if not verdict.ok:
            raise CheckpointError(f"checkpoint {path} is damaged: {verdict.summary()}")
    rank, world = D.get_rank(), D.get_world_size()
    meta = _read_json(os.path.join(path, "meta.json"))
    load_model_from_checkpoint(actor.model, path, meta)
    if load_optimizer:
        if meta["world_size"] != world:
            raise RuntimeError(f"{path} was saved by {meta['world_size']} ranks; this run has {world} "
                               "(optimizer shards are per rank). Load with load_optimizer=False to keep only the weights.")
        st = _load_state(os.path.join(path, "optim", f"rank_{rank:05d}.pt"))
        load_optimizer_state(actor.optimizer, st["optimizer"])
        sched = getattr(actor, "scheduler", None)
        if sched is not None and st.get("scheduler") is not None:
            sched.load_state_dict(st["scheduler"])
    if load_rng:
        rng_path = os.path.join(path, "rng", f"rank_{rank:05d}.pt")
        if os.path.isfile(rng_path):
            set_rng_state(_load_state(rng_path, allow=_legacy_numpy_globals()))
    D.barrier()
    return _read_json(os.path.join(path, "extra_state.json"))
