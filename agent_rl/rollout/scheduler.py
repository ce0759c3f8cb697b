"""Rollout scheduler: one training step's trajectories (GRPO groups), over-sampling and carry-over.

`run_step(rows, step)` launches one group of `rollout.n` trajectories per row (plus the groups
carried over from the previous step, launched first), each trajectory an asyncio task running
`agent_loop.run_trajectory` inside its own tool session, at most `max_concurrent_trajectories` at once.
With `over_sample_max_load` set, over-sampled extras (groups past the first B) start only while fewer than
that fraction of the B groups' trajectories are still running (`load_gate.py`): they use spare engine
capacity instead of slowing the groups the step needs. Every request carries the group's launch order as
its priority: when the engine queues requests (more in flight than its running batch), earlier groups,
i.e. carried-over ones and the B groups a step needs, are served before over-sampled extras.

Over-sampling: with B = `batch_size` (default `floor(groups / (1 + over_sample_rate))`, so
`ceil(B * (1 + rate))` launched groups give B), the first B groups whose trajectories have *all*
finished are kept; then every other trajectory is stopped: a request in generation is aborted in
the engine, one running tools (or waiting for a slot) is cancelled, which releases its tool
instances through the session's exit. A kept group never holds an aborted sample.

Carry-over (`partial_rollout`): the cut groups are not thrown away. Their unfinished trajectories get
status "carried" (keeping their ids, log-probs and a partial turn), finished ones stay finished, and
at the next `run_step` the whole group is launched again first, counting toward that step's B.
Without carry-over the cut groups are dropped (`RolloutResult.dropped`).

Dynamic sampling (`group_filter`, `group_filter.py`): a group that completes with no spread in the filter's
metric is not kept: it goes to `RolloutResult.filtered` and the step waits for the next group instead (an
over-sampled extra, or nothing: the step then returns fewer than B groups and the trainer starts another
generation round).
"""
from __future__ import annotations

import asyncio
import inspect
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

from agent_rl.rollout.agent_loop import LoopControl, LoopHooks, run_trajectory
from agent_rl.rollout.chat import count_drift
from agent_rl.rollout.frozen_heap import frozen_heap
from agent_rl.rollout.group_filter import GroupFilter
from agent_rl.rollout.load_gate import LoadGate
from agent_rl.rollout.metrics import step_metrics
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tool_runtime.record import LOOP_STATUSES

ABORT_GRACE_S = 30.0


@dataclass
class RolloutResult:
    trajectories: List[Trajectory]                 # kept groups, group after group (launch order), samples in order
    metrics: Dict[str, float]
    dropped: List[Trajectory] = field(default_factory=list)   # cut groups' trajectories when not carried over
    carried: List[Trajectory] = field(default_factory=list)   # cut groups kept for the next step
    filtered: List[Trajectory] = field(default_factory=list)  # complete groups without signal (dynamic sampling)


@dataclass
class _Group:
    uid: str
    row: Dict[str, Any]
    trajs: List[Trajectory]
    order: int
    resumed: bool = False


class _NullSession:
    """Tool session of a run without tools: single-turn trajectories."""

    async def __aenter__(self):
        return None

    async def __aexit__(self, *exc):
        return False


