"""`agent-rl bench sglang-log LOG`: what sglang's scheduler did during each benchmark mode.

The bench writes `agent-rl bench: mode NAME start|end` marks (time-stamped, on stderr) into the stream sglang
logs to. sglang's scheduler logs a `Prefill batch` line per prefill pass and a `Decode batch` line every
`decode_log_interval` (40) decode steps, each time-stamped to the second. Per mode this reports: prefill passes,
new vs cached prompt tokens (radix-cache hit rate), decode batch size (running requests) over the logged steps,
the share of logged decode steps that ran inside a CUDA graph, and the queue length.
"""
from __future__ import annotations

import re
import sys
from typing import Any, Dict, List, Optional

_TS = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_MARK = re.compile(r"agent-rl bench: mode (.+) (start|end)$")
_INT = lambda name: re.compile(rf"{re.escape(name)}: (\d+)")  # noqa: E731
_NEW_SEQ, _NEW_TOK, _CACHED, _RUNNING, _QUEUE = (_INT(n) for n in ("#new-seq", "#new-token", "#cached-token",
                                                                    "#running-req", "#queue-req"))
_GRAPH = re.compile(r"cuda graph: (True|False)")
_GEN = re.compile(r"gen throughput \(token/s\): ([\d.]+)")


def _num(rx, line: str) -> Optional[float]:
    m = rx.search(line)
    return float(m.group(1)) if m else None


def _pct(values: List[float], q: float) -> Optional[float]:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


class _Mode:
    def __init__(self, name: str):
        self.name = name
        self.prefill, self.decode = [], []

    def summary(self) -> Dict[str, Any]:
        new = sum(p["new_tokens"] for p in self.prefill)
        cached = sum(p["cached_tokens"] for p in self.prefill)
        running = [d["running"] for d in self.decode]
        graphs = [d["graph"] for d in self.decode if d["graph"] is not None]
        gen = [d["gen_tps"] for d in self.decode if d["gen_tps"] is not None]
        return {
            "mode": self.name,
            "prefill_passes": len(self.prefill),
            "prefill_seqs_per_pass": sum(p["seqs"] for p in self.prefill) / len(self.prefill) if self.prefill else None,
            "prefill_new_tokens": int(new),
            "prefill_cached_tokens": int(cached),
            "cache_hit_rate": cached / (new + cached) if new + cached else None,
            "decode_lines": len(self.decode),
            "decode_batch_mean": sum(running) / len(running) if running else None,
            "decode_batch_p10": _pct(running, 10),
            "decode_batch_p50": _pct(running, 50),
            "decode_batch_max": max(running) if running else None,
            "cuda_graph_frac": sum(graphs) / len(graphs) if graphs else None,
            "gen_tokens_per_s_mean": sum(gen) / len(gen) if gen else None,
            "queue_max": max([d["queue"] for d in self.decode] + [p["queue"] for p in self.prefill], default=None),
        }


def parse(lines) -> List[Dict[str, Any]]:
    """Per-mode summaries, in the order the modes ran."""
    modes: List[_Mode] = []
    cur: Optional[_Mode] = None
    for raw in lines:
        line = raw.rstrip("\n")
        m = _MARK.search(line)
        if m:
            if m.group(2) == "start":
                cur = _Mode(m.group(1))
                modes.append(cur)
            else:
                cur = None
            continue
        if cur is None:
            continue
        if "Prefill batch" in line:
            cur.prefill.append({"seqs": _num(_NEW_SEQ, line) or 0, "new_tokens": _num(_NEW_TOK, line) or 0,
                                "cached_tokens": _num(_CACHED, line) or 0, "queue": _num(_QUEUE, line) or 0})
        elif "Decode batch" in line:
            g = _GRAPH.search(line)
            cur.decode.append({"running": _num(_RUNNING, line) or 0, "queue": _num(_QUEUE, line) or 0,
                               "graph": None if g is None else g.group(1) == "True", "gen_tps": _num(_GEN, line)})
    return [m.summary() for m in modes]


def markdown(rows: List[Dict[str, Any]]) -> str:
    def f(v, spec=".0f"):
        return "–" if v is None else format(v, spec)
    out = ["| mode | prefill passes | seqs / pass | cache hit | decode batch mean / p10 / p50 / max | CUDA graph | "
           "gen tok/s (sglang) | queue max |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['mode']} | {r['prefill_passes']} | {f(r['prefill_seqs_per_pass'], '.1f')} | "
                   f"{f(None if r['cache_hit_rate'] is None else 100 * r['cache_hit_rate'])}% | "
                   f"{f(r['decode_batch_mean'])} / {f(r['decode_batch_p10'])} / {f(r['decode_batch_p50'])} / "
                   f"{f(r['decode_batch_max'])} | "
                   f"{f(None if r['cuda_graph_frac'] is None else 100 * r['cuda_graph_frac'])}% | "
                   f"{f(r['gen_tokens_per_s_mean'])} | {f(r['queue_max'])} |")
    return "\n".join(out) + "\n"


def main(path: str) -> int:
    try:
        with open(path, errors="replace") as fh:
            rows = parse(fh)
    except OSError as e:
        print(f"agent-rl bench sglang-log: cannot read {path}: {e.strerror}", file=sys.stderr)
        return 2
    if not rows:
        print(f"agent-rl bench sglang-log: {path} holds no 'agent-rl bench: mode ...' marks", file=sys.stderr)
        return 2
    print(markdown(rows), end="")
    return 0
