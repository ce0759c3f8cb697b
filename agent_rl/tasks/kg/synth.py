"""Synthetic knowledge-graph questions: one small invented world per question.

Each sample is built from its own `random.Random` (seed, split, attempt), so samples are independent
and facts differ between samples (the model must query, it cannot memorise). Building a sample:

1. pick a hop count from the mix and a question `Pattern` (kg_schema) with that many hops;
2. instantiate the pattern's path(s) from fresh topic entities (1-3 objects per multi-valued step,
   CVT nodes with their mandatory links, intersections for two-topic questions);
3. lock (node, relation, direction) of every path frontier so no later fact changes the answers;
4. sometimes add a same-name twin: a film named after an entity on the path, or a second entity of
   the answer's type with the answer's name (both leave a name-level traversal unambiguous);
5. add distractor facts (new or existing entities, Freebase-like relations) up to a drawn size in
   [20, 200] triples;
6. gold answers = `kg_traverse.answer_query` over the final name triples; the sample is redrawn when
   that differs from the id-level answers or is empty.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from agent_rl.tasks.kg.names import NameBook
from agent_rl.tasks.kg.schema import (CVT_LINKS, CVT_TYPES, DEFAULT_IN_MAX, IN_MAX, RELATIONS, VALUE_TYPES, Pattern,
                                     patterns_by_hops, step_types)
from agent_rl.tasks.kg.traverse import answer_query, parse_step
from agent_rl.tasks.kg.rows import ABILITY, kg_prompt, kg_tools_kwargs
from agent_rl.tasks.rows import make_row

DATA_SOURCE = "kg_synth"
MIN_TRIPLES, MAX_TRIPLES = 20, 200
DEFAULT_HOPS = {1: 0.45, 2: 0.4, 3: 0.15}
TWIN_RATE = 0.3
NAMED_TYPES = ("person", "city", "country")  # types that may get a same-name twin


_TYPE_OPTIONS: Dict[str, List[Tuple[str, str]]] = defaultdict(list)
for _rel, (_subj, _obj, _) in RELATIONS.items():
    _TYPE_OPTIONS[_subj].append((_rel, "out"))
    _TYPE_OPTIONS[_obj].append((_rel, "in"))


class Retry(Exception):
    """The drawn sample does not work out; draw another."""


def parse_hops(spec: str) -> Dict[int, float]:
    """'1:0.5,2:0.3,3:0.2' -> {1: 0.5, 2: 0.3, 3: 0.2} (normalised)."""
    available = patterns_by_hops()
    mix: Dict[int, float] = {}
    for part in spec.split(","):
        hop, sep, weight = part.strip().partition(":")
        try:
            h, w = int(hop), float(weight)
        except ValueError:
            raise ValueError(f"bad --hops item {part!r} (expected HOPS:WEIGHT, e.g. 1:0.5,2:0.3,3:0.2)") from None
        if not sep or h not in available or w < 0:
            raise ValueError(f"bad --hops item {part!r} (hops must be one of {sorted(available)}, weight >= 0)")
        mix[h] = w
    total = sum(mix.values())
    if total <= 0:
        raise ValueError(f"--hops {spec!r}: weights sum to 0")
    return {h: w / total for h, w in sorted(mix.items())}


class World:
    """Entities (ids with type and name) and id triples of one sample."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.names = NameBook(rng)
        self.etype: List[str] = []
        self.name: List[str] = []
        self.triples: List[Tuple[int, str, int]] = []
        self.tset: Set[Tuple[int, str, int]] = set()
        self.out_n: Counter = Counter()
        self.in_n: Counter = Counter()
        self.locked: Set[Tuple[int, str, str]] = set()
        self.values: Dict[Tuple[str, str], int] = {}
        self.by_type: Dict[str, List[int]] = defaultdict(list)
        self.adj: Dict[Tuple[int, str, str], List[int]] = defaultdict(list)

    # entities and links
    def new(self, etype: str, name: Optional[str] = None) -> int:
        if etype in VALUE_TYPES:
            name = self.names.value(etype)
            if (etype, name) in self.values:
                return self.values[(etype, name)]
        elif etype in CVT_TYPES:
            name = self.names.cvt_id()
        elif name is None:
            name = self.names.fresh(etype)
        eid = len(self.etype)
        self.etype.append(etype)
        self.name.append(name)
        self.names.used.add(name)
        self.by_type[etype].append(eid)
        if etype in VALUE_TYPES:
            self.values[(etype, name)] = eid
        return eid

    def side_ok(self, x: int, rel: str, d: str) -> bool:
        """May `x` take one more `rel` link in direction `d` (out: x is head)?"""
        if (x, rel, d) in self.locked:
            return False
        if d == "out":
            return self.out_n[(x, rel)] < RELATIONS[rel][2]
        if self.etype[x] in VALUE_TYPES:
            return True
        return self.in_n[(x, rel)] < IN_MAX.get(rel, DEFAULT_IN_MAX)

    def can_link(self, h: int, rel: str, t: int) -> bool:
        return h != t and (h, rel, t) not in self.tset and self.side_ok(h, rel, "out") and self.side_ok(t, rel, "in")

    def link(self, h: int, rel: str, t: int) -> None:
        subj, obj, _ = RELATIONS[rel]
        if (self.etype[h], self.etype[t]) != (subj, obj):
            raise AssertionError(f"{rel} cannot join {self.etype[h]} -> {self.etype[t]}")
        if not self.can_link(h, rel, t):
            raise Retry(f"link {h} {rel} {t} not allowed")
        self.triples.append((h, rel, t))
        self.tset.add((h, rel, t))
        self.out_n[(h, rel)] += 1
        self.in_n[(t, rel)] += 1
        self.adj[(h, rel, "out")].append(t)
        self.adj[(t, rel, "in")].append(h)

    def link_dir(self, x: int, rel: str, d: str, y: int) -> None:
        self.link(x, rel, y) if d == "out" else self.link(y, rel, x)

    def neighbours(self, x: int, rel: str, d: str) -> List[int]:
        return self.adj.get((x, rel, d), [])

    def make_cvt(self, kind: str, given: Sequence[Tuple[str, str, int]]) -> int:
        """A CVT node with the `given` links (relation, direction seen from the CVT, other end) and
        its mandatory links filled with new entities."""
        c = self.new(kind)
        for rel, d, other in given:
            self.link_dir(c, rel, d, other)
        if kind == "marriage":
            spouses = list(dict.fromkeys(self.neighbours(c, "people.marriage.spouse", "out")
                                         + self.neighbours(c, "people.person.spouse_s", "in")))
            while len(spouses) < 2:
                spouses.append(self.new("person"))
            for p in spouses:
                if (c, "people.marriage.spouse", p) not in self.tset:
                    self.link(c, "people.marriage.spouse", p)
                if (p, "people.person.spouse_s", c) not in self.tset:
                    self.link(p, "people.person.spouse_s", c)
            return c
        for rel, d, count in CVT_LINKS[kind]:
            other_type = RELATIONS[rel][1] if d == "out" else RELATIONS[rel][0]
            for _ in range(count - len(self.neighbours(c, rel, d))):
                self.link_dir(c, rel, d, self.new(other_type))
        return c

    def create_linked(self, x: int, rel: str, d: str) -> int:
        """A new entity joined to `x` by `rel` (d = out: x -> new)."""
        other_type = RELATIONS[rel][1] if d == "out" else RELATIONS[rel][0]
        if other_type in CVT_TYPES:
            return self.make_cvt(other_type, [(rel, "in" if d == "out" else "out", x)])
        y = self.new(other_type)
        if x == y or (d == "out" and (x, rel, y) in self.tset) or (d == "in" and (y, rel, x) in self.tset):
            return -1  # a value already linked (e.g. the same genre twice)
        self.link_dir(x, rel, d, y)
        return y

    def add_fact(self, x: int, reuse: float = 0.25) -> bool:
        """One distractor fact about `x`: to an existing entity (probability `reuse`) or a new one."""
        opts = _TYPE_OPTIONS[self.etype[x]]
        for _ in range(4):
            rel, d = opts[self.rng.randrange(len(opts))]
            if self.side_ok(x, rel, d):
                break
        else:
            return False
        other_type = RELATIONS[rel][1] if d == "out" else RELATIONS[rel][0]
        if other_type not in CVT_TYPES and other_type not in VALUE_TYPES and self.rng.random() < reuse:
            cands = list(self.by_type[other_type])
            self.rng.shuffle(cands)
            for y in cands[:8]:
                h, t = (x, y) if d == "out" else (y, x)
                if self.can_link(h, rel, t):
                    self.link(h, rel, t)
                    return True
        return self.create_linked(x, rel, d) >= 0

    # questions
    def count(self, rel: str, d: str) -> int:
        most = RELATIONS[rel][2] if d == "out" else 3
        if most == 1 or self.rng.random() < 0.55:
            return 1
        return self.rng.randint(2, most)

    def walk(self, topic: int, path: Sequence[str], topics: Set[int], frontiers: List[Tuple[Set[int], str, str]],
             create: bool) -> Set[int]:
        frontier = {topic}
        for step in path:
            d, rel = parse_step(step)
            nxt: Set[int] = set()
            for x in sorted(frontier):
                found = [y for y in self.neighbours(x, rel, d) if y not in topics]
                if not found and create:
                    for _ in range(self.count(rel, d)):
                        if not self.side_ok(x, rel, d):
                            break
                        self.create_linked(x, rel, d)
                    found = [y for y in self.neighbours(x, rel, d) if y not in topics]
                nxt.update(found)
            frontiers.append((frontier, rel, d))
            frontier = nxt
        return frontier

    def connect(self, src: int, path: Sequence[str], dst: int) -> Set[int]:
        """Join `src` to `dst` along a 1-step path or a 2-step path through a new CVT node."""
        if len(path) == 1:
            d, rel = parse_step(path[0])
            self.link_dir(src, rel, d, dst)
            return set()
        (d1, r1), (d2, r2) = parse_step(path[0]), parse_step(path[1])
        kind = step_types(path[0])[1]
        if len(path) != 2 or kind not in CVT_TYPES:
            raise AssertionError(f"cannot connect along {path}")
        c = self.make_cvt(kind, [(r1, "in" if d1 == "out" else "out", src), (r2, d2, dst)])
        return {c}


