"""Arithmetic word problems of 2-4 steps with integer answers (the embedded math task).

A problem is a theme (shop, savings, travel, baking, library, farm, stickers, garden) and a chain of
operations: an optional multiplicative start ("buys 4 packs of 12 pens"), one or more updates
(+ a, - a, + b*c, - b*c) and an optional exact division at the end. `steps` counts the arithmetic
operations; the answer is computed from the same chain that wrote the text, and the chain is also
kept as `expression` (evaluates to the answer).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from collections import Counter
from typing import Any, Dict, List, Optional, Tuple

from agent_rl.tasks.arith.rows import ABILITY, math_prompt, math_tools_kwargs
from agent_rl.tasks.rows import make_row

DATA_SOURCE = "arith_synth"

PEOPLE = [("Mia", "she", "her"), ("Liam", "he", "his"), ("Ava", "she", "her"), ("Noah", "he", "his"),
          ("Zara", "she", "her"), ("Omar", "he", "his"), ("Lena", "she", "her"), ("Ravi", "he", "his"),
          ("Sofia", "she", "her"), ("Theo", "he", "his"), ("Amara", "she", "her"), ("Kenji", "he", "his")]


@dataclass(frozen=True)
class Theme:
    name: str
    person: bool            # templates use {N} name, {P} pronoun, {pos} possessive
    start: str              # {n}
    start_mul: str          # {b} {c}
    add: Tuple[str, ...]    # {a}
    sub: Tuple[str, ...]    # {a}
    gadd: Tuple[str, ...]   # {b} {c}
    gsub: Tuple[str, ...]   # {b} {c}
    div: str                # {k}; ends with the question
    ask: str


THEMES = [
    Theme("shop", False, "A stationery shop has {n} pens.", "A stationery shop orders {b} boxes of {c} pens.",
          ("It receives {a} more pens.", "A customer returns {a} pens."),
          ("It sells {a} pens in the morning.", "It sells {a} pens to a school."),
          ("A delivery brings {b} boxes with {c} pens in each.",),
          ("It sells {b} packs of {c} pens each.",),
          "The shop puts all its pens equally into {k} display cases. How many pens are in each case?",
          "How many pens does the shop have now?"),
    Theme("savings", True, "{N} has saved ${n}.", "{N} saves ${c} every week for {b} weeks.",
          ("{P} earns ${a} babysitting.", "{P} gets ${a} for {pos} birthday."),
          ("{P} spends ${a} on a jacket.", "{P} pays ${a} for a concert ticket."),
          ("{P} earns ${c} a day for {b} days.",),
          ("{P} buys {b} books that cost ${c} each.",),
          "{P} splits all {pos} money equally into {k} envelopes. How many dollars go in each envelope?",
          "How many dollars does {N} have now?"),
    Theme("travel", False, "A bus has travelled {n} km.", "A bus drives at {c} km per hour for {b} hours.",
          ("It then travels {a} km more.",), ("It then drives {a} km back towards the start.",),
          ("Then it drives at {c} km per hour for {b} more hours.",),
          ("Then it drives back towards the start at {c} km per hour for {b} hours.",),
          "Its distance from the start is split into {k} equal stages. How many km long is each stage?",
          "How many km from the start is the bus now?"),
    Theme("baking", True, "{N} bakes {n} cookies.", "{N} bakes {b} trays of {c} cookies.",
          ("{P} bakes {a} more cookies.",), ("{pos_cap} family eats {a} cookies.", "{P} burns {a} cookies and throws them away."),
          ("{P} bakes {b} more trays with {c} cookies on each.",),
          ("{P} gives {b} neighbours {c} cookies each.",),
          "{P} packs the remaining cookies equally into {k} boxes. How many cookies are in each box?",
          "How many cookies does {N} have now?"),
    Theme("library", False, "A library has {n} books.", "A library has {b} shelves with {c} books on each.",
          ("It buys {a} new books.", "Readers donate {a} books."), ("Readers borrow {a} books.", "It throws away {a} damaged books."),
          ("It receives {b} crates of {c} books each.",), ("It sends {b} boxes of {c} books each to schools.",),
          "The books in the library are placed equally on {k} shelves. How many books are on each shelf?",
          "How many books are in the library now?"),
    Theme("farm", False, "A farmer collects {n} eggs.", "A farmer has {b} hens that each lay {c} eggs.",
          ("The next morning the farmer collects {a} more eggs.",), ("The farmer uses {a} eggs for baking.",),
          ("The farmer buys {b} cartons of {c} eggs each.",), ("The farmer sells {b} cartons of {c} eggs each.",),
          "The farmer packs all the eggs equally into {k} baskets. How many eggs are in each basket?",
          "How many eggs does the farmer have now?"),
    Theme("stickers", True, "{N} has {n} stickers.", "{N} buys {b} sheets with {c} stickers each.",
          ("A friend gives {N} {a} stickers.",), ("{P} gives {a} stickers to {pos} brother.",),
          ("{P} buys {b} more sheets with {c} stickers each.",), ("{P} gives {b} classmates {c} stickers each.",),
          "{P} shares all {pos} stickers equally among {k} friends. How many stickers does each friend get?",
          "How many stickers does {N} have now?"),
    Theme("garden", True, "{N} plants {n} tulips.", "{N} plants {b} rows of {c} tulips.",
          ("{P} plants {a} more tulips.",), ("Rabbits eat {a} of the tulips.",),
          ("{P} plants {b} more rows with {c} tulips in each.",), ("{P} picks {b} bunches of {c} tulips each.",),
          "{P} replants all the tulips equally into {k} flower beds. How many tulips are in each bed?",
          "How many tulips does {N} have now?"),
]


def _split_ops(rng: random.Random, total: int) -> List[int]:
    """Random sequence of 1s and 2s (single / grouped updates) summing to `total`."""
    out: List[int] = []
    while total > 0:
        w = 2 if total >= 2 and rng.random() < 0.4 else 1
        out.append(w)
        total -= w
    return out


def make_problem(rng: random.Random, steps: int) -> Optional[Dict[str, Any]]:
    """One problem with exactly `steps` operations, or None when the drawn numbers do not work out."""
    theme = rng.choice(THEMES)
    name, pro, pos = rng.choice(PEOPLE)
    fmt = {"N": name, "P": pro.capitalize(), "pos": pos, "pos_cap": pos.capitalize()}
    start_mul = rng.random() < 0.35
    end_div = rng.random() < 0.35
    middle = steps - int(start_mul) - int(end_div)
    sentences: List[str] = []
    trivial_k = 0  # "b boxes of c ... split into b" would be a no-op question
    if start_mul:
        b, c = rng.randint(2, 9), rng.randint(3, 25)
        value, expr = b * c, f"{b} * {c}"
        trivial_k = b if middle == 0 else 0
        sentences.append(theme.start_mul.format(b=b, c=c, **fmt))
    else:
        value = rng.randint(20, 200)
        expr = str(value)
        sentences.append(theme.start.format(n=value, **fmt))
    for w in _split_ops(rng, middle):
        plus = rng.random() < 0.55
        if w == 1:
            a = rng.randint(2, 60)
            if not plus and a >= value:
                return None
            value, expr = (value + a, f"{expr} + {a}") if plus else (value - a, f"{expr} - {a}")
            sentences.append(rng.choice(theme.add if plus else theme.sub).format(a=a, **fmt))
        else:
            b, c = rng.randint(2, 9), rng.randint(2, 20)
            if not plus and b * c >= value:
                return None
            value, expr = (value + b * c, f"{expr} + {b} * {c}") if plus else (value - b * c, f"{expr} - {b} * {c}")
            sentences.append(rng.choice(theme.gadd if plus else theme.gsub).format(b=b, c=c, **fmt))
    if end_div:
        divisors = [k for k in range(2, 10) if value % k == 0 and k != trivial_k]
        if not divisors:
            return None
        k = rng.choice(divisors)
        value, expr = value // k, f"({expr}) / {k}"
        sentences.append(theme.div.format(k=k, **fmt))
    else:
        sentences.append(theme.ask.format(**fmt))
    return {"question": " ".join(sentences), "answer": value, "steps": steps, "expression": expr, "theme": theme.name}


def generate_split(seed: int, split: str, n: int, seen: set, steps_mix: Tuple[int, ...] = (2, 3, 4)) -> List[Dict[str, Any]]:
    """`n` rows of split `split`; `seen` (question texts) keeps questions unique across splits."""
    rows: List[Dict[str, Any]] = []
    attempt = 0
    while len(rows) < n:
        rng = random.Random(f"agent-rl-arith:{seed}:{split}:{attempt}")
        attempt += 1
        if attempt > 50 * n + 1000:
            raise RuntimeError(f"arith: could not make {n} unique problems for split {split}")
        prob = make_problem(rng, rng.choice(steps_mix))
        if prob is None or prob["question"] in seen:
            continue
        seen.add(prob["question"])
        idx = len(rows)
        sid = f"{DATA_SOURCE}-{split}-{idx:06d}"
        gt = str(prob["answer"])
        rows.append(make_row(prompt=math_prompt(prob["question"]), data_source=DATA_SOURCE, ability=ABILITY, ground_truth=gt,
                             split=split, index=idx, sample_id=sid, tools_kwargs=math_tools_kwargs(gt), **prob))
    return rows


class ArithGenerator:
    """`agent-rl data generate arith` (the registry's generate hook)."""

    def __init__(self, seed: int, hops: Optional[str] = None):
        if hops is not None:
            raise ValueError("--hops applies to kg only")
        self.seed = seed

    def split(self, split: str, n: int, seen: set) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        rows = generate_split(self.seed, split, n, seen)
        return rows, {"steps": dict(sorted(Counter(r["extra_info"]["steps"] for r in rows).items()))}

    def finish(self, out_dir: str) -> Dict[str, Any]:
        return {}
