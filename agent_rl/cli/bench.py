"""`agent-rl bench engine|rollout`: raw engine throughput, and multi-turn tool rollouts in every
scheduling mode on one seeded workload. Writes JSON + summary.md (+ PNG plots) under --out."""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import sys

from agent_rl.cli.bench_args import (_ceiling_sizes, _dtype, _engine_kwargs, _max_load, _sim_cost, add_arguments,
                                     command_line)

__all__ = ["HELP", "add_arguments", "run"]   # the subcommand's interface (cli/main.py); options in bench_args.py

HELP = "Benchmark raw engine throughput and async multi-turn rollouts (see docs/benchmarks.md)"


def _rollout_config(args, concurrency: int):
    """The engine's rollout config; `concurrency` (most requests the benchmark puts in flight) sizes sglang's
    CUDA graphs and running cap (engines/sglang_engine.scheduling_kwargs)."""
    from agent_rl.config.schema import RolloutConfig

    return dataclasses.replace(RolloutConfig(), engine=args.engine, max_model_len=args.max_model_len,
                               hf_max_batch_size=args.hf_max_batch_size, gpu_memory_utilization=args.mem_fraction,
                               engine_replicas=args.engine_replicas,
                               engine_kwargs=_engine_kwargs(args.engine_kwarg), progress_bar=not args.no_progress,
                               max_concurrent_trajectories=concurrency, server_url=args.server_url,
                               over_sample_max_load=_max_load(getattr(args, "over_sample_max_load", None)),
                               event_loop=args.event_loop, kv_sessions=getattr(args, "kv_sessions", None),
                               scheduler_patches=getattr(args, "scheduler_patches", True))


def _build_engine(args, rollout_cfg, model_path):
    if args.engine == "sim":
        from agent_rl.bench.sim_engine import SimEngine
        from agent_rl.engines.sglang_engine import PREFILL_DELAYER

        fixed_ms, per_row_us, prefill_ms, prefill_row_ms = _sim_cost(args.sim_cost)
        # sglang's prefill delayer as our sglang engine sets it, unless the engine kwargs say otherwise
        delayer = {**PREFILL_DELAYER, **rollout_cfg.engine_kwargs}
        on = bool(delayer.get("enable_prefill_delayer"))
        gpu = asyncio.Lock() if args.engine_replicas > 1 else None   # the replicas' one GPU
        from agent_rl.engines.sglang_patches import selected

        # sglang's delayer sees the running cap (its slot condition holds) with the delayer_cap patch, or where our
        # engine gives sglang no request pool above the cap: as many trajectories as rows (scheduling_kwargs)
        pool = args.sim_max_running is not None and rollout_cfg.max_concurrent_trajectories > args.sim_max_running
        slot_delay = "delayer_cap" in selected(rollout_cfg.scheduler_patches) or not pool

        def sim() -> SimEngine:
            return SimEngine(fixed_ms / 1e3, per_row_us / 1e6, max_running=args.sim_max_running,
                             prefill_s=prefill_ms / 1e3, prefill_row_s=prefill_row_ms / 1e3,
                             delay_passes=int(delayer["prefill_delayer_max_delay_passes"]) if on else 0,
                             queue_min_ratio=float(delayer["prefill_delayer_queue_min_ratio"]),
                             gpu=gpu, gpu_share=args.sim_gpu_share, slot_delay=slot_delay)
        if gpu is None:
            return sim()
        from agent_rl.engines.replicas import ReplicaEngine

        return ReplicaEngine([sim() for _ in range(args.engine_replicas)])
    from agent_rl.engines import build_engine

    engine = build_engine(rollout_cfg, model_path, device=args.device, seed=args.seed, dtype=_dtype(args.dtype),
                          log_dir=args.out)
    if getattr(args, "no_coalesce_submits", False):
        from agent_rl.engines.replicas import replicas_of

        for replica in replicas_of(engine):
            if hasattr(replica, "coalesce_submits"):
                replica.coalesce_submits = False
    return engine


