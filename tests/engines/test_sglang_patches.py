"""engines/sglang_patches.py against stand-in sglang modules (real sglang 0.5.17: tests/sglang_cpu/patch_checks.py)."""
import abc
import pickle
import sys
import types

import pytest
import torch

from agent_rl.engines import sglang_patches


@pytest.fixture(autouse=True)
def _no_sglang_left_behind():
    """Modules a test imports from a stand-in sglang go with it (the fake sglang of other tests imports its own)."""
    before = {m for m in sys.modules if m == "sglang" or m.startswith("sglang.")}
    yield
    for name in [m for m in sys.modules if (m == "sglang" or m.startswith("sglang.")) and m not in before]:
        del sys.modules[name]


def _modules(monkeypatch, **mods):
    for name in ("sglang", "sglang.srt", "sglang.srt.managers", "sglang.srt.entrypoints"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)


def _delayer_module(signature_ok=True):
    mod = types.ModuleType("sglang.srt.managers.prefill_delayer")

    class PrefillDelayer:
        gathers = 0

        def __init__(self):
            self._global_info_buffer = torch.zeros((1, 1, 5), dtype=torch.int64)
            self._gather_group = object()

        if signature_ok:
            def _gather_info(self, local_prefillable, local_token_watermark_force_allow, running_batch=0,
                             max_prefill_bs=0, waiting_queue_len=0):
                PrefillDelayer.gathers += 1
                return "gathered"
        else:
            def _gather_info(self, local_prefillable, running_batch=0):
                return "gathered"

    mod.PrefillDelayer = PrefillDelayer
    return mod


@pytest.mark.parametrize("ranks", [1, 2])
def test_the_delayer_gather_skips_the_collective_on_one_rank_only(monkeypatch, ranks):
    mod = _delayer_module()
    _modules(monkeypatch, **{"sglang.srt.managers.prefill_delayer": mod})
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: ranks)
    assert sglang_patches.apply() == ["delayer_gather"] and sglang_patches.apply() == ["delayer_gather"]
    d = mod.PrefillDelayer()
    out = d._gather_info(True, False, 7, 3, 11)
    if ranks == 1:   # the buffer the gather fills, with this rank's numbers, and its first column
        assert mod.PrefillDelayer.gathers == 0 and d._global_info_buffer.flatten().tolist() == [1, 0, 7, 3, 11]
        assert out.tolist() == [[1, 0, 7, 3, 11]]
    else:            # several ranks: sglang's own gather, once (not stacked by the second apply)
        assert out == "gathered" and mod.PrefillDelayer.gathers == 1


def test_a_delayer_of_another_shape_is_left_alone(monkeypatch):
    mod = _delayer_module(signature_ok=False)
    _modules(monkeypatch, **{"sglang.srt.managers.prefill_delayer": mod})
    original = mod.PrefillDelayer._gather_info
    assert sglang_patches.apply() == [] and mod.PrefillDelayer._gather_info is original


def test_the_engine_class_starts_schedulers_through_ours(monkeypatch):
    mod = types.ModuleType("sglang.srt.entrypoints.engine")

    class EngineBase(abc.ABC):
        pass

    class Engine(EngineBase):
        run_scheduler_process_func = staticmethod(lambda *a: None)

        def __init__(self, **kwargs):
            self.kwargs = kwargs

    mod.Engine = Engine
    _modules(monkeypatch, **{"sglang.srt.entrypoints.engine": mod})
    cls = sglang_patches.engine_class()
    assert issubclass(cls, Engine) and cls(a=1).kwargs == {"a": 1}
    assert cls.run_scheduler_process_func is sglang_patches.run_scheduler_process
    # sglang's spawn pickles the function it starts: by reference, importable in the child
    assert pickle.loads(pickle.dumps(cls.run_scheduler_process_func)) is sglang_patches.run_scheduler_process
    del Engine.run_scheduler_process_func                       # an sglang without the hook: none
    assert sglang_patches.engine_class() is None


def test_the_negotiation_checked_against_reads_plain_values(monkeypatch):
    import hashlib
    import inspect

    mod = _delayer_module()

    def _negotiate_should_allow_prefill_pure(self):
        return None
    mod.PrefillDelayer._negotiate_should_allow_prefill_pure = _negotiate_should_allow_prefill_pure
    _modules(monkeypatch, **{"sglang.srt.managers.prefill_delayer": mod})
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda group=None: 1)
    monkeypatch.setattr(sglang_patches, "NEGOTIATE_SHA256", hashlib.sha256(
        inspect.getsource(_negotiate_should_allow_prefill_pure).encode()).hexdigest()[:16])
    assert sglang_patches.apply() == ["delayer_gather"]
    d = mod.PrefillDelayer()
    out = d._gather_info(True, False, 7, 3, 11)
    assert type(out).__name__ == "_OneRank" and d._global_info_buffer.sum().item() == 0   # no tensor work at all
    # what sglang 0.5.17's negotiation does with each column (tp0_info[:, k]): min / max / sum of one rank, .item()
    assert [out[:, k].min().item() for k in range(5)] == [1, 0, 7, 3, 11]
    assert out[:, 2].max().item() == 7 and out[:, 0].sum().item() == 1 and mod.PrefillDelayer.gathers == 0
    with pytest.raises(IndexError):
        out[0, 1]


@pytest.mark.parametrize("source, found", [
    ("def launch_server(server_args, run_scheduler_process_func=None): pass\n", True), ("x = 1\n", False)])
def test_available_reads_the_server_module_without_importing_it(tmp_path, monkeypatch, source, found):
    pkg = tmp_path / "sglang" / "srt" / "entrypoints"
    pkg.mkdir(parents=True)
    for d in (tmp_path / "sglang", tmp_path / "sglang" / "srt", pkg):
        (d / "__init__.py").write_text("")
    (pkg / "http_server.py").write_text("raise RuntimeError('imported')\n" + source)
    for name in [m for m in sys.modules if m == "sglang" or m.startswith("sglang.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert sglang_patches.available() is found and "sglang.srt.entrypoints.http_server" not in sys.modules


def test_without_sglang_nothing_is_available(monkeypatch):
    monkeypatch.setitem(sys.modules, "sglang", None)   # import sglang fails
    assert not sglang_patches.available() and sglang_patches.engine_class() is None and sglang_patches.apply() == []
