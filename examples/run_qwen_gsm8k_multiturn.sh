#!/usr/bin/env bash
# Multi-turn GRPO on math word problems with a calculator and the GSM8K answer tool (verl's gsm8k
# multi-turn recipe).
#
#   bash examples/run_qwen_gsm8k_multiturn.sh                    # embedded model + generated arithmetic problems
#   bash examples/run_qwen_gsm8k_multiturn.sh sft.steps=100      # warm-start on one-call calculator solutions, then GRPO
#   BASE_MODEL=/models/Qwen2.5-3B-Instruct DATA_DIR=data/gsm8k N_GPUS=8 bash examples/run_qwen_gsm8k_multiturn.sh
#
# Env: BASE_MODEL, DATA_DIR (train/val.parquet; `agent-rl data convert gsm8k`), EXPERIMENT_NAME, N_GPUS,
# TOOL_CONFIG (default: calculator + calc_gsm8k_reward), SIZE (small | gpu | full: examples/common.sh); extra arguments
# are Hydra overrides.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TOOL_CONFIG="${TOOL_CONFIG:-$ROOT/configs/tool_config/arith_tool_config.yaml}"
data_overrides arith "$ROOT/data/arith"
EXPERIMENT_NAME="${EXPERIMENT_NAME:-gsm8k-grpo-$SIZE}"

ARGS=(
  "model.path=$MODEL_PATH" "model.dtype=$DTYPE" "${DATA_ARGS[@]}"
  "tools.config_path=$TOOL_CONFIG" "tools.kg_store=null"
  # demonstrations for the supervised warm-start (off unless sft.steps > 0; written from the arithmetic folder when
  # missing: `agent-rl data arith-demos`, which needs each row's extra_info.expression, so not converted GSM8K)
  "sft.files=[$(dirname "$KG_STORE")/sft.parquet]"
  "trainer.experiment_name=$EXPERIMENT_NAME" "trainer.n_gpus_per_node=$N_GPUS"
  "algorithm.adv_estimator=grpo" "actor.use_kl_loss=true" "actor.kl_loss_type=low_var_kl"
)
if [ "$SIZE" = full ]; then
  ARGS+=(
    "data.train_batch_size=128" "rollout.n=16" "actor.ppo_mini_batch_size=64" "actor.optim.lr=1e-6"
    "actor.kl_loss_coef=0.001" "actor.ppo_max_token_len_per_gpu=16384" "ref.log_prob_max_token_len_per_gpu=32768"
    "data.max_prompt_length=1024" "rollout.max_model_len=4096"
    "rollout.multi_turn.max_assistant_turns=5" "rollout.multi_turn.max_tool_calls=8"
    "rollout.multi_turn.max_new_tokens_per_turn=512" "rollout.multi_turn.max_response_tokens=2048"
    "rollout.multi_turn.max_tool_response_tokens=256" "rollout.max_concurrent_trajectories=512"
    "rollout.gpu_memory_utilization=0.5"
    "data.val_batch_size=256" "data.max_val_samples=-1"
    "trainer.total_training_steps=300" "trainer.save_freq=50" "trainer.test_freq=25"
    "logger.backends=[console,jsonl,wandb]"
  )
elif [ "$SIZE" = gpu ]; then
  # docs/results.md section 5 (H200: accuracy 0.297 after the warm-start -> 0.625 at step 20): 16 problems x 8
  # samples, up to 3 turns (a calculator call, then the answer)
  gpu_preset_args
  ARGS+=(
    "data.train_batch_size=16" "rollout.n=8" "actor.ppo_mini_batch_size=8"
    "rollout.multi_turn.max_assistant_turns=3" "rollout.multi_turn.max_new_tokens_per_turn=192"
    "rollout.multi_turn.max_response_tokens=768" "rollout.multi_turn.max_tool_response_tokens=64"
    "data.val_batch_size=128" "data.max_val_samples=128"
  )
else
  small_preset_args 64
fi
run_train "$@"
