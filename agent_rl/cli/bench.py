"""`agent-rl bench engine|rollout`: raw engine throughput, and multi-turn tool rollouts in every
scheduling mode on one seeded workload. Writes JSON + summary.md (+ PNG plots) under --out."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import shlex
import sys

HELP = "Benchmark raw engine throughput and async multi-turn rollouts (see docs/benchmarks.md)"


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, `(default: X)`, unless the help already says it (or there is
    none: a required option, a flag, `None`, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("%(default)" in text or "default" in text.lower() or action.required or not action.option_strings
                or default is None or default is False or default is argparse.SUPPRESS or default == []):
            return text
        return f"{text} (default: %(default)s)"


def _common(p) -> None:
    p.add_argument("--engine", default="hf", choices=["hf", "sglang", "http", "sim", "auto"],
                   help="generation backend (default: %(default)s; http = an SGLang server at --server-url; sim = a "
                        "simulated continuous-batching engine whose decode step costs --sim-cost, for scheduling work "
                        "on a CPU)")
    p.add_argument("--sim-cost", default="1.3,11.8", metavar="FIXED_MS,PER_ROW_US",
                   help="--engine sim: decode step cost (default: %(default)s, SmolLM2-135M on an H200, "
                        "docs/benchmarks.md)")
    p.add_argument("--server-url", default=None, help="--engine http: base URL of the SGLang server")
    p.add_argument("--model", default="embedded",
                   help="HF model folder, `embedded` (SmolLM2-135M-Instruct), or `random:SHAPE`: a random-init model of "
                        "a named shape (qwen2.5-0.5b | qwen2.5-1.5b | qwen2.5-3b | qwen2.5-7b), built once into the cache")
    p.add_argument("--device", default=None, help="hf engine device (default: cuda when available, else cpu)")
    p.add_argument("--dtype", default=None, help="model dtype, e.g. bfloat16 / float32 (default: the engine's)")
    p.add_argument("--out", required=True, help="output folder (JSON, summary.md, plots)")
    p.add_argument("--seed", type=int, default=0, help="workload / prompt seed")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--max-model-len", type=int, default=4096, help="engine context length")
    p.add_argument("--hf-max-batch-size", type=int, default=64, help="hf engine: most rows decoded together")
    p.add_argument("--mem-fraction", type=float, default=0.4, help="sglang mem_fraction_static")
    p.add_argument("--engine-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sglang.Engine kwarg (repeatable; values parsed as JSON when they parse); "
                        "defaults: attention_backend=triton sampling_backend=pytorch grammar_backend=none")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _workload_args(p, prompts=16, n=2, turns="3", tokens="16") -> None:
    p.add_argument("--prompts", type=int, default=prompts, help="prompt groups per step (the batch size B)")
    p.add_argument("--n", type=int, default=n, help="samples per prompt (GRPO group size)")
    p.add_argument("--turns", default=turns, help="assistant turns per trajectory (distribution; a tool call after each but the last)")
    p.add_argument("--tokens-per-turn", default=tokens, help="new tokens per assistant turn (distribution, needs max= when unbounded)")
    p.add_argument("--over-sample-max-load", default="none",
                   help="rollout.over_sample_max_load: extras start while fewer than this fraction of the kept groups' "
                        "trajectories are still running (`none`: all at once)")
    p.add_argument("--over-sample", default="0.25,0.5", help="over-sampling rates of the oversample mode (carryover uses the first)")
    p.add_argument("--steps", type=int, default=2, help="rollout steps per mode (carry-over needs >= 2 to show)")
    p.add_argument("--observation-words", type=int, default=8, help="words in each tool observation")


def add_arguments(parser) -> None:
    parser.formatter_class = DefaultsHelpFormatter
    sub = parser.add_subparsers(dest="bench_cmd", metavar="BENCH", required=True)
    e = sub.add_parser("engine", help="raw generation throughput (all requests at once, ignore_eos)",
                       formatter_class=DefaultsHelpFormatter,
                       description="Submit --prompts requests of --prompt-len random token ids at once, each sampling "
                                   "exactly --new-tokens tokens (ignore_eos). Reports tokens/s, requests/s, wall time.")
    _common(e)
    e.add_argument("--prompts", type=int, default=64, help="requests")
    e.add_argument("--prompt-len", type=int, default=128, help="prompt tokens per request")
    e.add_argument("--new-tokens", type=int, default=128, help="new tokens per request")
    r = sub.add_parser("rollout", help="multi-turn tool rollouts: turn-batched vs async vs over-sampling vs carry-over",
                       formatter_class=DefaultsHelpFormatter,
                       description="Run the raw-engine ceiling, then each mode on the same seeded workload. "
                                   "Distributions: N | fixed:N | uniform:lo=A,hi=B | lognormal:mean=M,sigma=S | "
                                   "pareto:alpha=A,scale=S, each with optional min=,max= clips.")
    _common(r)
    _workload_args(r)
    r.add_argument("--tool-latency", default="0", help="seconds per tool call (distribution), e.g. lognormal:mean=0.5,sigma=1")
    r.add_argument("--tool-failure-rate", type=float, default=0.0, help="fraction of tool calls that fail (error observation)")
    r.add_argument("--modes", default="all", help="comma list of turn-batched, async, oversample, carryover (or all)")
    r.add_argument("--no-ceiling", action="store_true", help="skip the raw engine run")
    s = sub.add_parser("suite", help="the targets of docs/benchmarks.md: raw engine + 3 rollout scenarios, one engine start",
                       formatter_class=DefaultsHelpFormatter,
                       description="Raw engine run, then scenarios instant-tools (turn-batched, async), tool-latency "
                                   "(turn-batched, async) and heavy-tail (async, over-sampling, carry-over); one folder "
                                   "per scenario under --out and a summary.md with the target checks.")
    _common(s)
    _workload_args(s)
    s.add_argument("--tool-latency", default="lognormal:mean=0.5,sigma=1,max=10", help="tool latency of the tool-latency scenario")
    s.add_argument("--heavy-tail-tokens", default="pareto:alpha=1.2,scale=8,max=128",
                   help="tokens per turn of the heavy-tail scenario (instant tools)")
    s.add_argument("--heavy-tail-prompts", type=int, default=None, help="prompt groups of the heavy-tail scenario (default --prompts)")
    s.add_argument("--ceiling-prompts", default="64",
                   help="raw engine runs: requests in flight, comma list (e.g. 256,1024: the largest must not be slower)")
    g = sub.add_parser("sglang-log", help="per benchmark mode: sglang's prefill passes, cache hits, decode batch sizes",
                       formatter_class=DefaultsHelpFormatter,
                       description="Summarise an sglang log written during `agent-rl bench` (both in one file, e.g. "
                                   "`agent-rl bench suite ... > bench.log 2>&1`): per mode, prefill passes, radix-cache "
                                   "hit rate, decode batch size and CUDA-graph share.")
    g.add_argument("log", help="log file holding sglang's scheduler lines and the bench's mode marks")
    c = sub.add_parser("loop-cpu", help="CPU our rollout loop spends per turn, with an engine and tools that cost nothing",
                       formatter_class=DefaultsHelpFormatter,
                       description="The sglang wrapper around a stand-in engine that answers at once with canned ids and "
                                   "log-probs, the bench tool at latency 0: thread CPU ms per turn and per step, per mode "
                                   "(agent_rl/bench/loop_cpu.py; docs/benchmarks.md, CPU cost of the rollout loop).")
    from agent_rl.bench.loop_cpu import add_arguments as loop_cpu_arguments

    loop_cpu_arguments(c)
    a = sub.add_parser("actor", help="one training step's time and peak memory, full fine-tuning vs LoRA",
                       formatter_class=DefaultsHelpFormatter,
                       description="Build the actor and its reference as a training worker does, then time --steps "
                                   "steps (old log-probs, reference log-probs, update) on one synthetic batch, once "
                                   "with full fine-tuning and once with a LoRA adapter (the reference is then the "
                                   "adapter-off model). Reports the median per phase and peak accelerator memory.")
    a.add_argument("--model", default="embedded", help="HF model folder, `embedded`, or `random:SHAPE` (see bench engine)")
    a.add_argument("--device", default=None, help="cuda | cpu (default: cuda when available)")
    a.add_argument("--out", required=True, help="output folder (actor.json, summary.md)")
    a.add_argument("--seed", type=int, default=0, help="batch seed")
    a.add_argument("--batch", type=int, default=32, help="sequences per step")
    a.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence")
    a.add_argument("--prompt-len", type=int, default=256, help="leading tokens outside the loss")
    a.add_argument("--steps", type=int, default=4, help="timed steps per variant (the first is not counted when > 1)")
    a.add_argument("--lora-rank", type=int, default=8, help="rank of the LoRA variant (actor.lora.rank)")
    a.add_argument("--lora-alpha", type=float, default=16.0, help="actor.lora.alpha of the LoRA variant")
    a.add_argument("--no-full", action="store_true", help="run the LoRA variant only")
    a.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for every variant (repeatable), e.g. actor.ppo_mini_batch_size=8")
    s.add_argument("--ceiling-prompt-len", type=int, default=128, help="raw engine run: prompt tokens")
    s.add_argument("--ceiling-new-tokens", type=int, default=64, help="raw engine run: new tokens")


def command_line(args) -> str:
    """The effective command: every option spelled out, so it reproduces the run exactly."""
    skip = {"command", "bench_cmd", "_module", "_extra", "_accepts_extra"}
    parts = ["agent-rl", "bench", args.bench_cmd]
    for key, value in sorted(vars(args).items()):
        if key in skip or key.startswith("_"):
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            if value:
                parts.append(flag)
        elif isinstance(value, list):
            for v in value:
                parts += [flag, str(v)]
        elif value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _engine_kwargs(pairs):
    import json

    from agent_rl.config.schema import RolloutConfig

    kwargs = dict(RolloutConfig().engine_kwargs)
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq:
            raise ValueError(f"--engine-kwarg {pair!r}: expected KEY=VALUE")
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


def _rollout_config(args, concurrency: int):
    """The engine's rollout config; `concurrency` (most requests the benchmark puts in flight) sizes sglang's
    CUDA graphs and running cap (engines/sglang_engine.scheduling_kwargs)."""
    from agent_rl.config.schema import RolloutConfig

    return dataclasses.replace(RolloutConfig(), engine=args.engine, max_model_len=args.max_model_len,
                               hf_max_batch_size=args.hf_max_batch_size, gpu_memory_utilization=args.mem_fraction,
                               engine_kwargs=_engine_kwargs(args.engine_kwarg), progress_bar=not args.no_progress,
                               max_concurrent_trajectories=concurrency, server_url=args.server_url,
                               over_sample_max_load=_max_load(getattr(args, "over_sample_max_load", None)))


def _max_load(text):
    if text is None or str(text).lower() in ("none", "null", ""):
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--over-sample-max-load {text!r}: expected a number or none") from None
    if value <= 0:
        raise ValueError(f"--over-sample-max-load {text!r}: must be > 0 (none = no gate)")
    return value


def _sim_cost(text: str):
    try:
        fixed_ms, per_row_us = (float(x) for x in str(text).split(","))
    except ValueError:
        raise ValueError(f"--sim-cost {text!r}: expected FIXED_MS,PER_ROW_US, e.g. 1.3,11.8") from None
    if fixed_ms < 0 or per_row_us < 0:
        raise ValueError(f"--sim-cost {text!r}: costs must be >= 0")
    return fixed_ms, per_row_us


def _build_engine(args, rollout_cfg, model_path):
    if args.engine == "sim":
        from agent_rl.bench.sim_engine import SimEngine

        fixed_ms, per_row_us = _sim_cost(args.sim_cost)
        return SimEngine(fixed_ms / 1e3, per_row_us / 1e6)
    from agent_rl.engines import build_engine

    return build_engine(rollout_cfg, model_path, device=args.device, seed=args.seed, dtype=_dtype(args.dtype))


def _ceiling_sizes(text: str) -> list:
    try:
        sizes = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--ceiling-prompts {text!r}: expected a comma list of integers") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--ceiling-prompts {text!r}: expected request counts >= 1")
    return sizes


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


def _dtype(name):
    if not name:
        return None
    import torch

    return getattr(torch, name)


def _plan(args):
    """Check the arguments before any model is loaded: (workload, modes) | scenarios | None."""
    from agent_rl.bench.modes import parse_modes
    from agent_rl.bench.workload import Dist, Workload

    if args.bench_cmd == "engine":
        return None
    if args.steps < 1:
        raise ValueError("--steps must be >= 1")
    if args.bench_cmd == "rollout":
        workload = Workload(num_prompts=args.prompts, n=args.n, turns=Dist.parse(args.turns),
                            tokens_per_turn=Dist.parse(args.tokens_per_turn), tool_latency=Dist.parse(args.tool_latency),
                            tool_failure_rate=args.tool_failure_rate, seed=args.seed)
        workload.max_turns(), workload.max_tokens_per_turn()  # unbounded distributions fail here
        return workload, parse_modes(args.modes, args.over_sample)
    from agent_rl.bench.suite import scenarios

    out = scenarios(args.prompts, args.n, args.turns, args.tokens_per_turn, args.tool_latency, args.heavy_tail_tokens,
                    args.heavy_tail_prompts or args.prompts, args.over_sample, args.seed)
    for sc in out:
        sc.workload.max_turns(), sc.workload.max_tokens_per_turn()
    return out


def run(args) -> int:
    from agent_rl.bench.env_info import environment
    from agent_rl.engines import resolve_engine_kind

    if args.bench_cmd == "sglang-log":
        from agent_rl.bench.sglang_log import main

        return main(args.log)
    if args.bench_cmd == "loop-cpu":
        from agent_rl.bench.loop_cpu import run as loop_cpu

        return loop_cpu(args)
    if args.bench_cmd == "actor":
        return _actor(args)
    try:
        plan = _plan(args)
        if args.engine == "sim":
            _sim_cost(args.sim_cost)
        rollout_cfg = _rollout_config(args, _concurrency(args, plan))
        model_path = _model_path(args.model)
    except ValueError as e:
        print(f"agent-rl bench: {e}", file=sys.stderr)
        return 2

    header = {"kind": args.bench_cmd, "command": command_line(args), "argv": list(sys.argv),
              "engine": args.engine if args.engine == "sim" else resolve_engine_kind(args.engine), "model": model_path, "environment": environment(args.device),
              "max_concurrency": rollout_cfg.max_concurrent_trajectories}
    loop = asyncio.new_event_loop()  # one loop for every engine call (SGLang binds to its first loop)
    asyncio.set_event_loop(loop)
    engine = _build_engine(args, rollout_cfg, model_path)
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
        return await bench_engine(engine, prompts, new_tokens, temperature=args.temperature, progress=bar)
    finally:
        bar.close()


async def _engine_bench(engine, args, model_path, header):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    result = dict(header, ceiling=await _raw_engine(engine, tok, args.prompts, args.prompt_len, args.new_tokens, args))
    paths = _finish(result, args.out, "engine_bench")
    return paths["summary"], list(paths.values())


def _bench(engine, tok, args, rollout_cfg, workload, ceiling: bool):
    from agent_rl.bench.rollout_bench import RolloutBench, RolloutBenchSettings

    settings = RolloutBenchSettings(workload=workload, steps=args.steps, temperature=args.temperature,
                                    observation_words=args.observation_words, ceiling=ceiling, progress=not args.no_progress)
    bench = RolloutBench(engine, tok, settings, rollout_cfg)
    bench.check_context()
    return bench


async def _rollout_bench(engine, args, model_path, rollout_cfg, header, workload, modes):
    from transformers import AutoTokenizer

    from agent_rl.bench.instrument import InstrumentedEngine

    tok = AutoTokenizer.from_pretrained(model_path)
    bench = _bench(InstrumentedEngine(engine), tok, args, rollout_cfg, workload, not args.no_ceiling)
    result = dict(header, **await bench.run(modes), workload=workload.to_json(), steps=args.steps)
    paths = _finish(result, args.out, "rollout_bench")
    return paths["summary"], list(paths.values())


async def _suite(engine, args, model_path, rollout_cfg, header, scenarios):
    import json

    from transformers import AutoTokenizer

    from agent_rl.bench.instrument import InstrumentedEngine
    from agent_rl.bench.suite import ceiling_check, suite_markdown, target_checks

    tok = AutoTokenizer.from_pretrained(model_path)
    wrapped = InstrumentedEngine(engine)
    benches = [_bench(wrapped, tok, args, rollout_cfg, sc.workload, True) for sc in scenarios]  # all checked first
    ceilings = [await _raw_engine(engine, tok, num, args.ceiling_prompt_len, args.ceiling_new_tokens, args)
                for num in _ceiling_sizes(args.ceiling_prompts)]
    suite = dict(header, ceiling=ceilings[0], ceilings=ceilings, scenarios={}, scenario_modes={}, targets=[])
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
        suite["targets"] += target_checks(sc, result)
        suite["scenario_modes"][sc.name] = [{k: m.get(k) for k in ("mode", "step_wall_s_mean", "ratio_to_ceiling",
                                                                    "inflight_mean", "inflight_peak", "loop_cpu_frac",
                                                                    "engine_idle_frac", "latency_p50_s")}
                                            for m in result["modes"]]
    if hasattr(os, "getloadavg"):
        suite["environment"]["load_avg_1m_at_end"] = os.getloadavg()[0]
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "suite.json"), "w") as f:
        json.dump(suite, f, indent=1)
    summary = os.path.join(args.out, "summary.md")
    with open(summary, "w") as f:
        f.write(suite_markdown(suite))
    return summary, paths + [os.path.join(args.out, "suite.json"), summary]
