#!/usr/bin/env bash
# GPU host, bundle installed at /tmp/site: gpu-marked engine tests + the rollout benchmark suite.
# Usage (repo root): PYTHONPATH=$PWD:/tmp/site bash scripts/gpu/engine_and_bench.sh   (writes under $OUT)
set -u
export AGENT_RL_CACHE=/tmp/arl-cache PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1
python3 -c "import torch, sglang, transformers; print('torch', torch.__version__, 'sglang', sglang.__version__, 'transformers', transformers.__version__)" >> "$OUT/device.txt" 2>&1
git rev-parse HEAD >> "$OUT/device.txt" 2>/dev/null
timeout -s KILL 120 python3 -m agent_rl.cli.main model prepare --no-check > "$OUT/prepare.log" 2>&1
MODEL=$AGENT_RL_CACHE/models/smollm2-135m-instruct
timeout -s KILL 240 python3 -m pytest -p no:cacheprovider -m gpu tests/gpu -s -q -o addopts="" > "$OUT/gpu_tests.log" 2>&1
echo "gpu tests rc=$?" >> "$OUT/gpu_tests.log"
mkdir -p /tmp/bench
timeout -s KILL 330 python3 -m agent_rl.cli.main bench suite --engine sglang --model "$MODEL" --out /tmp/bench \
  --prompts 128 --n 4 --turns 3 --tokens-per-turn 128 \
  --tool-latency lognormal:mean=0.5,sigma=1,max=10 \
  --heavy-tail-tokens pareto:alpha=1.2,scale=32,max=512 --heavy-tail-prompts 64 \
  --over-sample 0.25,0.5 --steps 2 \
  --ceiling-prompts 512 --ceiling-prompt-len 128 --ceiling-new-tokens 256 \
  --mem-fraction 0.6 --no-progress > "$OUT/bench.log" 2>&1
echo "bench rc=$?" >> "$OUT/bench.log"
tar czf "$OUT/bench.tgz" -C /tmp bench 2>/dev/null
cat "$OUT/device.txt"; tail -5 "$OUT/gpu_tests.log"; cat /tmp/bench/summary.md 2>/dev/null | head -40
