"""Evaluation of a model on a data set with its tools (`agent-rl eval`, docs/eval.md).

    trajs, tokenizer = asyncio.run(run_eval(cfg, model_path, device, rows, n=K))
    report = summarize(trajs, ks=default_ks(K), correct_metric=None)
    text = markdown({**report, "ks": default_ks(K), "n": K}, header={"model": ..., ...})

The rollout stack is the trainer's: tokenizer, tool runtime and renderer from `components`, the engine from
`engines.build_engine`, `RolloutScheduler.validate` with `rollout.val_sampling` (n samples per question, no
over-sampling), rewards from `rewards.compute_reward` (`components.make_reward_fn`). Every score here is a mean of
what the reward function wrote into `traj.reward_components` (KG: f1 / em / hits1, arithmetic: correct): nothing is
scored twice.

Definitions (per group of trajectories: everything, one data source, one data source and hop count):
  f1, em, hits1, accuracy  mean over all samples of the reward components f1 / em / hits1 / correct
  correct metric           per data source: `correct` when its reward reports it (arithmetic), else `hits1` (KG),
                           or the component named by `correct_metric`; a sample is correct when it is 1
  pass@k                   mean over questions of 1 - C(n-c, k) / C(n, k) (Chen et al. 2021, unbiased), n samples
                           of which c are correct, for every k <= n
  mean@n                   mean over questions of c / n (the expected correctness of one sample)
  answer_rate              mean of the reward's `answered` component (a final answer was given)
  truncation_rate          fraction of trajectories stopped by a length or turn budget (`TRUNCATION_REASONS`)
  turns_mean               assistant turns per trajectory
  tools/<name>             calls per trajectory and success rate (`ToolCallRecord.succeeded`)
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from agent_rl.orchestration.traj_metrics import hop_key, tool_success_metrics
from agent_rl.rollout.metrics import mean, reward_metrics, trajectory_metrics
from agent_rl.rollout.trajectory import Trajectory

# stop reasons of a trajectory cut by a budget (agent_loop.py); `answer` is the model ending on its own
TRUNCATION_REASONS = frozenset({"max_new_tokens_per_turn", "max_assistant_turns", "max_tool_calls",
                                "max_response_tokens", "max_model_len"})
# reward components reported as headline scores, under these names
SCORES = (("f1", "f1"), ("em", "em"), ("hits1", "hits1"), ("correct", "accuracy"))
CORRECT_DEFAULTS = ("correct", "hits1")
ANSWERED = "answered"


# ------------------------------------------------------------------ estimators

def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: 1 - C(n-c, k) / C(n, k), computed as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def default_ks(n: int) -> List[int]:
    """1, 2, 4, ... below n, and n."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def parse_ks(text: Optional[str], n: int) -> List[int]:
    """`1,4,8` -> [1, 4, 8] (each 1 <= k <= n); None -> `default_ks(n)`. A bad list is a ValueError."""
    if not text:
        return default_ks(n)
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--k: expected comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"--k: every k must be between 1 and --n ({n}), got {text!r}")
    return ks


# ------------------------------------------------------------------ per question

def source_of(traj: Trajectory) -> str:
    return str((traj.row or {}).get("data_source", "unknown"))


def correct_metrics(trajs: Sequence[Trajectory], override: Optional[str] = None) -> Dict[str, Optional[str]]:
    """data source -> the reward component deciding correctness (None when its reward reports none of them)."""
    comps: Dict[str, set] = defaultdict(set)
    for t in trajs:
        comps[source_of(t)].update(t.reward_components or {})
    out: Dict[str, Optional[str]] = {}
    for ds, names in sorted(comps.items()):
        wanted = (override,) if override else CORRECT_DEFAULTS
        out[ds] = next((m for m in wanted if m in names), None)
    return out


def is_correct(traj: Trajectory, metric: Optional[str]) -> Optional[bool]:
    if metric is None:
        return None
    v = (traj.reward_components or {}).get(metric)
    return None if v is None else float(v) >= 1.0 - 1e-9


def group_questions(trajs: Sequence[Trajectory]) -> List[List[Trajectory]]:
    """The trajectories of each question (GRPO group uid), in the order of the data."""
    by_uid: Dict[str, List[Trajectory]] = {}
    for t in trajs:
        by_uid.setdefault(t.uid, []).append(t)
    return [sorted(ts, key=lambda t: t.sample_index) for ts in by_uid.values()]


