import dataclasses
import subprocess
import sys

from agent_rl.config import docs
from agent_rl.config.schema import TrainConfig


def test_docs_config_md_up_to_date():
    with open(docs.default_path(), encoding="utf-8") as f:
        current = f.read()
    assert current == docs.render(), "docs/config.md is stale: run `python -m agent_rl.config.docs`"


def test_check_flag_detects_stale_file(tmp_path):
    out = tmp_path / "config.md"
    out.write_text("old\n")
    assert docs.main(["--out", str(out), "--check"]) == 1
    assert docs.main(["--out", str(out)]) == 0
    assert docs.main(["--out", str(out), "--check"]) == 0


def test_every_schema_key_documented_with_help():
    text = docs.render()
    for key, tp, _, help_, is_section in docs.schema_keys():
        assert help_, f"{key} has no help text in the schema"
        if not is_section:
            assert f"| `{key}` |" in text


def test_nested_defaults_rendered():
    text = docs.render()
    assert "| `rollout.val_sampling.temperature` | float | `0.0` |" in text
    assert "| `logger.backends` | list[str] | `[console, jsonl]` |" in text
    assert "| `trainer.total_training_steps` | int \\| null | `20` |" in text


def _schema_leaf_keys(cls=TrainConfig, prefix=""):
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _schema_leaf_keys(hints[f.name], prefix + f.name + ".")
        else:
            yield prefix + f.name


def test_verl_table_targets_exist():
    leaves = set(_schema_leaf_keys())
    targets = docs.verl_target_keys()
    assert len(targets) > 50
    missing = [k for k in targets if k not in leaves]
    assert not missing, f"verl table names keys that are not in the schema: {missing}"
    verl = " ".join(v for v, _, _ in docs.VERL_KEYS)
    for must in ["data.train_batch_size", "actor_rollout_ref.rollout.n", "multi_turn.max_assistant_turns",
                 "multi_turn.max_user_turns", "max_tool_response_length", "over_sample_rate", "kl_loss_type",
                 "kl_loss_coef", "use_kl_loss", "clip_ratio_c", "loss_agg_mode", "ppo_mini_batch_size",
                 "ppo_max_token_len_per_gpu", "optim.lr", "gpu_memory_utilization", "rollout.response_length",
                 "data.max_prompt_length", "norm_adv_by_std_in_grpo", "trainer.total_training_steps",
                 "trainer.save_freq", "trainer.test_freq", "trainer.n_gpus_per_node"]:
        assert must in verl, must


def test_module_entry_point_check():
    r = subprocess.run([sys.executable, "-m", "agent_rl.config.docs", "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
