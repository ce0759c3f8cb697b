"""Crash-safe checkpoints.

Layout of `<root>/global_step_<N>/`:
    hf/                       HF model folder (model.safetensors fp32, config, tokenizer, chat template)
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
from agent_rl.training.ckpt_verify import CheckpointError, CheckpointSpaceError  # noqa: F401 - re-exported

STEP_RE = re.compile(r"^global_step_(\d+)$")
MARKER = "COMPLETE"
POINTER = "latest"
log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- files
def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: str) -> None:
    for d, _, files in os.walk(root):
        for f in files:
            _fsync_file(os.path.join(d, f))
        _fsync_dir(d)


def _write_text_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_dir(os.path.dirname(path) or ".")


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


def _remove_dir(path: str) -> None:
    """Rename first so a half-deleted directory never looks like a checkpoint."""
    trash = os.path.join(os.path.dirname(path), f".trash-{os.path.basename(path)}-{os.getpid()}-{time.time_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


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
        _remove_dir(path)
    return doomed


def _clean_stale(root: str) -> None:
    for name in os.listdir(root):
        if name.startswith(".tmp-") or name.startswith(".trash-") or name.startswith(POINTER + ".tmp."):
            p = os.path.join(root, name)
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


# ---------------------------------------------------------------------------------------------- state
def full_model_state_dict(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Unsharded fp32 CPU state dict (a collective under FSDP; every rank gets the full dict)."""
    D.reshard_all(model)
    if D.is_dist():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().cpu() for k, v in sd.items()}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def hf_tensors(model: torch.nn.Module, sd: Dict[str, torch.Tensor], dtype: Optional[torch.dtype] = None
               ) -> Dict[str, torch.Tensor]:
    """What goes into model.safetensors: contiguous copies (cast to `dtype`), lm_head dropped when tied to the
    embedding."""
    out = {}
    for k, v in sd.items():
        if k == "lm_head.weight" and tied_embeddings(model):
            continue
        out[k] = v.to(dtype or v.dtype, copy=True).contiguous()
    return out


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


def tied_embeddings(model: torch.nn.Module) -> bool:
    """The model ties its output layer to its input embeddings (`lm_head.weight` is not a tensor of its own)."""
    cfg = getattr(model, "config", None)
    tied = getattr(cfg, "tie_word_embeddings", False)
    get_text = getattr(cfg, "get_text_config", None)
    if not tied and callable(get_text):
        tied = getattr(get_text(), "tie_word_embeddings", False)
    return bool(tied)


# ---------------------------------------------------------------------------------------------- HF folder
def write_hf_folder(model: torch.nn.Module, sd: Dict[str, torch.Tensor], tokenizer, path: str,
                    dtype: Optional[torch.dtype] = None) -> int:
    """`path`/model.safetensors (the full state dict `sd`, cast to `dtype`), config, generation config and
    tokenizer (when given). Returns the bytes of the tensors written."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    tensors = hf_tensors(model, sd, dtype)
    save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(path)
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        try:
            gen.save_pretrained(path)
        except Exception:  # noqa: BLE001 - an invalid generation config must not block the checkpoint
            pass
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_hf_model(model: torch.nn.Module, tokenizer, path: str, dtype: Optional[torch.dtype] = None) -> int:
    """Replace the HF folder at `path` with the model's current weights (every rank calls this: gathering is a
    collective; rank 0 writes `<path>.tmp`, then renames it into place and removes the previous folder).
    Returns the bytes of the tensors written (0 on other ranks)."""
    sd = full_model_state_dict(model)  # collective
    nbytes = 0
    if D.get_rank() == 0:
        tmp = path.rstrip(os.sep) + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # leftover of an interrupted write
        nbytes = write_hf_folder(model, sd, tokenizer, tmp, dtype)
        _fsync_tree(tmp)
        if os.path.exists(path):
            _remove_dir(path)
        os.rename(tmp, path)
        _fsync_dir(os.path.dirname(path))
    del sd
    D.barrier()
    return nbytes


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
        sd = full_model_state_dict(model)  # collective
        if rank == 0:
            write_hf_folder(model, sd, tokenizer, os.path.join(tmp, "hf"))
            with open(os.path.join(tmp, "extra_state.json"), "w") as f:
                json.dump(extra_state or {}, f, indent=1)
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump({"step": int(step), "world_size": world, "time": time.time()}, f)
        del sd
        sched = getattr(actor, "scheduler", None)
        _torch_save({"optimizer": optimizer_state(actor.optimizer), "scheduler": sched.state_dict() if sched else None,
                     "world_size": world}, os.path.join(tmp, "optim", f"rank_{rank:05d}.pt"))
        _torch_save(rng_state(), os.path.join(tmp, "rng", f"rank_{rank:05d}.pt"))
        D.barrier()
        if rank == 0:
            _fsync_tree(tmp)
            V.write_manifest(tmp)  # digests of the files read back from disk
            verdict = V.verify_checkpoint(tmp, digests=False)
            if not verdict.ok:
                raise CheckpointError(f"checkpoint {final} was not written whole: {verdict.summary()}")
            with open(os.path.join(tmp, MARKER), "w") as f:
                f.write(str(step))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(tmp)
            if os.path.exists(final):  # saving a step again (e.g. after resuming from an earlier one)
                _remove_dir(final)
            os.rename(tmp, final)
            _fsync_dir(root)
            V.mark_verified(final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # a partial checkpoint must not fill the disk
        if isinstance(e, OSError) and not isinstance(e, CheckpointError):
            raise CheckpointError(f"saving checkpoint {final} failed ({tmp} removed): "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
        raise
    if rank == 0:
        _write_text_atomic(os.path.join(root, POINTER), step_dir_name(step))
        if max_to_keep:
            prune_checkpoints(root, max_to_keep)
    D.barrier()
    return final


def load_model_weights(model: torch.nn.Module, hf_dir: str) -> None:
    from safetensors.torch import load_file

    file = os.path.join(hf_dir, "model.safetensors")
    try:
        sd = load_file(file)
    except Exception as e:  # noqa: BLE001 - safetensors' errors do not name the file
        raise CheckpointError(f"{file}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                              ) from None
    if tied_embeddings(model):
        sd.pop("lm_head.weight", None)
    params = dict(model.named_parameters())  # deduplicated: a tied lm_head is the embedding
    params.update({n: b for n, b in model.named_buffers() if n in sd})
    missing = set(params) - set(sd)
    unexpected = set(sd) - set(params)
    if missing or unexpected:
        raise RuntimeError(f"checkpoint {hf_dir} does not match the model: missing {sorted(missing)[:5]}, "
                           f"unexpected {sorted(unexpected)[:5]}")
    D.reshard_all(model)
    with torch.no_grad():
        for name, p in params.items():
            _copy_full_into(p, sd[name])


def _copy_full_into(p: torch.Tensor, full: torch.Tensor) -> None:
    """Copy a full tensor into a parameter, or into this rank's shard of a DTensor parameter."""
    if hasattr(p, "to_local"):
        from torch.distributed.tensor import distribute_tensor

        local = p.to_local()
        src = full.to(device=local.device, dtype=local.dtype)
        try:  # every rank holds the full tensor: shard it locally, no communication
            shard = distribute_tensor(src, p.device_mesh, p.placements, src_data_rank=None)
        except TypeError:  # older torch without src_data_rank
            shard = distribute_tensor(src, p.device_mesh, p.placements)
        local.copy_(shard.to_local())
    else:
        p.copy_(full.to(device=p.device, dtype=p.dtype))


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
    load_model_weights(actor.model, os.path.join(path, "hf"))
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
