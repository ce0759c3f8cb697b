"""`agent-rl bench suite`: the three target scenarios of docs/benchmarks.md on one engine start.

    instant-tools   tools return at once           turn-batched, async        async >= 90% of the matched raw ceiling
    tool-latency    lognormal tool latency         turn-batched, async        async step >= 3x faster than turn-batched
    heavy-tail      heavy-tailed tokens per turn   async, over-sample, carry  step time cut >= 40% vs async

plus the standalone raw engine run. Each scenario writes its own folder (JSON, summary.md, plots);
the suite writes `suite.json` and a `summary.md` with the target checks.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from agent_rl.bench.modes import ModeSpec, parse_modes
from agent_rl.bench.report import comparisons
from agent_rl.bench.workload import Dist, Workload

TARGET_CEILING_RATIO = 0.90
TARGET_ASYNC_SPEEDUP = 3.0
TARGET_STEP_CUT = 0.40


@dataclass
class Scenario:
    name: str
    workload: Workload
    modes: List[ModeSpec]
    target: str


def scenarios(prompts: int, n: int, turns: str, tokens_per_turn: str, tool_latency: str, heavy_tail_tokens: str,
              heavy_tail_prompts: int, over_sample: str, seed: int) -> List[Scenario]:
    base = Workload(num_prompts=prompts, n=n, turns=Dist.parse(turns), tokens_per_turn=Dist.parse(tokens_per_turn),
                    tool_latency=Dist.parse("0"), seed=seed)
    return [
        Scenario("instant-tools", base, parse_modes("turn-batched,async"), "ceiling_ratio"),
        Scenario("tool-latency", dataclasses.replace(base, tool_latency=Dist.parse(tool_latency)),
                 parse_modes("turn-batched,async"), "async_speedup"),
        Scenario("heavy-tail", dataclasses.replace(base, num_prompts=heavy_tail_prompts,
                                                   tokens_per_turn=Dist.parse(heavy_tail_tokens)),
                 parse_modes("async,oversample,carryover", over_sample), "step_cut"),
    ]


def target_check(scenario: Scenario, result: Dict[str, Any]) -> Dict[str, Any]:
    """The scenario's target: measured value, threshold, pass/fail."""
    by = {m["mode"]: m for m in result["modes"]}
    if scenario.target == "ceiling_ratio":
        value: Optional[float] = by["async"].get("ratio_to_ceiling")
        return {"scenario": scenario.name, "target": f"async tokens/s >= {TARGET_CEILING_RATIO:.0%} of the raw engine",
                "value": value, "threshold": TARGET_CEILING_RATIO, "met": value is not None and value >= TARGET_CEILING_RATIO,
                "detail": "async generated tokens/s over the raw engine's on the same requests and lengths"}
    comp = comparisons(result["modes"])
    if scenario.target == "async_speedup":
        value = comp.get("async_speedup_vs_turn_batched")
        return {"scenario": scenario.name, "target": f"async step >= {TARGET_ASYNC_SPEEDUP:g}x faster than turn-batched",
                "value": value, "threshold": TARGET_ASYNC_SPEEDUP, "met": value is not None and value >= TARGET_ASYNC_SPEEDUP,
                "detail": "turn-batched mean step time / async mean step time"}
    cuts = comp.get("step_time_cut_vs_async", {})
    best = max(cuts, key=cuts.get) if cuts else None
    value = cuts.get(best) if best else None
    return {"scenario": scenario.name, "target": f"over-sampling / carry-over cut step time >= {TARGET_STEP_CUT:.0%}",
            "value": value, "threshold": TARGET_STEP_CUT, "met": value is not None and value >= TARGET_STEP_CUT,
            "detail": f"best: {best}; all: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in cuts.items())}


def suite_markdown(suite: Dict[str, Any]) -> str:
    env = suite["environment"]
    c = suite.get("ceiling")
    lines = ["# agent-rl benchmark suite", "",
             f"- command: `{suite['command']}`",
             f"- device: {env['device']}; python {env['python']}, torch {env['torch']}, transformers {env['transformers']}, "
             f"sglang {env['sglang'] or 'not installed'}",
             f"- git commit: {env.get('commit') or 'unknown'}{' (dirty tree)' if env.get('dirty') else ''}",
             f"- engine: {suite['engine']}, model: {suite['model']}", ""]
    if c:
        lines += [f"Raw engine: {c['requests']} requests x {c['max_new_tokens_mean']:.0f} new tokens "
                  f"(prompt {c['prompt_tokens_mean']:.0f}): **{c['tokens_per_s']:.0f} tokens/s**, "
                  f"{c['requests_per_s']:.1f} requests/s, {c['wall_s']:.2f} s", ""]
    lines += ["| scenario | target | measured | met | detail |", "|---|---|---|---|---|"]
    for t in suite["targets"]:
        v = t["value"]
        shown = "–" if v is None else (f"{v:.2f}x" if t["threshold"] > 1 else f"{100 * v:.0f}%")
        lines.append(f"| [{t['scenario']}]({t['scenario']}/summary.md) | {t['target']} | {shown} | "
                     f"{'yes' if t['met'] else 'no'} | {t['detail']} |")
    return "\n".join(lines) + "\n"
