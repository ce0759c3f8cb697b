#!/usr/bin/env bash
# KG-R1-style multi-turn GRPO on knowledge-graph question answering with the kg_query tool.
#
#   bash examples/run_qwen_kg_multiturn.sh                       # embedded model + generated KG data: CPU: a short
#                                                                # warm-start + 2 small steps; GPU: the 100-step run
#   bash examples/run_qwen_kg_multiturn.sh sft.steps=200        # warm-start on gold look-up chains, then GRPO
#   BASE_MODEL=/models/Qwen2.5-3B-Instruct DATA_DIR=data/webqsp N_GPUS=8 \
#     bash examples/run_qwen_kg_multiturn.sh trainer.total_training_steps=400
#
# Env: BASE_MODEL, DATA_DIR (train/val.parquet + kg_store.json; `agent-rl data convert webqsp|cwq`), EXPERIMENT_NAME,
# N_GPUS, TOOL_CONFIG, SIZE (small | gpu | full: examples/common.sh); extra arguments are Hydra overrides (docs/config.md).
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
    "rollout.gpu_memory_utilization=0.5"
    "data.val_batch_size=256" "data.max_val_samples=-1"
    "trainer.total_training_steps=400" "trainer.save_freq=50" "trainer.test_freq=50"
    "logger.backends=[console,jsonl,wandb]"
  )
elif [ "$SIZE" = gpu ]; then
  # docs/results.md section 5 (H200: validation reward 0.234 after the warm-start -> 0.881 at step 90): 8 questions x 16
  # samples, up to 7 turns (a 3-hop chain: relations + entities per hop, then the answer), warm-start chains of 7 turns
  gpu_preset_args
  ARGS+=(
    "data.train_batch_size=8" "rollout.n=16" "actor.ppo_mini_batch_size=4"
    "rollout.multi_turn.max_assistant_turns=7" "rollout.multi_turn.max_new_tokens_per_turn=128"
    "rollout.multi_turn.max_response_tokens=1536" "rollout.multi_turn.max_tool_response_tokens=256"
    "data.val_batch_size=64" "data.max_val_samples=64" "sft.max_turns=7"
  )
else
  small_preset_args 128
  # SmolLM2-135M as it comes never writes a working kg_query call at T=1 (every reward 0, nothing to learn from).
  # 2 warm-start steps of 2 one-hop chains (sft.max_length=800 keeps those, the shortest) make its first look-up
  # valid most of the time; T=0.7 keeps the samples well-formed; 3 turns fit a one-hop chain (relations, entities,
  # answer). A group whose 2 samples score the same has no advantage (grad norm 0), so each step launches 3 groups
  # and trains on the first with a spread in reward (dynamic sampling, as SIZE=gpu; a 2nd round when none has one).
  # The warm-start needs demonstrations: written for the default data folder, or DATA_DIR/sft.parquet
  # (`agent-rl data kg-demos --data DIR`).
  ARGS+=("rollout.sampling.temperature=0.7" "rollout.multi_turn.max_assistant_turns=3"
         "rollout.multi_turn.max_new_tokens_per_turn=64" "rollout.multi_turn.max_response_tokens=512")
  if [ -z "${DATA_DIR:-}" ] || [ -f "$(dirname "$KG_STORE")/sft.parquet" ]; then
    ARGS+=("sft.steps=2" "sft.batch_size=2" "sft.lr=1e-4" "sft.warmup_steps=0" "sft.max_length=800" "sft.validate=false"
           "data.train_batch_size=1" "actor.ppo_mini_batch_size=1" "rollout.over_sample_rate=2.0"
           "algorithm.filter_groups.enable=true" "algorithm.filter_groups.max_num_gen_batches=2")
  fi
fi
run_train "$@"
