"""engines/sglang_patches against stand-in sglang modules (real sglang 0.5.17: tests/sglang_cpu/patch_checks.py and
decode_rows_checks.py)."""
import abc
import functools
import pickle
import sys
import types

import pytest
import torch

from agent_rl.engines import sglang_patches
from agent_rl.engines.sglang_patches import delayer, sample_gumbel


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
    assert sglang_patches.apply(["delayer_gather"]) == ["delayer_gather"] == sglang_patches.apply(["delayer_gather"])
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
    cls = sglang_patches.engine_class(["decode_rows"])
    assert issubclass(cls, Engine) and cls(a=1).kwargs == {"a": 1}
    run = cls.run_scheduler_process_func
    assert run.func is sglang_patches.run_scheduler_process and run.args == (("decode_rows",),)
    # sglang's spawn pickles the function it starts: by reference, importable in the child, with the names
    again = pickle.loads(pickle.dumps(run))
    assert again.func is sglang_patches.run_scheduler_process and again.args == (("decode_rows",),)
    assert sglang_patches.engine_class().run_scheduler_process_func.args == (sglang_patches.DEFAULT,)
    own = functools.partial(print, "a check's runner")           # a check starts its schedulers through its own
    assert sglang_patches.engine_class(runner=own).run_scheduler_process_func is own
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
    monkeypatch.setattr(delayer, "NEGOTIATE_SHA256", hashlib.sha256(
        inspect.getsource(_negotiate_should_allow_prefill_pure).encode()).hexdigest()[:16])
    assert sglang_patches.apply(["delayer_gather"]) == ["delayer_gather"]
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


def test_the_patches_asked_for_are_all_none_or_those_named():
    # true: the default set, the patches measured on the GPU
    assert sglang_patches.selected(True) == sglang_patches.DEFAULT == ("delayer_gather", "decode_rows", "delayer_cap",
                                                                                      "sample_gumbel", "gc_freeze")
    assert sglang_patches.selected(False) == sglang_patches.selected(None) == sglang_patches.selected([]) == ()
    # the registry's order, whatever order they are named in; a string is comma-separated
    assert sglang_patches.selected(["decode_rows", "delayer_gather"]) == ("delayer_gather", "decode_rows")
    assert sglang_patches.selected("decode_rows") == ("decode_rows",)
    assert sglang_patches.selected("delayer_cap,delayer_gather") == ("delayer_gather", "delayer_cap")
    # `default` stands for the default set, beside other names
    assert sglang_patches.selected("default,mixed_logprob") == sglang_patches.DEFAULT[:4] + ("mixed_logprob",
                                                                                             "gc_freeze")
    assert sglang_patches.selected(["default"]) == sglang_patches.DEFAULT
    with pytest.raises(ValueError, match="unknown scheduler patch 'decode_row' .known: delayer_gather, decode_rows, "
                                         "delayer_cap, sample_gumbel, mixed_logprob, gc_freeze; default: the default "
                                         "set"):
        sglang_patches.selected(["decode_row"])


def test_the_scheduler_process_applies_the_named_patches_and_says_which_did_not_fit(monkeypatch, capsys):
    runs = []
    sched = types.ModuleType("sglang.srt.managers.scheduler")
    sched.run_scheduler_process = lambda *a, **k: runs.append((a, k)) or "ran"
    _modules(monkeypatch, **{"sglang.srt.managers.prefill_delayer": _delayer_module(),
                             "sglang.srt.managers.scheduler": sched})
    assert sglang_patches.run_scheduler_process(("delayer_gather", "decode_rows"), 1, 2, port=3) == "ran"
    assert runs == [((1, 2), {"port": 3})]
    # this stand-in sglang has no decode-result processor of 0.5.17's: that patch is not applied, and the line says so
    assert capsys.readouterr().err == ("agent-rl: sglang scheduler patched: delayer_gather; decode_rows not applied "
                                       "(this sglang differs)\n")
    sglang_patches.run_scheduler_process((), 1)
    assert capsys.readouterr().err == "agent-rl: sglang scheduler patched: nothing\n"


def _decode_modules(monkeypatch):
    """Stand-ins for the sglang modules decode_rows reads: each function it checks, of other sources than 0.5.17's."""
    def fn(name):
        def f(self, *a, **k):
            return name
        f.__name__ = f.__qualname__ = name
        return f

    brp = types.ModuleType("sglang.srt.managers.scheduler_components.batch_result_processor")
    osm = types.ModuleType("sglang.srt.managers.scheduler_components.output_streamer")
    sb = types.ModuleType("sglang.srt.managers.schedule_batch")
    rts = types.ModuleType("sglang.srt.observability.req_time_stats")
    names = {brp: {"SchedulerBatchResultProcessor": ["process_batch_result_decode", "_normalize_decode_outputs",
                                                     "_handle_finish_state_updated_req", "_mamba_prefix_cache_update",
                                                     "_maybe_collect_customized_info", "_maybe_update_reasoning_tokens",
                                                     "_apply_decode_logprobs"]},
             osm: {"SchedulerOutputStreamer": ["_stream_output_generation", "_maybe_log_time_stats"],
                   "_GenerationStreamAccumulator": ["accept"]},
             sb: {"Req": ["finished", "update_finish_state", "_check_vocab_boundary_finish", "_check_str_based_finish",
                          "_check_token_based_finish"]},
             rts: {"SchedulerReqTimeStats": ["set_last_decode_finish_time"]}}
    for mod, classes in names.items():
        for cls, methods in classes.items():
            setattr(mod, cls, type(cls, (), {m: fn(m) for m in methods}))
    _modules(monkeypatch, **{m.__name__: m for m in names},
             **{n: types.ModuleType(n) for n in ("sglang.srt.managers.scheduler_components", "sglang.srt.observability")})
    return brp.SchedulerBatchResultProcessor, osm.SchedulerOutputStreamer


