"""`agent-rl rollout` on CPU: the trainer's GPU-sized defaults become a one-minute step unless the user set them."""
import types

from agent_rl.cli.rollout import CPU_SIZES, cpu_sized
from agent_rl.config.load import compose


def _args(prompts=None):
    return types.SimpleNamespace(prompts=prompts)


def test_defaults_become_cpu_sized_and_the_line_says_how_to_change_them():
    cfg = compose([], check_paths=False)
    note = cpu_sized(cfg, [], _args())
    assert (cfg.data.train_batch_size, cfg.rollout.n, cfg.rollout.multi_turn.max_new_tokens_per_turn) == (2, 2, 64)
    assert note.startswith("on CPU: data.train_batch_size=2 rollout.n=2 rollout.multi_turn.max_new_tokens_per_turn=64")
    assert "--no-cpu-sizes" in note and "\n" not in note
    assert len(CPU_SIZES) == 3


def test_values_the_user_set_are_kept():
    over = ["rollout.n=5", "++rollout.multi_turn.max_new_tokens_per_turn=300"]
    cfg = compose(over, check_paths=False)
    note = cpu_sized(cfg, over, _args(prompts=6))
    assert (cfg.data.train_batch_size, cfg.rollout.n, cfg.rollout.multi_turn.max_new_tokens_per_turn) == (8, 5, 300)
    assert note == ""
    small = ["rollout.multi_turn.max_new_tokens_per_turn=16"]          # already smaller: not raised, not mentioned
    cfg = compose(small, check_paths=False)
    assert "max_new_tokens" not in cpu_sized(cfg, small, _args()) and cfg.rollout.multi_turn.max_new_tokens_per_turn == 16
