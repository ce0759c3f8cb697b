"""The rollout benchmark's workload: how many turns each trajectory takes, how many tokens each
turn samples, how long each tool call sleeps and whether it fails.

Everything is drawn from a generator seeded by `(seed, group, sample)`, so a trajectory gets the
same plan in every mode (turn-batched, async, over-sampling, carry-over) and in every run.

Distribution specs (command line):
    "16" or "fixed:16"                   always 16
    "zero" / "0"                         always 0
    "uniform:lo=1,hi=4"                  uniform (integers for turns / tokens)
    "lognormal:mean=0.5,sigma=1"         lognormal with that mean (mu = ln(mean) - sigma^2/2)
    "pareto:alpha=1.5,scale=16"          classic Pareto (scale * (1 + Lomax(alpha))), heavy tail
every kind also takes `min=` and `max=` clips, e.g. "lognormal:mean=64,sigma=1,max=512".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

KINDS = ("fixed", "uniform", "lognormal", "pareto")
_REQUIRED = {"fixed": ("value",), "uniform": ("lo", "hi"), "lognormal": ("mean", "sigma"), "pareto": ("alpha", "scale")}


@dataclass(frozen=True)
class Dist:
    kind: str
    params: Dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec) -> "Dist":
        if isinstance(spec, Dist):
            return spec
        text = str(spec).strip()
        if text in ("zero", "none"):
            return cls("fixed", {"value": 0.0})
        try:
            return cls("fixed", {"value": float(text)})
        except ValueError:
            pass
        kind, _, rest = text.partition(":")
        kind = kind.strip()
        if kind not in KINDS:
            raise ValueError(f"distribution {text!r}: kind must be one of {', '.join(KINDS)} (or a number)")
        params: Dict[str, float] = {}
        for part in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = part.partition("=")
            if not eq:
                if kind == "fixed" and not params:
                    key, value = "value", key
                else:
                    raise ValueError(f"distribution {text!r}: expected key=value, got {part!r}")
            try:
                params[key.strip()] = float(value)
            except ValueError:
                raise ValueError(f"distribution {text!r}: {key.strip()} must be a number") from None
        missing = [k for k in _REQUIRED[kind] if k not in params]
        unknown = [k for k in params if k not in _REQUIRED[kind] + ("min", "max")]
        if missing or unknown:
            raise ValueError(f"distribution {text!r}: needs {', '.join(_REQUIRED[kind])} (+ optional min, max)"
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        if kind == "lognormal" and (params["mean"] < 0 or params["sigma"] < 0):
            raise ValueError(f"distribution {text!r}: mean and sigma must be >= 0")
        if kind == "pareto" and (params["alpha"] <= 0 or params["scale"] < 0):
            raise ValueError(f"distribution {text!r}: alpha must be > 0 and scale >= 0")
        return cls(kind, params)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        p = self.params
        if self.kind == "fixed":
            x = np.full(size, p["value"], dtype=float)
        elif self.kind == "uniform":
            x = rng.uniform(p["lo"], p["hi"], size)
        elif self.kind == "lognormal":
            if p["mean"] == 0:
                x = np.zeros(size)
            else:
                mu = math.log(p["mean"]) - p["sigma"] ** 2 / 2
                x = rng.lognormal(mu, p["sigma"], size)
        else:  # pareto
            x = p["scale"] * (1.0 + rng.pareto(p["alpha"], size))
        return np.clip(x, p.get("min", -np.inf), p.get("max", np.inf))

    def sample_int(self, rng: np.random.Generator, size: int, low: int = 1) -> List[int]:
        if self.kind == "uniform":  # inclusive integer range
            p = self.params
            x = rng.integers(int(math.ceil(p["lo"])), int(math.floor(p["hi"])) + 1, size).astype(float)
            x = np.clip(x, p.get("min", -np.inf), p.get("max", np.inf))
        else:
            x = np.rint(self.sample(rng, size))
        return [max(low, int(v)) for v in x]

    def upper(self) -> float:
        """The largest value it can produce (inf for an unclipped tail)."""
        p = self.params
        top = {"fixed": p.get("value"), "uniform": p.get("hi")}.get(self.kind, math.inf)
        return min(top, p.get("max", math.inf))

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.params['value']:g}"
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.params.items())


@dataclass(frozen=True)
class TrajectoryPlan:
    """What one trajectory will do: `len(gen_tokens)` assistant turns, a tool call after each but the last."""
    group: int
    sample: int
    gen_tokens: List[int]          # new tokens of each assistant turn (sampled with ignore_eos)
    tool_latency_s: List[float]    # one per tool call (= turns - 1)
    tool_fails: List[bool]

    @property
    def turns(self) -> int:
        return len(self.gen_tokens)

    @property
    def total_gen_tokens(self) -> int:
        return sum(self.gen_tokens)


@dataclass(frozen=True)
class Workload:
    num_prompts: int = 16            # GRPO groups per step (the batch size B)
    n: int = 2                       # samples per prompt
    turns: Dist = Dist("fixed", {"value": 3.0})
    tokens_per_turn: Dist = Dist("fixed", {"value": 16.0})
    tool_latency: Dist = Dist("fixed", {"value": 0.0})
    tool_failure_rate: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.num_prompts < 1 or self.n < 1:
            raise ValueError("num_prompts and n must be >= 1")
        if not 0.0 <= self.tool_failure_rate <= 1.0:
            raise ValueError("tool failure rate must be in [0, 1]")
        object.__setattr__(self, "_plans", {})

    def plan(self, group: int, sample: int) -> TrajectoryPlan:
        """The plan of trajectory (group, sample), drawn once (its own seeded generator costs ~75 us, and the bench tool
        asks at every call, on the event loop whose CPU the benchmark measures), then remembered."""
        key = (group, sample)
        plan = self._plans.get(key)
        if plan is None:
            if self._constant():   # no draw depends on the generator: every plan is the first one's
                first = self._plans.get(None) or self._plans.setdefault(None, self._draw(0, 0))
                plan = TrajectoryPlan(group, sample, list(first.gen_tokens), list(first.tool_latency_s), list(first.tool_fails))
            else:
                plan = self._draw(group, sample)
            self._plans[key] = plan
        return plan

    def _constant(self) -> bool:
        """Whether `_draw` uses its generator for nothing: fixed turns, tokens and latency (or lognormal mean 0, which
        is 0), and a failure rate of 0 or 1 (`random() < rate` then holds never / always)."""
        return self.tool_failure_rate in (0.0, 1.0) and all(
            d.kind == "fixed" or (d.kind == "lognormal" and d.params["mean"] == 0)
            for d in (self.turns, self.tokens_per_turn, self.tool_latency))

    def _draw(self, group: int, sample: int) -> TrajectoryPlan:
        rng = np.random.default_rng([self.seed, group, sample])
        turns = self.turns.sample_int(rng, 1)[0]
        gen = self.tokens_per_turn.sample_int(rng, turns)
        lat = [max(0.0, float(v)) for v in self.tool_latency.sample(rng, turns - 1)]
        fails = [bool(v) for v in rng.random(turns - 1) < self.tool_failure_rate]
        return TrajectoryPlan(group, sample, gen, lat, fails)

    def max_turns(self) -> int:
        up = self.turns.upper()
        if math.isinf(up):
            raise ValueError("turns distribution needs a max= clip")
        return max(1, int(round(up)))

    def max_tokens_per_turn(self) -> int:
        up = self.tokens_per_turn.upper()
        if math.isinf(up):
            raise ValueError("tokens-per-turn distribution needs a max= clip")
        return max(1, int(round(up)))

    def to_json(self) -> Dict:
        d = asdict(self)
        for k in ("turns", "tokens_per_turn", "tool_latency"):
            d[k] = getattr(self, k).describe()
        return d


def tool_wait_floor(plans: Sequence[TrajectoryPlan]) -> Dict[str, Optional[float]]:
    """The tool waiting no scheduler can hide, for one step's trajectories, as if generation cost nothing:
    turn-batched waits for the slowest call of each tool phase, async (every trajectory kept, no carry-over) for
    the trajectory whose calls add up to the most. Their ratio is async's speed-up over turn-batched with free
    generation. It is not an upper bound once generation costs time: turn-batched generates each turn of every
    trajectory at the full batch, async's slowest trajectory mostly at smaller ones, so measured ratios pass it (1.81x
    against 1.59x at 135M 128x8 on the H200, 2026-12-04)."""
    phases = max((len(p.tool_latency_s) for p in plans), default=0)
    tb = sum(max(p.tool_latency_s[k] for p in plans if k < len(p.tool_latency_s)) for k in range(phases))
    asy = max((sum(p.tool_latency_s) for p in plans), default=0.0)
    return {"turn_batched_s": tb, "async_s": asy, "async_speedup_bound": tb / asy if asy > 0 else None}


def tail_cut_bound(workload: Workload, rate: float, carry: bool, steps: int, warmup: int = 0,
                   cost: Optional[Tuple[float, float]] = None) -> Optional[float]:
    """The step-time cut against plain async that over-sampling (`carry` False) or carry-over (True) at `rate` could
    reach on this workload's draws, every trajectory decoding one token per decode pass from the step's start, tools
    and prefill free. `cost` = (seconds a pass, seconds a row of a pass) prices each pass by the rows still running
    (`decode_cost`); without it generation does not slow with the batch (a pass costs 1, whatever its rows). Plain
    async's step lasts until its longest trajectory ends; an over-sampled step launches ceil(B (1 + rate)) groups,
    all of them decoding, and ends when B of them are complete; carry-over also resumes the cut groups with what
    they generated (after `warmup` unmeasured steps, as the bench runs it). The steps draw the groups the bench's
    modes draw (`bench/async_modes.AsyncSteps`). None without over-sampling."""
    b, n = workload.num_prompts, workload.n
    launched = math.ceil(b * (1 + rate) - 1e-9)
    if launched <= b or steps < 1:
        return None
    per_pass, per_row = cost if cost else (1.0, 0.0)

    def left(g: int) -> List[float]:
        return [float(workload.plan(g, k).total_gen_tokens) for k in range(n)]

    def seconds(groups: List[List[float]], end: float) -> float:
        """The passes until `end`: each costs per_pass, and per_row for every trajectory still decoding in it."""
        return per_pass * end + per_row * sum(min(x, end) for g in groups for x in g)

    plain = []
    for s in range(steps):
        groups = [left(g) for g in range(s * b, (s + 1) * b)]
        plain.append(seconds(groups, max(max(g) for g in groups)))
    carried: List[List[float]] = []
    nxt, cut_steps = 0, []
    for s in range(warmup + steps):
        groups = carried + [left(g) for g in range(nxt, nxt + launched - len(carried))]
        nxt += launched - len(carried)
        done = sorted(range(len(groups)), key=lambda i: max(groups[i]))
        end = max(groups[done[b - 1]])
        kept = set(done[:b])
        carried = [[max(0.0, x - end) for x in groups[i]] for i in range(len(groups)) if i not in kept] if carry else []
        if s >= warmup:
            cut_steps.append(seconds(groups, end))
    return 1.0 - sum(cut_steps) / sum(plain)


def decode_cost(ceilings: Sequence[Optional[Dict]]) -> Optional[Tuple[float, float]]:
    """(seconds a decode pass, seconds a row of a pass) fitted (least squares) on raw-engine runs of fixed lengths at
    two or more concurrencies: each run's wall time over its new tokens a request is one pass at that many rows
    (its one prefill pass counted in). None with fewer than two concurrencies or a fit that is not two costs >= 0."""
    pts = [(float(c["requests"]), c["wall_s"] / c["max_new_tokens_mean"]) for c in ceilings
           if c and c.get("max_new_tokens_mean") and c.get("wall_s")]
    if len({x for x, _ in pts}) < 2:
        return None
    mx, my = sum(x for x, _ in pts) / len(pts), sum(y for _, y in pts) / len(pts)
    per_row = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    per_pass = my - per_row * mx
    return (per_pass, per_row) if per_pass >= 0 and per_row >= 0 else None
