"""Supervised warm-start on demonstrations (`sft.*`, docs/training.md): encoding and the optimizer step.

A demonstration is a chat (`messages`: prompt messages, then assistant turns and the tool messages that
answer them, ending with an assistant turn). It is encoded in the token stream of a rollout
(`rollout/chat.py`), so the warm-started policy is trained on exactly the layout it later samples in:

    prompt_ids(messages before the first assistant turn)          loss 0
    encode(assistant content) + end-of-turn ids                    loss 1
    observation_ids(tool messages)  (tool turn + assistant header) loss 0
    ...

Tool message contents are cut like live observations (`truncate(name, text)`, the tool runtime's).
The loss is the token-mean negative log-likelihood of the loss-1 tokens over all ranks.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from agent_rl.algorithms.aggregate import aggregate
from agent_rl.data.loader import PromptLoader
from agent_rl.rollout.batch import pad_sequences
from agent_rl.training import dist as D
from agent_rl.training.actor import grad_norm_value
from agent_rl.training.microbatch import plan_micro_batches
from agent_rl.training.policy import PolicyModel, select_rows

Truncate = Callable[[str, str], Tuple[str, int]]


class DemoError(ValueError):
    """A demonstration that cannot be encoded (bad roles or order)."""


def encode_demo(renderer, messages: Sequence[Dict[str, Any]], truncate: Optional[Truncate] = None
                ) -> Tuple[List[int], List[int]]:
    """(input ids, loss mask) of one demonstration."""
    msgs = [dict(m) for m in messages]
    first = next((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), None)
    if first is None or first == 0:
        raise DemoError("a demonstration needs prompt messages followed by at least one assistant message")
    if msgs[-1].get("role") != "assistant":
        raise DemoError(f"a demonstration must end with an assistant message, not {msgs[-1].get('role')!r}")
    ids = list(renderer.prompt_ids(msgs[:first]))
    mask = [0] * len(ids)
    i = first
    while i < len(msgs):
        m = msgs[i]
        if m.get("role") != "assistant":
            raise DemoError(f"message {i}: expected an assistant message, got {m.get('role')!r}")
        content = m.get("content")
        if not isinstance(content, str) or not content:
            raise DemoError(f"message {i}: assistant content must be a non-empty string")
        turn = renderer.encode(content) + list(renderer.end_of_turn_ids)
        ids += turn
        mask += [1] * len(turn)
        i += 1
        tools = []
        while i < len(msgs) and msgs[i].get("role") == "tool":
            t = dict(msgs[i])
            if truncate is not None:
                t["content"] = truncate(str(t.get("name", "")), str(t.get("content", "")))[0]
            tools.append(t)
            i += 1
        if i < len(msgs):
            if not tools and msgs[i].get("role") == "assistant":
                raise DemoError(f"message {i}: two assistant messages in a row (a tool message must answer the first)")
            if not tools:
                raise DemoError(f"message {i}: expected a tool message after an assistant turn, got {msgs[i].get('role')!r}")
            obs = renderer.observation_ids(tools, assistant_ended=True)
            ids += obs
            mask += [0] * len(obs)
        elif tools:
            raise DemoError("a demonstration must end with an assistant message")
    return ids, mask


class DemoSet:
    """Encoded demonstrations drawn in a seeded, epoch-wise shuffled order (the trainer's `PromptLoader`,
    one demonstration per draw, so a batch may span two passes)."""

    def __init__(self, examples: List[Tuple[List[int], List[int]]], seed: int = 0):
        if not examples:
            raise ValueError("no demonstrations")
        self.examples = examples
        self.loader = PromptLoader(examples, batch_size=1, shuffle=True, seed=seed)

    @property
    def epochs(self) -> int:
        """Passes started so far."""
        return self.loader.epoch + (1 if self.loader.position else 0)

    @classmethod
    def from_messages(cls, chats: Sequence[Sequence[Dict[str, Any]]], renderer, max_length: int,
                      truncate: Optional[Truncate] = None, seed: int = 0) -> Tuple["DemoSet", int]:
        """(set, number dropped for being longer than `max_length` tokens)."""
        examples, dropped = [], 0
        for n, chat in enumerate(chats):
            try:
                ids, mask = encode_demo(renderer, chat, truncate)
            except DemoError as e:
                raise DemoError(f"demonstration {n}: {e}") from None
            if len(ids) > max_length:
                dropped += 1
                continue
            examples.append((ids, mask))
        if not examples:
            raise DemoError(f"all {dropped} demonstrations are longer than {max_length} tokens")
        return cls(examples, seed), dropped

    def __len__(self) -> int:
        return len(self.examples)

    def next_batch(self, batch_size: int, pad_id: int) -> Dict[str, torch.Tensor]:
        """`batch_size` demonstrations, right-padded (`rollout.batch.pad_sequences`)."""
        return pad_sequences([next(self.loader)[0] for _ in range(batch_size)], pad_id)


def sft_step(policy: PolicyModel, optimizer: torch.optim.Optimizer, scheduler, batch: Dict[str, torch.Tensor],
             max_token_len: int, grad_clip: float) -> Dict[str, float]:
    """One optimizer step on this rank's share of a demonstration batch (a collective under FSDP)."""
    model = policy.model
    mask = batch["loss_mask"].float()
    n_tok = float(D.all_reduce_sum(mask.sum()).item())
    lengths = batch["attention_mask"].sum(-1).tolist()
    plan = plan_micro_batches(lengths, max_token_len, D.all_reduce_max_int)
    ws = D.get_world_size()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    nll = 0.0
    for rows in plan:
        mb = select_rows(batch, rows) if rows else {k: v[:0] for k, v in batch.items()}
        logp, _ = policy.token_stats(mb["input_ids"], mb["attention_mask"], mb.get("position_ids"), mb["loss_mask"],
                                     1.0, with_entropy=False)
        if not rows:
            loss = logp.sum()  # zero, keeps FSDP ranks in step
        else:
            loss = aggregate(-logp, mb["loss_mask"].to(logp.device).float(), "token-mean", global_tokens=n_tok)
            nll += float(loss.item())
        (loss * ws).backward()
    D.reshard_all(model)
    norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    if math.isfinite(norm):
        optimizer.step()
    scheduler.step()
    loss_all = float(D.all_reduce_sum(torch.tensor([nll], dtype=torch.float64)).item())
    return {"sft/loss": loss_all, "sft/grad_norm": norm, "sft/tokens": n_tok,
            "sft/lr": optimizer.param_groups[0]["lr"], "sft/skipped": 0.0 if math.isfinite(norm) else 1.0}
