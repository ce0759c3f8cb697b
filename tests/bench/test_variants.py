"""Engine settings compared inside one benchmark run (`--modes async,async@notify256`): parsing, the engine under
each mode's setting and back, and a clear error where the engine cannot run one."""
import itertools
from types import SimpleNamespace

import pytest

from agent_rl.bench.modes import parse_modes
from agent_rl.bench.variants import applied, check_engine, check_name
from agent_rl.bench.workload import Dist, Workload
from agent_rl.cli.main import main as cli_main
from agent_rl.engines.sglang_engine import SGLangEngine
from tests.bench.test_output_tap import _BatchingEngine
from tests.bench.test_rollout_modes import _bench


def test_mode_words_with_variants():
    specs = parse_modes("async@notify256,turn-batched,async,carryover@nocoalesce", "0.5")
    assert [(s.name, s.word, s.variant) for s in specs] == [
        ("turn-batched", "turn-batched", ""), ("async", "async", ""), ("async@notify256", "async", "notify256"),
        ("async+carryover 0.5@nocoalesce", "carryover", "nocoalesce")]
    assert specs[3].partial_rollout and specs[3].settings()["variant"] == "nocoalesce"
    assert "variant" not in specs[1].settings()
    assert [s.name for s in parse_modes("all", "0.5")] == ["turn-batched", "async", "async+oversample 0.5",
                                                            "async+carryover 0.5"]
    for bad, msg in (("async@fast", "unknown mode variant 'fast'"), ("async@notify0", "unknown mode variant"),
                     ("sync@nocoalesce", "unknown mode 'sync'")):
        with pytest.raises(ValueError, match=msg):
            parse_modes(bad)


class _ResolvedArgs:
    """sglang 0.5.17's resolved ServerArgs: plain assignment raises, `override(source, **fields)` is the way in."""

    def __init__(self, **fields):
        self.__dict__.update(fields)
        self.__dict__["sources"] = []

    def __setattr__(self, name, value):
        raise AttributeError(f"server_args.{name} assigned after resolution; server_args is read-only")

    def override(self, source, **fields):
        self.__dict__["sources"].append(source)
        self.__dict__.update(fields)


def _engine():
    fake = _BatchingEngine()
    fake.tokenizer_manager.server_args = _ResolvedArgs(batch_notify_size=16)
    return SGLangEngine.wrap(fake)


def test_applied_sets_and_restores_even_on_error():
    engine = _engine()
    sa = engine.tokenizer_manager.server_args
    with applied(engine, "notify256"):
        assert sa.batch_notify_size == 256 and engine.coalesce_submits
    with pytest.raises(RuntimeError):
        with applied(engine, "nocoalesce"):
            assert engine.coalesce_submits is False
            raise RuntimeError
    assert sa.batch_notify_size == 16 and engine.coalesce_submits is True
    # through sglang's override: the check's write of the value it had, the setting, the restore
    assert sa.sources == ["agent-rl bench mode variant"] * 3
    plain = SimpleNamespace(batch_notify_size=16)   # an older sglang: plain attributes
    engine.tokenizer_manager.server_args = plain
    with applied(engine, "notify32"):
        assert plain.batch_notify_size == 32
    assert plain.batch_notify_size == 16
    with applied(engine, ""):
        assert plain.batch_notify_size == 16


def test_engines_without_the_setting_are_a_one_line_error(step_engine):
    with pytest.raises(ValueError, match=r"^mode variant @notify64 needs the in-process sglang engine"):
        check_engine(step_engine, "notify64")
    check_engine(step_engine, "")
    engine = _engine()
    check_engine(engine, "notify64")   # settable through override: fine, and unchanged
    assert engine.tokenizer_manager.server_args.batch_notify_size == 16

    class Frozen(_ResolvedArgs):   # read-only and no override: refused before any mode runs
        override = None
    engine.tokenizer_manager.server_args = Frozen(batch_notify_size=16)
    with pytest.raises(ValueError, match=r"^mode variant @notify64: this sglang's batch_notify_size cannot change at "
                                         r"run time \(server_args.batch_notify_size assigned after resolution"):
        check_engine(engine, "notify64")


