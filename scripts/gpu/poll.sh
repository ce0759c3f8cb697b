#!/usr/bin/env bash
# Wait up to $1 seconds (returns early when the pipeline is done), print its state, copy results to $OUT.
R=/tmp/res; OUT=${OUT:-/tmp/out}; WAIT=${1:-0}
# a machine swapped between calls has no pipeline: say so at once instead of waiting out the poll
for _ in $(seq 1 20); do [ -f "$R/stages.txt" ] && break; sleep 1; done
[ -f "$R/stages.txt" ] || { echo "no pipeline on this machine (swapped? /tmp/res/stages.txt missing)"; exit 3; }
for _ in $(seq 1 "$WAIT"); do grep -q "\] done" "$R/stages.txt" 2>/dev/null && break; sleep 1; done
cat "$R/stages.txt"; cat "$R/device.txt" 2>/dev/null
[ -f "$R/gpu_tests.log" ] && { echo "== gpu tests"; grep -E "^\[sglang\]|^(FAILED|ERROR) |^=+ .*(passed|failed|error)" "$R/gpu_tests.log" | head -20; }
grep -E "WEIGHT SYNC|after_sync|moved engine|before_step" -A2 "$R/weight_sync.log" 2>/dev/null | head -20
[ -f "$R/bench/summary.md" ] && head -30 "$R/bench/summary.md"
grep -E "WEIGHT SYNC|after_sync|moved engine" -A2 "$R/weight_sync_lora.log" 2>/dev/null | head -12
grep -E "judge|reward_mean|seconds|num_traj" "$R/judge/rollout.log" 2>/dev/null | head -12
for s in "$R"/actor/*/summary.md; do [ -f "$s" ] && { echo "== $s"; grep -E "^\| |x," "$s"; }; done
for f in "$R"/actor/*.log; do [ -f "$f" ] && ! [ -f "${f%.log}/summary.md" ] && { echo "== $f"; tail -c 800 "$f"; }; done
[ -f "$R/speed/ab_table.md" ] && { echo "== $R/speed/ab_table.md"; cat "$R/speed/ab_table.md"; }
for s in "$R"/speed/*/summary.md; do [ -f "$s" ] && { echo "== $s"; grep -E "raw engine|decode batch|CPU pinning|^\| " "$s" | head -40; }; done
[ -f "$R/sdpa.log" ] && { echo "== sdpa"; tail -c 2500 "$R/sdpa.log"; }
[ -f "$R/speed.tgz" ] && cp "$R/speed.tgz" "$OUT/"
for RUN in run run_arith run_arithkeep run_nows run_nowshint; do
J=$R/$RUN/metrics.jsonl
if [ -f "$J" ]; then
  echo "== $RUN"
  python3 - "$J" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
keys = ["reward/mean", "reward/f1", "reward/correct", "reward/format", "reward/validity", "actor/kl_loss", "actor/entropy",
        "rollout/tool_call_rate", "kg/query_success_rate", "rollout/response_len_mean", "dynamic_sampling/rounds",
        "dynamic_sampling/informative_share", "dynamic_sampling/kept_groups", "hints/prob", "hints/share", "reward/hinted",
        "reward/unhinted", "timing/step_s", "timing/rollout_s"]
for r in rows[-3:]:
    print(r.get("step"), {k.split("/")[-1]: round(r[k], 3) for k in keys if k in r})
for r in rows:
    for pre in ("val/", "sft/val/"):
        v = {k[len(pre):]: round(x, 3) for k, x in r.items() if k.startswith(pre) and isinstance(x, (int, float))
             and "/tool/" not in k and k.rsplit("/", 1)[-1] in ("reward", "f1", "correct", "answer_rate", "tool_call_rate")}
        if v:
            print(pre.rstrip("/"), r.get("step"), v)
    if "sft/loss_first" in r:
        print("sft loss", round(r["sft/loss_first"], 3), "->", round(r["sft/loss_last"], 3), "in", round(r["timing/sft_s"], 1), "s")
PY
fi
done
for f in train.log train_kg.log train_arith.log train_arithkeep.log train_nows.log train_nowshint.log; do [ -f "$R/$f" ] && { echo "== $f"; tail -c 600 "$R/$f"; }; done
tar czf "$OUT/res.tgz" -C "$R" --exclude='*.trace.json*' --exclude='run*/checkpoints' --exclude='run*/sft' --exclude='run*/rollouts' --exclude='run*/val_rollouts' . 2>/dev/null
# the trajectories of the first and the newest training step of each run, in one tarball (a poll brings back at most
# 8 files: res.tgz, rollouts.tgz, speed.tgz, stages.txt, train logs)
mkdir -p /tmp/poll_rollouts; rm -f /tmp/poll_rollouts/*
for RUN in run run_arith run_arithkeep run_nows run_nowshint; do
  D=$R/$RUN/rollouts
  if [ -d "$D" ]; then
    first=$(ls "$D" | sort -V | head -1); last=$(ls "$D" | sort -V | tail -1)
    [ -n "$first" ] && cp "$D/$first" "/tmp/poll_rollouts/${RUN}_first_$first"
    [ -n "$last" ] && [ "$last" != "$first" ] && cp "$D/$last" "/tmp/poll_rollouts/${RUN}_last_$last"
  fi
done
ls /tmp/poll_rollouts | grep -q . && tar czf "$OUT/rollouts.tgz" -C /tmp/poll_rollouts .
# engine-profile traces (bench --engine-profile): the async ones first, at most 3, each under 15 MB, named by their path
find "$R/speed" -name '*.trace.json.gz' -size -15M 2>/dev/null | awk '{print (index($0, "/async/") ? 0 : 1) "\t" $0}' | sort | cut -f2 | head -3 |
  while read -r t; do n=${t#"$R"/speed/}; n=$(printf %s "${n%%/agent-rl*}" | tr -c 'A-Za-z0-9._-' '_'); cp "$t" "$OUT/trace_$n.json.gz"; done
for f in stages.txt train.log train_kg.log; do [ -f "$R/$f" ] && cp "$R/$f" "$OUT/"; done
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader
