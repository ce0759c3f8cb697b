#!/usr/bin/env bash
# Wait up to $1 seconds (returns early when the pipeline is done), print its state, copy results to $OUT.
R=/tmp/res; OUT=${OUT:-/tmp/out}; WAIT=${1:-0}
for _ in $(seq 1 "$WAIT"); do grep -q "\] done" "$R/stages.txt" 2>/dev/null && break; sleep 1; done
cat "$R/stages.txt"; cat "$R/device.txt" 2>/dev/null
grep -E "WEIGHT SYNC|after_sync|moved engine|before_step" -A2 "$R/weight_sync.log" 2>/dev/null | head -20
[ -f "$R/bench/summary.md" ] && head -30 "$R/bench/summary.md"
for s in "$R"/speed/*/summary.md; do [ -f "$s" ] && { echo "== $s"; grep -E "raw engine|decode batch|^\| " "$s" | head -40; }; done
[ -f "$R/speed.tgz" ] && cp "$R/speed.tgz" "$OUT/"
J=$R/run/metrics.jsonl
if [ -f "$J" ]; then
  python3 - "$J" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["reward/mean", "reward/f1", "reward/format", "reward/validity", "actor/kl_loss", "rollout/tool_call_rate",
        "kg/query_success_rate", "rollout/response_len_mean", "timing/step_s", "timing/rollout_s", "timing/update_s"]
for r in rows[-4:]:
    print(r.get("step"), {k.split("/")[-1]: round(r[k], 3) for k in keys if k in r})
for r in rows:
    for pre in ("val/", "sft/val/"):
        v = {k.split("/")[-1]: round(x, 3) for k, x in r.items() if k.startswith(pre) and isinstance(x, (int, float))}
        if v:
            print(pre.rstrip("/"), r.get("step"), v)
    if "sft/loss_first" in r:
        print("sft loss", round(r["sft/loss_first"], 3), "->", round(r["sft/loss_last"], 3), "in", round(r["timing/sft_s"], 1), "s")
PY
fi
tail -c 1200 "$R/train.log" 2>/dev/null
tar czf "$OUT/res.tgz" -C "$R" --exclude='run/checkpoints' --exclude='run/sft' --exclude='run/rollouts' --exclude='run/val_rollouts' . 2>/dev/null
# the trajectories of the first and the newest training step
D=$R/run/rollouts
if [ -d "$D" ]; then
  first=$(ls "$D" | sort -V | head -1); last=$(ls "$D" | sort -V | tail -1)
  [ -n "$first" ] && gzip -c "$D/$first" > "$OUT/first_$first.gz"
  [ -n "$last" ] && [ "$last" != "$first" ] && gzip -c "$D/$last" > "$OUT/last_$last.gz"
fi
for f in stages.txt train.log run/metrics.jsonl run/metrics.png; do [ -f "$R/$f" ] && cp "$R/$f" "$OUT/"; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