def test_decode_rows_leaves_an_sglang_of_other_sources_alone_and_patches_the_checked_ones_once(monkeypatch):
    from agent_rl.engines.sglang_patches import decode_rows

    processor, streamer = _decode_modules(monkeypatch)
    decode, stream = processor.process_batch_result_decode, streamer._stream_output_generation
    assert sglang_patches.apply(["decode_rows"]) == []   # sources differ from 0.5.17's: nothing replaced
    assert processor.process_batch_result_decode is decode and streamer._stream_output_generation is stream
    # the hash covers every function it reads: one of them changed is enough to leave sglang alone
    monkeypatch.setattr(decode_rows, "SOURCES_SHA256", sglang_patches.source_digest(*decode_rows._sources()))
    assert sglang_patches.apply(["decode_rows"]) == ["decode_rows"] == sglang_patches.apply(["decode_rows"])
    assert processor.process_batch_result_decode.__wrapped__ is decode   # patched once, not stacked
    assert streamer._stream_output_generation.__wrapped__ is stream


def test_source_digest_is_empty_where_a_source_cannot_be_read():
    assert sglang_patches.source_digest(len) == ""
    assert len(sglang_patches.source_digest(sglang_patches.selected)) == 16


def _negotiating_delayer_module(signature_ok=True):
    mod = types.ModuleType("sglang.srt.managers.prefill_delayer")

    class PrefillDelayer:
        dp_size = 1
        seen = []

        if signature_ok:
            def _negotiate_should_allow_prefill(self, local_prefillable, token_usage, running_batch=0,
                                                max_prefill_bs=0, max_running_requests=0, waiting_queue_len=0):
                PrefillDelayer.seen.append(max_running_requests)
                return (local_prefillable, token_usage, running_batch, max_prefill_bs, waiting_queue_len)
        else:
            def _negotiate_should_allow_prefill(self, local_prefillable, running_batch=0):
                return "negotiated"

    mod.PrefillDelayer = PrefillDelayer
    return mod


def _parallel_module(pp_size=1, cap=1024, published=True):
    mod = types.ModuleType("sglang.srt.runtime_context")

    class Parallel:
        def __getattr__(self, name):
            if name == "pp_size":
                return pp_size
            if name == "pp_max_micro_batch_size" and published:
                return cap
            raise AttributeError(name)
    mod.get_parallel = lambda: Parallel()
    return mod


@pytest.mark.parametrize("pp_size,cap,dp_size,published,expected", [
    (1, 1024, 1, True, 1024),     # our KV-session split: free rows counted against the running cap
    (1, 4096, 1, True, 2560),     # a cap above the pool: sglang's own number stays
    (2, 1024, 1, True, 2560),     # pipeline stages: the cap is per micro-batch, left alone
    (1, 1024, 2, True, 2560),     # several data-parallel ranks: left alone
    (1, 1024, 1, False, 2560),    # no published config (a scheduler not started yet): left alone
])
def test_delayer_cap_counts_free_rows_against_the_running_cap(monkeypatch, pp_size, cap, dp_size, published, expected):
    mod = _negotiating_delayer_module()
    _modules(monkeypatch, **{"sglang.srt.managers.prefill_delayer": mod,
                             "sglang.srt.runtime_context": _parallel_module(pp_size, cap, published)})
    assert sglang_patches.apply(["delayer_cap"]) == ["delayer_cap"] == sglang_patches.apply(["delayer_cap"])
    d = mod.PrefillDelayer()
    d.dp_size = dp_size
    # keyword arguments, as sglang's single-pass executor passes them; everything else reaches sglang's unchanged
    out = d._negotiate_should_allow_prefill(local_prefillable=True, token_usage=0.5, running_batch=1000,
                                            max_prefill_bs=300, max_running_requests=2560, waiting_queue_len=400)
    assert out == (True, 0.5, 1000, 300, 400) and mod.PrefillDelayer.seen == [expected]
    assert mod.PrefillDelayer._negotiate_should_allow_prefill.__wrapped__ is not None   # applied once, not stacked
    assert not getattr(mod.PrefillDelayer._negotiate_should_allow_prefill.__wrapped__, "_agent_rl", False)


