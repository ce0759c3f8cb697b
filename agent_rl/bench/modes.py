"""The rollout modes the benchmark compares, and how they are named on the command line."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import List, Tuple

from agent_rl.bench.variants import check_name

MODE_NAMES = ("turn-batched", "async", "oversample", "carryover")


@dataclass(frozen=True)
class ModeSpec:
    name: str                       # label in tables and plots
    kind: str                       # turn-batched | async
    over_sample_rate: float = 0.0
    partial_rollout: bool = False
    variant: str = ""               # a setting the mode runs under (bench/variants.py); "" = the run's own

    def launched_trajectories(self, prompts: int, n: int) -> int:
        """Trajectories a step launches (and so requests in flight at most): ceil(B (1 + rate)) groups of n."""
        return math.ceil(prompts * (1 + self.over_sample_rate) - 1e-9) * n

    @property
    def word(self) -> str:
        """The `--modes` word this mode comes from (turn-batched | async | oversample | carryover)."""
        if self.kind == "turn-batched":
            return "turn-batched"
        if self.partial_rollout:
            return "carryover"
        return "oversample" if self.over_sample_rate > 0 else "async"

    def under(self, variant: str) -> "ModeSpec":
        """This mode under `variant` (named `MODE@VARIANT`, `split_name` reads it back); itself for ""."""
        return dataclasses.replace(self, name=f"{self.name}@{variant}", variant=variant) if variant else self

    def settings(self):
        out = {"kind": self.kind, "over_sample_rate": self.over_sample_rate, "partial_rollout": self.partial_rollout}
        return dict(out, variant=self.variant) if self.variant else out


def split_name(name: str) -> Tuple[str, str]:
    """`MODE@VARIANT` (a `--modes` word or a mode's name) -> (MODE, VARIANT); (name, "") without a variant."""
    plain, _, variant = name.partition("@")
    return plain, variant


def parse_modes(modes: str = "all", over_sample: str = "0.25,0.5") -> List[ModeSpec]:
    """`modes`: comma list of turn-batched, async, oversample, carryover (or `all`), each optionally `@VARIANT` (an
    engine setting it runs under, bench/variants.py: `async,async@notify256`); `over_sample`: the rates run by
    `oversample` and `carryover` (a mode each), comma-separated."""
    words = _words(modes)
    if words == ["all"]:
        words = list(MODE_NAMES)
    pairs = [split_name(w) for w in words]
    bad = [w for w, _ in pairs if w not in MODE_NAMES]
    if bad:
        raise ValueError(f"unknown mode {bad[0]!r} (choose from {', '.join(MODE_NAMES)} or all)")
    for _, variant in pairs:
        check_name(variant)
    out = [spec.under(variant) for variant in dict.fromkeys(v for _, v in pairs)
           for spec in _base_modes([w for w, v in pairs if v == variant], over_sample)]
    return sorted(out, key=lambda s: (MODE_NAMES.index(s.word), s.variant != ""))   # baseline first, then its variants


def _base_modes(names: List[str], over_sample: str) -> List[ModeSpec]:
    rates: List[float] = []
    for r in (x.strip() for x in str(over_sample).split(",")):
        if r:
            rate = float(r)
            if rate <= 0:
                raise ValueError(f"over-sample rate must be > 0, got {r}")
            rates.append(rate)
    out: List[ModeSpec] = []
    for name in MODE_NAMES:  # fixed order: baseline first
        if name not in names:
            continue
        if name == "turn-batched":
            out.append(ModeSpec("turn-batched", "turn-batched"))
        elif name == "async":
            out.append(ModeSpec("async", "async"))
        elif name == "oversample":
            if not rates:
                raise ValueError("mode oversample needs at least one --over-sample rate")
            out += [ModeSpec(f"async+oversample {r:g}", "async", over_sample_rate=r) for r in rates]
        else:  # carry-over only cuts groups when more are launched than kept: one mode per rate, as oversample
            if not rates:
                raise ValueError("mode carryover needs an --over-sample rate (groups are cut, then resumed)")
            out += [ModeSpec(f"async+carryover {r:g}", "async", over_sample_rate=r, partial_rollout=True) for r in rates]
    return out


def _words(text) -> List[str]:
    return [w.strip() for w in str(text or "").split(",") if w.strip()]


def profile_modes(words) -> tuple:
    """The `--engine-profile` list of mode words, checked against MODE_NAMES."""
    out = tuple(_words(words))
    bad = [w for w in out if w not in MODE_NAMES]
    if bad:
        raise ValueError(f"--engine-profile {bad[0]!r}: choose from {', '.join(MODE_NAMES)}")
    return out