def build_sample(rng: random.Random, pattern: Pattern) -> Dict[str, Any]:
    w = World(rng)
    (t1_type, path1), *rest = pattern.branches
    topics = [w.new(t1_type)]
    frontiers: List[Tuple[Set[int], str, str]] = []
    answers = w.walk(topics[0], path1, set(topics), frontiers, create=True)
    for t2_type, path2 in rest:  # intersection with a constraint branch
        if len(answers) < 2:
            raise Retry("constraint question needs at least two candidates")
        keep = rng.sample(sorted(answers), rng.randint(1, len(answers) - 1))
        t2 = w.new(t2_type)
        topics.append(t2)
        answer_type = step_types(path2[-1])[1]
        mids: Set[int] = set()
        for y in keep + [w.new(answer_type) for _ in range(rng.randint(1, 2))]:
            mids |= w.connect(t2, path2, y)
        frontiers.append(({t2}, *reversed(parse_step(path2[0]))))
        if len(path2) == 2:
            frontiers.append((mids, *reversed(parse_step(path2[1]))))
    for frontier, rel, d in frontiers:
        for x in frontier:
            w.locked.add((x, rel, d))
    on_path = sorted({x for f, _, _ in frontiers for x in f} | answers)

    same_name: List[str] = []
    if rng.random() < TWIN_RATE:
        film_src = [x for x in on_path if w.etype[x] in NAMED_TYPES]
        same_src = [x for x in sorted(answers) if w.etype[x] in NAMED_TYPES]
        kinds = ([("film", film_src)] if film_src else []) + ([("same", same_src)] if same_src else [])
        if kinds:
            kind, src = rng.choice(kinds)
            x = rng.choice(src)
            twin = w.new("film" if kind == "film" else w.etype[x], name=w.name[x])
            for _ in range(rng.randint(2, 4)):
                w.add_fact(twin, reuse=0.0)
            same_name.append(w.name[x])

    target = MIN_TRIPLES + int((MAX_TRIPLES - 10 - MIN_TRIPLES) * rng.random() ** 2.2)
    guard = 0
    while len(w.triples) < target and guard < 50 * target:
        guard += 1
        x = rng.randrange(len(w.etype))
        if w.etype[x] not in VALUE_TYPES:
            w.add_fact(x)

    names = w.name
    triples: List[List[str]] = []
    seen: Set[Tuple[str, str, str]] = set()
    for h, r, t in w.triples:
        key = (names[h], r, names[t])
        if key not in seen:
            seen.add(key)
            triples.append(list(key))
    rng.shuffle(triples)
    if not MIN_TRIPLES <= len(triples) <= MAX_TRIPLES:
        raise Retry(f"subgraph has {len(triples)} triples")

    topic_names = [names[t] for t in topics]
    query = [{"topic": names[t], "path": list(path)} for t, (_, path) in zip(topics, pattern.branches)]
    gold = answer_query(triples, query)
    if not gold or set(gold) != {names[a] for a in answers_by_ids(w, topics, pattern)}:
        raise Retry("name-level answers differ from id-level answers")
    used = {n for tr in triples for n in (tr[0], tr[2])}
    dup = Counter(names[e] for e in range(len(names)) if names[e] in used and w.etype[e] not in VALUE_TYPES)
    same_name = sorted(n for n, c in dup.items() if c > 1)
    question = rng.choice(pattern.templates).format(*topic_names)
    return {"question": question, "topic_entities": topic_names, "hops": pattern.hops, "pattern": pattern.name,
            "query": query, "cvt": pattern.through_cvt, "same_name_entities": same_name,
            "answers": gold, "triples": triples}


