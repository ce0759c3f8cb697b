#!/usr/bin/env bash
# KG-R1-style multi-turn GRPO on knowledge-graph question answering with the kg_query tool.
#
#   bash examples/run_qwen_kg_multiturn.sh                       # embedded model + generated KG data, a few small steps
#   bash examples/run_qwen_kg_multiturn.sh sft.steps=200        # warm-start on gold look-up chains, then GRPO
#   BASE_MODEL=/models/Qwen2.5-3B-Instruct DATA_DIR=data/webqsp N_GPUS=8 \
#     bash examples/run_qwen_kg_multiturn.sh trainer.total_training_steps=400
#
# Env: BASE_MODEL, DATA_DIR (train/val.parquet + kg_store.json; `agent-rl data convert webqsp|cwq`), EXPERIMENT_NAME,
# N_GPUS, TOOL_CONFIG, SIZE (small | full); extra arguments are Hydra overrides (docs/config.md).
# The KG server starts in-process unless one answers at tools.kg_server_url (`agent-rl kg-server --store F`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

TOOL_CONFIG="${TOOL_CONFIG:-$ROOT/configs/tool_config/kg_query_tool_config.yaml}"
data_overrides kg "$ROOT/data/kg"
if [ -n "${DATA_DIR:-}" ] && [ ! -f "$KG_STORE" ]; then
  die "DATA_DIR=$DATA_DIR has no kg_store.json (the per-question subgraphs the KG server serves)"
fi
EXPERIMENT_NAME="${EXPERIMENT_NAME:-kg-grpo-$SIZE}"

ARGS=(
  "model.path=$MODEL_PATH" "model.dtype=$DTYPE" "${DATA_ARGS[@]}"
  "tools.config_path=$TOOL_CONFIG" "tools.kg_store=$KG_STORE"
  # demonstrations for the supervised warm-start (off unless sft.steps > 0; written from the KG folder when missing)
  "sft.files=[$(dirname "$KG_STORE")/sft.parquet]"
  "trainer.experiment_name=$EXPERIMENT_NAME" "trainer.n_gpus_per_node=$N_GPUS"
  "algorithm.adv_estimator=grpo_multi_turn" "reward.kg_answer_metric=f1"
  "actor.use_kl_loss=true" "actor.kl_loss_type=low_var_kl"
  # one KG look-up per turn (KG-R1): the turn ends at </tool_call>, so the model never writes the tool's answer itself
  'rollout.multi_turn.stop_strings=["</tool_call>"]'
)
if [ "$SIZE" = full ]; then
  # KG-R1 (Qwen2.5-3B-Instruct): 128 questions x 16 samples per step, up to 7 KG look-ups, lr 1e-6, KL 0.01
  ARGS+=(
    "data.train_batch_size=128" "rollout.n=16" "actor.ppo_mini_batch_size=128" "actor.optim.lr=1e-6"
    "actor.kl_loss_coef=0.01" "actor.ppo_max_token_len_per_gpu=16384" "ref.log_prob_max_token_len_per_gpu=32768"
    "data.max_prompt_length=2048" "rollout.max_model_len=8192"
    "rollout.multi_turn.max_assistant_turns=7" "rollout.multi_turn.max_tool_calls=14"
    "rollout.multi_turn.max_new_tokens_per_turn=256" "rollout.multi_turn.max_response_tokens=4096"
    "rollout.multi_turn.max_tool_response_tokens=512" "rollout.max_concurrent_trajectories=512"
    "rollout.gpu_memory_utilization=0.5" "rollout.over_sample_rate=0.1"
    "data.val_batch_size=256" "data.max_val_samples=-1"
    "trainer.total_training_steps=400" "trainer.save_freq=50" "trainer.test_freq=50"
    "logger.backends=[console,jsonl,wandb]"
  )
else
  small_preset_args 128
fi
run_train "$@"
