# Shared by examples/run_*.sh (sourced, not run). Resolves the environment knobs into Hydra overrides:
#   BASE_MODEL       HF model folder (default: the embedded SmolLM2-135M-Instruct, prepared offline)
#   DATA_DIR         folder with train.parquet / val.parquet (default: generated embedded data)
#   EXPERIMENT_NAME  run name; outputs go to outputs/$EXPERIMENT_NAME (override trainer.output_dir=...)
#   N_GPUS           workers on this node (default: all visible GPUs, 1 on CPU)
#   TOOL_CONFIG      tool YAML (default: the task's file under configs/tool_config/)
#   SIZE             small | gpu | full (default: full when BASE_MODEL is set; else gpu when a GPU is visible, else small)
#                      small: a few CPU-sized steps after a short supervised warm-start (minutes on 2 cores)
#                      gpu:   the embedded model's documented GPU run (docs/results.md section 5, scripts/gpu stage learn)
#                      full:  GPU sizes for a real model (KG-R1 / verl's GSM8K recipe)
# Every extra argument of the script is a Hydra override appended last, so it wins.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "error: $*" >&2; exit 1; }

abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || die "python not found (set PYTHON=/path/to/python)"

GPUS_SEEN="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null)" \
  || die "cannot import torch with $PYTHON (install the project first: pip install -e .)"

if [ -n "${BASE_MODEL:-}" ]; then
  [ -d "$BASE_MODEL" ] || die "BASE_MODEL=$BASE_MODEL is not a folder (a local HF model folder, e.g. /models/Qwen2.5-3B-Instruct)"
  [ -f "$BASE_MODEL/config.json" ] || die "BASE_MODEL=$BASE_MODEL has no config.json (not an HF model folder)"
  MODEL_PATH="$(abspath "$BASE_MODEL")"
  SIZE="${SIZE:-full}"
else
  MODEL_PATH=embedded
  if [ "$GPUS_SEEN" -gt 0 ]; then SIZE="${SIZE:-gpu}"; else SIZE="${SIZE:-small}"; fi
fi
case "$SIZE" in small|gpu|full) ;; *) die "SIZE=$SIZE is not small, gpu or full" ;; esac
if [ "$SIZE" != small ] && [ "$GPUS_SEEN" -eq 0 ]; then
  echo "note: SIZE=$SIZE is sized for GPUs and this machine has none (SIZE=small runs on CPU)" >&2
fi

if [ -n "${TOOL_CONFIG:-}" ]; then
  [ -f "$TOOL_CONFIG" ] || die "TOOL_CONFIG=$TOOL_CONFIG: file not found"
  TOOL_CONFIG="$(abspath "$TOOL_CONFIG")"
fi

if [ -z "${N_GPUS:-}" ]; then
  if [ "$GPUS_SEEN" -gt 0 ]; then N_GPUS="$GPUS_SEEN"; else N_GPUS=1; fi
fi
case "$N_GPUS" in ''|*[!0-9]*|0) die "N_GPUS=$N_GPUS is not a positive number" ;; esac
if [ "$GPUS_SEEN" -gt 0 ] && [ "$N_GPUS" -gt "$GPUS_SEEN" ]; then
  echo "note: N_GPUS=$N_GPUS but this node has $GPUS_SEEN GPU(s): Ray waits for the others (multi-node, docs/multinode.md)" >&2
