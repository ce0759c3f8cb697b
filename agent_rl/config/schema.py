"""The one config tree of the trainer, as structured (dataclass) schemas.

Hydra composes `configs/*.yaml` with command-line overrides; `agent_rl.config.load` merges the
result into these dataclasses, so an unknown key, a wrong type or a missing file fails at start
with one line naming it. Every field carries a `help` in its metadata: `docs/config.md` is
generated from it (`python -m agent_rl.config.docs`).

The framework's keys only: a task adds its own keys to a section (`tools`, `reward`, ...) from its folder, through
`Task.config` of the task registry (`extend.py`; the extended sections are what `load.compose` returns).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from agent_rl.rollout.event_loop import LOOPS


def F(default: Any = None, help: str = "", factory: Any = None, choices: Optional[Sequence[Any]] = None):  # noqa: A002
    """A schema field: its default (or `factory`), the `help` docs/config.md shows and, for a value that must be one of
    a list, its `choices` (checked by `load.validate`: `key: 'x' is not one of a, b`)."""
    metadata: Dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = tuple(choices)
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    path: str = F("embedded", "HF model folder, or `embedded` for SmolLM2-135M-Instruct prepared by `agent-rl model prepare`")
    tokenizer_path: Optional[str] = F(None, "tokenizer folder when it differs from `path`")
    dtype: str = F("bfloat16", "parameter dtype used for compute (bfloat16 | float16 | float32); master weights stay fp32")
    trust_remote_code: bool = F(False, "pass trust_remote_code to transformers")
    gradient_checkpointing: bool = F(True, "activation checkpointing in the actor")
    remove_padding: bool = F(True, "pack sequences without padding when the attention kernel is varlen (flash-attention); else padded micro-batches")


@dataclass
class PromptAugmentationConfig:
    enable: bool = F(False, "KG-R1 prompt hints: insert a `[Hint]: ...` block before the question of the last user "
                     "message of training rows, with a probability that fades (docs/training.md, Prompt hints)")
    guideline_level: str = F("concise", "which of the task's hint texts: concise | detailed (the levels the kg and "
                             "arith / gsm8k tasks define; `Task.hints` in agent_rl/tasks/registry.py)")
    hint_text: Optional[str] = F(None, "a literal hint text for every row instead of the task's level (needed for a "
                                 "data_source whose task defines no hints)")
    hint_steps: int = F(200, "training steps over which the probability falls from start_prob to 0 (0 = never fades)")
    start_prob: float = F(1.0, "probability that a training row gets the hint at the first step")
    decay: str = F("linear", "linear | cosine | step (step: start_prob until hint_steps, then 0, as KG-R1)")
    apply_to_val: bool = F(False, "validation rows get hints too (with the current step's probability); false: "
                           "validation measures the unhinted policy")
    seed: Optional[int] = F(None, "seed of the per-row decisions (null = trainer.seed)")


@dataclass
class DataConfig:
    train_files: List[str] = F(None, "parquet files for training (our row schema)", factory=lambda: ["data/kg/train.parquet"])
    val_files: List[str] = F(None, "parquet files for validation", factory=lambda: ["data/kg/val.parquet"])
    train_batch_size: int = F(8, "prompts per training step (GRPO groups per step)")
    val_batch_size: int = F(64, "prompts per validation batch")
    max_val_samples: int = F(64, "validation uses at most this many rows (-1: all)")
    max_prompt_length: int = F(1024, "prompt tokens (system + tools + question); longer rows are dropped with a warning")
    shuffle: bool = F(True, "shuffle training rows each epoch (seeded by trainer.seed)")
    skip_invalid_rows: bool = F(False, "drop rows that fail the load-time row check (counted: one line per file with "
                                "the first problem) instead of refusing the data")
    generate_if_missing: Optional[str] = F(None, "`kg` or `arith`: generate the embedded data set when the missing data files are that "
                                           "task's default ones (`data/<kind>/`, as the config defaults and example scripts use); "
                                           "any other missing file is an error")
    prompt_augmentation: PromptAugmentationConfig = F(None, "KG-R1-style prompt hints that fade over training",
                                                      factory=PromptAugmentationConfig)


@dataclass
class SamplingConfig:
    temperature: float = F(1.0, "sampling temperature (0 = greedy)")
    top_p: float = F(1.0, "nucleus sampling")
    top_k: int = F(-1, "top-k sampling (-1 = off)")


@dataclass
class MultiTurnConfig:
    enable: bool = F(True, "run tools between assistant turns")
    max_assistant_turns: int = F(4, "assistant turns per trajectory")
    max_tool_calls: int = F(8, "tool calls per trajectory (all tools)")
    max_parallel_tool_calls: int = F(4, "tool calls of one turn run concurrently up to this many")
    max_new_tokens_per_turn: int = F(256, "new tokens the engine may sample in one assistant turn")
    max_response_tokens: int = F(1024, "all response tokens of a trajectory (sampled + tool + template), the training length budget")
    max_tool_response_tokens: int = F(256, "tokens kept of one tool observation")
    tool_response_truncate_side: str = F("middle", "where an over-long observation is cut: head | middle | tail (keeps the other parts)")
    format: str = F("hermes", "tool-call format parsed from the model's text: hermes (<tool_call>{json}</tool_call>; "
                    "Qwen2.5/3), llama3_json (the message is {\"name\": ..., \"parameters\": {...}}, optionally "
                    "after <|python_tag|>, calls separated by `;`; Llama 3.1-3.3), mistral ([TOOL_CALLS][{...}] "
                    "or [TOOL_CALLS]name[ARGS]{...}), or a dotted path `module:function` to your own parser "
                    "(text -> ParseResult); see docs/rollout.md")
    system_prompt: Optional[str] = F(None, "system prompt prepended when the data row has none")
    stop_strings: List[str] = F(None, "a turn ends right after the first of these strings it writes (e.g. [\"</tool_call>\"]: one call per turn); later sampled tokens are dropped", factory=list)


@dataclass
class RolloutConfig:
    engine: str = F("auto", "auto | sglang | sglang-server | hf | http (auto: sglang when CUDA and sglang are present, "
                    "else hf; sglang-server: sglang's HTTP server in a process of its own with the sglang engine's "
                    "settings, weights synced through disk as with http)")
    n: int = F(4, "samples per prompt (GRPO group size)")
    sampling: SamplingConfig = F(None, "training-time sampling", factory=SamplingConfig)
    val_sampling: SamplingConfig = F(None, "validation sampling (temperature 0 = greedy)", factory=lambda: SamplingConfig(temperature=0.0))
    multi_turn: MultiTurnConfig = F(None, "multi-turn budgets (distinct names, see docs/config.md)", factory=MultiTurnConfig)
    max_model_len: int = F(4096, "context limit of the engine: prompt + response")
    max_concurrent_trajectories: int = F(256, "trajectories in flight at once")
    over_sample_rate: float = F(0.0, "launch ceil(B*(1+rate)) prompt groups, keep the first B that finish completely, abort the rest")
    over_sample_max_load: Optional[float] = F(None, "over-sampled extra groups start only while fewer than this fraction "
                                              "of the kept groups' trajectories are still running (spare engine "
                                              "capacity); null = start every group at once")
    partial_rollout: bool = F(False, "carry-over: unfinished trajectories resume in the next step instead of being dropped")
    gpu_memory_utilization: float = F(0.4, "sglang mem_fraction_static (with engine_replicas > 1: of all the replicas together)")
    engine_replicas: int = F(1, "engines per GPU (rank), requests routed by GRPO group: sglang's scheduler is one "
                             "process, so 2 plan, admit and file requests in parallel while sharing the GPU; "
                             "slower than 1 on an H100 (engines sglang, sglang-server, hf; docs/rollout.md)")
    kv_sessions: Optional[bool] = F(None, "each trajectory keeps its KV cache between turns in an sglang streaming "
                                    "session: a turn sends only its new tokens and sglang's scheduler skips its "
                                    "radix-tree match and inserts; null = on for the sglang engines started here "
                                    "(sglang, sglang-server) where the installed sglang has them, off for hf and http "
                                    "(true: an external server started with --enable-streaming-session; "
                                    "docs/rollout.md)")
    scheduler_patches: Any = F(True, "speed-ups agent-rl applies inside sglang's scheduler processes where the "
                               "installed sglang fits them (engines sglang, sglang-server; engines/sglang_patches): "
                               "true = the default set (the first five below), false = none, or a list of their "
                               "names (default in it = the default set): delayer_gather (the prefill delayer without "
                               "its all-gather on one rank), "
                               "decode_rows (the per-row calls after each decode pass that change nothing), "
                               "delayer_cap (the prefill delayer counts free rows against the running cap, not the "
                               "request pool KV sessions enlarge), sample_gumbel (a token drawn as torch.multinomial "
                               "draws it, without its checks), gc_freeze (the scheduler's start-up heap out of the "
                               "garbage collector's full collections); not in the default set: mixed_logprob "
                               "(sglang's mixed chunked prefill, rollout.engine_kwargs.enable_mixed_chunk=true, also "
                               "for requests "
                               "that return log-probs, as every rollout request does)")
    free_cache_engine: bool = F(True, "release the engine's KV cache and weights while the actor trains (hybrid engine)")
    weight_sync_bucket_mb: int = F(512, "size bound of one update_weights_from_tensor call")
    server_url: Optional[str] = F(None, "base URL of an external SGLang server (engine=http)")
    hf_max_batch_size: int = F(64, "hf engine: most sequences decoded together")
    engine_kwargs: Dict[str, Any] = F(None, "passed through to sglang.Engine / the sglang-server's ServerArgs (attention_backend, cuda graph, ...); with device: cpu, sleep_on_idle defaults to true (an idle scheduler waits instead of polling a core)", factory=lambda: {
        "attention_backend": "triton", "sampling_backend": "pytorch", "grammar_backend": "none",
    })
    progress_bar: bool = F(True, "show a progress bar while rolling out")
    event_loop: str = F("asyncio", "the event loop the rollout runs on: asyncio | uvloop (its scheduling in C; with "
                        "the in-process sglang engine it runs sglang's tokenizer manager too)", choices=LOOPS)
    drift_checks_per_step: int = F(16, "trajectories per step whose token stream is compared with a full re-render "
                                   "(rollout/drift_*; costs a full chat-template render each, its tokenization in a "
                                   "worker thread; -1 = all)")
    trajectory_dir: Optional[str] = F(None, "where each step's trajectories are written as JSONL (default: <trainer.output_dir>/rollouts)")


@dataclass
class ToolsConfig:
    config_path: Optional[str] = F("configs/tool_config/kg_query_tool_config.yaml", "tool YAML (verl shape); null = no tools")
    max_failed_calls_per_step: Optional[int] = F(None, "stop the run when more tool calls than this fail on the tool's "
                                                 "side in one step (backend down, time-outs, exceptions), before "
                                                 "the update; null = never (they stay error observations)")


@dataclass
class OptimConfig:
    lr: float = F(1e-6, "AdamW learning rate")
    betas: List[float] = F(None, "AdamW betas", factory=lambda: [0.9, 0.999])
    weight_decay: float = F(0.01, "AdamW weight decay")
    warmup_steps: int = F(0, "linear warm-up steps (optimizer steps)")
    warmup_ratio: float = F(0.0, "warm-up as a fraction of all optimizer steps, used when warmup_steps is 0")
    lr_schedule: str = F("constant", "constant | cosine (after warm-up)")
    min_lr_ratio: float = F(0.0, "cosine floor as a fraction of lr")
    grad_clip: float = F(1.0, "max global grad norm")


@dataclass
class LoraConfig:
    rank: int = F(0, "LoRA rank r of the actor's adapters (0 = off: full fine-tuning); needs `pip install agent-rl[lora]` (peft)")
    alpha: float = F(16.0, "LoRA alpha: the update is (alpha / rank) * B @ A")
    target_modules: Any = F("all-linear", "modules that get adapters: `all-linear` (every linear layer but the output "
                            "head) or a list of module names, e.g. [q_proj, k_proj, v_proj, o_proj]")
    dropout: float = F(0.0, "dropout on the adapter input while training (0 keeps old and training log-probs equal)")
    save_merged: bool = F(True, "checkpoints also hold the merged model in `hf/` (loads with plain transformers); "
                          "false: `hf/` holds config + tokenizer only and the adapter in `adapter/` is the model")


@dataclass
class ActorConfig:
    optim: OptimConfig = F(None, "optimizer", factory=OptimConfig)
    ppo_mini_batch_size: int = F(8, "prompts per optimizer step (x rollout.n trajectories)")
    ppo_epochs: int = F(1, "passes over each step's batch")
    ppo_max_token_len_per_gpu: int = F(8192, "token budget of one micro-batch (dynamic batching)")
    clip_ratio_low: float = F(0.2, "PPO clip: ratio >= 1 - low")
    clip_ratio_high: float = F(0.28, "PPO clip: ratio <= 1 + high")
    clip_ratio_c: float = F(3.0, "dual clip bound for negative advantages (> 1; null to disable)")
    loss_agg_mode: str = F("token-mean", "token-mean | seq-mean-token-sum | seq-mean-token-mean")
    entropy_coeff: float = F(0.0, "entropy bonus coefficient")
    use_kl_loss: bool = F(True, "KL loss against the reference model")
    kl_loss_coef: float = F(0.001, "KL loss coefficient")
    kl_loss_type: str = F("low_var_kl", "low_var_kl (k3, clamped) | k1 | abs | mse (k2) | k3+ (k3 value, k2 gradient logp - ref, as verl)")
    param_offload: bool = F(False, "FSDP CPU offload of actor parameters")
    mixed_precision: bool = F(True, "bf16 compute with fp32 master weights (FSDP2 MixedPrecisionPolicy)")
    lora: LoraConfig = F(None, "LoRA adapters on the actor (peft); the reference is the base model with the adapter off", factory=LoraConfig)


@dataclass
class RefConfig:
    offload: bool = F(True, "keep reference parameters on CPU between uses")
    log_prob_max_token_len_per_gpu: int = F(16384, "token budget of one reference micro-batch")


@dataclass
class TISConfig:
    enable: bool = F(True, "truncated importance weights for the rollout/training log-prob mismatch")
    cap: float = F(2.0, "weights are min(exp(logp_train_old - logp_rollout), cap)")


@dataclass
class FilterGroupsConfig:
    enable: bool = F(False, "dynamic sampling (DAPO): groups whose samples all score the same are dropped and replaced "
                     "by over-sampled groups or by further generation rounds")
    metric: str = F("score", "what must differ within a group: score (= seq_reward = seq_final_reward, the "
                    "trajectory reward) | acc (the acc / correct / em component) | any reward component name")
    max_num_gen_batches: int = F(4, "generation rounds per step at most (the first included; 0 = unlimited); when "
                                 "they run out the step trains on the informative groups it has")


@dataclass
class KLCtrlConfig:
    type: str = F("fixed", "fixed | adaptive | range: how the KL loss coefficient moves (docs/training.md, KL control). "
                  "fixed: constant; adaptive: verl's AdaptiveKLController on the step's measured KL (actor/kl_loss); "
                  "range: multiplied / divided by `factor` when the KL leaves [target_range]")
    kl_coef: Optional[float] = F(None, "starting coefficient (null = actor.kl_loss_coef)")
    target_kl: float = F(0.1, "adaptive: the KL the coefficient steers toward")
    horizon: int = F(10000, "adaptive: samples over which a 20% error changes the coefficient by 20% "
                     "(mult = 1 + clip(kl / target_kl - 1, -0.2, 0.2) * trajectories_of_step / horizon)")
    target_range: List[float] = F(None, "range: [lo, hi] of the measured KL", factory=lambda: [0.001, 0.01])
    factor: float = F(1.5, "range: multiplicative step (> 1)")
    min_coef: float = F(1e-6, "range: lower bound of the coefficient")
    max_coef: float = F(1.0, "range: upper bound of the coefficient")


@dataclass
class AlgorithmConfig:
    adv_estimator: str = F("grpo", "grpo | grpo_multi_turn (KG-R1 per-turn rewards added to the outcome advantage)")
    norm_adv_by_std: bool = F(True, "divide by the group std (False = Dr.GRPO)")
    adv_epsilon: float = F(1e-6, "added to the group std")
    turn_adv_coef: float = F(1.0, "weight of the per-turn shaping bonus (grpo_multi_turn), bounded by half the outcome advantage")
    tis: TISConfig = F(None, "rollout/training mismatch correction", factory=TISConfig)
    filter_groups: FilterGroupsConfig = F(None, "dynamic sampling: keep only groups with signal", factory=FilterGroupsConfig)
    kl_ctrl: KLCtrlConfig = F(None, "controller of the KL loss coefficient (verl's algorithm.kl_ctrl, applied to "
                              "the KL loss, not to the reward)", factory=KLCtrlConfig)
    norm_per_objective: bool = F(False, "with reward.objectives: GDPO advantage (TRL multi_objective_aggregation="
                                 "normalize_then_sum): each objective's scores normalised within the group, the "
                                 "weighted sum of those, normalised over the batch; false: GRPO on the weighted-sum "
                                 "score (docs/training.md, Multi-objective rewards)")


@dataclass
class JudgeConfig:
    base_url: Optional[str] = F(None, "OpenAI-compatible endpoint of the LLM judge, up to /v1 (e.g. http://127.0.0.1:8000/v1 of "
                                "`agent-rl serve`); the judge POSTs <base_url>/chat/completions. Used by the reward "
                                "`agent_rl.tasks.judge:judge_reward` (docs/rewards.md)")
    model: Optional[str] = F(None, "model name sent with each judge request (null: none sent; `agent-rl serve` then answers with its model)")
    api_key_env: Optional[str] = F(None, "name of the environment variable holding the judge's API key (sent as "
                                   "`Authorization: Bearer`); never the key itself")
    system_prompt: Optional[str] = F(None, "system message of each judge request (null: none)")
    prompt_template: str = F("Grade the answer to the question against the reference answer.\n"
                             "Question: {question}\nReference answer: {ground_truth}\nAnswer: {answer}\n"
                             "Reply with one line: Score: X, where X is 0 (wrong) to 10 (correct).",
                             "user message of each judge request; {question} (last user message of the prompt), "
                             "{response} (the final assistant turn), {answer} (its <answer>...</answer>, else the whole "
                             "turn), {ground_truth} (list items joined with ` | `) are filled in, other braces stay")
    score_regex: str = F("(?i)score\\W{0,5}?(-?\\d+(?:\\.\\d+)?)", "regex whose first group (or whole match) is the judge's "
                         "number, searched in the reply; no match = a failed judgment")
    score_min: float = F(0.0, "the judge's worst score (normalised to 0)")
    score_max: float = F(10.0, "the judge's best score (normalised to 1); scores outside [min, max] are clipped")
    parser: Optional[str] = F(None, "instead of score_regex: `module:function` or `file.py:function`, fn(reply_text) -> "
                              "score in [0, 1], or None for a failed judgment")
    max_tokens: int = F(32, "max_tokens of each judge request")
    temperature: float = F(0.0, "temperature of each judge request")
    max_concurrency: int = F(8, "judge requests in flight at once, per process (each Ray worker has its own)")
    timeout_s: float = F(60.0, "seconds per judge request attempt")
    max_retries: int = F(3, "retries after a timeout, a connection error or HTTP 408 / 429 / 5xx (exponential backoff)")
    backoff_s: float = F(0.5, "wait before the first retry; doubles with each retry")
    cache: bool = F(True, "answer identical judge requests once per process (the reply is kept; LRU of cache_size)")
    cache_size: int = F(100000, "judge replies kept by the cache")
    fallback_score: float = F(0.0, "reward of a trajectory whose judgment failed (counted as the component judge_failed)")


@dataclass
class ObjectiveConfig:
    function: Optional[str] = F(None, "required: `package.module:function` or `file.py:function` (fn(traj, reward_cfg) "
                                "-> (score, {component: value}), may be async), a task name (kg | arith | gsm8k: that "
                                "task's reward), or auto (the row's own reward: reward.functions, its task, "
                                "reward.default_reward)")
    weight: float = F(1.0, "weight of the objective's score in the trajectory score (TRL reward_weights); 0 = logged only")
    data_sources: Optional[List[str]] = F(None, "the objective scores only rows of these data sources (null = every "
                                          "row); a row outside them gets nothing from it (TRL: a reward function "
                                          "returning None)")


@dataclass
class RewardConfig:
    functions: Dict[str, str] = F(None, "reward per data_source, `package.module:function` or `file.py:function` "
                                  "(fn(traj, reward_cfg) -> (score, {component: value})); loaded in every worker from "
                                  "this string; wins over the tasks' rewards (docs/architecture.md)", factory=dict)
    default_reward: Optional[str] = F(None, "reward of a data_source with no reward function: a task (kg | arith | "
                                      "gsm8k) or infer (from the row's ability, else its ground truth's type); null = "
                                      "such a row is an error (docs/tools.md)")
    judge: JudgeConfig = F(None, "LLM-as-judge reward (`reward.functions.<source>=agent_rl.tasks.judge:judge_reward`)", factory=JudgeConfig)
    # free-form like `functions` (so `reward.objectives.NAME.weight=2` works on the command line); each entry is
    # checked against ObjectiveConfig and filled with its defaults by config.objectives.parse_objectives
    objectives: Dict[str, Any] = field(default_factory=dict, metadata={"entries": ObjectiveConfig, "help": (
        "multi-objective reward: name -> {function, weight, data_sources} (or name -> function); the trajectory "
        "score is the sum of weight * score over the objectives that apply to its row, each objective's score kept "
        "as the component obj/<name>; empty = one reward per row (reward.functions / the task), as without this key "
        "(docs/training.md, Multi-objective rewards)")})


@dataclass
class SFTConfig:
    steps: int = F(0, "optimizer steps of supervised warm-start on demonstrations before the first RL step (0 = off)")
    files: List[str] = F(None, "parquet files of demonstrations (`messages`: prompt, then assistant / tool messages); a data folder's `sft.parquet` is written when missing and data.generate_if_missing is kg (KG demonstrations, `agent-rl data kg-demos`) or arith (arithmetic ones, `agent-rl data arith-demos`)", factory=lambda: ["data/kg/sft.parquet"])
    batch_size: int = F(32, "demonstrations per optimizer step (all ranks together)")
    lr: float = F(5e-5, "AdamW learning rate of the warm-start (its own optimizer; betas, weight decay and grad clip from actor.optim)")
    warmup_steps: int = F(10, "linear warm-up steps of the warm-start")
    max_length: int = F(2048, "demonstrations longer than this many tokens are dropped")
    max_turns: int = F(7, "generated KG demonstrations: at most this many assistant turns")
    update_ref: bool = F(True, "the KL reference becomes the warm-started model (RL from an SFT checkpoint)")
    validate: bool = F(True, "validate once after the warm-start (logged as sft/val/* at step 0)")


@dataclass
class TrainerConfig:
    project_name: str = F("agent-rl", "logger project")
    experiment_name: str = F("kg-grpo", "run name")
    output_dir: str = F("outputs/${trainer.experiment_name}", "checkpoints, metrics JSONL, plots, trajectories")
    total_training_steps: Optional[int] = F(20, "stop after this many steps (null: only epochs)")
    total_epochs: int = F(1000, "stop after this many passes over the training data")
    save_freq: int = F(10, "checkpoint every N steps (-1: never; the last step is always saved when > 0)")
    test_freq: int = F(10, "validate every N steps (-1: never)")
    val_before_train: bool = F(True, "validate once before the first step")
    resume: str = F("auto", "auto (latest complete checkpoint) | disable | <path to a checkpoint>")
    max_ckpt_to_keep: int = F(2, "keep the last K checkpoints")
    n_gpus_per_node: int = F(1, "workers (ranks) per node; on CPU: gloo ranks")
    nnodes: int = F(1, "nodes of the Ray cluster")
    device: str = F("auto", "auto | cuda | cpu")
    use_ray: bool = F(True, "place workers with Ray (False: one process, for debugging)")
    ray_address: Optional[str] = F(None, "existing Ray cluster address (`ray start`); null = local")
    seed: int = F(1, "seed for data order, sampling and init")


@dataclass
class LoggerConfig:
    backends: List[str] = F(None, "console | jsonl | wandb", factory=lambda: ["console", "jsonl"])
    wandb_mode: str = F("auto", "auto (online with WANDB_API_KEY, else offline) | online | offline | disabled")
    plot: bool = F(True, "write a PNG of the training curves next to the JSONL at the end")


@dataclass
class TrainConfig:
    model: ModelConfig = F(None, "policy / reference model", factory=ModelConfig)
    data: DataConfig = F(None, "parquet data", factory=DataConfig)
    rollout: RolloutConfig = F(None, "generation and multi-turn agent loop", factory=RolloutConfig)
    tools: ToolsConfig = F(None, "tool declarations, and the settings of the services the tasks' tools need", factory=ToolsConfig)
    actor: ActorConfig = F(None, "FSDP actor and PPO/GRPO loss", factory=ActorConfig)
    ref: RefConfig = F(None, "reference model", factory=RefConfig)
    algorithm: AlgorithmConfig = F(None, "advantage estimation and corrections", factory=AlgorithmConfig)
    sft: SFTConfig = F(None, "supervised warm-start on demonstrations before RL", factory=SFTConfig)
    reward: RewardConfig = F(None, "reward functions and the tasks' reward weights", factory=RewardConfig)
    trainer: TrainerConfig = F(None, "loop, checkpoints, devices", factory=TrainerConfig)
    logger: LoggerConfig = F(None, "metrics sinks", factory=LoggerConfig)