def _session_variants(args, plan) -> bool:
    """Whether a mode of this run keeps KV sessions as a variant (`async@sessions`, bench/variants.py)."""
    if args.bench_cmd == "rollout":
        return any(m.variant == "sessions" for m in plan[1])
    return args.bench_cmd == "suite" and "sessions" in [v.strip() for v in (args.variant or "").split(",")]


def _concurrency(args, plan) -> int:
    """Most generate requests in flight at once in this benchmark."""
    if args.bench_cmd == "engine":
        return args.prompts
    if args.bench_cmd == "rollout":
        workload, modes = plan
        return max(m.launched_trajectories(workload.num_prompts, workload.n) for m in modes)
    from agent_rl.bench.suite import max_concurrency

    return max([max_concurrency(plan)] + _ceiling_sizes(args.ceiling_prompts))


def _model_path(spec: str) -> str:
    if spec == "embedded":
        from agent_rl.model.prepare import prepare_embedded

        return prepare_embedded(log=lambda *_: None)
    if spec.startswith("random:"):
        from agent_rl.model.prepare import PrepareError, random_model_cached

        try:
            return random_model_cached(spec.split(":", 1)[1])
        except PrepareError as e:
            raise ValueError(f"--model {spec}: {e}") from None
    return spec


def _plan(args):
    """Check the arguments before any model is loaded: (workload, modes) | scenarios | None."""
    from agent_rl.bench.modes import parse_modes, profile_modes
    from agent_rl.bench.workload import Dist, Workload

    if args.bench_cmd == "engine":
        return None
    if args.steps < 1:
        raise ValueError("--steps must be >= 1")
    if getattr(args, "rounds", 1) < 1:
        raise ValueError("--rounds must be >= 1")
    if args.carry_warmup_steps < 0:
        raise ValueError(f"--carry-warmup-steps {args.carry_warmup_steps}: must be >= 0")
    args.engine_profile = profile_modes(args.engine_profile)
    if args.engine_profile and args.engine not in ("sglang", "sglang-server", "http"):
        raise ValueError(f"--engine-profile needs an sglang engine (sglang, sglang-server, http), not {args.engine}")
    if args.engine_profile_passes < 1:
        raise ValueError("--engine-profile-passes must be >= 1")
    if args.bench_cmd == "rollout":
        workload = Workload(num_prompts=args.prompts, n=args.n, turns=Dist.parse(args.turns),
                            tokens_per_turn=Dist.parse(args.tokens_per_turn), tool_latency=Dist.parse(args.tool_latency),
                            tool_failure_rate=args.tool_failure_rate, seed=args.seed)
        workload.max_turns(), workload.max_tokens_per_turn()  # unbounded distributions fail here
        return workload, parse_modes(args.modes, args.over_sample)
    from agent_rl.bench.suite import scenarios

    out = scenarios(args.prompts, args.n, args.turns, args.tokens_per_turn, args.tool_latency, args.heavy_tail_tokens,
                    args.heavy_tail_prompts or args.prompts, args.over_sample, args.seed,
                    [v.strip() for v in (args.variant or "").split(",") if v.strip()])
    for sc in out:
        sc.workload.max_turns(), sc.workload.max_tokens_per_turn()
    return out