def answers_by_ids(w: World, topics: List[int], pattern: Pattern) -> Set[int]:
    """Id-level answers of the final graph (same rules as kg_traverse, on entity ids)."""
    tset = set(topics)
    result: Optional[Set[int]] = None
    for t, (_, path) in zip(topics, pattern.branches):
        frontier = w.walk(t, path, tset, [], create=False)
        result = frontier if result is None else result & frontier
    return result or set()


def generate_split(seed: int, split: str, n: int, hop_mix: Dict[int, float], seen: Set[str]
                   ) -> Tuple[List[Dict[str, Any]], Dict[str, List[List[str]]]]:
    """`n` rows of `split` and their subgraphs; `seen` keeps questions unique across splits."""
    by_hops = patterns_by_hops()
    hops, weights = zip(*sorted(hop_mix.items()))
    rows: List[Dict[str, Any]] = []
    graphs: Dict[str, List[List[str]]] = {}
    attempt = 0
    while len(rows) < n:
        rng = random.Random(f"agent-rl-kg:{seed}:{split}:{attempt}")
        attempt += 1
        if attempt > 20 * n + 1000:
            raise RuntimeError(f"kg: could not build {n} samples for split {split}")
        pattern = rng.choice(by_hops[rng.choices(hops, weights)[0]])
        try:
            s = build_sample(rng, pattern)
        except Retry:
            continue
        if s["question"] in seen:
            continue
        seen.add(s["question"])
        idx = len(rows)
        sid = f"{DATA_SOURCE}-{split}-{idx:06d}"
        graphs[sid] = s.pop("triples")
        gold = s.pop("answers")
        rows.append(make_row(prompt=kg_prompt(s["question"], s["topic_entities"]), data_source=DATA_SOURCE,
                             ability=ABILITY, ground_truth=gold, split=split, index=idx, sample_id=sid,
                             tools_kwargs=kg_tools_kwargs(sid, DATA_SOURCE), num_triples=len(graphs[sid]), **s))
    return rows, graphs
