"""Export a KG store to RDF in Freebase shape, for a SPARQL endpoint (`kg_query` with `backend: sparql`).

Every (question, entity name) becomes one node `ns:m.0…` (`ns:` = http://rdf.freebase.com/ns/) carrying its name as
`ns:type.object.name "name"`; every store triple (head, relation, tail) becomes `ns:<head mid> ns:<relation>
ns:<tail mid>`. Mids are numbered per question, in sorted order, so the same name in two questions (two different
invented worlds) gets two distinct mids, and the same store always gives the same file. Value-like tails (dates,
numbers) stay named nodes rather than literals, so every look-up of the store works the same over SPARQL.

Scoping: `.nq` (N-Quads, the default shape) puts each question's triples in the named graph
`urn:agent-rl:kg:<sample_id>` (sample_id percent-encoded), the `graph_template` the SPARQL backend reads by
default, so look-ups stay per question as with the subgraph server. `.nt` (N-Triples) writes one graph without
questions: only for an endpoint queried with `graph_template: null`, where names shared by questions are merged.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional
from urllib.parse import quote

from tools.kg_store import read_kg_store

NS = "http://rdf.freebase.com/ns/"
NAME = NS + "type.object.name"
GRAPH_TEMPLATE = "urn:agent-rl:kg:{sample_id}"
_MID_ALPHABET = "0123456789bcdfghjklmnpqrstvwxyz_"     # Freebase mids: digits and consonants
_IRI_SAFE = "/.:_-~!$&'()*+,;=@%"


def mid(n: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, len(_MID_ALPHABET))
        digits = _MID_ALPHABET[r] + digits
        if n == 0:
            return "m.0" + digits


def literal(s: str) -> str:
    """An N-Triples string literal (UTF-8; backslash, quote and line breaks escaped)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"name {s!r} is not valid Unicode (a lone surrogate)") from None
    s = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + "".join(c if c >= " " or c == "\t" else f"\\u{ord(c):04X}" for c in s) + '"'


def relation_iri(rel: str) -> str:
    """`ns:<relation>`, with characters not allowed in an IRI percent-encoded (the backend decodes them)."""
    if not rel:
        raise ValueError("empty relation name")
    return f"<{NS}{quote(rel, safe=_IRI_SAFE)}>"


def export_ntriples(store: str, out: str, graphs: Optional[bool] = None) -> Dict[str, int]:
    """Write the store at `store` to `out` (.nq: one named graph per question; .nt: one graph).
    -> {"samples", "entities", "triples" (store triples written, duplicates dropped), "statements" (lines)}."""
    ext = os.path.splitext(out)[1].lower()
    if graphs is None:
        if ext not in (".nq", ".nt"):
            raise ValueError(f"--out {out}: the file name must end in .nq (N-Quads, one named graph per question) "
                             "or .nt (N-Triples, one graph)")
        graphs = ext == ".nq"
    try:
        _, samples = read_kg_store(store)
    except KeyError:
        raise ValueError(f"{store}: a KG store without samples") from None
    except UnicodeDecodeError:
        raise ValueError(f"{store}: not UTF-8 JSON") from None
    except ValueError as e:
        if str(e).startswith(store):
            raise
        raise ValueError(f"{store}: not JSON ({e})") from None
    if not isinstance(samples, dict):
        raise ValueError(f"{store}: samples must be a mapping sample_id -> triples")
    tmp = f"{out}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    try:
        summary = _write(tmp, store, samples, graphs)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, out)
    return summary


def _write(tmp: str, store: str, samples: Dict[str, List[List[str]]], graphs: bool) -> Dict[str, int]:
    counter = entities = triples = lines = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for sample_id in sorted(samples):
            rows: List[List[str]] = samples[sample_id]
            for i, t in enumerate(rows):
                if not isinstance(t, (list, tuple)) or len(t) != 3 or not all(isinstance(x, str) for x in t):
                    raise ValueError(f"{store}: sample {sample_id!r}: triple {i} is not [head, relation, tail] "
                                     f"strings: {t!r}")
            g = f" <{GRAPH_TEMPLATE.format(sample_id=quote(str(sample_id), safe=''))}>" if graphs else ""
            mids: Dict[str, str] = {}
            for name in sorted({x for t in rows for x in (t[0], t[2])}):
                mids[name] = mid(counter)
                counter += 1
                f.write(f"<{NS}{mids[name]}> <{NAME}> {literal(name)}{g} .\n")
                lines += 1
            entities += len(mids)
            seen = set()
            for h, r, t in rows:
                line = f"<{NS}{mids[h]}> {relation_iri(r)} <{NS}{mids[t]}>{g} .\n"
                if line in seen:
                    continue
                seen.add(line)
                f.write(line)
            triples += len(seen)
            lines += len(seen)
    return {"samples": len(samples), "entities": entities, "triples": triples, "statements": lines}