fi
# compute dtype: bf16 on GPU, fp32 on CPU (bf16 matmuls are slow there)
if [ "$GPUS_SEEN" -gt 0 ]; then DTYPE=bfloat16; else DTYPE=float32; fi
# CPU: Ray gives a worker of 1 CPU one OpenMP thread; let each CPU worker use its share of the cores instead
# (2 threads on 2 idle cores: forward 1.8x, forward+backward 1.6x, generation 1.3x faster). An explicit value wins.
if [ "$GPUS_SEEN" -eq 0 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
  CORES="$(nproc 2>/dev/null || echo 1)"
  OMP_NUM_THREADS=$(( CORES / N_GPUS )); [ "$OMP_NUM_THREADS" -ge 1 ] || OMP_NUM_THREADS=1
  export OMP_NUM_THREADS
fi

# data: an explicit DATA_DIR must hold the files; the default is generated on first use
data_overrides() {  # $1 = task kind (kg | arith), $2 = default folder
  local kind="$1" default_dir="$2"
  if [ -n "${DATA_DIR:-}" ]; then
    local d; d="$(abspath "$DATA_DIR")"
    [ -f "$d/train.parquet" ] || die "DATA_DIR=$DATA_DIR has no train.parquet (make it with: agent-rl data generate $kind --out $DATA_DIR, or agent-rl data convert ...)"
    [ -f "$d/val.parquet" ] || die "DATA_DIR=$DATA_DIR has no val.parquet"
    DATA_ARGS=("data.train_files=[$d/train.parquet]" "data.val_files=[$d/val.parquet]" "data.generate_if_missing=null")
    KG_STORE="$d/kg_store.json"
  else
    DATA_ARGS=("data.train_files=[$default_dir/train.parquet]" "data.val_files=[$default_dir/val.parquet]"
               "data.generate_if_missing=$kind")
    KG_STORE="$default_dir/kg_store.json"
  fi
}

# SIZE=small: a few CPU-sized steps of the embedded model: the whole loop (rollout with tools, update, weight sync,
# validation, checkpoint) in a few minutes on 2 cores. Small micro-batches keep it lean. The task's script adds what
# makes the reward move (the KG example: a short warm-start, T=0.7, 3 turns).
small_preset_args() {  # $1 = max tool-response tokens
  ARGS+=(
    "data.train_batch_size=2" "rollout.n=2" "actor.ppo_mini_batch_size=2" "actor.optim.lr=1e-5"
    "actor.kl_loss_coef=0.001" "model.remove_padding=false" "model.gradient_checkpointing=false"
    "actor.ppo_max_token_len_per_gpu=2048" "ref.log_prob_max_token_len_per_gpu=4096"
    "rollout.multi_turn.max_assistant_turns=2" "rollout.multi_turn.max_new_tokens_per_turn=48"
    "rollout.multi_turn.max_response_tokens=384" "rollout.multi_turn.max_tool_response_tokens=$1"
    "data.val_batch_size=4" "data.max_val_samples=4" "trainer.val_before_train=false"
    "trainer.total_training_steps=2" "trainer.save_freq=2" "trainer.test_freq=2"
  )
}

# SIZE=gpu: the embedded model's documented GPU run on one GPU (docs/results.md section 5; scripts/gpu/pipeline.sh stage
# learn): 20 warm-start steps, then 100 GRPO steps with dynamic sampling (DAPO), clip-higher, T=0.7 rollouts. The task
# adds its batch shape and turn limits (in its script). Run-specific knobs stay overrides:
# trainer.output_dir, trainer.total_training_steps, trainer.save_freq, ++rollout.engine_kwargs.max_total_tokens (a KV
# cap to share the GPU), rollout.progress_bar, sft.steps=0 (no warm-start).
gpu_preset_args() {
  ARGS+=(
    "actor.optim.lr=1e-5" "actor.kl_loss_coef=0.001" "actor.clip_ratio_high=0.28" "rollout.sampling.temperature=0.7"
    "model.remove_padding=true" "model.gradient_checkpointing=false"
    "actor.ppo_max_token_len_per_gpu=8192" "ref.log_prob_max_token_len_per_gpu=16384"
    "algorithm.filter_groups.enable=true" "algorithm.filter_groups.max_num_gen_batches=3" "rollout.over_sample_rate=0.5"
    "rollout.gpu_memory_utilization=0.7"
    "sft.steps=20" "sft.batch_size=32" "sft.lr=1e-4"
    "trainer.val_before_train=true" "trainer.total_training_steps=100" "trainer.test_freq=10" "trainer.save_freq=50"
  )
}

run_train() {
  cd "$ROOT"
  echo "+ agent-rl train ${ARGS[*]} $*" >&2
  exec "$PYTHON" -m agent_rl.cli.main train "${ARGS[@]}" "$@"
}
