"""Generate docs/config.md from the dataclass schema: every key with type, default and help, plus the
table that maps the verl keys users know to ours.

    python -m agent_rl.config.docs            # rewrite docs/config.md
    python -m agent_rl.config.docs --check    # exit 1 when docs/config.md is out of date
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import typing
from typing import Any, List, Optional, Tuple

from agent_rl.config import extend
from agent_rl.config.schema import TrainConfig

# verl key -> our key (or "" when we have no equivalent), and what differs. Hand-written; every "ours"
# key is checked against the schema by the tests.
VERL_KEYS: List[Tuple[str, str, str]] = [
    ("data.train_files / data.val_files", "data.train_files / data.val_files", "same row schema (prompt, data_source, reward_model, extra_info)"),
    ("data.train_batch_size", "data.train_batch_size", "prompts (GRPO groups) per step, as in verl"),
    ("data.val_batch_size", "data.val_batch_size", ""),
    ("data.max_prompt_length", "data.max_prompt_length", "longer rendered prompts (system + tools + question) are dropped with a warning, like `filter_overlong_prompts=True`"),
    ("data.max_response_length", "rollout.multi_turn.max_response_tokens", "all response tokens of a trajectory (sampled + tool observations + template)"),
    ("data.shuffle / data.seed", "data.shuffle / trainer.seed", ""),
    ("(KG-R1) data.prompt_augmentation.enable / guideline_level / hint_steps",
     "data.prompt_augmentation.enable / guideline_level / hint_steps",
     "KG-R1's `[Hint]:` block before the question; the levels are the task's (kg, arith, gsm8k: concise | detailed) "
     "or a literal `hint_text`. KG-R1 hints every row until hint_steps (0 = no limit): `decay=step`; the default "
     "`linear` fades the per-row probability from `start_prob` to 0 at hint_steps. Validation stays unhinted "
     "unless `apply_to_val` (docs/training.md, Prompt hints)"),
    ("actor_rollout_ref.model.path", "model.path", "`embedded` = SmolLM2-135M-Instruct prepared offline"),
    ("actor_rollout_ref.model.enable_gradient_checkpointing", "model.gradient_checkpointing", ""),
    ("actor_rollout_ref.model.use_remove_padding", "model.remove_padding", ""),
    ("actor_rollout_ref.model.trust_remote_code", "model.trust_remote_code", ""),
    ("actor_rollout_ref.model.lora_rank", "actor.lora.rank", "0 = off (full fine-tuning), as verl; TRL / peft `LoraConfig(r=...)`"),
    ("actor_rollout_ref.model.lora_alpha", "actor.lora.alpha", "TRL / peft `LoraConfig(lora_alpha=...)`; the update is (alpha / rank) * B @ A"),
    ("actor_rollout_ref.model.target_modules", "actor.lora.target_modules", "`all-linear` or a list of module names; TRL / peft `LoraConfig(target_modules=...)`"),
    ("(TRL / peft) LoraConfig.lora_dropout", "actor.lora.dropout", "verl has no such key"),
    ("(TRL) save_pretrained of a merged model (merge_and_unload)", "actor.lora.save_merged",
     "checkpoints hold the adapter (peft layout, `adapter/`) and, by default, the merged model in `hf/`; the engine always gets merged weights"),
    ("actor_rollout_ref.rollout.name", "rollout.engine", "sglang | sglang-server | hf | http | auto"),
    ("actor_rollout_ref.rollout.n", "rollout.n", "GRPO group size"),
    ("actor_rollout_ref.rollout.temperature / top_p / top_k", "rollout.sampling.temperature / top_p / top_k", ""),
    ("actor_rollout_ref.rollout.val_kwargs.temperature / top_p / top_k", "rollout.val_sampling.temperature / top_p / top_k", "validation is greedy by default"),
    ("actor_rollout_ref.rollout.response_length", "rollout.multi_turn.max_response_tokens and rollout.multi_turn.max_new_tokens_per_turn",
     "verl uses one name for the whole multi-turn response and for one generate call; we have two budgets"),
    ("actor_rollout_ref.rollout.prompt_length", "data.max_prompt_length", ""),
    ("actor_rollout_ref.rollout.max_model_len", "rollout.max_model_len", ""),
    ("actor_rollout_ref.rollout.max_num_seqs", "rollout.max_concurrent_trajectories", "we bound trajectories in flight (each is one request at a time)"),
    ("actor_rollout_ref.rollout.gpu_memory_utilization", "rollout.gpu_memory_utilization", "SGLang `mem_fraction_static`"),
    ("actor_rollout_ref.rollout.free_cache_engine", "rollout.free_cache_engine", "weights are pushed again after the memory is resumed"),
    ("actor_rollout_ref.rollout.over_sample_rate", "rollout.over_sample_rate", "works on whole GRPO groups: aborted samples never enter a baseline"),
    ("actor_rollout_ref.rollout.update_weights_bucket_megabytes", "rollout.weight_sync_bucket_mb", ""),
    ("actor_rollout_ref.rollout.tensor_model_parallel_size", "", "not supported: engines are data-parallel, one per GPU (or `rollout.engine_replicas` per GPU)"),
    ("actor_rollout_ref.rollout.multi_turn.enable", "rollout.multi_turn.enable", ""),
    ("actor_rollout_ref.rollout.multi_turn.max_assistant_turns", "rollout.multi_turn.max_assistant_turns", ""),
    ("actor_rollout_ref.rollout.multi_turn.max_user_turns", "rollout.multi_turn.max_tool_calls",
     "verl counts user/tool turns; we count tool calls (several calls of one turn each count)"),
    ("actor_rollout_ref.rollout.multi_turn.max_parallel_calls", "rollout.multi_turn.max_parallel_tool_calls", ""),
    ("actor_rollout_ref.rollout.multi_turn.max_tool_response_length", "rollout.multi_turn.max_tool_response_tokens",
     "verl counts characters; we count tokens"),
    ("actor_rollout_ref.rollout.multi_turn.tool_response_truncate_side", "rollout.multi_turn.tool_response_truncate_side", "head | middle | tail"),
    ("actor_rollout_ref.rollout.multi_turn.tool_config_path", "tools.config_path", "same YAML shape"),
    ("actor_rollout_ref.rollout.multi_turn.format", "rollout.multi_turn.format", "hermes"),
    ("actor_rollout_ref.actor.optim.lr", "actor.optim.lr", ""),
    ("actor_rollout_ref.actor.optim.lr_warmup_steps / lr_warmup_steps_ratio", "actor.optim.warmup_steps / warmup_ratio", ""),
    ("actor_rollout_ref.actor.optim.warmup_style", "actor.optim.lr_schedule", "constant | cosine"),
    ("actor_rollout_ref.actor.optim.min_lr_ratio / weight_decay / betas", "actor.optim.min_lr_ratio / weight_decay / betas", ""),
    ("actor_rollout_ref.actor.grad_clip", "actor.optim.grad_clip", ""),
    ("actor_rollout_ref.actor.ppo_mini_batch_size", "actor.ppo_mini_batch_size", "prompts per optimizer step, as in verl"),
    ("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu", "actor.ppo_max_token_len_per_gpu", "micro-batches are always token-budgeted (`use_dynamic_bsz=True`)"),
    ("actor_rollout_ref.actor.use_dynamic_bsz", "", "always on"),
    ("actor_rollout_ref.actor.ppo_max_token_len_per_gpu", "actor.ppo_max_token_len_per_gpu", ""),
    ("actor_rollout_ref.actor.ppo_epochs", "actor.ppo_epochs", ""),
    ("actor_rollout_ref.actor.clip_ratio_low / clip_ratio_high / clip_ratio_c", "actor.clip_ratio_low / clip_ratio_high / clip_ratio_c", "dual clip with clip_ratio_c"),
    ("actor_rollout_ref.actor.loss_agg_mode", "actor.loss_agg_mode", "token-mean | seq-mean-token-sum | seq-mean-token-mean"),
    ("actor_rollout_ref.actor.entropy_coeff", "actor.entropy_coeff", ""),
    ("actor_rollout_ref.actor.use_kl_loss", "actor.use_kl_loss", ""),
    ("actor_rollout_ref.actor.kl_loss_coef", "actor.kl_loss_coef", ""),
    ("actor_rollout_ref.actor.kl_loss_type", "actor.kl_loss_type", "low_var_kl | k1 | abs | mse | k3+ (same names, same definitions: k3 clamps as verl, k3+ = k3 value with k2 gradient)"),
    ("actor_rollout_ref.actor.fsdp_config.param_offload", "actor.param_offload", ""),
    ("actor_rollout_ref.actor.tis_imp_ratio_cap", "algorithm.tis.cap", "truncated importance sampling is on by default (`algorithm.tis.enable`)"),
    ("actor_rollout_ref.ref.fsdp_config.param_offload", "ref.offload", ""),
    ("actor_rollout_ref.ref.log_prob_max_token_len_per_gpu", "ref.log_prob_max_token_len_per_gpu", ""),
    ("algorithm.adv_estimator", "algorithm.adv_estimator", "grpo | grpo_multi_turn (KG-R1 per-turn advantage)"),
    ("algorithm.norm_adv_by_std_in_grpo", "algorithm.norm_adv_by_std", "False = Dr.GRPO"),
    ("algorithm.filter_groups.enable / metric / max_num_gen_batches", "algorithm.filter_groups.enable / metric / max_num_gen_batches",
     "DAPO dynamic sampling; composes with over-sampling (extras replace filtered groups first) and carry-over; "
     "max_num_gen_batches defaults to 4 (verl: 0 = unlimited) and, when exhausted, the step trains on the "
     "informative groups it has instead of raising"),
    ("algorithm.use_kl_in_reward", "", "not supported: KL is a loss term (`actor.use_kl_loss`)"),
    ("algorithm.kl_ctrl.type / kl_coef / target_kl / horizon", "algorithm.kl_ctrl.type / kl_coef / target_kl / horizon",
     "verl's fixed / adaptive controllers with verl's update rule, but applied to the KL *loss* coefficient (verl: the "
     "in-reward KL penalty): each step trains with the current value, then the step's `actor/kl_loss` and its "
     "trajectories update it; `kl_coef: null` starts from `actor.kl_loss_coef`; `range` (target_range / factor / "
     "min_coef / max_coef) is ours and, with reward.objectives, keeps one coefficient per objective, each moved "
     "toward the target range by the KL of the trajectories it applies to (docs/training.md); logged as `actor/kl_coef`, `actor/kl_coef/<name>`, "
     "`actor/kl/<name>`, saved in checkpoints"),
    ("(TRL) GRPOTrainer(reward_funcs=[...]) + GRPOConfig.reward_weights", "reward.objectives",
     "name -> {function, weight, data_sources}: the trajectory score is sum(weight * score) over the objectives that "
     "apply to its row, each logged as reward/obj/<name>; `function` is module:function / file.py:function, a task "
     "(kg | arith | gsm8k) or auto (the row's own reward). verl: one custom_reward_function per run (return the "
     "weighted sum yourself)"),
    ("(TRL) a reward function returning None for samples it does not score", "reward.objectives",
     "`reward.objectives.<name>.data_sources`: the objective applies only to rows of these data sources (null = all)"),
    ("(TRL) GRPOConfig.multi_objective_aggregation = sum_then_normalize / normalize_then_sum", "algorithm.norm_per_objective",
     "false = sum_then_normalize (GRPO on the weighted sum), true = normalize_then_sum (GDPO: per-objective group "
     "normalisation, weighted sum, batch normalisation); NVlabs verl-GDPO: `algorithm.adv_estimator=gdpo`. The "
     "per-objective step honours algorithm.norm_adv_by_std (TRL's normalize_then_sum always divides by the std)"),
    ("custom_reward_function.path / custom_reward_function.name", "reward.functions",
     "one `module:function` or `file.py:function` per data_source (verl: one function that gets the data_source); TRL: `GRPOTrainer(reward_funcs=...)`"),
    ("reward_model.enable / reward_model.model.path", "reward.judge.base_url",
     "verl scores with a reward-model head inside the job; here a generative LLM judge behind an OpenAI-compatible endpoint "
     "(`agent-rl serve` of any checkpoint, or a hosted API) scores the final answer: "
     "`reward.functions.<source>=agent_rl.tasks.judge:judge_reward` (docs/rewards.md)"),
    ("(TRL) trl.judges OpenAIPairwiseJudge(model=, system_prompt=, max_requests=)",
     "reward.judge.model / system_prompt / max_concurrency",
     "TRL's judges read OPENAI_API_KEY; ours reads the variable named by reward.judge.api_key_env, and grades one answer "
     "against the ground truth (not pairwise); max_requests caps the total, max_concurrency the requests in flight"),
    ("trainer.total_training_steps", "trainer.total_training_steps", "stops at whichever of steps / epochs comes first"),
    ("fsdp_sft_trainer: data.multiturn.messages_key / trainer.total_training_steps / optim.lr / data.train_batch_size",
     "sft.files / sft.steps / sft.lr / sft.batch_size",
     "verl runs SFT as its own job; here the warm-start runs inside the RL run, on a `messages` column, and its model becomes the KL reference"),
    ("trainer.total_epochs", "trainer.total_epochs", ""),
    ("trainer.save_freq", "trainer.save_freq", "the last step is always saved"),
    ("trainer.test_freq", "trainer.test_freq", ""),
    ("trainer.val_before_train", "trainer.val_before_train", ""),
    ("trainer.n_gpus_per_node / trainer.nnodes", "trainer.n_gpus_per_node / trainer.nnodes", "one worker (actor + reference + engine) per GPU"),
    ("trainer.project_name / trainer.experiment_name", "trainer.project_name / trainer.experiment_name", ""),
    ("trainer.default_local_dir", "trainer.output_dir", "checkpoints, metrics, plots and trajectories"),
    ("trainer.resume_mode / trainer.resume_from_path", "trainer.resume", "auto | disable | <checkpoint path>"),
    ("trainer.max_actor_ckpt_to_keep", "trainer.max_ckpt_to_keep", ""),
    ("trainer.logger", "logger.backends", "console | jsonl | wandb"),
]

HEADER = """\
# Configuration

