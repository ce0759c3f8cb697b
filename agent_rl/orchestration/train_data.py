"""The prompts of a training run: the training rows, drawn one at a time (`take`), the validation rows
(`val_rows`, `val_batch`), the prompt-length filter and the fading hints (`data.prompt_augmentation`).

Rows are read and checked once at start (every row needs a reward: `check_row_reward`); a row whose rendered prompt
is longer than `data.max_prompt_length` is dropped when drawn (`PromptFilter`, counted). Each training row gets its
hint decision as it is drawn (data/hints.py: keyed on the seed, the completed steps and the row's position in the
data), before the length filter and before it goes to a worker, so every trajectory of its group shares it and a
resumed run replays it; validation rows only with `apply_to_val`.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from agent_rl.config.load import ConfigError


class PromptFilter:
    """Drops rows whose rendered prompt is longer than `data.max_prompt_length` (checked when a row is
    drawn, so a large data set costs nothing up front); warns once, counts every drop."""

    def __init__(self, renderer, max_len: int, warn: Callable[[str], None]):
        self.renderer, self.max_len, self.warn = renderer, max_len, warn
        self.dropped = 0

    def ok(self, row: Dict[str, Any]) -> bool:
        n = len(self.renderer.prompt_ids(row["prompt"]))
        if n <= self.max_len:
            return True
        if self.dropped == 0:
            self.warn(f"warning: dropping rows whose prompt is longer than data.max_prompt_length={self.max_len} "
                      f"tokens (first: {n} tokens); the count is logged as data/dropped_long_prompts")
        self.dropped += 1
        return False


class NoRowFits(RuntimeError):
    """A whole epoch of training rows was drawn and none passed the length filter."""


class TrainData:
    def __init__(self, loader, val_rows: List[Dict[str, Any]], prompt_filter, hints=None,
                 max_prompt_length: Optional[int] = None):
        self.loader = loader                  # data.loader.PromptLoader, one row per draw
        self.val_rows = val_rows
        self.prompt_filter = prompt_filter
        self.hints = hints                    # data.hints.PromptHints, None when off
        self.rows_per_epoch = len(loader.rows)
        self.max_prompt_length = max_prompt_length

    @classmethod
    def load(cls, cfg, renderer, echo: Callable[[str], None]) -> "TrainData":
        """Read and check `data.train_files` / `data.val_files`; ConfigError (one line, naming the key) when they
        cannot be used."""
        from agent_rl.data.loader import PromptLoader, load_rows
        from agent_rl.tasks import check_row_reward
        from agent_rl.tasks.rows import rules_for

        rows: Dict[str, list] = {}
        for key in ("train_files", "val_files"):
            files = getattr(cfg.data, key)
            try:
                rows[key] = load_rows(files, skip_invalid=cfg.data.skip_invalid_rows, log=echo,  # unscorable rows too
                                      rules=rules_for, check=lambda row: check_row_reward(row, cfg.reward)) if files else []
            except (ValueError, OSError) as e:
                raise ConfigError(f"data.{key}: {e}") from None
        train_rows, val_rows = rows["train_files"], rows["val_files"]
        if len(train_rows) < cfg.data.train_batch_size:
            raise ConfigError(f"data.train_batch_size: {cfg.data.train_batch_size} is more than the "
                              f"{len(train_rows)} training rows")
        hints = _load_hints(cfg, train_rows, val_rows)
        prompt_filter = PromptFilter(renderer, cfg.data.max_prompt_length, echo)
        limit = cfg.data.max_val_samples if cfg.data.max_val_samples >= 0 else len(val_rows)
        kept: List[Dict[str, Any]] = []
        for row in val_rows:
            if len(kept) >= limit:
                break
            if prompt_filter.ok(row):
                kept.append(row)
        # one row per draw: a step takes exactly the rows the schedulers ask for (over-sampling, carry-over)
        loader = PromptLoader(train_rows, batch_size=1, shuffle=cfg.data.shuffle, seed=cfg.trainer.seed)
        return cls(loader, kept, prompt_filter, hints, cfg.data.max_prompt_length)

    def take(self, n: int, step: int) -> List[Dict[str, Any]]:
        """The next `n` training rows that fit, for training step `step` (1-based)."""
        out: List[Dict[str, Any]] = []
        scanned = 0
        while len(out) < n:
            row = next(self.loader)[0]
            if self.hints is not None:  # t = completed steps; the key is the row's position in the data
                row = self.hints.apply(row, step - 1, self.loader.last_indices[0])
            scanned += 1
            if self.prompt_filter.ok(row):
                out.append(row)
            elif scanned > self.rows_per_epoch + n:
                raise NoRowFits(f"no training row fits data.max_prompt_length={self.max_prompt_length}")
        return out

    def val_batch(self, step: int) -> List[Dict[str, Any]]:
        """The validation rows, hinted only with `apply_to_val`."""
        if self.hints is not None and self.hints.apply_to_val:
            return [self.hints.apply(r, step, i, split="val") for i, r in enumerate(self.val_rows)]
        return self.val_rows

    @property
    def epoch_progress(self) -> float:
        return float(self.loader.epoch + self.loader.position / max(self.rows_per_epoch, 1))


def _load_hints(cfg, train_rows, val_rows):
    pa = cfg.data.prompt_augmentation
    if not pa.enable:
        return None
    from agent_rl.data.hints import PromptHints
    from agent_rl.tasks.registry import task_hints

    rows = list(train_rows) + (list(val_rows) if pa.apply_to_val else [])
    try:
        return PromptHints.from_config(pa, rows, task_hints, cfg.trainer.seed)
    except ValueError as e:
        raise ConfigError(f"data.prompt_augmentation.{e}") from None
