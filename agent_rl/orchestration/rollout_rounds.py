"""A training step's rollout, driven from the trainer: rows drawn for the workers, generation rounds, the step's
rollout metrics (docs/training.md: dynamic sampling).

`rollout_step(trainer, step)` asks each worker how many rows its scheduler wants (its share of
`data.train_batch_size` groups, plus the over-sampling extra, minus carried-over groups), draws them (`take_rows`:
`TrainData.take`, with hints and the length filter), and every worker rolls out its share. With dynamic sampling
(`algorithm.filter_groups`), a worker whose launched groups ran out before it had its share of informative groups
gets more rows in another generation round, up to `max_num_gen_batches` rounds; then the step trains on what it has.
A step whose tools failed too often (`tools.max_failed_calls_per_step`, `tool_health.py`) stops here, before the
update.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from agent_rl.orchestration.sharding import split_evenly
from agent_rl.orchestration.stop import TrainError
from agent_rl.orchestration.tool_health import ToolFailures, check_tool_failures
from agent_rl.orchestration.traj_metrics import merge_rounds, merge_worker_metrics


def take_rows(trainer, n: int, step: int) -> List[Dict[str, Any]]:
    from agent_rl.orchestration.train_data import NoRowFits

    try:
        return trainer.data.take(n, step)
    except NoRowFits as e:
        raise TrainError(str(e)) from None


def rollout_step(trainer, step: int) -> Tuple[List[Any], Dict[str, float]]:
    """The step's kept groups from every worker (all rounds) and the step's rollout metrics."""
    cfg = trainer.cfg
    fg = cfg.algorithm.filter_groups
    need = [len(p) for p in split_evenly(range(cfg.data.train_batch_size), trainer.world_size)]
    trajs: List[Any] = []
    rounds: List[Dict[str, float]] = []
    drawn = carried = filtered = 0
    while True:
        needed = trainer.group.call_each("rows_needed", [(b,) for b in need])
        rows = take_rows(trainer, sum(needed), step)
        drawn += len(rows)
        shares, start = [], 0
        for k in needed:
            shares.append(rows[start:start + k])
            start += k
        results = trainer.group.call_each("rollout", [(shares[r], step, need[r]) for r in range(trainer.world_size)])
        for r, res in enumerate(results):
            need[r] = max(0, need[r] - len({t.uid for t in res[0]}))
            trajs += res[0]
        rounds.append(merge_worker_metrics([res[1] for res in results]))
        carried = sum(res[2] for res in results)
        filtered += int(rounds[-1].get("rollout/filtered_groups", 0))
        limit = fg.max_num_gen_batches
        if not fg.enable or not any(need) or (limit > 0 and len(rounds) >= limit):
            break
    metrics = merge_rounds(rounds)
    metrics["rollout/carried_groups"] = float(carried)
    metrics["data/rows_drawn"] = float(drawn)
    metrics["data/dropped_long_prompts"] = float(trainer.data.prompt_filter.dropped)
    try:  # a tool backend that is down: stop before training on its error observations (tools.max_failed_calls_per_step)
        check_tool_failures(step, metrics, trajs, cfg.tools.max_failed_calls_per_step)
    except ToolFailures as e:
        raise TrainError(str(e)) from None
    if fg.enable:
        kept = len({t.uid for t in trajs})
        metrics.update({"dynamic_sampling/rounds": float(len(rounds)),
                        "dynamic_sampling/kept_groups": float(kept),
                        "dynamic_sampling/filtered_groups": float(filtered),
                        "dynamic_sampling/informative_share": kept / max(kept + filtered, 1),
                        "dynamic_sampling/short_groups": float(sum(need))})
        if sum(need):
            trainer.echo(f"step {step}: dynamic sampling kept {kept} of {cfg.data.train_batch_size} groups after "
                         f"{len(rounds)} generation round(s) ({filtered} filtered without signal; "
                         f"algorithm.filter_groups.max_num_gen_batches={fg.max_num_gen_batches})")
    return trajs, metrics
