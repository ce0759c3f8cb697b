"""`agent-rl bench`'s options (every subcommand's arguments, the effective command line) and the parsers of their
values; `cli/bench.py` runs them."""
from __future__ import annotations

import argparse
import shlex


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
    p.add_argument("--engine", default="hf", choices=["hf", "sglang", "sglang-server", "http", "sim", "auto"],
                   help="generation backend (default: %(default)s; sglang-server = sglang's HTTP server in its own "
                        "process, started with the sglang engine's settings, its log in --out; http = an SGLang server "
                        "at --server-url; sim = a simulated continuous-batching engine whose decode step costs "
                        "--sim-cost, for scheduling work on a CPU)")
    from agent_rl.rollout.event_loop import LOOPS

    p.add_argument("--event-loop", choices=LOOPS, default="asyncio",
                   help="the event loop the benchmark (rollout, tools, in-process sglang's tokenizer manager) runs on "
                        "(rollout.event_loop)")
    p.add_argument("--sim-cost", default="1.3,11.8", metavar="FIXED_MS,PER_ROW_US[,PREFILL_MS[,PREFILL_ROW_MS]]",
                   help="--engine sim: decode step cost, and the cost of one prefill pass for the requests a step "
                        "admits, per pass and per admitted row (default: %(default)s = free prefill, SmolLM2-135M on "
                        "an H200; the 1.4B shape's multi-turn steps, sglang's profile: 2.2,10,10,0.6; 1.3,11.8,60 "
                        "reproduced the H200's 135M 64x4 heavy-tail ratios; docs/benchmarks-log.md)")
    p.add_argument("--sim-max-running", type=int, default=None, metavar="ROWS",
                   help="--engine sim: most rows decoded together, the rest queue by priority (sglang's "
                        "max_running_requests; default: no cap)")
    p.add_argument("--sim-gpu-share", type=float, default=1.0, metavar="F",
                   help="--engine sim with --engine-replicas: the share of each pass the replicas' one GPU is busy "
                        "with it; the rest (the scheduler's CPU) runs beside the other replicas' passes (default "
                        "%(default)s: the GPU is the bound, replicas gain nothing; sglang's 2026-12-03 profile on an "
                        "H200: ~0.25 of a prefill pass, 0.4-0.7 of a decode pass)")
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
    p.add_argument("--mem-fraction", type=float, default=0.4,
                   help="sglang mem_fraction_static (with --engine-replicas: of all the replicas together)")
    p.add_argument("--engine-replicas", type=int, default=1, metavar="N",
                   help="N engines behind one, requests routed by GRPO group (rollout.engine_replicas; engines "
                        "sglang, sglang-server, hf): sglang's scheduler is one process, N work in parallel on one GPU")
    p.add_argument("--engine-kwarg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sglang.Engine / server kwarg (repeatable; values parsed as JSON when they parse); "
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
    p.add_argument("--over-sample", default="0.25,0.5", help="over-sampling rates: oversample and carryover run once at each")
    p.add_argument("--steps", type=int, default=2, help="measured rollout steps per mode")
    p.add_argument("--carry-warmup-steps", type=int, default=1, metavar="K",
                   help="unmeasured steps a carry-over mode runs before its --steps (default: %(default)s): its first "
                        "step has nothing carried and launches every group from scratch, which a training run pays "
                        "once; 0 measures that cold step too (JSON `warmup_step_wall_s`)")
    p.add_argument("--observation-words", type=int, default=8, help="words in each tool observation")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the raw engine run and every mode this many times, alternating the mode order; headline "
                        "numbers over all rounds, each round's beside them (the GPU host drifts 10-30%% between runs)")
    p.add_argument("--engine-profile", default="", metavar="MODES",
                   help="comma list of modes (turn-batched, async, oversample, carryover) run once more, before "
                        "the measured rounds and outside their figures (the profiler slows a step 2-4x), under "
                        "sglang's torch profiler for --engine-profile-passes forward passes: Chrome traces in "
                        "OUT[/SCENARIO]/engine-profile/, GPU busy share, idle gaps and top kernels in the summary "
                        "(engines sglang, sglang-server, http)")
    p.add_argument("--engine-profile-passes", type=int, default=300, metavar="N",
                   help="forward passes (prefill or decode) each profile traces (default: %(default)s)")
    p.add_argument("--sample-stacks", action="store_true",
                   help="sample the event-loop thread's stack every 2 ms in each mode: its time split into idle, our code, "
                        "sglang, asyncio, ... (JSON `loop_stacks`, a column of summary.md)")
    p.add_argument("--sample-engine-stacks", action="store_true",
                   help="sample the main thread of sglang's scheduler process every 5 ms in each mode, inside that "
                        "process: its time by owner and by its own functions (JSON `engine_stacks`, summary.md; engines "
                        "sglang and sglang-server started here; bench/engine_stacks.py)")
    p.add_argument("--no-flush-cache", action="store_true",
                   help="keep the engine's prefix cache across steps, modes and rounds; by default every step and raw "
                        "engine run starts on an empty cache, as a training step does after its weight sync (a carried "
                        "trajectory then prefills its history again)")
    p.add_argument("--no-coalesce-submits", action="store_true",
                   help="in-process sglang engine: send each request as its trajectory asks, not the requests of one "
                        "event-loop pass back to back at its end (the default; engines/sglang_engine._Coalescer)")
    p.add_argument("--kv-sessions", action=argparse.BooleanOptionalAction, default=None,
                   help="each trajectory keeps its KV cache between turns in an sglang streaming session "
                        "(rollout.kv_sessions; engines/kv_sessions.py); default: as rollout.kv_sessions' null, on for "
                        "--engine sglang and sglang-server; compare in one run with the mode variants "
                        "@sessions / @nosessions")
    p.add_argument("--scheduler-patches", nargs="?", const=True, default=True, type=_patch_names, metavar="NAMES",
                   help="agent-rl's speed-ups inside sglang's scheduler processes (rollout.scheduler_patches, "
                        "engines/sglang_patches; engines sglang and sglang-server started here): the default set "
                        "(delayer_gather, decode_rows, delayer_cap, sample_gumbel, gc_freeze) or only those named, "
                        "e.g. --scheduler-patches delayer_gather,decode_rows (default,mixed_logprob: the default set "
                        "and mixed_logprob); with --engine sim, its delayer has sglang's "
                        "slot condition with delayer_cap, or without it where the concurrency fits --sim-max-running")
    p.add_argument("--no-scheduler-patches", dest="scheduler_patches", action="store_const", const=False,
                   help="sglang's scheduler as shipped")
    p.add_argument("--sample-cpu", action="store_true",
                   help="sample the CPU of this process, its children (sglang's scheduler, detokenizer) and the host "
                        "every 0.5 s in each mode: cores each process holds, its busiest threads, host busy share and "
                        "clock (JSON `process_cpu`, a column of summary.md; needs psutil)")


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
    r.add_argument("--modes", default="all", help="comma list of turn-batched, async, oversample, carryover (or all); "
                   "MODE@VARIANT runs a mode under a setting in the same run (in-process sglang: @nocoalesce; it and "
                   "sim: @notify<N>; sglang engines: @sessions, @nosessions; any engine: @load<F>, @replicas<N> with "
                   "--engine-replicas; bench/variants.py), e.g. async,async@notify256")
    r.add_argument("--no-ceiling", action="store_true", help="skip the raw engine run")
    r.add_argument("--turns-ceiling", action="store_true",
                   help="after each raw engine run, the engine alone on the workload's turns: each trajectory's next "
                        "turn sent as soon as its last one ended, no tools, no rollout loop (`bench suite` runs it for "
                        "instant tools)")
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
    s.add_argument("--variant", default=None, metavar="V[,V]",
                   help="also run every scenario's modes under these settings, in the same run, and check the targets "
                        "for each (bench/variants.py: nocoalesce, notify<N>, load<F>, replicas<N>, sessions, nosessions)")
    s.add_argument("--ceiling-prompts", default="64",
                   help="raw engine runs: requests in flight, comma list (e.g. 256,1024: the largest must not be slower)")
    s.add_argument("--ceiling-prompt-len", type=int, default=128, help="raw engine run: prompt tokens")
    s.add_argument("--ceiling-new-tokens", type=int, default=64, help="raw engine run: new tokens")
    g = sub.add_parser("sglang-log", help="per benchmark mode: sglang's prefill passes, cache hits, decode batch sizes",
                       formatter_class=DefaultsHelpFormatter,
                       description="Summarise an sglang log written during `agent-rl bench` (both in one file, e.g. "
                                   "`agent-rl bench suite ... > bench.log 2>&1`): per mode, prefill passes, radix-cache "
                                   "hit rate, decode batch size and CUDA-graph share.")
    g.add_argument("log", help="log file holding sglang's scheduler lines and the bench's mode marks")
    g.add_argument("--gpu-csv", default=None, metavar="FILE",
                   help="nvidia-smi CSV log (timestamp,index,memory.used,utilization.gpu,clocks.sm,clocks.mem,power.draw,"
                        "temperature.gpu,clocks_event_reasons.active or its older name clocks_throttle_reasons.active; noheader): "
                        "each mode's GPU clock and power")
    g.add_argument("--fit-cost", action="store_true",
                   help="fit decode (a pass, a row) and prefill (a pass, an admitted request) costs on the log's 40-pass "
                        "decode windows: each mode's engine time split into the four, and the costs as --sim-cost "
                        "(agent_rl/bench/sglang_cost.py)")
    g.add_argument("--max-pass-ms", type=float, default=50.0,
                   help="--fit-cost: leave out windows whose mean pass is longer (engine idle in tool waits, a stall)")
    g.add_argument("--replica", type=int, default=None, metavar="K",
                   help="a run with --engine-replicas: read replica K's scheduler lines (tagged `R<K>` after the time "
                        "stamp); a log with several replicas' lines needs it")
    t = sub.add_parser("table", help="bench rollout runs side by side: own flags, raw rounds, step times, scheduler cost",
                       formatter_class=DefaultsHelpFormatter,
                       description="One row per run and mode of `agent-rl bench rollout` results: the flags that run "
                                   "has and not every other, the raw engine's rounds, each mode's step seconds per "
                                   "round, and (with --sample-engine-stacks) sglang's scheduler per generated token and "
                                   "its share waiting for the GPU. For settings fixed at the engine's start, compared "
                                   "run against run.")
    t.add_argument("runs", nargs="+", metavar="RUN", help="a bench rollout output folder or its rollout_bench.json")
    c = sub.add_parser("loop-cpu", help="CPU our rollout loop spends per turn, with an engine and tools that cost nothing",
                       formatter_class=DefaultsHelpFormatter,
                       description="The sglang wrapper around a stand-in engine that answers at once with canned ids and "
                                   "log-probs, the bench tool at latency 0: thread CPU ms per turn and per step, per mode "
                                   "(agent_rl/bench/loop_cpu.py; docs/benchmarks-log.md, CPU cost of the rollout "
                                   "loop).")
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


