"""Benchmark outputs: `<out>/<name>.json` (every number + how it was run), PNG plots and `summary.md`."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from agent_rl.bench.env_info import commit_line, device_line
from agent_rl.bench.modes import split_name
from agent_rl.bench.rounds import ceiling_rounds, paired, step_range
from agent_rl.bench.stack_sampler import owners_line

# how the stack samples were taken (bench/stack_sampler.py): a helper thread's looks land where the thread lets go of
# the GIL and collect the Python work before them
_SAMPLED_BY = {"signal": "by a timer signal on the thread: uniform in time",
               "thread": "from a helper thread: skewed to calls that release the GIL"}


def _sampled_by(stacks: Dict[str, Any]) -> str:
    """How `stacks` (a sampler's summary) were taken; figures from before `method` existed: a helper thread."""
    return _SAMPLED_BY.get(stacks.get("method"), "from a helper thread")


# a carry-over mode whose carried stock moved by more than this share of its kept tokens gets a warning in the summary
# (one measured step after the warm-up: 5-25% on the H200; the suites' 2-3 steps: 0-1.3%)
STOCK_MOVED_WARN = 0.03


def comparisons(modes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Derived numbers the targets are stated in (docs/benchmarks.md); with rounds, each round's own ratios beside them
    (`bench/rounds.paired`), and every `MODE@VARIANT` against its plain mode (the comparison an A/B run is for)."""
    by = {m["mode"]: m for m in modes}
    out: Dict[str, Any] = {}
    base, tb = by.get("async"), by.get("turn-batched")
    if base and tb and base["step_wall_s_mean"]:
        out["async_speedup_vs_turn_batched"] = tb["step_wall_s_mean"] / base["step_wall_s_mean"]
        rounds = paired(base, tb)
        if rounds:
            out["async_speedup_vs_turn_batched_rounds"] = rounds
    if base and base["step_wall_s_mean"]:
        others = [m for m in modes if m["mode"] not in ("async", "turn-batched")]
        out["step_time_cut_vs_async"] = {m["mode"]: 1.0 - m["step_wall_s_mean"] / base["step_wall_s_mean"] for m in others}
        rounds = {m["mode"]: [1.0 - r for r in paired(base, m) or []] for m in others}
        if any(rounds.values()):
            out["step_time_cut_vs_async_rounds"] = rounds
        stocked = [m for m in others if m.get("stock_drawn_tokens") is not None and m.get("step_wall_s_charged")]
        if stocked:   # carry-over with its stock change charged (`results.charged_step_s`)
            out["step_time_cut_vs_async_charged"] = {m["mode"]: 1.0 - m["step_wall_s_charged"] / base["step_wall_s_mean"]
                                                    for m in stocked}
            rounds = {m["mode"]: [1.0 - r for r in paired(base, m, "step_wall_s_charged") or []] for m in stocked}
            if any(rounds.values()):
                out["step_time_cut_vs_async_charged_rounds"] = rounds
    variants = {}
    for m in modes:
        plain = by.get(split_name(m["mode"])[0]) if m.get("variant") else None
        if plain and plain["step_wall_s_mean"] and m["step_wall_s_mean"] is not None:
            variants[m["mode"]] = {"plain": plain["mode"], "step_time_change": m["step_wall_s_mean"] / plain["step_wall_s_mean"] - 1,
                                   "rounds": [r - 1 for r in paired(plain, m) or []]}
    if variants:
        out["variant_vs_plain"] = variants
    return out


def _each_round(values, fmt, what: str = "each round") -> str:
    """' (each round: a, b, ...)' or '' without rounds."""
    return f" ({what}: {', '.join(fmt(v) for v in values)})" if values else ""


def percents(values: Dict[str, float]) -> str:
    """'name 12%, other -3%': a mode -> fraction mapping as the summaries print it."""
    return ", ".join(f"{k} {100 * v:.0f}%" for k, v in values.items())


def stock_share(mode: Dict[str, Any]) -> Optional[float]:
    """A carry-over mode's `stock_drawn_tokens` over its kept tokens (negative: the stock grew), None without them."""
    drawn, kept = mode.get("stock_drawn_tokens"), mode.get("kept_tokens")
    return drawn / kept if drawn is not None and kept else None


def stock_words(mode: Dict[str, Any]) -> str:
    """What a carry-over mode's stock-charged step time charged (`results.charged_step_s`), in words."""
    drawn, share = mode.get("stock_drawn_tokens") or 0, stock_share(mode)
    size = f"{100 * abs(share):.0f}%" if share is not None else f"{abs(drawn)} tokens"
    if drawn >= 0:
        return (f"{size} of the tokens its measured steps kept were generated before them, net of what they left "
                "for the next step; charged at its own token rate")
    return (f"its measured steps left {size} (of the tokens they kept) more for the next step than they took over; "
            "credited at its own token rate")


def cost_words(cost: Dict[str, Any]) -> str:
    """'1.64 ms a pass + 7.4 us a row, fitted on ...': a decode cost (`RolloutBench` JSON `decode_cost`) in words."""
    return f"{cost['pass_ms']:.2f} ms a pass + {cost['row_us']:.1f} us a row, {cost['source']}"


def _fmt(v, spec=".2f", none="–") -> str:
    if v is None:
        return none
    return format(v, spec)


def turns_line(ceiling: Dict[str, Any], modes: List[Dict[str, Any]]) -> str:
    """The engine alone on the workload's turns (`ceiling["turns"]`, `--turns-ceiling`) and each mode against it, or ''."""
    t = (ceiling or {}).get("turns")
    if not t:
        return ""
    r = t.get("tokens_per_s_rounds")
    ratio = t.get("ratio_to_raw")
    against = [f"{m['mode']} {100 * m['ratio_to_turns_ceiling']:.0f}%" for m in modes
               if m.get("ratio_to_turns_ceiling") is not None]
    return (f"the engine alone on the same turns ({t['trajectories']} trajectories, {t['requests']} requests: each "
            "trajectory's next turn sent as soon as its last one ended, the tool's observation appended, no tools and no "
            f"rollout loop): {t['tokens_per_s']:.1f} tokens/s"
            + (f" = {100 * ratio:.0f}% of the raw engine" if ratio is not None else "")
            + (" (rounds: " + ", ".join(f"{v:.0f}" for v in r) + ")" if r and len(r) > 1 else "")
            + (f"; KV sessions: {', '.join(f'{v} {k}' for k, v in sorted(t['kv_sessions'].items()))}"
               if t.get("kv_sessions") else "")
            + ": what the turn boundaries cost the engine itself"
            + ("; each mode's tokens/s over it (what the rollout adds on top): " + ", ".join(against) if against else ""))


def _turn_batched_step(result: Dict[str, Any]) -> Optional[float]:
    return next((m["step_wall_s_mean"] for m in result.get("modes", []) if m["mode"] == "turn-batched"), None)


def ideal_speedup(result: Dict[str, Any]) -> Optional[float]:
    """Turn-batched's measured mean step over the ideal async step (`bounds.ideal_steps`): how much faster than this
    turn-batched async can be at the engine's decode cost; None without both."""
    ideal = (result.get("ideal_step") or {}).get("async_s")
    tb = _turn_batched_step(result)
    return tb / ideal if ideal and tb else None


def ideal_line(result: Dict[str, Any]) -> str:
    """The step of an engine that costs only its decode passes (`ideal_step`), in words, or ''."""
    ideal = result.get("ideal_step")
    if not ideal:
        return ""
    speedup, tb = ideal_speedup(result), _turn_batched_step(result)
    return (f"at this engine's decode cost ({cost_words(result['decode_cost'])}), with prefill, turn boundaries and "
            f"the rollout's CPU free and every tool call its planned latency, a step takes {ideal['async_s']:.2f} s "
            f"async and {ideal['turn_batched_s']:.2f} s turn-batched (an estimate)"
            + (f": turn-batched's measured step is {speedup:.2f}x that async step, as fast as async can be against it"
               if speedup else "")
            + "".join(f"; {mode}: {s:.2f} s a step after its warm-up" + (f" (turn-batched's measured step {tb / s:.2f}x it)"
                                                                           if tb and s else "")
                      for mode, s in (ideal.get("carry_s") or {}).items()))


def summary_markdown(result: Dict[str, Any]) -> str:
    env, w, ceil = result["environment"], result.get("workload", {}), result.get("ceiling")
    lines = [f"# agent-rl benchmark: {result['kind']}", "",
             f"- command: `{result['command']}`",
             device_line(env),
             f"- machine load (1-min average) at start / end: {_fmt(env.get('load_avg_1m_at_start'))} / "
             f"{_fmt(env.get('load_avg_1m_at_end'))} on {env.get('cpu_count', '?')} CPUs",
             commit_line(env),
             f"- engine: {result['engine']}, model: {result['model']}"
             + (f", event loop {result['event_loop']}" if result.get("event_loop") else "")]
    if w:
        lines.append(f"- workload: {w['num_prompts']} prompts x n={w['n']}, turns {w['turns']}, tokens/turn {w['tokens_per_turn']}, "
                     f"tool latency {w['tool_latency']} s, tool failure rate {w['tool_failure_rate']:g}, seed {w['seed']}, "
                     f"steps {result.get('steps', 1)}")
    if ceil:
        lines += ["", "## Raw engine ceiling", "",
                  "| requests | prompt tokens (mean) | new tokens | wall s | tokens/s | requests/s |", "|---|---|---|---|---|---|",
                  f"| {ceil['requests']} | {ceil['prompt_tokens_mean']:.0f} | {ceil['max_new_tokens_mean']:.0f} | "
                  f"{ceil['wall_s']:.2f} | {ceil['tokens_per_s']:.1f} | {ceil['requests_per_s']:.2f} |"]
        rounds = ceiling_rounds(ceil)
        if rounds:
            lines.append(f"- {rounds}")
        turns = turns_line(ceil, result.get("modes", []))
        if turns:
            lines.append(f"- {turns}")
    floor = result.get("tool_wait_floor")
    if floor and floor.get("async_s"):
        lines.append(f"- tool waiting no scheduler hides (generation free): turn-batched {floor['turn_batched_s']:.2f} s, "
                     f"async {floor['async_s']:.2f} s a step: with free generation async would be "
                     f"{floor['async_speedup_bound']:.2f}x faster without over-sampling or carry-over (generation moves "
                     "it either way: turn-batched generates every turn at the full batch)")
    ideal = ideal_line(result)
    if ideal:
        lines.append(f"- {ideal}")
    tail = result.get("tail_cut_bound")
    if tail:
        lines.append("- step-time cut vs async this workload's draws allow if decoding did not slow with the batch "
                     "(every trajectory one token per unit of time, tools and prefill free): "
                     + percents(tail))
    engine_tail = result.get("tail_cut_bound_engine")
    if engine_tail:
        lines.append(f"- the same at this engine's decode cost ({cost_words(result['decode_cost'])}; every pass "
                     "priced by the rows still decoding, turn boundaries and prefill still free: an estimate, a measured "
                     "cut lands on either side): " + percents(engine_tail))
    engine_p50 = result.get("tail_p50_bound_engine")
    if engine_p50:
        lines.append("- the kept trajectories' latency p50 against plain async's at that cost (a carried trajectory's "
                     "latency counting its earlier steps): " + ", ".join(f"{k} {100 * v:+.0f}%" for k, v in engine_p50.items()))
    modes = result.get("modes", [])
    if modes:
        lines += ["", "## Rollout modes (same workload)", "",
                  "| mode | wall s | step s (mean) | traj/s | gen tok/s | vs ceiling | latency p50 / p90 / p99 s | "
                  "engine idle s (%) | aborted | carried | planned len kept / all |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in modes:
            b = m["bias"]
            ratio = f"{100 * m['ratio_to_ceiling']:.0f}%" if m.get("ratio_to_ceiling") is not None else "–"
            lines.append(
                f"| {m['mode']} | {m['wall_s']:.2f} | {_fmt(m['step_wall_s_mean'])}{step_range(m)} | {m['trajectories_per_s']:.2f} | "
                f"{m['gen_tokens_per_s']:.1f} | {ratio} | {_fmt(m['latency_p50_s'])} / {_fmt(m['latency_p90_s'])} / "
                f"{_fmt(m['latency_p99_s'])} | {m['engine_idle_s']:.2f} ({100 * m['engine_idle_frac']:.0f}%) | "
                f"{m['aborted']} | {m['carried']} | {_fmt(b['mean_planned_tokens_kept'], '.1f')} / "
                f"{_fmt(b['mean_planned_tokens_all'], '.1f')} |")
        if any(len(m.get("step_wall_s") or []) > 1 or m.get("warmup_step_wall_s") for m in modes):
            lines.append("\n- each step's seconds (a mean of few steps hides a slow one): " + "; ".join(
                f"{m['mode']} " + ", ".join(f"{x:.2f}" for x in m.get("step_wall_s") or [])
                + (f" (after an unmeasured warm-up step of {', '.join(f'{x:.2f}' for x in m['warmup_step_wall_s'])})"
                   if m.get("warmup_step_wall_s") else "") for m in modes))
        stale = [m for m in modes if m.get("policy_lag_max")]
        if stale:
            lines.append("\n- policy lag of the kept trajectories (policy versions between a trajectory's first token and the "
                         "step that kept it; carry-over's staleness): " + "; ".join(
                             f"{m['mode']} mean {m['policy_lag_mean']:.2f}, max {m['policy_lag_max']:g}" for m in stale))
        mixed = [m for m in modes if any(o["count"] for k, o in (m.get("kept_by_origin") or {}).items() if k != "fresh")]
        if mixed:
            lines.append("\n- kept trajectories by origin, count and latency p50 (the first round's; resumed: begun in an "
                         "earlier step, its latency spans the steps; earlier: finished in an earlier step, kept with "
                         "its group): " + "; ".join(f"{m['mode']} " + ", ".join(
                             f"{k} {o['count']} ({_fmt(o['latency_p50_s'])} s)" for k, o in m["kept_by_origin"].items())
                             for m in mixed))
        spread = [m for m in modes if m.get("replica_requests")]
        if spread:
            lines.append("\n- requests per engine replica (`--engine-replicas`; the first round's): " + "; ".join(
                f"{m['mode']} {' / '.join(str(n) for n in m['replica_requests'])}" for m in spread))
        met = [m for m in modes if m.get("kv_sessions")]
        if met:
            lines.append("\n- KV sessions (engines/kv_sessions.py; the first round's): " + "; ".join(
                f"{m['mode']} " + ", ".join(f"{v} {k}" for k, v in sorted(m["kv_sessions"].items()))
                for m in met) + " (appended: a turn sent only its new tokens; started: a trajectory's first request in "
                "a new session; restarted: its context no longer extended what sglang held; full: no session left "
                "under the request-pool cap; kv_full: sessions held their share of the KV pool's tokens, the turn went "
                "without one; redone: sglang's prompt length differed, the turn generated again)")
        if any(step_range(m) for m in modes):
            lines.append(f"\n- {len(modes[0]['rounds'])} rounds (`--rounds`): step s is the mean over every round's steps, "
                         "(lo-hi) the lowest and highest round's mean; vs ceiling and latency: the median round")
        comp = result.get("comparisons", {})
        if comp:
            lines += [""]
            if "async_speedup_vs_turn_batched" in comp:
                lines.append(f"- async step time vs turn-batched: **{comp['async_speedup_vs_turn_batched']:.2f}x** faster"
                             + _each_round(comp.get("async_speedup_vs_turn_batched_rounds"), lambda v: f"{v:.2f}x"))
            cut_rounds = comp.get("step_time_cut_vs_async_rounds", {})
            for name, cut in comp.get("step_time_cut_vs_async", {}).items():
                lines.append((f"- {name}: step time {100 * cut:+.0f}% cut vs async" if cut >= 0 else
                              f"- {name}: step time {100 * -cut:.0f}% longer than async")
                             + _each_round(cut_rounds.get(name), lambda v: f"{100 * v:+.0f}%", "each round's cut"))
            by = {m["mode"]: m for m in modes}
            charged_rounds = comp.get("step_time_cut_vs_async_charged_rounds", {})
            charged = comp.get("step_time_cut_vs_async_charged", {})
            for name, cut in charged.items():
                lines.append(f"- {name} with its stock change charged: step time {100 * cut:+.0f}% cut vs async"
                             + _each_round(charged_rounds.get(name), lambda v: f"{100 * v:+.0f}%", "each round's cut")
                             + f" ({stock_words(by[name])})")
            if charged:
                moved = {n: abs(stock_share(by[n]) or 0.0) for n in charged}
                moved = {n: v for n, v in moved.items() if v > STOCK_MOVED_WARN}
                lines.append("- carry-over's stock: the measured step time flatters a mode whose steps kept tokens "
                             "earlier steps generated and the charged one penalizes it (the other way round for a "
                             "stock that grew); a steady run lies between, the two converge with more `--steps`, and "
                             "the suite's targets read the slower"
                             + (f". **The stock moved by more than {STOCK_MOVED_WARN:.0%} of the kept tokens** in "
                                + percents(moved) + ": neither figure is a steady run's; measure more `--steps`"
                                if moved else ""))
            for name, v in comp.get("variant_vs_plain", {}).items():
                lines.append(f"- {name} vs {v['plain']}: step time {100 * v['step_time_change']:+.0f}% (longer +, shorter -)"
                             + _each_round(v["rounds"], lambda x: f"{100 * x:+.0f}%"))
            if cut_rounds or comp.get("async_speedup_vs_turn_batched_rounds"):
                lines.append("- each round: the two modes' step times within that round (minutes apart at most; the "
                             "rounds further apart); a difference that changes sign between rounds is the machine's, not the mode's")
        sampled = [m for m in modes if m.get("loop_stacks")]
        if sampled:
            lines += ["", "## The event-loop thread's time (stack samples every "
                      f"{1000 * sampled[0]['loop_stacks']['interval_s']:.0f} ms, "
                      f"{_sampled_by(sampled[0]['loop_stacks'])})", ""]
            for m in sampled:
                st = m["loop_stacks"]
                top = ", ".join(f"`{k}` {100 * v:.1f}%" for k, v in st["functions"][:5])
                cpu = owners_line(st, key="owners_cpu")
                lines.append(f"- {m['mode']}: wall {owners_line(st)}" + (f"; CPU {cpu}" if cpu != "–" else "")
                             + f" ({st['samples']} samples); most seen: {top}")
        # the raw engine run first (the same requests in one turn each: what the scheduler does without turns)
        sampled = [{"mode": "raw engine", **ceil}] if ceil and ceil.get("engine_stacks") else []
        sampled += [m for m in modes if m.get("engine_stacks")]
        if sampled:
            from agent_rl.bench.engine_stacks import per_token_line, summary_line

            lines += ["", "## sglang's scheduler: its main thread's time (stack samples every "
                      f"{1000 * sampled[0]['engine_stacks']['interval_s']:.0f} ms inside its process, "
                      f"{_sampled_by(sampled[0]['engine_stacks'])}; its busy loop "
                      "polls for work, so `zmq` and `recv_requests` are mostly waiting; its loop's steps: where in "
                      "one pass of its loop the time went, wherever inside the step)", ""]
            for m in sampled:
                cost = per_token_line(m["engine_stacks"], m.get("gen_tokens", m.get("output_tokens")))
                lines.append(f"- {m['mode']}: {summary_line(m['engine_stacks'])}" + (f"; {cost}" if cost else ""))
        cpu = [m for m in modes if m.get("process_cpu")]
        if cpu:
            from agent_rl.bench.proc_sampler import processes_line

            lines += ["", "## CPU cores by process (this process = `bench`, sglang's children by their titles; host)", ""]
            for m in cpu:
                busiest = "; ".join(f"{p['name']}: " + ", ".join(f"{t['name']} {t['cpu_cores_mean']:.2f}" for t in p["threads"])
                                    for p in m["process_cpu"]["processes"][:2] if p["threads"])
                lines.append(f"- {m['mode']}: {processes_line(m['process_cpu'])}" + (f" (busiest threads: {busiest})" if busiest else ""))
            for r, rnd in enumerate(result.get("round_results") or []):
                if r == 0:
                    continue   # round 0 is the lines above
                lines += [f"- round {r + 1}, {m['mode']}: {processes_line(m.get('process_cpu'))}"
                          for m in rnd["modes"] if m.get("process_cpu")]
        profiled = [m for m in modes if m.get("engine_profile")]
        if profiled:
            from agent_rl.bench.engine_profile import profile_markdown

            lines += ["", "## Engine profile (sglang's torch profiler in its scheduler; an extra run, not in the "
                      "figures above)", ""]
            lines += [profile_markdown(m["mode"], m["engine_profile"]) for m in profiled]
        lines += ["", "Plots: `throughput.png`, `completion_cdf.png`, `engine_busy.png`."]
    return "\n".join(lines) + "\n"


def plot_throughput(modes, ceiling: Optional[Dict[str, Any]], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m["mode"] for m in modes]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(names) + 4), 4))
    a1.bar(names, [m["gen_tokens_per_s"] for m in modes], color="tab:blue", label="generated")
    a1.bar(names, [m["kept_tokens_per_s"] for m in modes], color="tab:green", alpha=0.7, label="kept in batch")
    if ceiling:
        a1.axhline(ceiling["tokens_per_s"], color="tab:red", ls="--", label="raw engine ceiling")
    a1.set_ylabel("tokens / s")
    a1.set_title("throughput by mode")
    a1.legend(fontsize=8)
    a2.bar(names, [m["step_wall_s_mean"] or 0 for m in modes], color="tab:orange")
    a2.set_ylabel("seconds")
    a2.set_title("rollout time per step (mean)")
    for ax in (a1, a2):
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_completion_cdf(modes, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in modes:
        xs = m["completion_s"]
        if xs:
            ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=m["mode"])
    ax.set_xlabel("seconds from step start until the trajectory finished (kept trajectories)")
    ax.set_ylabel("fraction of kept trajectories")
    ax.set_title("completion time CDF")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_busy_timeline(modes, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.6 * len(modes) + 1.5))
    for row, m in enumerate(modes):
        bars = [(s, e - s) for s, e in m["busy_intervals"]]
        ax.broken_barh(bars, (row - 0.35, 0.7), color="tab:blue")
        for s, e in m["step_bounds"]:
            ax.plot([e, e], [row - 0.45, row + 0.45], color="black", lw=1)
    ax.set_yticks(range(len(modes)))
    ax.set_yticklabels([f"{m['mode']} (idle {100 * m['engine_idle_frac']:.0f}%)" for m in modes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the mode's start (blue: >= 1 generate in flight; black ticks: step ends)")
    ax.set_title("engine busy timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: Dict[str, Any], out_dir: str, name: str) -> Dict[str, str]:
    """Write `<name>.json`, `summary.md` and (for rollout results) the three plots; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"json": os.path.join(out_dir, f"{name}.json"), "summary": os.path.join(out_dir, "summary.md")}
    modes = result.get("modes", [])
    if modes:
        result.setdefault("comparisons", comparisons(modes))
        paths.update(throughput=os.path.join(out_dir, "throughput.png"),
                     cdf=os.path.join(out_dir, "completion_cdf.png"),
                     busy=os.path.join(out_dir, "engine_busy.png"))
        plot_throughput(modes, result.get("ceiling"), paths["throughput"])
        plot_completion_cdf(modes, paths["cdf"])
        plot_busy_timeline(modes, paths["busy"])
    with open(paths["json"], "w") as f:
        json.dump(result, f, indent=1)
    with open(paths["summary"], "w") as f:
        f.write(summary_markdown(result))
    return paths