async def test_each_mode_runs_under_its_setting(tokenizer):
    engine = _engine()
    seen = []
    generate = engine._engine.async_generate

    async def recording(*a, **k):
        seen.append((engine.tokenizer_manager.server_args.batch_notify_size, engine.coalesce_submits))
        return await generate(*a, **k)
    engine._engine.async_generate = recording
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=1)
    res = await _bench(tokenizer, engine, w, steps=1).run(parse_modes("async,async@notify256,async@nocoalesce"))
    assert [m["mode"] for m in res["modes"]] == ["async", "async@notify256", "async@nocoalesce"]
    # the raw-engine run and plain async as started, then each variant's requests under its setting
    assert [k for k, _ in itertools.groupby(seen)] == [(16, True), (256, True), (16, False)]
    assert (engine.tokenizer_manager.server_args.batch_notify_size, engine.coalesce_submits) == (16, True)


def test_bench_refuses_a_variant_its_engine_cannot_run(tmp_path, tiny_model_path, capsys):
    assert cli_main(["bench", "rollout", "--engine", "sim", "--model", tiny_model_path, "--modes", "async,async@nocoalesce",
                     "--prompts", "2", "--n", "2", "--steps", "1", "--no-ceiling", "--no-progress",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mode variant @nocoalesce needs the in-process sglang engine (--engine sglang), not sim" in err
    assert "Traceback" not in err


def test_the_simulated_engine_runs_a_notify_variant():
    from agent_rl.bench.sim_engine import SimEngine

    engine = SimEngine(0.0, 0.0)
    check_engine(engine, "notify64")
    with applied(engine, "notify64"):
        assert engine.batch_notify_size == 64
    assert engine.batch_notify_size == 16


async def test_a_load_variant_gates_that_modes_extras_only(tokenizer, step_engine):
    from agent_rl.bench.async_modes import bench_rollout_config
    from agent_rl.config.schema import RolloutConfig

    w = Workload(num_prompts=4, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("pareto:alpha=1.2,scale=2,max=40"),
                 tool_latency=Dist.parse("0"), seed=1)
    plain, gated = parse_modes("oversample,oversample@load0.25", "0.5")
    assert gated.name == "async+oversample 0.5@load0.25"
    assert bench_rollout_config(RolloutConfig(), gated, w, 1.0, 64, False).over_sample_max_load == 0.25
    assert bench_rollout_config(RolloutConfig(), plain, w, 1.0, 64, False).over_sample_max_load is None
    check_engine(step_engine, "load0.25")   # any engine
    res = await _bench(tokenizer, step_engine, w, steps=2).run([plain, gated])
    assert [m["mode"] for m in res["modes"]] == [plain.name, gated.name]
    assert all(m["trajectories_kept"] == 2 * 4 * 2 for m in res["modes"])


def test_bench_suite_checks_the_targets_for_each_variant(tmp_path, tiny_model_path):
    from tests.bench.test_rounds import sim_suite

    out = tmp_path / "s"
    suite = sim_suite(out, tiny_model_path, "--steps", "1", "--variant", "load0.5")
    modes = {sc: [m["mode"] for m in ms] for sc, ms in suite["scenario_modes"].items()}
    assert modes["heavy-tail"] == ["async", "async+oversample 0.5", "async+carryover 0.5", "async@load0.5",
                                   "async+oversample 0.5@load0.5", "async+carryover 0.5@load0.5"]
    checks = [t for t in suite["targets"] if t["scenario"] != "raw engine"]
    plain = [t for t in checks if "variant" not in t]
    gated = [t for t in checks if t.get("variant") == "load0.5"]
    assert len(plain) == len(gated) == 6 and all(t["target"].endswith(" (@load0.5)") for t in gated)
    # each variant's targets compare its own modes: the heavy tail's cut names the variant's modes by their plain names
    cut = next(t for t in gated if t["target"].startswith("over-sampling / carry-over cut"))
    assert "@" not in cut["detail"] and "async+" in cut["detail"]
    md = (out / "summary.md").read_text()
    assert "| heavy-tail | async+oversample 0.5@load0.5 |" in md and "(@load0.5) |" in md


def test_a_variant_applies_to_every_replica_and_is_restored():
    from agent_rl.engines.replicas import ReplicaEngine

    a, b = _engine(), _engine()
    engine = ReplicaEngine([a, b])
    with applied(engine, "notify64"):
        assert [r.tokenizer_manager.server_args.batch_notify_size for r in (a, b)] == [64, 64]
    with applied(engine, "nocoalesce"):
        assert a.coalesce_submits is False and b.coalesce_submits is False
    assert [r.tokenizer_manager.server_args.batch_notify_size for r in (a, b)] == [16, 16]
    assert a.coalesce_submits and b.coalesce_submits


def test_replicas_variant_routes_to_the_first_n_and_needs_enough_replicas(step_engine):
    from agent_rl.engines.base import SamplingParams
    from agent_rl.engines.replicas import ReplicaEngine

    check_name("replicas1")
    with pytest.raises(ValueError, match="unknown mode variant 'replicas0'"):
        check_name("replicas0")
    engine = ReplicaEngine([_engine(), _engine()])
    engine._inflight = [5, 0]   # replica 0 busy: a new group would go to replica 1
    assert engine.replica_for(SamplingParams(max_new_tokens=1, affinity="g")) == 1
    with applied(engine, "replicas1"):
        assert engine.active == 1
        assert engine.replica_for(SamplingParams(max_new_tokens=1, affinity="g")) == 0   # re-placed
        assert engine.replica_for(SamplingParams(max_new_tokens=1, affinity="h")) == 0
    assert engine.active == 2
    with pytest.raises(ValueError, match=r"^mode variant @replicas3 needs at least 3 engine replicas .*this run has 2"):
        check_engine(engine, "replicas3")
    with pytest.raises(ValueError, match="this run has no replicated engine"):
        check_engine(step_engine, "replicas1")


async def test_each_mode_says_how_many_requests_each_replica_got(tokenizer):
    from agent_rl.engines.replicas import ReplicaEngine
    from tests.bench.conftest import StepEngine

    w = Workload(num_prompts=4, n=2, turns=Dist.parse("2"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=0)
    res = await _bench(tokenizer, ReplicaEngine([StepEngine(), StepEngine()]), w, steps=1).run(
        parse_modes("async@replicas1,async,turn-batched"))
    got = {m["mode"]: m["replica_requests"] for m in res["modes"]}
    # 4 groups x 2 samples x 2 turns = 16 requests a step; one replica, then both (whole groups: 8 / 8)
    assert got == {"async@replicas1": [16, 0], "async": [8, 8], "turn-batched": [8, 8]}


def test_the_suites_help_names_every_variant():
    import argparse

    from agent_rl.bench.variants import NAMES
    from agent_rl.cli.bench_args import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = next(a.help for a in sub.choices["suite"]._actions if "--variant" in a.option_strings)
    assert all(name in help_text for name in NAMES), help_text


async def test_the_sessions_variant_keeps_kv_sessions_for_its_modes_only(tokenizer, session_requests):
    from agent_rl.engines.replicas import session_counts
    from tests.engines.test_sglang_wrapper import SessionEngine

    fake = SessionEngine()
    engine = SGLangEngine.wrap(fake)
    engine.kv_sessions = False   # an engine started with streaming sessions, as the benchmark starts it for @sessions
    check_name("sessions"), check_name("nosessions")
    w = Workload(num_prompts=2, n=2, turns=Dist.parse("3"), tokens_per_turn=Dist.parse("3"),
                 tool_latency=Dist.parse("0"), seed=1)
    res = await _bench(tokenizer, engine, w, steps=1).run(
        parse_modes("turn-batched,turn-batched@sessions,async,async@sessions"))
    by = {m["mode"]: m.get("kv_sessions") for m in res["modes"]}
    assert by["turn-batched"] is None and by["async"] is None
    # 4 trajectories x 3 turns: each trajectory's first request opens its session, its other two append
    assert by["turn-batched@sessions"] == by["async@sessions"] == {"started": 4, "appended": 8}
    assert engine.kv_sessions is False and session_counts(engine) == {"started": 8, "appended": 16}
    tm = fake.tokenizer_manager
    assert sorted(tm.closed) == sorted(tm.opened) and len(tm.opened) == 8   # each ended with its trajectory
    with applied(engine, "sessions"):
        assert engine.kv_sessions
    with pytest.raises(ValueError, match=r"^mode variant @sessions needs an sglang engine started with streaming"):
        check_engine(_engine(), "sessions")


def test_bench_refuses_sessions_on_an_engine_without_them(tmp_path, tiny_model_path, capsys):
    assert cli_main(["bench", "rollout", "--engine", "sim", "--model", tiny_model_path, "--modes", "async,async@sessions",
                     "--prompts", "2", "--n", "2", "--steps", "1", "--no-ceiling", "--no-progress",
                     "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "mode variant @sessions needs an sglang engine this command starts" in err and "Traceback" not in err
    assert cli_main(["bench", "rollout", "--engine", "hf", "--model", tiny_model_path, "--kv-sessions",
                     "--prompts", "2", "--n", "2", "--steps", "1", "--no-ceiling", "--no-progress",
                     "--out", str(tmp_path)]) == 2
    assert "--kv-sessions: needs an sglang engine (sglang, sglang-server, http), not hf" in capsys.readouterr().err


def test_kv_sessions_flag_is_on_off_or_the_engine_s_default_and_the_command_line_says_which():
    import argparse

    from agent_rl.cli.bench import _rollout_config
    from agent_rl.cli.bench_args import add_arguments, command_line

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for flags, want, shown in (([], None, None), (["--kv-sessions"], True, "--kv-sessions"),
                               (["--no-kv-sessions"], False, "--no-kv-sessions")):
        args = parser.parse_args(["rollout", "--engine", "sim", "--out", "x", *flags])
        assert args.kv_sessions is want and _rollout_config(args, 8).kv_sessions is want
        words = command_line(args).split()
        assert (shown in words if shown else not any("kv-sessions" in w for w in words)), words


def test_scheduler_patches_flag_is_all_none_or_those_named_and_the_command_line_says_which(capsys):
    import argparse

    from agent_rl.cli.bench import _rollout_config
    from agent_rl.cli.bench_args import add_arguments, command_line
    from agent_rl.engines.sglang_patches import DEFAULT, selected

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for flags, want, shown in (([], DEFAULT, ["--scheduler-patches"]),
                               (["--scheduler-patches"], DEFAULT, ["--scheduler-patches"]),
                               (["--scheduler-patches", "decode_rows"], ("decode_rows",),
                                ["--scheduler-patches", "decode_rows"]),
                               (["--no-scheduler-patches"], (), ["--no-scheduler-patches"])):
        args = parser.parse_args(["rollout", "--engine", "sim", "--out", "x", *flags])
        assert selected(_rollout_config(args, 8).scheduler_patches) == want
        words = command_line(args).split()
        at = words.index(shown[0])
        assert words[at:at + len(shown)] == shown and parser.parse_args(words[2:]).scheduler_patches == args.scheduler_patches
    with pytest.raises(SystemExit):
        parser.parse_args(["rollout", "--out", "x", "--scheduler-patches", "decode_row"])
    assert "unknown scheduler patch 'decode_row'" in capsys.readouterr().err
