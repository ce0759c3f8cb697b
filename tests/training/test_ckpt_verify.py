"""Checkpoint integrity (issue 19, items 1-3): checksums verified on resume with fallback, completeness checked up
front naming the file, pruning that keeps a verified-good checkpoint, and saves that fail cleanly on a full disk."""
import errno
import json
import os
import shutil

import pytest
import torch

from conftest import make_batch, make_cfgs
from agent_rl.training import checkpoint as C
from agent_rl.training import ckpt_verify as V
from agent_rl.training.actor import Actor


def _actor(path):
    model, actor_cfg, algo, _ = make_cfgs(path)
    return Actor(model, actor_cfg, algo, device=torch.device("cpu"))


@pytest.fixture
def saved(tiny_model_path, tmp_path):
    """A root with global_step_1 and global_step_2 (latest), both saved by this process."""
    a = _actor(tiny_model_path)
    a.update(make_batch(B=2, L=10))
    root = str(tmp_path / "ckpt")
    p1 = C.save_checkpoint(root, 1, a, None, {"step": 1})
    a.update(make_batch(B=2, L=10))
    p2 = C.save_checkpoint(root, 2, a, None, {"step": 2})
    return a, root, p1, p2


def _corrupt_inside(file, n=4096):
    """Random bytes in the middle of the file; the size stays the same."""
    size = os.path.getsize(file)
    with open(file, "r+b") as f:
        f.seek(size // 2)
        f.write(os.urandom(min(n, size - size // 2)))
    assert os.path.getsize(file) == size


def _truncate(file, keep=0.5):
    with open(file, "r+b") as f:
        f.truncate(int(os.path.getsize(file) * keep))


def _resume(root):
    warnings = []
    V._verified.clear()  # a new process: nothing verified yet
    return C.find_resumable_checkpoint(root, warn=warnings.append), " | ".join(warnings)


# ---------------------------------------------------------------------------------------------- item 1
def test_manifest_lists_every_file_with_size_and_sha256(saved):
    _, _, _, p2 = saved
    files = json.load(open(os.path.join(p2, "MANIFEST.json")))["files"]
    for rel in ("meta.json", "extra_state.json", "hf/model.safetensors", "hf/config.json", "optim/rank_00000.pt",
                "rng/rank_00000.pt"):
        assert files[rel]["size"] == os.path.getsize(os.path.join(p2, rel))
        assert files[rel]["sha256"] == V.sha256_file(os.path.join(p2, rel))
    assert V.verify_checkpoint(p2).verified


def test_corrupt_bytes_same_size_fall_back_with_warning(saved, tiny_model_path):
    _, root, p1, p2 = saved
    _corrupt_inside(os.path.join(p2, "hf", "model.safetensors"))
    assert C.find_latest_checkpoint(root) == p2  # complete, but its contents changed
    path, warned = _resume(root)
    assert path == p1
    assert "global_step_2" in warned and "hf/model.safetensors: sha256 mismatch" in warned
    with pytest.raises(C.CheckpointError, match="hf/model.safetensors"):
        C.load_checkpoint(p2, _actor(tiny_model_path), verify="digest")
    assert C.load_checkpoint(p1, _actor(tiny_model_path), verify="digest") == {"step": 1}


def test_corrupt_latest_then_training_on_keeps_a_good_checkpoint(saved):
    """The issue's run: max_ckpt_to_keep=2, latest corrupted, resume, save the next steps."""
    a, root, p1, p2 = saved
    _corrupt_inside(os.path.join(p2, "optim", "rank_00000.pt"))
    path, _ = _resume(root)
    assert path == p1
    C.load_checkpoint(path, a)
    for step in (2, 3):
        C.save_checkpoint(root, step, a, None, {"step": step}, max_to_keep=2)
    names = sorted(n for n in os.listdir(root) if n.startswith("global_step_"))
    assert names == ["global_step_2", "global_step_3"]
    V._verified.clear()
    assert all(V.verify_checkpoint(os.path.join(root, n)).verified for n in names)


@pytest.mark.parametrize("newer", ["corrupt", "no_manifest"])
def test_prune_never_removes_last_verified_good_for_unverified_newer(saved, newer):
    a, root, p1, p2 = saved
    p3 = C.save_checkpoint(root, 3, a, None, {"step": 3})
    for p in (p2, p3):  # two newer checkpoints that cannot be verified
        if newer == "corrupt":
            _corrupt_inside(os.path.join(p, "hf", "model.safetensors"))
        else:
            os.remove(os.path.join(p, "MANIFEST.json"))
    V._verified.clear()
    assert C.prune_checkpoints(root, 2) == []
    assert os.path.isdir(p1)
    # once a newer one is verified-good, the old one goes as usual
    C.save_checkpoint(root, 4, a, None, {"step": 4}, max_to_keep=2)
    assert sorted(n for n in os.listdir(root) if n.startswith("global_step_")) == ["global_step_3", "global_step_4"]


def test_no_checkpoint_verifies_is_one_error_naming_the_files(saved):
    _, root, p1, p2 = saved
    _corrupt_inside(os.path.join(p1, "hf", "model.safetensors"))
    _truncate(os.path.join(p2, "optim", "rank_00000.pt"))
    with pytest.raises(C.CheckpointError) as e:
        _resume(root)
    msg = str(e.value)
    assert "\n" not in msg and "global_step_1 (hf/model.safetensors: sha256 mismatch" in msg
    assert "global_step_2 (optim/rank_00000.pt: truncated" in msg


# ---------------------------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("rel,what", [("hf/model.safetensors", "truncated"), ("optim/rank_00000.pt", "truncated"),
                                      ("rng/rank_00000.pt", "truncated"), ("extra_state.json", "missing")])
def test_incomplete_checkpoint_named_up_front_and_skipped(saved, tiny_model_path, rel, what):
    _, root, p1, p2 = saved
    if what == "missing":
        os.remove(os.path.join(p2, rel))
    else:
        _truncate(os.path.join(p2, rel))
    path, warned = _resume(root)
    assert path == p1 and f"{rel}: {what}" in warned and "global_step_2" in warned
    b = _actor(tiny_model_path)
    before = {n: p.detach().clone() for n, p in b.model.named_parameters()}
    with pytest.raises(C.CheckpointError) as e:  # the default (size) check, before anything is loaded
        C.load_checkpoint(p2, b)
    assert rel in str(e.value) and "\n" not in str(e.value)
    assert all(torch.equal(before[n], p) for n, p in b.model.named_parameters())


def test_checkpoint_without_manifest_is_accepted_with_a_warning(saved, tiny_model_path):
    _, root, p1, p2 = saved
    os.remove(os.path.join(p2, "MANIFEST.json"))  # saved before manifests existed
    path, warned = _resume(root)
    assert path == p2 and "no MANIFEST.json" in warned and "not verified" in warned
    assert C.load_checkpoint(p2, _actor(tiny_model_path)) == {"step": 2}


@pytest.mark.parametrize("rel", ["hf/model.safetensors", "optim/rank_00000.pt", "extra_state.json"])
def test_checkpoint_without_manifest_still_checked_for_structure(saved, rel):
    _, root, p1, p2 = saved
    os.remove(os.path.join(p2, "MANIFEST.json"))
    if rel.endswith(".json"):
        os.remove(os.path.join(p2, rel))
    else:
        _truncate(os.path.join(p2, rel))
    path, warned = _resume(root)
    assert path == p1 and rel in warned


def test_truncated_file_read_without_checks_names_the_file(saved, tiny_model_path):
    _, _, _, p2 = saved
    for rel in ("hf/model.safetensors", "optim/rank_00000.pt"):
        shutil.copy(os.path.join(p2, rel), os.path.join(p2, rel + ".bak"))
        _truncate(os.path.join(p2, rel))
        with pytest.raises(C.CheckpointError, match=rel.split("/")[-1]) as e:
            C.load_checkpoint(p2, _actor(tiny_model_path), verify="none")
        assert "\n" not in str(e.value)
        os.replace(os.path.join(p2, rel + ".bak"), os.path.join(p2, rel))


# ---------------------------------------------------------------------------------------------- item 3
def _enospc(*args, **kw):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["optimizer", "model"])
def test_failed_save_removes_its_temporary_directory(saved, monkeypatch, where):
    a, root, _, p2 = saved
    if where == "optimizer":
        monkeypatch.setattr(C, "_torch_save", _enospc)
    else:
        real = C.write_hf_folder

        def half_written(model, sd, tok, path, dtype=None):
            real(model, sd, tok, path, dtype)  # files are on disk, then the disk fills up
            _enospc()

        monkeypatch.setattr(C, "write_hf_folder", half_written)
    with pytest.raises(C.CheckpointError, match="No space left on device") as e:
        C.save_checkpoint(root, 3, a, None, {"step": 3}, max_to_keep=1)
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.ENOSPC
    assert "\n" not in str(e.value) and "global_step_3" in str(e.value)
    assert sorted(os.listdir(root)) == ["global_step_1", "global_step_2", "latest"]  # no .tmp-global_step_3
    assert C.find_latest_checkpoint(root) == p2 and V.verify_checkpoint(p2).verified


def test_interrupted_save_removes_its_temporary_directory(saved, monkeypatch):
    a, root, _, _ = saved

    def interrupted(obj, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(C, "_torch_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(root, 3, a, None, {"step": 3})
    assert not any(n.startswith(".tmp-") for n in os.listdir(root))


def _disk(free):
    return lambda path: shutil._ntuple_diskusage(10 ** 12, 10 ** 12 - free, free)


def test_free_space_checked_before_writing_from_previous_checkpoint_size(saved, monkeypatch):
    a, root, _, p2 = saved
    prev = V.dir_bytes(p2)
    monkeypatch.setattr(shutil, "disk_usage", _disk(prev // 2))
    with pytest.raises(C.CheckpointSpaceError) as e:
        C.save_checkpoint(root, 3, a, None, {"step": 3})
    msg = str(e.value)
    assert "\n" not in msg and "needs about" in msg and "free" in msg and "global_step_3" in msg
    assert f"{prev / 2 ** 20:.1f} MiB" in msg or f"{prev / 2 ** 10:.1f} KiB" in msg
    assert sorted(os.listdir(root)) == ["global_step_1", "global_step_2", "latest"]  # nothing written
    monkeypatch.setattr(shutil, "disk_usage", _disk(prev + (1 << 20)))
    assert C.save_checkpoint(root, 3, a, None, {"step": 3}).endswith("global_step_3")


def test_free_space_of_first_save_estimated_from_model_and_optimizer(tiny_model_path, tmp_path, monkeypatch):
    a = _actor(tiny_model_path)
    a.update(make_batch(B=2, L=10))
    need = V.state_bytes(a.model, a.optimizer)
    params = sum(p.numel() * p.element_size() for p in a.model.parameters())
    assert need >= 3 * params  # weights + Adam's two moments
    root = str(tmp_path / "ckpt")
    monkeypatch.setattr(shutil, "disk_usage", _disk(need // 2))
    with pytest.raises(C.CheckpointSpaceError, match="needs about"):
        C.save_checkpoint(root, 1, a, None, {"step": 1})
    assert os.listdir(root) == []
    monkeypatch.setattr(shutil, "disk_usage", _disk(need + (64 << 20)))
    path = C.save_checkpoint(root, 1, a, None, {"step": 1})
    assert V.dir_bytes(path) <= need + (8 << 20)  # the estimate covers what was written
