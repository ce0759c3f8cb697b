"""`agent-rl bench sglang-log LOG`: what sglang's scheduler did during each benchmark mode.

The bench writes `agent-rl bench: mode NAME start|end` marks (time-stamped, on stderr) into the stream sglang
logs to. sglang's scheduler logs a `Prefill batch` line per prefill pass and a `Decode batch` line every
`decode_log_interval` (40) decode steps, each time-stamped to the second. Per mode this reports: prefill passes,
new vs cached prompt tokens (radix-cache hit rate), decode batch size (running requests) over the logged steps,
the share of logged decode steps that ran inside a CUDA graph, the queue length, and sglang's generation rate (mean
and p90 of its 40-step windows: the p90 is the engine's pace between turn boundaries, which moved 1.3-1.6x on the
H200 from one step to the next, 2026-12-04).

With `--gpu-csv` (nvidia-smi's `--query-gpu=timestamp,index,memory.used,utilization.gpu,clocks.sm,clocks.mem,
power.draw,temperature.gpu,clocks_event_reasons.active --format=csv,noheader` log, as scripts/gpu/pipeline.sh
writes it; the older name clocks_throttle_reasons.active reads the same) the GPU's SM clock, power, utilization and
clock-event reasons are reported for each mode's time span, to tell a GPU that slowed from a host that did.
"""
from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any, Dict, List, Optional

_TS = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
_MARK = re.compile(r"agent-rl bench: mode (.+) (start|end)$")
_INT = lambda name: re.compile(rf"{re.escape(name)}: (\d+)")  # noqa: E731
_NEW_SEQ, _NEW_TOK, _CACHED, _RUNNING, _QUEUE = (_INT(n) for n in ("#new-seq", "#new-token", "#cached-token",
                                                                    "#running-req", "#queue-req"))
_GRAPH = re.compile(r"cuda graph: (True|False)")
_TAG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? R(\d+)\]")   # an engine replica's lines (`log_tag_config`)
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
    def __init__(self, name: str, start: Optional[datetime]):
        self.name = name
        self.start, self.end = start, None
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
            "gen_tokens_per_s_p90": _pct(gen, 90),
            "queue_max": max([d["queue"] for d in self.decode] + [p["queue"] for p in self.prefill], default=None),
        }