def run(args) -> int:
    from agent_rl.bench.env_info import environment
    from agent_rl.engines import STARTED_SGLANG_KINDS, resolve_engine_kind
    from agent_rl.engines.kv_sessions import SESSION_KINDS, needs_session_engine
    from agent_rl.engines.replicas import STARTED_KINDS

    if args.bench_cmd == "sglang-log":
        from agent_rl.bench.sglang_log import main

        if not args.max_pass_ms > 0:
            print(f"agent-rl bench: --max-pass-ms {args.max_pass_ms:g}: needs a positive number of milliseconds",
                  file=sys.stderr)
            return 2
        return main(args.log, args.gpu_csv, args.fit_cost, args.max_pass_ms, args.replica)
    if args.bench_cmd == "table":
        from agent_rl.bench.table import table

        try:
            print(table(args.runs))
        except ValueError as e:
            print(f"agent-rl {e}", file=sys.stderr)
            return 2
        return 0
    if args.bench_cmd == "loop-cpu":
        from agent_rl.bench.loop_cpu import run as loop_cpu

        return loop_cpu(args)
    if args.bench_cmd == "actor":
        return _actor(args)
    try:
        plan = _plan(args)
        if args.engine == "sim":
            _sim_cost(args.sim_cost)
            if args.sim_max_running is not None and args.sim_max_running < 1:
                raise ValueError(f"--sim-max-running {args.sim_max_running}: needs at least 1 row")
        kind = "sim" if args.engine == "sim" else resolve_engine_kind(args.engine)
        if args.engine_replicas < 1:
            raise ValueError(f"--engine-replicas {args.engine_replicas}: needs at least 1 engine")
        if args.engine_replicas > 1 and kind not in STARTED_KINDS + ("sim",):
            raise ValueError(f"--engine-replicas {args.engine_replicas} needs engines this command starts "
                             f"({', '.join(STARTED_KINDS + ('sim',))}), not {kind}")
        if args.engine_replicas > 1 and kind != "sim" and not 0 < args.mem_fraction < 1:
            raise ValueError(f"--mem-fraction {args.mem_fraction:g}: needs a share between 0 and 1 to split between "
                             f"{args.engine_replicas} engine replicas")
        if not 0.0 <= args.sim_gpu_share <= 1.0:
            raise ValueError(f"--sim-gpu-share {args.sim_gpu_share:g}: needs a share between 0 and 1")
        if getattr(args, "sample_engine_stacks", False) and kind not in STARTED_SGLANG_KINDS:
            raise ValueError(f"--sample-engine-stacks samples an sglang engine this command starts (--engine sglang or "
                             f"sglang-server), not {kind}")
        rollout_cfg = _rollout_config(args, _concurrency(args, plan))
        if _session_variants(args, plan):   # `async@sessions`: an engine that can keep them, used only where asked
            if kind not in STARTED_SGLANG_KINDS:
                raise ValueError(f"mode variant @sessions needs an sglang engine this command starts (--engine sglang "
                                 f"or sglang-server), not {kind}")
            rollout_cfg.engine_kwargs = dict(rollout_cfg.engine_kwargs, enable_streaming_session=True)
        if rollout_cfg.kv_sessions and kind not in SESSION_KINDS:
            raise ValueError(needs_session_engine("--kv-sessions", kind))
        model_path = _model_path(args.model)
    except ValueError as e:
        print(f"agent-rl bench: {e}", file=sys.stderr)
        return 2

    header = {"kind": args.bench_cmd, "command": command_line(args), "argv": list(sys.argv),
              "engine": args.engine if args.engine == "sim" else resolve_engine_kind(args.engine), "model": model_path, "environment": environment(args.device),
              "max_concurrency": rollout_cfg.max_concurrent_trajectories, "event_loop": rollout_cfg.event_loop}
    from agent_rl.engines.sglang_server import SGLangServerError

    from agent_rl.rollout.event_loop import new_event_loop

    loop = new_event_loop(rollout_cfg.event_loop)  # one loop for every engine call (SGLang binds to its first loop)
    asyncio.set_event_loop(loop)
    try:
        from agent_rl.bench import engine_stacks

        with (engine_stacks.enabled(engine_stacks.folder(args.out)) if getattr(args, "sample_engine_stacks", False)
              else contextlib.nullcontext()):   # the engine's processes inherit the hook
            engine = _build_engine(args, rollout_cfg, model_path)
    except SGLangServerError as e:   # the server died or never answered: its log's tail says why
        print(f"agent-rl bench: {e}", file=sys.stderr)
        loop.close()
        asyncio.set_event_loop(None)
        return 1
    if hasattr(engine, "scheduling_info"):
        header["engine_scheduling"] = engine.scheduling_info()
    try:
        if args.bench_cmd == "engine":
            job = _engine_bench(engine, args, model_path, header)
        elif args.bench_cmd == "rollout":
            job = _rollout_bench(engine, args, model_path, rollout_cfg, header, *plan)
        else:
            job = _suite(engine, args, model_path, rollout_cfg, header, plan)
        summary_path, paths = loop.run_until_complete(job)
    except ValueError as e:
        print(f"agent-rl bench: {e}", file=sys.stderr)
        return 2
    finally:
        loop.run_until_complete(engine.shutdown())
        loop.close()
        asyncio.set_event_loop(None)
    print(open(summary_path).read())
    print("wrote " + ", ".join(paths))
    return 0


