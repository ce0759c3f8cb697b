import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_batch, make_cfgs
from agent_rl.training import checkpoint as C
from agent_rl.training.actor import Actor

CPU = torch.device("cpu")


def _actor(path, **kw):
    model, actor_cfg, algo, _ = make_cfgs(path, **kw)
    actor_cfg.optim.warmup_steps = 3
    return Actor(model, actor_cfg, algo, device=CPU)


def _params(actor):
    return {n: p.detach().clone() for n, p in actor.model.named_parameters()}


def test_save_load_roundtrip_identical_state(tiny_model_path, tokenizer, tmp_path):
    a = _actor(tiny_model_path)
    batch = make_batch(B=3, L=12)
    for _ in range(2):
        a.update(batch)
    root = str(tmp_path / "ckpt")
    path = C.save_checkpoint(root, 2, a, tokenizer, {"step": 2, "dataloader": {"epoch": 0, "pos": 16}})
    assert os.path.basename(path) == "global_step_2" and C.find_latest_checkpoint(root) == path
    assert open(os.path.join(root, "latest")).read().strip() == "global_step_2"
    rand_after_save = torch.rand(3)

    b = _actor(tiny_model_path)
    extra = C.load_checkpoint(path, b)
    assert extra == {"step": 2, "dataloader": {"epoch": 0, "pos": 16}}
    assert torch.equal(torch.rand(3), rand_after_save)  # RNG restored
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    for i in sa["state"]:
        for k in sa["state"][i]:
            assert torch.equal(sa["state"][i][k], sb["state"][i][k])
    assert b.scheduler.last_epoch == a.scheduler.last_epoch == 2
    assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
    # training continues identically
    a.update(batch)
    b.update(batch)
    pa, pb = _params(a), _params(b)
    assert all(torch.allclose(pa[n], pb[n], atol=1e-7) for n in pa)


