# Shared by examples/run_*.sh (sourced, not run). Resolves the environment knobs into Hydra overrides:
#   BASE_MODEL       HF model folder (default: the embedded SmolLM2-135M-Instruct, prepared offline)
#   DATA_DIR         folder with train.parquet / val.parquet (default: generated embedded data)
#   EXPERIMENT_NAME  run name; outputs go to outputs/$EXPERIMENT_NAME (override trainer.output_dir=...)
#   N_GPUS           workers on this node (default: all visible GPUs, 1 on CPU)
#   TOOL_CONFIG      tool YAML (default: the task's file under configs/tool_config/)
#   SIZE             small | full (default: full when BASE_MODEL is set, else small: a few CPU-sized steps)
# Every extra argument of the script is a Hydra override appended last, so it wins.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "error: $*" >&2; exit 1; }

abspath() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }

PYTHON="${PYTHON:-python}"
command -v "$PYTHON" >/dev/null 2>&1 || die "python not found (set PYTHON=/path/to/python)"

if [ -n "${BASE_MODEL:-}" ]; then
  [ -d "$BASE_MODEL" ] || die "BASE_MODEL=$BASE_MODEL is not a folder (a local HF model folder, e.g. /models/Qwen2.5-3B-Instruct)"
  [ -f "$BASE_MODEL/config.json" ] || die "BASE_MODEL=$BASE_MODEL has no config.json (not an HF model folder)"
  MODEL_PATH="$(abspath "$BASE_MODEL")"
  SIZE="${SIZE:-full}"
else
  MODEL_PATH=embedded
  SIZE="${SIZE:-small}"
fi
case "$SIZE" in small|full) ;; *) die "SIZE=$SIZE is not small or full" ;; esac

if [ -n "${TOOL_CONFIG:-}" ]; then
  [ -f "$TOOL_CONFIG" ] || die "TOOL_CONFIG=$TOOL_CONFIG: file not found"
  TOOL_CONFIG="$(abspath "$TOOL_CONFIG")"
fi

GPUS_SEEN="$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)' 2>/dev/null)" \
  || die "cannot import torch with $PYTHON (install the project first: pip install -e .)"
if [ -z "${N_GPUS:-}" ]; then
  if [ "$GPUS_SEEN" -gt 0 ]; then N_GPUS="$GPUS_SEEN"; else N_GPUS=1; fi
fi
case "$N_GPUS" in ''|*[!0-9]*|0) die "N_GPUS=$N_GPUS is not a positive number" ;; esac
if [ "$GPUS_SEEN" -gt 0 ] && [ "$N_GPUS" -gt "$GPUS_SEEN" ]; then
  echo "note: N_GPUS=$N_GPUS but this node has $GPUS_SEEN GPU(s): Ray waits for the others (multi-node, docs/multinode.md)" >&2
fi
# compute dtype: bf16 on GPU, fp32 on CPU (bf16 matmuls are slow there)
if [ "$GPUS_SEEN" -gt 0 ]; then DTYPE=bfloat16; else DTYPE=float32; fi

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
# validation, checkpoint) in a few minutes on 2 cores. Small micro-batches keep it lean.
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

run_train() {
  cd "$ROOT"
  echo "+ agent-rl train ${ARGS[*]} $*" >&2
  exec "$PYTHON" -m agent_rl.cli.main train "${ARGS[@]}" "$@"
}