def _actor(args) -> int:
    import json

    import torch

    from agent_rl.bench.actor_bench import compare, summary_markdown
    from agent_rl.bench.env_info import environment
    from agent_rl.config.load import ConfigError

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        model_path = _model_path(args.model)
        base = [f"model.path={model_path}", f"trainer.device={device.type}", "rollout.n=1",
                f"actor.ppo_mini_batch_size={args.batch}", f"data.train_batch_size={args.batch}", *args.override]
        variants = {} if args.no_full else {"full": base + ["actor.lora.rank=0"]}
        if args.lora_rank > 0:
            variants[f"lora-r{args.lora_rank}"] = base + [f"actor.lora.rank={args.lora_rank}",
                                                          f"actor.lora.alpha={args.lora_alpha}"]
        if not variants:
            raise ValueError("nothing to run: --no-full with --lora-rank 0")
        result = compare(variants, args.batch, args.seq_len, args.prompt_len, args.steps, device, args.seed)
    except (ValueError, ConfigError) as e:
        print(f"agent-rl bench: {e}", file=sys.stderr)
        return 2
    header = {"kind": "actor", "command": command_line(args), "argv": list(sys.argv), "model": model_path,
              "environment": environment(device.type)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "actor.json"), "w") as f:
        json.dump({**header, **result}, f, indent=1)
    text = summary_markdown(result, header)
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(text)
    print(text)
    print("wrote " + os.path.join(args.out, "actor.json"))
    return 0