def test_delayer_cap_leaves_a_negotiation_of_another_shape_alone(monkeypatch):
    mod = _negotiating_delayer_module(signature_ok=False)
    _modules(monkeypatch, **{"sglang.srt.managers.prefill_delayer": mod,
                             "sglang.srt.runtime_context": _parallel_module()})
    original = mod.PrefillDelayer._negotiate_should_allow_prefill
    assert sglang_patches.apply(["delayer_cap"]) == []
    assert mod.PrefillDelayer._negotiate_should_allow_prefill is original


def _sampler_module(monkeypatch, digest_ok=True):
    """A stand-in `sglang.srt.layers.sampler` with sglang 0.5.17's unseeded draw (`torch.multinomial`)."""
    mod = types.ModuleType("sglang.srt.layers.sampler")
    mod.seeded = []

    def sampling_from_probs_torch(probs, sampling_seed=None, positions=None):
        if sampling_seed is not None:
            mod.seeded.append(sampling_seed)
            return torch.zeros(probs.shape[0], dtype=torch.int32)
        return torch.multinomial(probs, num_samples=1).view(-1).to(torch.int32)
    mod.sampling_from_probs_torch = sampling_from_probs_torch
    _modules(monkeypatch, **{"sglang.srt.layers": types.ModuleType("sglang.srt.layers"), "sglang.srt.layers.sampler": mod})
    monkeypatch.setattr(sample_gumbel, "SAMPLE_SHA256", sglang_patches.source_digest(sampling_from_probs_torch)
                        if digest_ok else "0" * 16)
    return mod


@pytest.mark.parametrize("rows, vocab", [(1, 5), (7, 300), (64, 4096)])
def test_sample_gumbel_draws_the_tokens_multinomial_draws(monkeypatch, rows, vocab):
    mod = _sampler_module(monkeypatch)
    original = mod.sampling_from_probs_torch
    assert sglang_patches.apply(["sample_gumbel"]) == ["sample_gumbel"] == sglang_patches.apply(["sample_gumbel"])
    patched = mod.sampling_from_probs_torch
    assert patched is not original and patched.__wrapped__ is original    # applied once, not stacked
    gen = torch.Generator().manual_seed(rows)
    probs = torch.softmax(torch.randn(rows, vocab, generator=gen) * 3, dim=-1)
    probs[0, : vocab // 2] = 0.0                                           # tokens that cannot be drawn
    for seed in range(20):
        torch.manual_seed(seed)
        want = original(probs.clone())
        torch.manual_seed(seed)
        got = patched(probs.clone())
        assert got.dtype == want.dtype == torch.int32 and torch.equal(got, want), seed
        assert (got[0] >= vocab // 2).item()
    # a seeded batch (deterministic inference) keeps sglang's own function
    assert patched(probs, sampling_seed=torch.ones(rows), positions=None).tolist() == [0] * rows and len(mod.seeded) == 1


def test_sample_gumbel_leaves_another_sglangs_sampler_alone(monkeypatch):
    mod = _sampler_module(monkeypatch, digest_ok=False)
    original = mod.sampling_from_probs_torch
    assert sglang_patches.apply(["sample_gumbel"]) == [] and mod.sampling_from_probs_torch is original
    monkeypatch.delattr(mod, "sampling_from_probs_torch")
    assert sglang_patches.apply(["sample_gumbel"]) == []


def _scheduler_module(params=("self",)):
    mod = types.ModuleType("sglang.srt.managers.scheduler")

    class Scheduler:
        if params == ("self",):
            def run_event_loop(self):
                import gc

                return gc.get_freeze_count()
        else:
            def run_event_loop(self, mode):
                return mode

    mod.Scheduler = Scheduler
    return mod


def test_gc_freeze_freezes_the_heap_before_the_event_loop_runs(monkeypatch, capsys):
    import gc

    mod = _scheduler_module()
    _modules(monkeypatch, **{"sglang.srt.managers.scheduler": mod})
    original = mod.Scheduler.run_event_loop
    before = gc.get_freeze_count()
    try:
        assert sglang_patches.apply(["gc_freeze"]) == ["gc_freeze"] == sglang_patches.apply(["gc_freeze"])
        assert mod.Scheduler.run_event_loop.__wrapped__ is original         # wrapped once
        frozen_in_loop = mod.Scheduler().run_event_loop()
    finally:
        gc.unfreeze()
    # this test process's whole heap (pytest, torch: far more than the interpreter's own few hundred) was frozen by the
    # time sglang's loop ran, and the start line says how much
    assert frozen_in_loop > before + 10_000
    assert capsys.readouterr().err == f"agent-rl: sglang scheduler heap frozen: {frozen_in_loop} objects\n"


def test_gc_freeze_leaves_another_sglangs_event_loop_alone(monkeypatch):
    mod = _scheduler_module(params=("self", "mode"))
    _modules(monkeypatch, **{"sglang.srt.managers.scheduler": mod})
    original = mod.Scheduler.run_event_loop
    assert sglang_patches.apply(["gc_freeze"]) == [] and mod.Scheduler.run_event_loop is original
