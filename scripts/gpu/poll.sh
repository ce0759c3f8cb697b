#!/usr/bin/env bash
# Wait up to $1 seconds (returns early when the pipeline finished), print its state, copy results to $OUT.
R=/tmp/res; OUT=${OUT:-/tmp/out}; WAIT=${1:-0}
for _ in $(seq 1 "$WAIT"); do grep -q "train rc" "$R/stages.txt" 2>/dev/null && break; sleep 1; done
cat "$R/stages.txt"; cat "$R/device.txt" 2>/dev/null
grep -E "WEIGHT SYNC|after_sync|moved engine|before_step" -A2 "$R/weight_sync.log" 2>/dev/null | head -20
[ -f "$R/bench/summary.md" ] && head -30 "$R/bench/summary.md"
J=$R/run/metrics.jsonl
if [ -f "$J" ]; then
  python3 - "$J" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["reward/mean", "reward/f1", "reward/format", "reward/validity", "actor/kl_loss", "rollout/tool_call_rate", "kg/query_success_rate", "rollout/response_len_mean", "mismatch/abs_logp_diff_mean", "timing/step_s"]
for r in rows[-6:]:
    print(r.get("step"), {k.split("/")[-1]: round(r[k], 3) for k in keys if k in r}, {k: round(v, 3) for k, v in r.items() if k.startswith("val/") and k.endswith("/reward")})
PY
fi
tail -c 1500 "$R/train.log" 2>/dev/null
for f in stages.txt device.txt weight_sync.log bench.log bench.tgz train.log run/metrics.jsonl run/metrics.png; do [ -f "$R/$f" ] && cp "$R/$f" "$OUT/"; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