def question_records(trajs: Sequence[Trajectory], metrics: Dict[str, Optional[str]]) -> List[Dict[str, Any]]:
    """One record per question: its data source, hop, correct metric, n, c, per-sample correctness and scores,
    and the ids of its trajectories (the `id` field of the trajectory JSONL)."""
    out = []
    for i, ts in enumerate(group_questions(trajs)):
        row = ts[0].row or {}
        extra = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
        ds = source_of(ts[0])
        metric = metrics.get(ds)
        flags = [is_correct(t, metric) for t in ts]
        rec = {"question": i, "uid": ts[0].uid, "sample_id": extra.get("sample_id"), "data_source": ds,
               "hop": hop_key(row), "correct_metric": metric, "n": len(ts),
               "c": None if metric is None or None in flags else int(sum(flags)),
               "correct": [None if f is None else int(f) for f in flags],
               "scores": {name: [float((t.reward_components or {}).get(comp, float("nan"))) for t in ts]
                          for comp, name in SCORES if any(comp in (t.reward_components or {}) for t in ts)},
               "trajectories": [t.id for t in ts]}
        out.append(rec)
    return out


# ------------------------------------------------------------------ per group

def group_summary(trajs: Sequence[Trajectory], questions: Sequence[Dict[str, Any]], ks: Sequence[int]) -> Dict[str, Any]:
    """The metrics of one group of trajectories and its questions (module docstring)."""
    n_traj = len(trajs)
    out: Dict[str, Any] = {"questions": len(questions), "samples": n_traj}
    if not trajs:
        return out
    r = reward_metrics(trajs, prefix="r")
    out["reward"] = r.pop("r/mean")
    for k in ("std", "max", "min"):
        r.pop(f"r/{k}")
    comps = {k[2:]: v for k, v in r.items()}
    for comp, name in SCORES:
        if comp in comps:
            out[name] = comps[comp]
    out["answer_rate"] = comps.get(ANSWERED)
    reasons = Counter(t.stop_reason or "unknown" for t in trajs)
    out["truncation_rate"] = sum(v for k, v in reasons.items() if k in TRUNCATION_REASONS) / float(n_traj)
    out["stop_reasons"] = {k: v / float(n_traj) for k, v in sorted(reasons.items())}
    tm = trajectory_metrics(trajs)
    out["turns_mean"] = tm["rollout/turns_mean"]
    out["tool_calls_mean"] = tm["rollout/tool_calls_mean"]
    out["response_len_mean"] = tm["rollout/response_len_mean"]
    tools: Dict[str, Dict[str, float]] = {}
    for key, v in tool_success_metrics(trajs, prefix="t").items():   # t/tool/<name>/<success_rate|calls>
        name, leaf = key[len("t/tool/"):].rsplit("/", 1)
        tools.setdefault(name, {})["success_rate" if leaf == "success_rate" else "calls_per_trajectory"] = v
    out["tools"] = tools
    out["components"] = comps
    scored = [q for q in questions if q["c"] is not None]
    metrics = sorted({q["correct_metric"] for q in scored})
    out["correct_metric"] = metrics[0] if len(metrics) == 1 else (metrics or None)
    if scored:
        out["scored_questions"] = len(scored)
        n_min = min(q["n"] for q in scored)
        for k in ks:
            if k <= n_min:
                out[f"pass@{k}"] = mean([pass_at_k(q["n"], q["c"], k) for q in scored])
        out[f"mean@{n_min}"] = mean([q["c"] / q["n"] for q in scored])
    return out


def _hop_order(key: str):
    return (1, 0) if key == "hop_unreachable" else (0, int(key[3:]))


def summarize(trajs: Sequence[Trajectory], ks: Sequence[int], correct_metric: Optional[str] = None) -> Dict[str, Any]:
    """{"overall", "by_source": {ds: {..., "by_hop": {hop<k>: {...}}}}, "correct_metric": {ds: name},
    "questions": [question_records]}."""
    metrics = correct_metrics(trajs, correct_metric)
    questions = question_records(trajs, metrics)
    q_by_uid = {q["uid"]: q for q in questions}

    def summary(ts):
        uids = list(dict.fromkeys(t.uid for t in ts))
        return group_summary(ts, [q_by_uid[u] for u in uids], ks)

    by_source: Dict[str, Any] = {}
    groups: Dict[str, List[Trajectory]] = defaultdict(list)
    for t in trajs:
        groups[source_of(t)].append(t)
    for ds, ts in sorted(groups.items()):
        s = summary(ts)
        hops: Dict[str, List[Trajectory]] = defaultdict(list)
        for t in ts:
            key = hop_key(t.row)
            if key is not None:
                hops[key].append(t)
        if hops:
            s["by_hop"] = {key: summary(hops[key]) for key in sorted(hops, key=_hop_order)}
        by_source[ds] = s
    return {"overall": summary(trajs), "by_source": by_source, "correct_metric": metrics, "questions": questions}