def _stamp(line: str) -> Optional[datetime]:
    m = _TS.search(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") if m else None


def parse(lines, gpu: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """Per-mode summaries, in the order the modes ran; with `gpu` (`parse_gpu_csv`) the GPU's figures over each
    mode's span (marks are stamped to the second: a span runs from its start mark's second to the end of its end
    mark's)."""
    modes: List[_Mode] = []
    cur: Optional[_Mode] = None
    for raw in lines:
        line = raw.rstrip("\n")
        m = _MARK.search(line)
        if m:
            if m.group(2) == "start":
                cur = _Mode(m.group(1), _stamp(line))
                modes.append(cur)
            elif cur is not None:
                cur.end = _stamp(line)
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
    rows = [m.summary() for m in modes]
    if gpu is not None:
        for row, mode in zip(rows, modes):
            row["gpu"] = gpu_span(gpu, mode.start, mode.end)
    return rows


# nvidia-smi's clock-event (throttle) reason bits
_REASONS = {0x1: "idle", 0x2: "app clocks", 0x4: "sw power cap", 0x8: "hw slowdown", 0x10: "sync boost",
            0x20: "sw thermal", 0x40: "hw thermal", 0x80: "hw power brake", 0x100: "display clocks"}
_FIRST_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def parse_gpu_csv(lines) -> List[Dict[str, Any]]:
    """Rows of nvidia-smi's CSV log (fields as in the module doc; `N/A` or missing trailing fields become None)."""
    out = []
    for raw in lines:
        parts = [p.strip() for p in raw.split(",")]
        try:
            t = datetime.strptime(parts[0], "%Y/%m/%d %H:%M:%S.%f")
        except (ValueError, IndexError):
            continue   # a header or a torn line

        def num(i):
            m = _FIRST_NUM.match(parts[i]) if i < len(parts) else None
            return float(m.group(0)) if m else None
        try:
            reasons = int(parts[8], 16) if len(parts) > 8 and parts[8].lower().startswith("0x") else None
        except ValueError:   # a line cut inside the bitmask
            reasons = None
        out.append({"t": t, "util": num(3), "sm_mhz": num(4), "mem_mhz": num(5), "power_w": num(6), "temp_c": num(7),
                    "reasons": reasons})
    return out


def gpu_span(samples: List[Dict[str, Any]], start: Optional[datetime], end: Optional[datetime]) -> Optional[Dict[str, Any]]:
    """The GPU's figures over [start, end + 1 s): SM clock mean / min / max, memory clock, power, utilization, the
    clock-event reasons seen and the share of the span's samples that carried each (idle left out: a mode's gaps are
    its own; a reason seen in a few samples while the clock stays at its top did not slow the mode)."""
    if start is None or end is None:
        return None
    span = [s for s in samples if start <= s["t"] and (s["t"] - end).total_seconds() < 1.0]
    if not span:
        return None

    def mean(key):
        v = [s[key] for s in span if s[key] is not None]
        return sum(v) / len(v) if v else None
    sm = [s["sm_mhz"] for s in span if s["sm_mhz"] is not None]
    seen = [s["reasons"] for s in span if s["reasons"] is not None]
    shares = {name: share for bit, name in _REASONS.items() if bit != 0x1
              for share in [sum(1 for r in seen if r & bit) / len(seen)] if share} if seen else None
    return {"samples": len(span), "sm_mhz_mean": mean("sm_mhz"), "sm_mhz_min": min(sm, default=None),
            "sm_mhz_max": max(sm, default=None), "mem_mhz_mean": mean("mem_mhz"), "power_w_mean": mean("power_w"),
            "util_mean": mean("util"), "temp_c_max": max((s["temp_c"] for s in span if s["temp_c"] is not None), default=None),
            "reasons": None if shares is None else list(shares), "reason_shares": shares}


def _reasons_cell(g: Dict[str, Any]) -> str:
    if g["reason_shares"] is None:
        return "–"
    return ", ".join(f"{name} ({100 * share:.0f}% of samples)" for name, share in g["reason_shares"].items()) or "none"


def markdown(rows: List[Dict[str, Any]]) -> str:
    def f(v, spec=".0f"):
        return "–" if v is None else format(v, spec)
    out = ["| mode | prefill passes | seqs / pass | cache hit | decode batch mean / p10 / p50 / max | CUDA graph | "
           "gen tok/s (sglang) mean / p90 | queue max |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['mode']} | {r['prefill_passes']} | {f(r['prefill_seqs_per_pass'], '.1f')} | "
                   f"{f(None if r['cache_hit_rate'] is None else 100 * r['cache_hit_rate'])}% | "
                   f"{f(r['decode_batch_mean'])} / {f(r['decode_batch_p10'])} / {f(r['decode_batch_p50'])} / "
                   f"{f(r['decode_batch_max'])} | "
                   f"{f(None if r['cuda_graph_frac'] is None else 100 * r['cuda_graph_frac'])}% | "
                   f"{f(r['gen_tokens_per_s_mean'])} / {f(r.get('gen_tokens_per_s_p90'))} | {f(r['queue_max'])} |")
    gpu = [(r["mode"], r["gpu"]) for r in rows if r.get("gpu")]
    if gpu:
        out += ["", "| mode | GPU samples | SM clock MHz mean (min-max) | memory clock MHz | power W | GPU util % | "
                "temperature max C | clock-event reasons |", "|---|---|---|---|---|---|---|---|"]
        for name, g in gpu:
            out.append(f"| {name} | {g['samples']} | {f(g['sm_mhz_mean'])} ({f(g['sm_mhz_min'])}-{f(g['sm_mhz_max'])}) | "
                       f"{f(g['mem_mhz_mean'])} | {f(g['power_w_mean'])} | {f(g['util_mean'])} | {f(g['temp_c_max'])} | "
                       f"{_reasons_cell(g)} |")
    return "\n".join(out) + "\n"


def replicas_in(lines) -> List[int]:
    """The engine replicas whose tagged lines the log holds (`[TIME R1] ...`), in order."""
    return sorted({int(m.group(1)) for m in map(_TAG.match, lines) if m})


def replica_lines(lines, replica: int) -> List[str]:
    """One replica's lines and every untagged one (the bench's mode marks)."""
    out = []
    for line in lines:
        m = _TAG.match(line)
        if m is None or int(m.group(1)) == replica:
            out.append(line)
    return out


def main(path: str, gpu_csv: Optional[str] = None, fit_cost: bool = False, max_pass_ms: float = 50.0,
         replica: Optional[int] = None) -> int:
    try:
        gpu = None
        if gpu_csv:
            with open(gpu_csv, errors="replace") as fh:
                gpu = parse_gpu_csv(fh)
        with open(path, errors="replace") as fh:
            lines = fh.readlines()
    except OSError as e:
        print(f"agent-rl bench sglang-log: cannot read {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    tagged = replicas_in(lines)
    if replica is not None:
        if replica not in tagged:
            print(f"agent-rl bench sglang-log: {path} holds no lines of replica {replica} (replicas: "
                  f"{', '.join(map(str, tagged)) or 'none tagged'})", file=sys.stderr)
            return 2
        lines = replica_lines(lines, replica)
    elif len(tagged) > 1:
        print(f"agent-rl bench sglang-log: {path} holds the lines of {len(tagged)} engine replicas' schedulers: "
              f"read one at a time with --replica {' | '.join(map(str, tagged))}", file=sys.stderr)
        return 2
    rows = parse(lines, gpu)
    if not rows:
        print(f"agent-rl bench sglang-log: {path} holds no 'agent-rl bench: mode ...' marks", file=sys.stderr)
        return 2
    print(markdown(rows), end="")
    if fit_cost:
        from agent_rl.bench import sglang_cost

        print(sglang_cost.markdown(sglang_cost.fit(lines, max_pass_ms)), end="")
    return 0