TRI_STATE = {"kv_sessions", "scheduler_patches"}   # --X / --no-X (/ unset: the config's default)


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
            elif key in TRI_STATE:   # False set by hand, not a store_true's default
                parts.append("--no-" + flag[2:])
        elif isinstance(value, list):
            for v in value:
                parts += [flag, str(v)]
        elif value is not None:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _patch_names(text: str) -> str:
    """`--scheduler-patches NAMES`: comma-separated patch names, checked (engines/sglang_patches.selected)."""
    from agent_rl.engines.sglang_patches import selected

    try:
        return ",".join(selected(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_WORDS = {"true": True, "false": False, "none": None, "null": None}


def _engine_kwargs(pairs):
    """`--engine-kwarg KEY=VALUE` pairs over the rollout config's defaults: VALUE as JSON, else true/false/none in any
    case (Python's `False` must not become the truthy string "False"), else the text itself."""
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
            kwargs[key] = _WORDS.get(value.strip().lower(), value)
    return kwargs


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
    """(fixed ms, per-row us, prefill-pass ms, prefill ms per admitted row) of `--sim-cost`; prefill costs default
    to 0."""
    try:
        parts = [float(x) for x in str(text).split(",")]
        if len(parts) not in (2, 3, 4):
            raise ValueError
    except ValueError:
        raise ValueError(f"--sim-cost {text!r}: expected FIXED_MS,PER_ROW_US[,PREFILL_MS[,PREFILL_ROW_MS]], "
                         "e.g. 1.3,11.8") from None
    if min(parts) < 0:
        raise ValueError(f"--sim-cost {text!r}: costs must be >= 0")
    return tuple(parts + [0.0] * (4 - len(parts)))


def _ceiling_sizes(text: str) -> list:
    try:
        sizes = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--ceiling-prompts {text!r}: expected a comma list of integers") from None
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--ceiling-prompts {text!r}: expected request counts >= 1")
    return sizes


def _dtype(name):
    if not name:
        return None
    import torch

    return getattr(torch, name)