# ------------------------------------------------------------------ running

async def run_eval(cfg, model_path: str, device: str, rows: Sequence[Dict[str, Any]], n: int = 1) -> Tuple[List[Trajectory], Any]:
    """Roll out `n` samples of every row with `cfg.rollout.val_sampling` through the trainer's rollout stack.
    Returns (trajectories in data order, tokenizer)."""
    from agent_rl.engines import build_engine
    from agent_rl.orchestration.components import build_renderer, build_scheduler, build_tool_runtime, load_tokenizer

    tokenizer = load_tokenizer(cfg, model_path)
    runtime = build_tool_runtime(cfg, tokenizer)
    renderer = build_renderer(cfg, tokenizer, runtime)
    engine = None
    try:
        engine = build_engine(cfg.rollout, model_path, device=device, seed=cfg.trainer.seed)
        sched = build_scheduler(cfg, engine, renderer, runtime, filter_groups=False)
        try:
            res = await sched.validate(list(rows), step=0, n=n)
        finally:
            await sched.close()
    finally:
        if engine is not None:
            await engine.shutdown()
        if runtime is not None:
            await runtime.close()
    return res.trajectories, tokenizer


# ------------------------------------------------------------------ markdown

def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * v:.1f}"


def _num(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def markdown(report: Dict[str, Any], header: Dict[str, str]) -> str:
    """eval.md: a header (model, data, sampling, command), the scores table (percent) per data source and hop, and
    the tool table."""
    ks = report["ks"]
    lines = ["# agent-rl eval", ""]
    lines += [f"- **{k}**: {v}" for k, v in header.items()]
    lines += ["", "Scores in percent. pass@k / mean@n count a sample as correct when its data source's correct "
              "metric is 1 (" + ", ".join(f"{ds}: {m or 'none'}" for ds, m in report["correct_metric"].items()) + ").",
              ""]
    n = report["n"]
    cols = ["data source", "hops", "questions", "F1", "EM", "Hits@1", "accuracy"] + [f"pass@{k}" for k in ks] + \
           [f"mean@{n}", "answer rate", "truncated", "turns", "tool calls"]
    rows: List[List[str]] = []

    def row(name, hop, s):
        rows.append([name, hop, str(s["questions"]), _pct(s.get("f1")), _pct(s.get("em")), _pct(s.get("hits1")),
                     _pct(s.get("accuracy"))] + [_pct(s.get(f"pass@{k}")) for k in ks] +
                    [_pct(s.get(f"mean@{n}")), _pct(s.get("answer_rate")), _pct(s.get("truncation_rate")),
                     _num(s.get("turns_mean")), _num(s.get("tool_calls_mean"))])

    for ds, s in report["by_source"].items():
        row(ds, "all", s)
        for hop, hs in (s.get("by_hop") or {}).items():
            row(ds, hop[3:] if hop.startswith("hop") and hop[3:].isdigit() else hop, hs)
    if len(report["by_source"]) > 1:
        row("**all**", "all", report["overall"])
    keep = [i for i in range(len(cols)) if i < 3 or any(r[i] != "–" for r in rows)]   # no column of dashes only
    lines.append("| " + " | ".join(cols[i] for i in keep) + " |")
    lines.append("|" + "|".join("---" if i < 2 else "---:" for i in keep) + "|")
    lines += ["| " + " | ".join(r[i] for i in keep) + " |" for r in rows]
    tool_rows = [(ds, name, t) for ds, s in report["by_source"].items() for name, t in (s.get("tools") or {}).items()]
    if tool_rows:
        lines += ["", "| data source | tool | calls / trajectory | success rate |", "|---|---|---:|---:|"]
        lines += [f"| {ds} | {name} | {_num(t.get('calls_per_trajectory'))} | {_pct(t.get('success_rate'))} |"
                  for ds, name, t in tool_rows]
    return "\n".join(lines) + "\n"
