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
from typing import Dict, List

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