def _finish(result, out_dir: str, name: str):
    from agent_rl.bench.report import write_outputs

    if hasattr(os, "getloadavg"):  # CPU runs share the machine: say how busy it was
        result["environment"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    return write_outputs(result, out_dir, name)


async def _raw_engine(engine, tok, num, length, new_tokens, args):
    from tqdm.auto import tqdm
    from transformers import AutoConfig

    from agent_rl.bench.engine_bench import bench_engine, synthetic_prompts

    vocab = min(len(tok), AutoConfig.from_pretrained(tok.name_or_path).vocab_size)
    prompts = synthetic_prompts(num, length, vocab, seed=args.seed, avoid=tok.all_special_ids)
    bar = tqdm(total=num, desc="raw engine", unit="req", disable=args.no_progress, leave=False)
    try:
        return await bench_engine(engine, prompts, new_tokens, temperature=args.temperature, progress=bar,
                                  flush=not getattr(args, "no_flush_cache", False))
    finally:
        bar.close()


async def _engine_bench(engine, args, model_path, header):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    result = dict(header, ceiling=await _raw_engine(engine, tok, args.prompts, args.prompt_len, args.new_tokens, args))
    paths = _finish(result, args.out, "engine_bench")
    return paths["summary"], list(paths.values())


def _bench(engine, tok, args, rollout_cfg, workload, ceiling: bool, out: str):
    from agent_rl.bench import engine_stacks
    from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings

    settings = RolloutBenchSettings(workload=workload, steps=args.steps, temperature=args.temperature,
                                    observation_words=args.observation_words, ceiling=ceiling,
                                    turns_ceiling=ceiling and getattr(args, "turns_ceiling", False),
                                    progress=not args.no_progress,
                                    sample_stacks=args.sample_stacks, sample_cpu=args.sample_cpu, rounds=args.rounds,
                                    engine_stacks_dir=engine_stacks.folder(args.out)
                                    if getattr(args, "sample_engine_stacks", False) else None,
                                    flush_cache=not args.no_flush_cache, carry_warmup_steps=args.carry_warmup_steps,
                                    engine_profile=args.engine_profile, engine_profile_passes=args.engine_profile_passes,
                                    profile_dir=os.path.abspath(os.path.join(out, "engine-profile")),
                                    decode_cost=_sim_decode_cost(engine))
    bench = RolloutBench(engine, tok, settings, rollout_cfg)
    bench.check_context()
    return bench


def _sim_decode_cost(engine):
    """The simulated engine's own decode cost (`RolloutBenchSettings.decode_cost`), None for a real engine."""
    from agent_rl.bench.sim_engine import SimEngine

    inner = getattr(engine, "inner", engine)
    if not isinstance(inner, SimEngine):
        return None
    return inner.fixed_s, inner.per_row_s, "the simulated engine's (--sim-cost)"


async def _rollout_bench(engine, args, model_path, rollout_cfg, header, workload, modes):
    from transformers import AutoTokenizer

    from agent_rl.bench.instrument import InstrumentedEngine

    tok = AutoTokenizer.from_pretrained(model_path)
    bench = _bench(InstrumentedEngine(engine), tok, args, rollout_cfg, workload, not args.no_ceiling, args.out)
    result = dict(header, **await bench.run(modes), workload=workload.to_json(), steps=args.steps)
    paths = _finish(result, args.out, "rollout_bench")
    return paths["summary"], list(paths.values())


async def _suite(engine, args, model_path, rollout_cfg, header, scenarios):
    import json

    from transformers import AutoTokenizer

    from agent_rl.bench.instrument import InstrumentedEngine
    from agent_rl.bench.rounds import merge_ceilings, round_order
    from agent_rl.bench.suite import MODE_KEYS, ceiling_check, scenario_targets, suite_markdown
    from agent_rl.bench.bounds import decode_cost

    tok = AutoTokenizer.from_pretrained(model_path)
    wrapped = InstrumentedEngine(engine)
    benches = [_bench(wrapped, tok, args, rollout_cfg, sc.workload, True, os.path.join(args.out, sc.name))
               for sc in scenarios]  # all checked first
    for sc, bench in zip(scenarios, benches):   # what instant tools compare against: the engine alone on their turns too
        bench.s.turns_ceiling = sc.target == "ceiling_ratio"
    sizes = _ceiling_sizes(args.ceiling_prompts)
    runs: dict = {num: [] for num in sizes}
    for r in range(args.rounds):
        for num in round_order(sizes, r):
            runs[num].append(await _raw_engine(engine, tok, num, args.ceiling_prompt_len, args.ceiling_new_tokens, args))
    ceilings = [merge_ceilings(runs[num]) for num in sizes]
    fitted = decode_cost(ceilings)
    for bench in benches:   # the bounds at this engine's cost (a simulated engine has its own)
        if fitted and not bench.s.decode_cost:
            bench.s.decode_cost = fitted + (f"fitted on the raw runs at {', '.join(str(n) for n in sizes)} requests",)
    suite = dict(header, ceiling=ceilings[0], ceilings=ceilings, scenarios={}, scenario_modes={}, scenario_ceilings={},
                 targets=[])
    check = ceiling_check(ceilings)
    if check:
        suite["targets"].append(check)
    paths = []
    for sc, bench in zip(scenarios, benches):
        if not args.no_progress:
            print(f"== scenario {sc.name}", flush=True)
        result = dict(header, kind=f"rollout ({sc.name} scenario of the suite)", **await bench.run(sc.modes),
                      workload=sc.workload.to_json(), steps=args.steps)
        paths += list(_finish(result, os.path.join(args.out, sc.name), "rollout_bench").values())
        suite["scenarios"][sc.name] = os.path.join(sc.name, "rollout_bench.json")
        suite["targets"] += scenario_targets(sc, result)
        suite["scenario_modes"][sc.name] = [{k: m.get(k) for k in MODE_KEYS} for m in result["modes"]]
        if result.get("ceiling"):   # the raw engine on this scenario's sizes: the machine's pace through the suite
            suite["scenario_ceilings"][sc.name] = {k: result["ceiling"].get(k) for k in
                                                   ("requests", "prompt_tokens_mean", "max_new_tokens_mean",
                                                    "tokens_per_s", "tokens_per_s_rounds")}
    if hasattr(os, "getloadavg"):
        suite["environment"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "suite.json"), "w") as f:
        json.dump(suite, f, indent=1)
    summary = os.path.join(args.out, "summary.md")
    with open(summary, "w") as f:
        f.write(suite_markdown(suite))
    return summary, paths + [os.path.join(args.out, "suite.json"), summary]
