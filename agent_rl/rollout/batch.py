"""Trajectories -> the training batch (layout in docs/architecture.md, "Training batch").

Right-padded to the longest row; position t of every [B, L] tensor describes token t of
`prompt_ids + response_ids`:

    input_ids        long   [B, L]  pad_token_id after the sequence
    attention_mask   long   [B, L]  1 on real tokens
    position_ids     long   [B, L]  0..len-1 on real tokens, 0 on padding
    loss_mask        long   [B, L]  1 on engine-sampled response tokens
    rollout_logprobs float  [B, L]  engine log p(token t | tokens < t) where loss_mask is 1, else 0
    turn_index       long   [B, L]  assistant turn of a sampled token, -1 elsewhere
    rewards          float  [B]
    turn_rewards     float  [B, T]  per assistant turn, NaN-padded (T = most turns, at least 1)
    group_index      long   [B]     0.. in order of first appearance of each uid
    uids             list[str]
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

import torch

from agent_rl.rollout.trajectory import Trajectory


def response_turn_index(traj: Trajectory) -> List[int]:
    """Per response token: the assistant turn that sampled it, -1 for observation / template tokens.
    Checks that the turns tile `response_ids` exactly (sampled ids then observation ids, turn by turn)."""
    out: List[int] = []
    pos = 0
    for t in traj.turns:
        n, m = len(t.output_ids), len(t.observation_ids)
        if traj.response_ids[pos:pos + n] != list(t.output_ids) or \
                traj.response_ids[pos + n:pos + n + m] != list(t.observation_ids):
            raise ValueError(f"trajectory {traj.id}: turn {t.index} does not match response_ids at {pos}")
        out.extend([t.index] * n + [-1] * m)
        pos += n + m
    if pos != len(traj.response_ids):
        raise ValueError(f"trajectory {traj.id}: turns cover {pos} of {len(traj.response_ids)} response ids")
    return out


def pad_sequences(sequences: Sequence[Tuple[Sequence[int], Sequence[int]]], pad_token_id: int) -> Dict[str, torch.Tensor]:
    """(ids, loss mask) pairs -> right-padded input_ids / attention_mask / position_ids / loss_mask [B, L]."""
    B, L = len(sequences), max(len(ids) for ids, _ in sequences)
    out = {"input_ids": torch.full((B, L), int(pad_token_id), dtype=torch.long),
           "attention_mask": torch.zeros((B, L), dtype=torch.long),
           "position_ids": torch.zeros((B, L), dtype=torch.long),
           "loss_mask": torch.zeros((B, L), dtype=torch.long)}
    for b, (ids, mask) in enumerate(sequences):
        n = len(ids)
        if n:
            out["input_ids"][b, :n] = torch.tensor(list(ids), dtype=torch.long)
            out["attention_mask"][b, :n] = 1
            out["position_ids"][b, :n] = torch.arange(n)
            out["loss_mask"][b, :n] = torch.tensor(list(mask), dtype=torch.long)
    return out


def build_batch(trajectories: Sequence[Trajectory], pad_token_id: int) -> Dict[str, object]:
    if not trajectories:
        raise ValueError("build_batch needs at least one trajectory")
    for t in trajectories:
        if not (len(t.response_ids) == len(t.loss_mask) == len(t.rollout_logprobs)):
            raise ValueError(f"trajectory {t.id}: response_ids / loss_mask / rollout_logprobs lengths differ")
    padded = pad_sequences([(list(t.prompt_ids) + list(t.response_ids), [0] * len(t.prompt_ids) + list(t.loss_mask))
                            for t in trajectories], pad_token_id)
    loss_mask = padded["loss_mask"]
    B, L = loss_mask.shape
    T = max(1, max(len(t.turn_rewards) for t in trajectories))
    rollout_logprobs = torch.zeros((B, L), dtype=torch.float32)
    turn_index = torch.full((B, L), -1, dtype=torch.long)
    rewards = torch.zeros(B, dtype=torch.float32)
    turn_rewards = torch.full((B, T), math.nan, dtype=torch.float32)
    group_index = torch.zeros(B, dtype=torch.long)
    groups: Dict[str, int] = {}
    for b, t in enumerate(trajectories):
        P, R = len(t.prompt_ids), len(t.response_ids)
        n = P + R
        if R:
            rollout_logprobs[b, P:n] = torch.tensor(t.rollout_logprobs, dtype=torch.float32)
            turns = torch.tensor(response_turn_index(t), dtype=torch.long)
            turn_index[b, P:n] = torch.where(loss_mask[b, P:n] == 1, turns, torch.full_like(turns, -1))
        rewards[b] = float(t.reward)
        if t.turn_rewards:
            turn_rewards[b, :len(t.turn_rewards)] = torch.tensor(t.turn_rewards, dtype=torch.float32)
        group_index[b] = groups.setdefault(t.uid, len(groups))
    return {**padded, "rollout_logprobs": rollout_logprobs, "turn_index": turn_index,
            "rewards": rewards, "turn_rewards": turn_rewards, "group_index": group_index,
            "uids": [t.uid for t in trajectories]}
