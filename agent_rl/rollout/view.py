"""Trajectories JSONL -> one self-contained, readable HTML page (`agent-rl view`).

Per trajectory: status, stop reason, reward and its components, per-turn rewards, whether its prompt had a
hint (`data.prompt_augmentation`, when hints were on); the prompt (folded); every assistant turn with its tool
calls (arguments, status, latency, observation); and the response as tokens coloured by loss mask (green =
sampled, trained; grey = prompt / tool / template, not trained), each token's id and log-prob in its tooltip. With a
tokenizer the tokens are decoded one by one from the ids; without one the page falls back on the text fields (turn
text = sampled, observation text = not trained). Everything from the file is HTML-escaped.
"""
from __future__ import annotations

import html
import json
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence
from agent_rl.data.hints import is_hinted
from agent_rl.tool_runtime.record import OK

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
h1{font-size:1.3em} h2{font-size:1.05em;margin:0}
.traj{border:1px solid #ccc;border-radius:6px;padding:.8em;margin:1em 0}
.meta span{margin-right:1.2em} .good{color:#17702f} .bad{color:#a11}
table{border-collapse:collapse;margin:.4em 0;font-size:.9em} td,th{border:1px solid #ddd;padding:2px 6px;vertical-align:top;text-align:left}
.turn{border-left:3px solid #7a9;padding:.2em .6em;margin:.6em 0}
pre,.tokens{white-space:pre-wrap;line-height:1.55;word-break:break-word;font-family:ui-monospace,monospace;font-size:.85em;margin:.3em 0}
.tok{border-radius:2px} .m1{background:#c9f2cf} .m0{background:#e6e6e6;color:#555} .pr{color:#777}
.legend span{padding:0 .4em;margin-right:.6em}
details>summary{cursor:pointer;color:#335}
"""


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if v is None:
        return "–"
    return str(v)


def _token_spans(ids: Sequence[int], mask: Sequence[int], logprobs: Sequence[float], tokenizer) -> str:
    out: List[str] = []
    for i, tid in enumerate(ids):
        m = mask[i] if i < len(mask) else 0
        lp = logprobs[i] if i < len(logprobs) else 0.0
        piece = tokenizer.decode([int(tid)], skip_special_tokens=False)
        title = f"id {tid}" + (f" · logp {lp:.3f}" if m else " · not trained")
        out.append(f'<span class="tok m{1 if m else 0}" title="{esc(title)}">{esc(piece)}</span>')
    return "".join(out)


def _text_spans(rec: Dict[str, Any]) -> str:
    out: List[str] = []
    for t in rec.get("turns", []):
        out.append(f'<span class="tok m1" title="turn {esc(t.get("index"))} · sampled">{esc(t.get("text", ""))}</span>')
        obs = t.get("observation_text")
        if obs is None and t.get("observation_ids"):
            obs = "".join(f"\n<tool_response>\n{c.get('observation', '')}\n</tool_response>" for c in t.get("tool_calls", []))
        if obs:
            out.append(f'<span class="tok m0" title="observation · not trained">{esc(obs)}</span>')
    return "".join(out)


def _prompt_text(rec: Dict[str, Any], tokenizer) -> str:
    if rec.get("prompt_text"):
        return rec["prompt_text"]
    if tokenizer is not None and rec.get("prompt_ids"):
        return tokenizer.decode(rec["prompt_ids"], skip_special_tokens=False)
    msgs = (rec.get("row") or {}).get("prompt") or []
    return "\n\n".join(f"[{m.get('role')}]\n{m.get('content')}" for m in msgs)


def _tool_table(calls: List[Dict[str, Any]]) -> str:
    if not calls:
        return ""
    rows = ["<tr><th>tool</th><th>arguments</th><th>status</th><th>latency s</th><th>step reward</th><th>observation</th></tr>"]
    for c in calls:
        args = c.get("arguments")
        args_s = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
        cls = "good" if c.get("status") == OK else "bad"
        rows.append(f"<tr><td>{esc(c.get('name'))}</td><td><pre>{esc(args_s)}</pre></td>"
                    f"<td class=\"{cls}\">{esc(c.get('status'))}</td><td>{esc(_fmt(c.get('latency_s')))}</td>"
                    f"<td>{esc(_fmt(c.get('step_reward')))}</td><td><pre>{esc(c.get('observation', ''))}</pre></td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def _observation(turn: Dict[str, Any], tokenizer) -> str:
    text = turn.get("observation_text")
    if text is None and tokenizer is not None and turn.get("observation_ids"):
        text = tokenizer.decode(turn["observation_ids"], skip_special_tokens=False)
    if not text:
        return ""
    return (f"<details><summary>observation as the model saw it ({len(turn.get('observation_ids', []))} tokens, not trained)"
            f"</summary><pre class=\"pr\">{esc(text)}</pre></details>")


def _trajectory_html(rec: Dict[str, Any], tokenizer, n: int) -> str:
    row = rec.get("row") or {}
    gt = (row.get("reward_model") or {}).get("ground_truth")
    comps = rec.get("reward_components") or {}
    hinted = is_hinted(row)
    hint = "" if hinted is None else f"<span>hint <b>{'yes' if hinted else 'no'}</b></span>"
    parts = [f'<div class="traj" id="t{n}">',
             f"<h2>#{n} · {esc(rec.get('id', ''))} · {esc(row.get('data_source', ''))}</h2>",
             '<div class="meta">'
             f"<span>status <b>{esc(rec.get('status'))}</b></span><span>stop <b>{esc(rec.get('stop_reason'))}</b></span>"
             f"<span>reward <b>{esc(_fmt(rec.get('reward')))}</b></span>"
             f"<span>turns {len(rec.get('turns', []))}</span><span>sampled tokens {esc(rec.get('num_generated', sum(rec.get('loss_mask', []))))}</span>"
             f"<span>response tokens {len(rec.get('response_ids', []))}</span><span>drift {esc(_fmt(rec.get('drift')))}</span>"
             f"<span>ground truth <b>{esc(json.dumps(gt, ensure_ascii=False))}</b></span>{hint}</div>"]
    if comps:
        parts.append("<table><tr>" + "".join(f"<th>{esc(k)}</th>" for k in comps) + "<th>turn rewards</th></tr><tr>"
                     + "".join(f"<td>{esc(_fmt(v))}</td>" for v in comps.values())
                     + f"<td>{esc(', '.join(_fmt(x) for x in rec.get('turn_rewards') or []))}</td></tr></table>")
    if rec.get("tool_rewards"):
        parts.append(f"<div>tool rewards: {esc(json.dumps(rec['tool_rewards']))}</div>")
    parts.append(f"<details><summary>prompt ({len(rec.get('prompt_ids', []))} tokens)</summary>"
                 f"<pre class=\"pr\">{esc(_prompt_text(rec, tokenizer))}</pre></details>")
    for t in rec.get("turns", []):
        extra = f" · policy v{esc(t['policy_version'])}" if "policy_version" in t else ""
        parts.append(f'<div class="turn"><b>assistant turn {esc(t.get("index"))}</b> · {len(t.get("output_ids", []))} tokens'
                     f" · finish {esc(t.get('finish_reason'))} · gen {esc(_fmt(t.get('gen_latency_s')))} s"
                     f" · tools {esc(_fmt(t.get('tool_latency_s')))} s{extra}"
                     f"<pre>{esc(t.get('text', ''))}</pre>{_tool_table(t.get('tool_calls', []))}"
                     f"{_observation(t, tokenizer)}</div>")
    if tokenizer is not None and rec.get("response_ids") is not None:
        tokens = _token_spans(rec["response_ids"], rec.get("loss_mask", []), rec.get("rollout_logprobs", []), tokenizer)
    else:
        tokens = _text_spans(rec)
    parts.append(f"<details open><summary>response tokens by loss mask</summary><div class=\"tokens\">{tokens}</div></details>")
    parts.append("</div>")
    return "".join(parts)


def render_html(records: Sequence[Dict[str, Any]], tokenizer=None, title: str = "trajectories",
                limit: Optional[int] = None) -> str:
    recs = list(records)[: limit if limit else None]
    rewards = [r.get("reward", 0.0) or 0.0 for r in recs]
    stops = Counter(r.get("stop_reason", "") for r in recs)
    summary = (f"{len(recs)} trajectories · mean reward {sum(rewards) / len(rewards):.4g} · stop reasons: "
               + ", ".join(f"{esc(k)} {v}" for k, v in stops.most_common())) if recs else "no trajectories"
    flags = [is_hinted(r.get("row")) for r in recs]
    if any(f is not None for f in flags):
        summary += f" · hinted prompts {sum(1 for f in flags if f)} of {sum(1 for f in flags if f is not None)}"
    body = "".join(_trajectory_html(r, tokenizer, i) for i, r in enumerate(recs))
    legend = '<div class="legend"><span class="m1">sampled (loss mask 1)</span><span class="m0">prompt / tool / template (mask 0)</span></div>'
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{esc(title)}</title><style>{CSS}</style></head>"
            f"<body><h1>{esc(title)}</h1><p>{summary}</p>{legend}{body}</body></html>")
