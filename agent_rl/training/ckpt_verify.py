"""Checkpoint integrity: a manifest of every file (size + sha256), verification, free-space check.

`MANIFEST.json` (`{"version": 1, "files": {relpath: {"size": n, "sha256": hex}}}`) is written into the temporary
directory after every other file and before the `COMPLETE` marker and the rename into place. `verify_checkpoint`
checks every listed file (present, same size, same digest) and that the files a resume needs are listed.
A checkpoint without a manifest (written before checksums were stored) cannot be verified: it is accepted when its
files are present and structurally whole (JSON parses, the safetensors header matches the file size, `.pt` files
are whole zip archives) and reported as unverified.

Checkpoints verified by this process (after writing them, or on resume) are remembered (`is_verified`), keyed by
the manifest's inode and mtime, so that pruning can keep the newest one known to be good.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

MANIFEST = "MANIFEST.json"
_NOT_LISTED = {MANIFEST, "COMPLETE"}
log = logging.getLogger(__name__)
_verified: Dict[str, Tuple[int, int, int]] = {}  # realpath -> manifest (inode, mtime_ns, size)


class CheckpointError(RuntimeError):
    pass


class CheckpointSpaceError(CheckpointError):
    """Not enough free space for a checkpoint (raised before anything is written)."""


@dataclass
class Verdict:
    path: str
    ok: bool  # usable: every needed file present and (with a manifest) matching its digest
    verified: bool  # a manifest exists and every file matched it
    problems: List[str] = field(default_factory=list)  # "<relpath>: <what is wrong>"

    def summary(self, limit: int = 4) -> str:
        more = f"; ... {len(self.problems) - limit} more" if len(self.problems) > limit else ""
        return "; ".join(self.problems[:limit]) + more


# ---------------------------------------------------------------------------------------------- digests
def sha256_file(path: str, bufsize: int = 8 << 20) -> str:
    h = hashlib.sha256()
    buf = bytearray(bufsize)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
    return h.hexdigest()


def _listed_files(path: str) -> List[str]:
    out = []
    for d, _, files in os.walk(path):
        for name in files:
            rel = os.path.relpath(os.path.join(d, name), path)
            if rel not in _NOT_LISTED:
                out.append(rel)
    return sorted(out)


def _digests(path: str, rels: List[str]) -> Dict[str, str]:
    workers = max(1, min(4, os.cpu_count() or 1, len(rels)))
    with ThreadPoolExecutor(workers) as pool:  # hashlib releases the GIL on large buffers
        return dict(zip(rels, pool.map(lambda r: sha256_file(os.path.join(path, r)), rels)))


def write_manifest(path: str) -> Dict[str, dict]:
    """Digest every file under `path` (read back from disk) into `path`/MANIFEST.json (fsynced)."""
    rels = _listed_files(path)
    digests = _digests(path, rels)
    files = {r: {"size": os.path.getsize(os.path.join(path, r)), "sha256": digests[r]} for r in rels}
    target = os.path.join(path, MANIFEST)
    with open(target, "w") as f:
        json.dump({"version": 1, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    return files


# ---------------------------------------------------------------------------------------------- verification
def _signature(path: str) -> Optional[Tuple[int, int, int]]:
    try:
        st = os.stat(os.path.join(path, MANIFEST))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def mark_verified(path: str) -> None:
    sig = _signature(path)
    if sig is not None:
        _verified[os.path.realpath(path)] = sig


def is_verified(path: str) -> bool:
    """This process verified the checkpoint at `path` (and its manifest has not been replaced since)."""
    sig = _verified.get(os.path.realpath(path))
    return sig is not None and sig == _signature(path)


def _required(path: str, problems: List[str]) -> List[str]:
    """Relative paths a resume needs (optimizer shards from meta.json's world size)."""
    need = ["meta.json", "extra_state.json", "hf/config.json"]
    merged = True
    try:
        with open(os.path.join(path, "meta.json")) as f:
            meta = json.load(f)
        world = int(meta["world_size"])
        need += [f"optim/rank_{r:05d}.pt" for r in range(world)]
        lora = meta.get("lora")  # a LoRA actor: the adapter; the merged hf/ weights unless save_merged was off
        if lora:
            need += ["adapter/adapter_config.json", "adapter/adapter_model.safetensors"]
        merged = not lora or bool(lora.get("save_merged", True))
    except FileNotFoundError:
        pass  # reported as missing below
    except (OSError, ValueError, KeyError, TypeError) as e:
        problems.append(f"meta.json: unreadable ({type(e).__name__}: {e})")
    if merged:
        need.insert(2, "hf/model.safetensors")
    return need


def _check_safetensors(file: str) -> Optional[str]:
    size = os.path.getsize(file)
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                return f"truncated ({size} bytes, header needs {n + 8})"
            header = json.loads(f.read(n))
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"] or [0])
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        return f"unreadable safetensors header ({type(e).__name__})"
    if size != 8 + n + end:
        return f"{'truncated' if size < 8 + n + end else 'wrong size'} ({size} bytes, header says {8 + n + end})"
    return None


def _check_structure(path: str, rel: str) -> Optional[str]:
    file = os.path.join(path, rel)
    try:
        if rel.endswith(".json"):
            with open(file) as f:
                json.load(f)
        elif rel.endswith(".safetensors"):
            return _check_safetensors(file)
        elif rel.endswith(".pt"):
            with zipfile.ZipFile(file) as z:
                if not z.namelist():
                    return "empty archive"
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        return f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return None


def verify_checkpoint(path: str, digests: bool = True) -> Verdict:
    """Is the checkpoint at `path` whole? With `digests=False` only presence and sizes are checked."""
    problems: List[str] = []
    need = _required(path, problems)
    mpath = os.path.join(path, MANIFEST)
    if not os.path.isfile(mpath):  # written before manifests: presence and structure only
        for rel in need + sorted(f"rng/{n}" for n in _ls(os.path.join(path, "rng"))):
            if not os.path.isfile(os.path.join(path, rel)):
                problems.append(f"{rel}: missing")
            elif digests:
                bad = _check_structure(path, rel)
                if bad:
                    problems.append(f"{rel}: {bad}")
        return Verdict(path, not problems, False, problems)
    try:
        with open(mpath) as f:
            files = json.load(f)["files"]
        listed = {str(r): (int(e["size"]), str(e["sha256"])) for r, e in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        return Verdict(path, False, False, problems + [f"{MANIFEST}: unreadable ({type(e).__name__})"])
    problems += [f"{rel}: not in {MANIFEST}" for rel in need if rel not in listed]
    present = []
    for rel, (size, _) in sorted(listed.items()):
        file = os.path.join(path, rel)
        if not os.path.isfile(file):
            problems.append(f"{rel}: missing")
        elif os.path.getsize(file) != size:
            actual = os.path.getsize(file)
            problems.append(f"{rel}: {'truncated' if actual < size else 'wrong size'} ({actual} bytes, "
                            f"{size} when saved)")
        else:
            present.append(rel)
    if digests and present:
        got = _digests(path, present)
        problems += [f"{rel}: sha256 mismatch (contents changed since the save)"
                     for rel in present if got[rel] != listed[rel][1]]
    ok = not problems
    if ok and digests:
        mark_verified(path)
    return Verdict(path, ok, ok and digests, problems)


def _ls(path: str) -> List[str]:
    try:
        return [n for n in os.listdir(path) if n.endswith(".pt")]
    except OSError:
        return []


# ---------------------------------------------------------------------------------------------- free space
def dir_bytes(path: str) -> int:
    total = 0
    for d, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(d, name))
            except OSError:
                pass
    return total


def _fmt(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def check_free_space(root: str, needed: int, what: str) -> None:
    """Raise CheckpointSpaceError (one line) when the filesystem of `root` has less than `needed` bytes free."""
    free = shutil.disk_usage(root).free
    if free < needed:
        raise CheckpointSpaceError(f"not enough disk space for {what}: needs about {_fmt(needed)}, "
                                       f"{_fmt(free)} free on {root}")


def state_bytes(model, optimizer) -> int:
    """Bytes of the model's full state dict plus the optimizer's state (global sizes of sharded tensors)."""
    def size(t) -> int:
        return t.numel() * t.element_size() if hasattr(t, "numel") and hasattr(t, "element_size") else 0

    n = sum(size(v) for v in model.state_dict().values())
    for st in getattr(optimizer, "state", {}).values():
        n += sum(size(v) for v in st.values())
    return n


def first_good(candidates: List[str], root: str, warn) -> str:
    """The first of `candidates` that verifies; a warning for each one that fails (naming its files) and for an
    unverifiable one (no manifest); CheckpointError when none verifies."""
    failed = []
    for path in candidates:
        verdict = verify_checkpoint(path)
        if not verdict.ok:
            failed.append(f"{path} ({verdict.summary()})")
            warn(f"checkpoint {path} failed verification: {verdict.summary()}")
            continue
        if failed:
            warn(f"resuming from {path} instead of {len(failed)} newer checkpoint(s) that failed verification")
        if not verdict.verified:
            warn(f"checkpoint {path} has no {MANIFEST} (saved before checksums were stored): its files were "
                 "checked for presence and structure only, not verified")
        return path
    raise CheckpointError(f"no checkpoint under {root} verifies: {'; '.join(failed)}")


def spare_newest_verified(kept: List[str], doomed: List[str]) -> List[str]:
    """`doomed` (oldest first) less the newest one that verifies when none of `kept` is verified-good."""
    if not doomed or any(is_verified(p) for p in kept) or any(verify_checkpoint(p).verified for p in reversed(kept)):
        return doomed
    for path in reversed(doomed):
        if verify_checkpoint(path).verified:
            log.warning("keeping %s: no newer checkpoint is verified", path)
            return [p for p in doomed if p != path]
    return doomed