class RolloutScheduler:
    def __init__(self, engine, renderer, tool_runtime, rollout_cfg, reward_fn: Optional[Callable] = None,
                 hooks: Optional[LoopHooks] = None, group_filter: Optional[GroupFilter] = None, rank: int = 0,
                 id_prefix: str = ""):
        self.engine = engine
        self.renderer = renderer
        self.tool_runtime = tool_runtime
        self.cfg = rollout_cfg
        self.reward_fn = reward_fn
        self.hooks = hooks
        self.group_filter = group_filter      # dynamic sampling in training steps (never in validation)
        self.rank = rank                      # data-parallel rank: part of every group id (ids are unique per run)
        self.id_prefix = id_prefix            # for several schedulers on one engine in one process (the benchmark)
        self.policy_version = 0
        self._carried: List[_Group] = []
        self._parked: Dict[str, tuple] = {}   # trajectory id -> (session context manager, session) of a cut trajectory
        self._drift_left = -1                 # drift checks left in this step (-1: unlimited)
        self._drift_jobs: List[tuple] = []    # (trajectory, its ids, the future of its re-render's ids) of this step
        self._launched: Dict[int, int] = {}   # step -> training groups launched in it so far

    # ------------------------------------------------------------------ public
    @property
    def num_carried_groups(self) -> int:
        return len(self._carried)

    def rows_needed(self, batch_size: int) -> int:
        """New rows the caller should pass to `run_step` for a batch of `batch_size` groups."""
        return max(0, math.ceil(batch_size * (1 + self.cfg.over_sample_rate)) - len(self._carried))

    def carried_trajectories(self) -> List[Trajectory]:
        return [t for g in self._carried for t in g.trajs]

    async def run_step(self, rows: Sequence[Dict[str, Any]], step: int, batch_size: Optional[int] = None,
                       policy_version: Optional[int] = None) -> RolloutResult:
        """One training step's rollout. Returns the kept groups (B of them when enough finished)."""
        version = step if policy_version is None else policy_version
        self.policy_version = version
        carried, self._carried = self._carried, []
        for g in carried:
            g.resumed = True
        groups = carried + [self._new_group(row, self.cfg.n, step, i) for i, row in enumerate(rows)]
        for i, g in enumerate(groups):
            g.order = i
        if batch_size is None:
            batch_size = int(math.floor(len(groups) / (1 + self.cfg.over_sample_rate) + 1e-9))
        return await self._run(groups, keep=min(batch_size, len(groups)), sampling=self.cfg.sampling,
                               carry=bool(self.cfg.partial_rollout), version=version, step=step,
                               group_filter=self.group_filter)

    async def validate(self, rows: Sequence[Dict[str, Any]], step: int = 0, n: int = 1) -> RolloutResult:
        """Every row, `n` samples each, validation sampling, no over-sampling, no carry-over."""
        groups = [self._new_group(row, n, step, i, prefix="val") for i, row in enumerate(rows)]
        for i, g in enumerate(groups):
            g.order = i
        return await self._run(groups, keep=len(groups), sampling=self.cfg.val_sampling, carry=False,
                               version=self.policy_version, step=step, desc="validate")

    # ------------------------------------------------------------------ internals
    def _new_group(self, row: Dict[str, Any], n: int, step: int, i: int, prefix: str = "s") -> _Group:
        """Training groups get ids that depend only on the rank, the step and the launch order within it (`s<step>-r<rank>-<k>`,
        counting across the step's generation rounds), so the request ids, and with them the hf engine's sampler
        seeds, are the same when a resumed run repeats a step; validation ids stay unique per call."""
        if prefix == "s":
            k = self._launched.get(step, 0)
            self._launched = {step: k + 1}
            uid = f"{self.id_prefix}s{step}-r{self.rank}-{k}"
        else:
            uid = f"{prefix}{step}-{i}-{uuid.uuid4().hex[:8]}"
        prompt = self.renderer.prompt_ids(row["prompt"])
        trajs = [Trajectory(uid=uid, sample_index=k, row=row, prompt_ids=list(prompt)) for k in range(n)]
        return _Group(uid=uid, row=row, trajs=trajs, order=i)

    def _session(self, traj: Trajectory):
        if self.tool_runtime is None or not self.cfg.multi_turn.enable:
            return _NullSession()
        kwargs = (traj.row.get("extra_info") or {}).get("tools_kwargs") or {}
        return self.tool_runtime.session(traj.id, kwargs)

    async def _acquire_session(self, traj: Trajectory):
        """(context manager, session) of the trajectory: the one it held when it was carried over, so its tool
        instances keep their state (a GSM8K answer already submitted, kg_query's query history), or a new one."""
        held = self._parked.pop(traj.id, None)
        if held is not None:
            return held
        cm = self._session(traj)
        return cm, await cm.__aenter__()

    @staticmethod
    async def _close_session(held) -> None:
        await held[0].__aexit__(None, None, None)  # releases every instance; never raises (errors are metrics)

    async def _release_parked(self, trajs) -> None:
        for t in trajs:
            held = self._parked.pop(t.id, None)
            if held is not None:
                await self._close_session(held)

    async def close(self) -> None:
        """Release the tool instances of trajectories still carried over (end of training)."""
        parked, self._parked = self._parked, {}
        for held in parked.values():
            await self._close_session(held)

    async def _traj_task(self, traj: Trajectory, ctl: LoopControl, sem: asyncio.Semaphore, sampling, version: int,
                         step: int, priority: int = 0, gate: Optional[LoadGate] = None, extra: bool = False) -> Trajectory:
        """`gate`: the step's load gate (every trajectory counts while it runs); `extra`: an over-sampled extra, which
        starts only while fewer than `gate.limit` trajectories run."""
        if gate is not None and extra:
            await gate.admit()
        try:
            return await self._run_traj(traj, ctl, sem, sampling, version, step, priority)
        finally:
            if gate is not None:
                gate.ended()

    async def _run_traj(self, traj: Trajectory, ctl: LoopControl, sem: asyncio.Semaphore, sampling, version: int,
                        step: int, priority: int) -> Trajectory:
        async with sem:
            if ctl.stop_requested:
                traj.status, traj.stop_reason = "aborted", "abort"
                return traj
            seen = {id(c) for u in traj.turns for c in u.tool_calls}
            held = await self._acquire_session(traj)
            session = held[1]
            try:
                await run_trajectory(traj, self.engine, self.renderer, session, self.cfg.multi_turn, sampling,
                                     request_id=f"{traj.id}@{step}", hooks=self.hooks,
                                     max_model_len=self.cfg.max_model_len, control=ctl, policy_version=version,
                                     priority=priority)
                if traj.status == "finished" and session is not None:
                    rewards = await session.calc_rewards()
                    traj.tool_rewards.update({k: float(v) for k, v in (rewards or {}).items()})
            finally:
                if traj.status == "finished":
                    await self._close_session(held)
                else:  # cut: parked until it is carried on to the end, or dropped (`_run` / `close`)
                    self._parked[traj.id] = held
        self._record_loop_errors(traj, seen)
        if traj.status == "finished":
            await self._finalize(traj)
        return traj

    def _record_loop_errors(self, traj: Trajectory, seen: set) -> None:
        """Malformed calls and over-budget calls never reach the runtime: count them in its metrics."""
        metrics = getattr(self.tool_runtime, "metrics", None)
        if metrics is None:
            return
        for u in traj.turns:
            for c in u.tool_calls:
                if id(c) not in seen and c.status in LOOP_STATUSES:
                    known = c.name in getattr(self.tool_runtime, "names", [])
                    metrics.record_error(c.name if known else None, c.status)

    async def _finalize(self, traj: Trajectory) -> None:
        """Drift check and reward. A reward function may be async (it returns an awaitable, e.g. an LLM judge over
        HTTP): it is awaited here, so it never blocks the loop that feeds the engine. A finished trajectory always
        gets its reward: when the step cuts it (cancels its task) while it is being scored, the scoring still runs
        to its end (the judge's own timeout bounds it), then the cancellation goes on."""
        if self._drift_left != 0:
            self._drift_left -= 1
            self._check_drift(traj)
        if self.reward_fn is not None:
            result = self.reward_fn(traj)
            cancelled = False
            if inspect.isawaitable(result):
                fut = asyncio.ensure_future(result)
                while not fut.done():
                    try:
                        await asyncio.shield(fut)
                    except asyncio.CancelledError:
                        if fut.cancelled():
                            raise
                        cancelled = True
                result = fut.result()
            score, components = result
            traj.reward = float(score)
            traj.reward_components = {k: float(v) for k, v in components.items()}
            if cancelled:
                raise asyncio.CancelledError()

    def _check_drift(self, traj: Trajectory) -> None:
        """Compare the incremental token stream with a full re-render (a metric; a few per step). The render runs
        here, on the event loop that feeds the engine; its tokenisation, the costlier part (~1.5 ms for 650 tokens),
        in a worker thread where the tokenizer allows (`ChatRenderer.threaded_encoder`): the step collects it at its
        end (`_collect_drift`)."""
        try:
            ids = list(traj.prompt_ids) + list(traj.response_ids)
            last = traj.turns[-1].output_ids if traj.turns else []
            if traj.turns and not (last and last[-1] in self.renderer.stop_token_ids) and not traj.turns[-1].observation_ids:
                ids += list(self.renderer.end_of_turn_ids)  # a re-render closes the cut last turn
            encode = self.renderer.threaded_encoder()
            if encode is None:
                traj.drift = self.renderer.drift(traj.messages, ids)
                return
            text = self.renderer.full_text(traj.messages)
            future = asyncio.get_running_loop().run_in_executor(None, _tokenise, encode, text)
            self._drift_jobs.append((traj, ids, future))
        except Exception:  # a metric only: a template that cannot re-render must not end the run
            traj.drift = None

    async def _collect_drift(self) -> None:
        """The drift of the trajectories whose re-render was tokenised in a worker thread this step."""
        jobs, self._drift_jobs = self._drift_jobs, []
        for traj, ids, future in jobs:
            full = await future
            traj.drift = None if full is None else count_drift(full, ids)

    async def _run(self, groups: List[_Group], keep: int, sampling, carry: bool, version: int, step: int,
                   desc: str = "rollout", group_filter: Optional[GroupFilter] = None) -> RolloutResult:
        with frozen_heap():   # full collections during the step walk only the step's own objects (frozen_heap.py)
            return await self._run_step(groups, keep, sampling, carry, version, step, desc, group_filter)

    async def _run_step(self, groups: List[_Group], keep: int, sampling, carry: bool, version: int, step: int,
                        desc: str, group_filter: Optional[GroupFilter]) -> RolloutResult:
        from tqdm.auto import tqdm

        t0 = time.perf_counter()
        self._drift_left = int(getattr(self.cfg, "drift_checks_per_step", -1))
        gen_before = {id(t): t.num_generated for g in groups for t in g.trajs}
        sem = asyncio.Semaphore(max(1, int(self.cfg.max_concurrent_trajectories)))
        remaining = {g.uid: 0 for g in groups}
        info: Dict[asyncio.Task, tuple] = {}
        kept: List[_Group] = []
        filtered: List[_Group] = []

        def complete(g: _Group) -> None:  # every sample of g finished: keep it, or filter it out
            if group_filter is not None and not group_filter.informative(g.trajs):
                filtered.append(g)
            else:
                kept.append(g)

        gate = self._gate(groups, keep)
        for g in groups:
            for t in g.trajs:
                if t.status == "finished":
                    continue
                ctl = LoopControl()
                task = asyncio.ensure_future(self._traj_task(t, ctl, sem, sampling, version, step, priority=g.order,
                                                             gate=gate, extra=g.order >= keep))
                info[task] = (g, t, ctl)
                remaining[g.uid] += 1
        for g in groups:  # groups already complete (carried with every sample finished)
            if remaining[g.uid] == 0 and len(kept) < keep:
                complete(g)
        total = sum(len(g.trajs) for g in groups)
        bar = tqdm(total=total, desc=desc, disable=not self.cfg.progress_bar, leave=False)
        bar.update(total - len(info))
        pending = set(info)
        finished = _Finished(info)

        def ended(done: List[asyncio.Task]) -> None:
            pending.difference_update(done)
            for task in done:
                task.result()  # an engine / loop error ends the step
                g, t, _ = info[task]
                bar.update(1)
                remaining[g.uid] -= 1
                if remaining[g.uid] == 0 and len(kept) < keep and all(x.status == "finished" for x in g.trajs):
                    complete(g)

        try:
            while pending and len(kept) < keep:
                ended(await finished.next_batch())
            ended([task for task in pending if task.done()])   # done since the last batch: not cut
        except BaseException:
            await self._stop(pending, info)
            self._drift_jobs = []   # a worker's tokenisation ends on its own (and never raises: `_tokenise`)
            bar.close()
            await self._release_parked([t for g in groups for t in g.trajs])
            raise
        cut_started = time.perf_counter()
        aborted_ids = {id(info[t][1]) for t in pending}
        await self._stop(pending, info)
        await self._collect_drift()
        bar.close()
        seconds = time.perf_counter() - t0

        kept_ids = {g.uid for g in kept} | {g.uid for g in filtered}
        kept.sort(key=lambda g: g.order)
        cut = [g for g in groups if g.uid not in kept_ids]
        carried, dropped = [], []
        for g in cut:
            for t in g.trajs:
                if t.status != "finished":
                    t.status = "carried" if carry else "aborted"
                    if not t.stop_reason:
                        t.stop_reason = "abort"
            if carry:
                carried.append(g)
            else:
                dropped.extend(g.trajs)
        self._carried = carried if carry else []
        await self._release_parked(dropped)
        trajs = [t for g in kept for t in g.trajs]
        metrics = step_metrics(groups, kept, trajs, carried, aborted_ids, gen_before, seconds,
                               time.perf_counter() - cut_started, self.tool_runtime, version=version)
        if gate is not None:
            metrics["rollout/extra_trajectories_started"] = float(gate.admitted)
        if group_filter is not None:
            metrics["rollout/filtered_groups"] = float(len(filtered))
        return RolloutResult(trajectories=trajs, metrics=metrics, dropped=dropped,
                             carried=[t for g in carried for t in g.trajs],
                             filtered=[t for g in filtered for t in g.trajs])

    def _gate(self, groups: List[_Group], keep: int) -> Optional[LoadGate]:
        """The spare-capacity gate of a step's over-sampled extras (groups past the first `keep`), or None."""
        frac = getattr(self.cfg, "over_sample_max_load", None)
        if len(groups) <= keep or frac is None:
            return None
        needed = sum(1 for g in groups[:keep] for t in g.trajs if t.status != "finished")
        return LoadGate(max(1, math.ceil(float(frac) * needed)), running=needed)

    async def _stop(self, pending, info) -> None:
        """Abort requests in generation, cancel the rest (their sessions are parked, then carried or released)."""
        if not pending:
            return
        to_abort = []
        for task in pending:
            _, _, ctl = info[task]
            ctl.stop_requested = True
            if ctl.phase == "generate" and ctl.request_id:
                to_abort.append(ctl.request_id)
            elif ctl.phase != "done":
                task.cancel()
        for rid in to_abort:
            await self.engine.abort(rid)
        done, still = await asyncio.wait(pending, timeout=ABORT_GRACE_S)
        for task in still:  # an engine that ignored the abort
            task.cancel()
        if still:
            await asyncio.wait(still)
        for task in pending:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()


class _Finished:
    """A step's trajectory tasks in the order they end. `asyncio.wait(pending, FIRST_COMPLETED)` in a loop costs the
    whole pending set at every wake-up (a done callback added to each task and removed again): with 1536 trajectories
    ending one by one that is ~0.5 s of the event loop's CPU a step on a 2-core CPU, against ~0.02 s here."""

    def __init__(self, tasks) -> None:
        self._queue: "asyncio.Queue[asyncio.Task]" = asyncio.Queue()
        for task in tasks:
            task.add_done_callback(self._queue.put_nowait)

    async def next_batch(self) -> List[asyncio.Task]:
        """The tasks that ended since the last call, at least one (waits for it)."""
        done = [await self._queue.get()]
        while not self._queue.empty():
            done.append(self._queue.get_nowait())
        return done


def _tokenise(encode: Callable[[str], List[int]], text: str) -> Optional[List[int]]:
    """`encode(text)` in a worker thread; None where it fails (a metric only)."""
    try:
        return encode(text)
    except Exception:
        return None