def test_checkpoint_is_hf_loadable(tiny_model_path, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    a = _actor(tiny_model_path)
    a.update(make_batch(B=2, L=10))
    path = C.save_checkpoint(str(tmp_path), 1, a, tokenizer, {})
    hf = AutoModelForCausalLM.from_pretrained(os.path.join(path, "hf"), dtype=torch.float32)
    mine = dict(a.model.named_parameters())
    for n, p in hf.named_parameters():
        assert torch.equal(p.detach(), mine[n].detach()), n
    tok = AutoTokenizer.from_pretrained(os.path.join(path, "hf"))
    assert tok.chat_template == tokenizer.chat_template
    x = torch.randint(0, 100, (1, 6))
    assert torch.allclose(hf(x).logits, a.model(x).logits, atol=1e-6)


def test_keep_last_k_and_latest_skips_incomplete(tiny_model_path, tmp_path):
    a = _actor(tiny_model_path)
    root = str(tmp_path)
    for s in (1, 2, 3, 4):
        C.save_checkpoint(root, s, a, None, {"step": s}, max_to_keep=2)
    assert sorted(n for n in os.listdir(root) if n.startswith("global_step_")) == ["global_step_3", "global_step_4"]
    assert C.find_latest_checkpoint(root).endswith("global_step_4")
    # leftovers of a crashed save and an incomplete directory are ignored
    os.makedirs(os.path.join(root, ".tmp-global_step_9", "hf"))
    open(os.path.join(root, ".tmp-global_step_9", "COMPLETE"), "w").close()
    os.makedirs(os.path.join(root, "global_step_7", "hf"))
    assert C.find_latest_checkpoint(root).endswith("global_step_4")
    # a pointer to a missing checkpoint falls back to the newest complete one
    open(os.path.join(root, "latest"), "w").write("global_step_8")
    assert C.find_latest_checkpoint(root).endswith("global_step_4")
    # the next save cleans the temporary leftovers
    C.save_checkpoint(root, 5, a, None, {"step": 5}, max_to_keep=2)
    assert not any(n.startswith(".tmp-") for n in os.listdir(root))
    assert C.find_latest_checkpoint(root).endswith("global_step_5")
    assert C.find_latest_checkpoint(str(tmp_path / "nothing")) is None
    with pytest.raises(FileNotFoundError):
        C.load_checkpoint(os.path.join(root, "global_step_7"), a)


@pytest.mark.slow
def test_kill_during_save_leaves_loadable_latest(tiny_model_path, tmp_path):
    root = str(tmp_path / "ckpt")
    worker = os.path.join(os.path.dirname(__file__), "ckpt_kill_worker.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    rng = random.Random(1234)
    mid_save, last_steps = 0, []
    actor = _actor(tiny_model_path)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, worker, root, tiny_model_path], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            line = proc.stdout.readline()  # first save done: now kill somewhere in the following ones
            assert line.startswith("saved"), line
            time.sleep(rng.uniform(0.0, 1.5))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        mid_save += any(n.startswith(".tmp-") for n in os.listdir(root))
        latest = C.find_latest_checkpoint(root)
        assert latest is not None
        extra = C.load_checkpoint(latest, actor)
        assert extra["step"] == int(latest.rsplit("_", 1)[1]) and extra["data_pos"] == extra["step"] * 10
        last_steps.append(extra["step"])
        complete = C.list_checkpoints(root)
        assert 1 <= len(complete) <= 3  # keep 2 (+ one renamed in before pruning ran)
    assert last_steps == sorted(last_steps) and last_steps[-1] > last_steps[0]  # each run resumed
    assert mid_save >= 1, "no kill landed inside a save"


def _saved(tiny_model_path, tokenizer, tmp_path):
    a = _actor(tiny_model_path)
    a.update(make_batch(B=2, L=10))
    return a, C.save_checkpoint(str(tmp_path / "ckpt"), 1, a, tokenizer, {"step": 1})


def test_resume_reads_optim_and_rng_with_weights_only(tiny_model_path, tokenizer, tmp_path, monkeypatch):
    import numpy as np

    a, path = _saved(tiny_model_path, tokenizer, tmp_path)
    np_after_save = np.random.rand(3)
    real_load, loaded = torch.load, []

    def strict_load(f, *args, **kw):
        assert kw.get("weights_only") is True, f"torch.load({f}) without weights_only=True"
        loaded.append(os.path.basename(os.path.dirname(f)))
        return real_load(f, *args, **kw)

    monkeypatch.setattr(torch, "load", strict_load)
    b = _actor(tiny_model_path)
    C.load_checkpoint(path, b)
    assert sorted(loaded) == ["optim", "rng"]
    assert np.array_equal(np.random.rand(3), np_after_save)  # numpy RNG restored from its plain-list form
    assert b.scheduler.last_epoch == a.scheduler.last_epoch


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def test_tampered_rng_file_is_refused_not_executed(tiny_model_path, tokenizer, tmp_path):
    _, path = _saved(tiny_model_path, tokenizer, tmp_path)
    marker = str(tmp_path / "pwned")
    torch.save({"python": _Exploit(marker)}, os.path.join(path, "rng", "rank_00000.pt"))
    with pytest.raises(C.CheckpointError, match="rng/rank_00000.pt"):  # the manifest catches it before unpickling
        C.load_checkpoint(path, _actor(tiny_model_path))
    os.remove(os.path.join(path, "MANIFEST.json"))  # a checkpoint saved before manifests: the unpickler must refuse
    with pytest.raises(Exception) as e:
        C.load_checkpoint(path, _actor(tiny_model_path))
    assert not os.path.exists(marker), "the pickle's payload ran"
    assert isinstance(e.value, C.CheckpointError) and "refused to load" in str(e.value)
    assert "\n" not in str(e.value) and "rng" in str(e.value)


def test_rng_file_of_previous_format_still_loads(tiny_model_path, tokenizer, tmp_path):
    import numpy as np

    _, path = _saved(tiny_model_path, tokenizer, tmp_path)
    np.random.seed(7)
    old = {"python": random.getstate(), "torch": torch.get_rng_state(),
           "numpy": np.random.get_state()}  # an ndarray inside: the previous format
    expected = np.random.rand(3)
    torch.save(old, os.path.join(path, "rng", "rank_00000.pt"))
    os.remove(os.path.join(path, "MANIFEST.json"))  # the previous format came without a manifest
    np.random.seed(8)
    C.load_checkpoint(path, _actor(tiny_model_path))
    assert np.array_equal(np.random.rand(3), expected)