<!-- Generated by `python -m agent_rl.config.docs` from agent_rl/config/schema.py and the tasks' config keys; do not edit by hand. -->

One config tree: `configs/trainer.yaml` (Hydra) over the dataclass schema in `agent_rl/config/schema.py`, with
the keys the tasks add to its sections (`Task.config` in `agent_rl/tasks/registry.py`, each task's
`agent_rl/tasks/<task>/config.py`; marked "task key" below). Override any key on the command line:

```bash
agent-rl train rollout.n=8 actor.optim.lr=1e-6 data.train_batch_size=64 trainer.n_gpus_per_node=8
agent-rl train --config-dir my_configs --config-name my_run      # your own YAML (start it with the same `defaults`)
```

A misspelt key, a wrong type, a value outside its choices or a missing file fails at start with one
line naming the key, e.g. `rollout.n: Value 'x' of type 'str' could not be converted to Integer`.
Paths are relative to the directory you start from. `${...}` values are OmegaConf interpolations.

Budgets have distinct names (verl users were bitten by one name meaning two things):
`rollout.multi_turn.max_new_tokens_per_turn` (one assistant turn), `rollout.multi_turn.max_response_tokens`
(the whole multi-turn response, the training length), `rollout.multi_turn.max_assistant_turns`,
`rollout.multi_turn.max_tool_calls`, `rollout.multi_turn.max_tool_response_tokens` (one observation, in tokens),
`rollout.max_model_len` (prompt + response in the engine).
"""


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        base = " | ".join(type_name(a) for a in inner)
        return f"{base} | null" if len(inner) < len(args) else base
    if origin in (list, List):
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin in (dict, typing.Dict):
        return "dict" if not args else f"dict[{type_name(args[0])}, {type_name(args[1])}]"
    if tp is Any:
        return "any"
    if dataclasses.is_dataclass(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def format_default(v: Any) -> str:
    if v is None:
        return "`null`"
    if isinstance(v, bool):
        return f"`{str(v).lower()}`"
    if isinstance(v, str):
        return f"`{v}`" if v else '`""`'
    if isinstance(v, dict):
        return "`{" + ", ".join(f"{k}: {format_default(x).strip('`')}" for k, x in v.items()) + "}`"
    if isinstance(v, list):
        return "`[" + ", ".join(format_default(x).strip("`") for x in v) + "]`"
    return f"`{v}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _task_sections():
    from agent_rl.config.load import task_sections

    return task_sections()


def _added_by(cls: type) -> dict:
    """{field name: the file of the task dataclass that adds it} of an extended section class ({} for the others)."""
    out = {}
    for add in getattr(cls, "__ext_key__", ())[1:]:
        out.update({f.name: add.__module__.replace(".", "/") + ".py" for f in dataclasses.fields(add)})
    return out


def schema_keys(cls: type = TrainConfig, prefix: str = "") -> List[Tuple[str, str, Any, str, bool]]:
    """(key, type, default, help, is_section) for every field, depth-first; TrainConfig's sections with the keys the
    tasks add (`load.task_sections`), their help naming the task's file."""
    types = _task_sections() if cls is TrainConfig else {}
    hints = typing.get_type_hints(cls)
    added = _added_by(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp = types.get(f.name, hints[f.name])
        key = prefix + f.name
        help_ = f.metadata.get("help", "")
        if f.name in added:
            help_ += f" (task key: `{added[f.name]}`)"
        if dataclasses.is_dataclass(tp):
            out.append((key, "section", None, help_, True))
            out.extend(schema_keys(tp, key + "."))
        elif f.metadata.get("entries"):   # a free-form mapping whose values have a schema (reward.objectives)
            entry = f.metadata["entries"]
            fields = ", ".join(e.name for e in dataclasses.fields(entry))
            out.append((key, f"dict[str, {{{fields}}}]", default_of(f), help_, False))
            hints_e = typing.get_type_hints(entry)
            for e in dataclasses.fields(entry):
                out.append((f"{key}.<name>.{e.name}", type_name(hints_e[e.name]), default_of(e),
                            e.metadata.get("help", ""), False))
        else:
            out.append((key, type_name(tp), default_of(f), help_, False))
    return out


def _default_at(key: str) -> Any:
    obj: Any = extend.default_config(TrainConfig, _task_sections())
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def render() -> str:
    lines = [HEADER]
    top = [(f.name, f.metadata.get("help", "")) for f in dataclasses.fields(TrainConfig)]
    lines.append("Sections: " + ", ".join(f"[`{n}`](#{n})" for n, _ in top) + ".\n")
    keys = schema_keys()
    for name, help_ in top:
        lines.append(f"## {name}\n\n{help_[0].upper() + help_[1:] if help_ else ''}.\n")
        lines.append("| key | type | default | description |")
        lines.append("|---|---|---|---|")
        for key, tp, _default, h, is_section in keys:
            if not key.startswith(name + "."):
                continue
            if is_section:
                continue
            # defaults as the assembled config holds them (nested section factories included)
            default = _default if "<name>" in key else _default_at(key)
            lines.append(f"| `{key}` | {_cell(tp)} | {_cell(format_default(default))} | {_cell(h)} |")
        lines.append("")
    lines.append("## From verl\n")
    lines.append("The verl keys users know and ours. `actor_rollout_ref.` is written out in full; an empty "
                 "\"agent-rl\" cell means there is no such setting here.\n")
    lines.append("| verl | agent-rl | notes |")
    lines.append("|---|---|---|")
    for verl, ours, note in VERL_KEYS:
        ours_cell = " / ".join(f"`{k.strip()}`" for k in ours.split(" / ")) if ours else "—"
        ours_cell = ours_cell.replace(" and ", "` and `")
        lines.append(f"| `{verl}` | {ours_cell} | {_cell(note)} |")
    lines.append("")
    return "\n".join(lines)


def verl_target_keys() -> List[str]:
    """Every key of ours named in the verl table, expanded (`a.b / c` -> `a.b`, `a.c`)."""
    out = []
    for _, ours, _ in VERL_KEYS:
        for group in ours.split(" and "):
            parts = [p.strip() for p in group.split(" / ") if p.strip()]
            if not parts:
                continue
            base = parts[0].rsplit(".", 1)[0]
            out.append(parts[0])
            out += [p if "." in p else f"{base}.{p}" for p in parts[1:]]
    return out


def default_path() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(os.path.join(here, "..", "..", "docs", "config.md"))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent_rl.config.docs", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=default_path())
    p.add_argument("--check", action="store_true", help="exit 1 when the file differs from the schema")
    a = p.parse_args(argv)
    text = render()
    if a.check:
        current = open(a.out, encoding="utf-8").read() if os.path.exists(a.out) else ""
        if current != text:
            print(f"{a.out} is out of date: run `python -m agent_rl.config.docs`", file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
