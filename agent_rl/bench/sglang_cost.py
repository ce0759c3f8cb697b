"""`agent-rl bench sglang-log LOG --fit-cost`: where a rollout's engine time goes, fitted on sglang's own log.

sglang's scheduler logs a `Decode batch` line every `decode_log_interval` decode passes (40 unless its server args
say otherwise), with the running requests and its generation rate over the window since the previous line. A
window therefore lasts about `interval * running / rate` seconds, and in it ran `interval` decode passes of about
`running` rows plus the `Prefill batch` lines logged since the previous decode line (each a prefill pass admitting
`#new-seq` requests). Least squares over every window inside the bench's mode marks, with non-negative costs:

    window seconds = a * decode passes + b * decode rows + c * prefill passes + d * admitted requests

a, b, c, d are the costs of the simulated engine (`--sim-cost A_MS,B_US,C_MS,D_MS`), and each mode's fitted time
splits into the four parts: how much of a rollout's engine time goes to decoding and how much to turning requests
around. Windows whose mean pass exceeds `max_pass_ms` held engine idle time (tool waits) or a stall and are left
out (counted). A mode's first window starts before the mode and is left out too. The fit is approximate: the rows
are read at the window's end, not averaged over it.
"""
from __future__ import annotations

import itertools
import re
from typing import Any, Dict, List, Optional

from agent_rl.bench.sglang_log import _GEN, _MARK, _NEW_SEQ, _RUNNING, _num

_INTERVAL = re.compile(r"decode_log_interval=(\d+)")
TERMS = ("decode passes", "decode rows", "prefill passes", "admitted requests")


def windows(lines, max_pass_ms: float = 50.0) -> Dict[str, Any]:
    """The decode windows of every mode: {"interval", "rows": [{"mode", "run", "x": [passes, rows, prefills,
    admitted], "s"}], "left_out"}; `run` counts the start marks (a mode name recurs across rounds and scenarios)."""
    interval, mode, first, run = 40, None, False, -1
    prefills = admitted = 0
    out: List[Dict[str, Any]] = []
    left_out = 0
    for raw in lines:
        line = raw.rstrip("\n")
        m = _INTERVAL.search(line)
        if m:
            interval = int(m.group(1))
        m = _MARK.search(line)
        if m:
            mode, first = (m.group(1), True) if m.group(2) == "start" else (None, False)
            run += mode is not None
            prefills = admitted = 0
            continue
        if mode is None:
            continue
        if "Prefill batch" in line:
            prefills += 1
            admitted += _num(_NEW_SEQ, line) or 0
        elif "Decode batch" in line:
            running, rate = _num(_RUNNING, line) or 0, _num(_GEN, line) or 0
            if not first and running > 0 and rate > 0:
                s = interval * running / rate
                if s * 1e3 / interval > max_pass_ms:
                    left_out += 1
                else:
                    out.append({"mode": mode, "run": run, "x": [interval, interval * running, prefills, admitted], "s": s})
            first = False
            prefills = admitted = 0
    return {"interval": interval, "rows": out, "left_out": left_out}


def _nnls(x: List[List[float]], y: List[float]):
    """Least squares with every coefficient >= 0 (4 unknowns: the best of the subsets whose own fit is >= 0)."""
    import numpy as np

    X, Y = np.asarray(x, float), np.asarray(y, float)
    best = (float(np.sum(Y ** 2)), np.zeros(X.shape[1]))
    for k in range(1, X.shape[1] + 1):
        for cols in itertools.combinations(range(X.shape[1]), k):
            c, *_ = np.linalg.lstsq(X[:, cols], Y, rcond=None)
            if (c < 0).any():
                continue
            full = np.zeros(X.shape[1])
            full[list(cols)] = c
            sse = float(np.sum((Y - X @ full) ** 2))
            if sse < best[0] - 1e-18:
                best = (sse, full)
    return best[1]


def fit(lines, max_pass_ms: float = 50.0) -> Optional[Dict[str, Any]]:
    """Costs (seconds per term), rmse and mean window, and per mode run (in the order the modes ran, as
    `sglang_log.parse`'s rows) the fitted share of each term; None without enough windows (fewer than 8)."""
    w = windows(lines, max_pass_ms)
    rows = w["rows"]
    if len(rows) < 8:
        return None
    coef = _nnls([r["x"] for r in rows], [r["s"] for r in rows])
    sse = 0.0
    modes: Dict[int, Dict[str, Any]] = {}
    for r in rows:
        parts = [c * v for c, v in zip(coef, r["x"])]
        sse += (sum(parts) - r["s"]) ** 2
        m = modes.setdefault(r["run"], {"mode": r["mode"], "windows": 0, "measured_s": 0.0, "fitted_s": 0.0, "parts": [0.0] * 4})
        m["windows"] += 1
        m["measured_s"] += r["s"]
        m["fitted_s"] += sum(parts)
        m["parts"] = [a + b for a, b in zip(m["parts"], parts)]
    for m in modes.values():
        m["shares"] = {t: (part / m["fitted_s"] if m["fitted_s"] else None) for t, part in zip(TERMS, m.pop("parts"))}
    return {"costs": dict(zip(TERMS, (float(c) for c in coef))), "windows": len(rows), "left_out": w["left_out"],
            "interval": w["interval"], "rmse_s": (sse / len(rows)) ** 0.5,
            "mean_window_s": sum(r["s"] for r in rows) / len(rows), "modes": [modes[k] for k in sorted(modes)]}


def sim_cost(costs: Dict[str, float]) -> str:
    """The fitted costs as `--sim-cost FIXED_MS,PER_ROW_US,PREFILL_MS,PREFILL_ROW_MS`."""
    v = (costs["decode passes"] * 1e3, costs["decode rows"] * 1e6, costs["prefill passes"] * 1e3,
         costs["admitted requests"] * 1e3)
    return ",".join(f"{x:.3g}" for x in v)


def markdown(f: Optional[Dict[str, Any]]) -> str:
    if f is None:
        return "\nCost fit: fewer than 8 decode windows inside the bench's mode marks (log_level=info logs them).\n"
    c = f["costs"]
    out = ["", f"Cost fit on {f['windows']} decode windows of {f['interval']} passes ({f['left_out']} left out: a "
           f"mean pass over the cap, engine idle or stalled): decode {c['decode passes'] * 1e3:.2f} ms a pass + "
           f"{c['decode rows'] * 1e6:.1f} us a row, prefill {c['prefill passes'] * 1e3:.1f} ms a pass + "
           f"{c['admitted requests'] * 1e3:.2f} ms an admitted request; rmse {f['rmse_s'] * 1e3:.0f} ms of a "
           f"{f['mean_window_s'] * 1e3:.0f} ms window. As the simulated engine's costs: `--sim-cost {sim_cost(c)}`.",
           "", "| mode | windows | fitted / measured | " + " | ".join(TERMS) + " |", "|---|---|---|---|---|---|---|"]
    for m in f["modes"]:
        ratio = m["fitted_s"] / m["measured_s"] if m["measured_s"] else None
        shares = " | ".join("–" if v is None else f"{100 * v:.0f}%" for v in m["shares"].values())
        out.append(f"| {m['mode']} | {m['windows']} | {'–' if ratio is None else format(ratio, '.2f')} | {shares} |")
    return "\n".join(out) + "\n"
