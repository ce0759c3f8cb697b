"""The HF causal LM shared by actor and reference: loading, FSDP2 wrapping, mixed precision, and the
token log-prob / entropy forward with packed (padding-free) or padded micro-batches.

Alignment (docs/architecture.md): `logprobs[:, t] = log p(input_ids[:, t] | input_ids[:, :t])`, 0 at t=0
and on padding; log-probs are log_softmax(logits / temperature).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from agent_rl.algorithms.entropy import logprobs_and_entropy
from agent_rl.model.attention import avoid_cudnn_attention
from agent_rl.training import dist as D

log = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16,
          "float32": torch.float32, "fp32": torch.float32}


def resolve_compute_dtype(name: str, device: torch.device, mixed_precision: bool = True) -> torch.dtype:
    """Compute dtype for `model.dtype`. fp32 when mixed precision is off, or on CPU when the dtype is
    not usable there (bf16 matmul unsupported). Master weights are always fp32."""
    if name not in DTYPES:
        raise ValueError(f"unknown model.dtype {name!r} ({' | '.join(DTYPES)})")
    dtype = DTYPES[name]
    if not mixed_precision or dtype == torch.float32:
        return torch.float32
    if device.type == "cpu":
        try:
            a = torch.ones(4, 4, dtype=dtype)
            (a @ a).sum().item()
        except Exception:  # pragma: no cover - depends on the CPU build
            log.warning("model.dtype=%s is not supported on this CPU; computing in float32", name)
            return torch.float32
        log.warning("model.dtype=%s on CPU is slow; set model.dtype=float32 for CPU runs", name)
    return dtype


def _attn_implementation(device: torch.device) -> str:
    if device.type == "cuda":
        try:
            import flash_attn  # noqa: F401
            return "flash_attention_2"
        except Exception:
            pass
    return "sdpa"


def load_hf_model(path: str, device: torch.device, trust_remote_code: bool = False,
                  attn_implementation: Optional[str] = None) -> torch.nn.Module:
    """fp32 (master) weights on CPU; FSDP or .to() moves them to the device."""
    from transformers import AutoModelForCausalLM

    impl = attn_implementation or _attn_implementation(device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=impl,
                                                     trust_remote_code=trust_remote_code)
    except (ValueError, ImportError) as e:  # the implementation is not available for this model
        log.warning("attn_implementation=%s refused (%s); using the model's default", impl, e)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model.config.use_cache = False
    return model


def apply_fsdp2(model: torch.nn.Module, compute_dtype: torch.dtype, device: torch.device,
                cpu_offload: bool = False) -> torch.nn.Module:
    """fully_shard every decoder layer (model._no_split_modules) and then the root, over all ranks."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (D.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    kw = dict(mesh=mesh, mp_policy=mp)
    if cpu_offload and device.type == "cuda":
        kw["offload_policy"] = CPUOffloadPolicy()
    elif device.type == "cuda":
        model.to(device)
    layer_names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_names]
    if not layers:
        log.warning("no decoder layers found by _no_split_modules=%s; sharding the root only", layer_names)
    for m in layers:
        fully_shard(m, **kw)
    fully_shard(model, **kw)
    return model


def causal_positions(attention_mask: torch.Tensor, position_ids: torch.Tensor) -> Optional[torch.Tensor]:
    """Position ids 0..W-1 on every row when each row is its real tokens, numbered 0, 1, ..., then padding (as
    rollout/batch.pad_sequences builds them); None otherwise.

    Such a batch needs no attention mask: under causal attention a real token only sees earlier columns, all real, so
    its logits are those of the masked call; the padding's own outputs are never read. Without a mask SDPA runs its
    causal kernels (flash / memory-efficient) instead of materialising a [rows, 1, W, W] mask, which on the GPU can
    drop it to the math kernel. The positions continue over the padding so that transformers does not read the
    reset to 0 as a second packed sequence and build a block mask after all."""
    full = torch.arange(attention_mask.shape[1], device=position_ids.device).expand_as(position_ids)
    am = attention_mask.bool()
    ok = (am[:, 1:] <= am[:, :-1]).all() & ((position_ids == full) | ~am).all()   # one device sync, not two
    return full if bool(ok) else None


def _valid_cols(attention_mask: torch.Tensor) -> List[torch.Tensor]:
    return [torch.nonzero(attention_mask[b], as_tuple=False).squeeze(-1) for b in range(attention_mask.shape[0])]


class PolicyModel:
    """An HF causal LM, FSDP2-sharded when torch.distributed is initialised, plain otherwise."""

    def __init__(self, path: str, *, dtype: str = "bfloat16", mixed_precision: bool = True,
                 device: Optional[torch.device] = None, trust_remote_code: bool = False,
                 gradient_checkpointing: bool = False, remove_padding: bool = True, cpu_offload: bool = False,
                 trainable: bool = True, logits_chunk: int = 1024, lora=None):
        self.device = device or D.default_device()
        self.compute_dtype = resolve_compute_dtype(dtype, self.device, mixed_precision)
        avoid_cudnn_attention()   # its per-shape graph cache grew the worker's RSS every step (model/attention.py)
        self.fsdp = D.is_dist()
        model = load_hf_model(path, self.device, trust_remote_code)
        self.config = model.config
        self.pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        if not trainable:
            model.requires_grad_(False)
        if gradient_checkpointing and trainable:
            enable = getattr(model, "activation_checkpointing_enable", None)     # transformers >= 5.2x: the new name
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.lora = False
        if trainable and lora is not None and lora.rank > 0:  # actor.lora: adapters train, the base is frozen
            from agent_rl.training.lora import apply_lora

            model = apply_lora(model, lora)
            self.lora = True
        if self.fsdp:
            model = apply_fsdp2(model, self.compute_dtype, self.device, cpu_offload)
        else:
            model.to(self.device)
        self.model = model
        self.logits_chunk = logits_chunk
        self.packing = bool(remove_padding) and self._varlen_attention() and self._packing_works()

    def _varlen_attention(self) -> bool:
        """Packing only pays with a varlen attention kernel (flash-attention). With sdpa / eager, transformers
        turns packed position_ids into a dense block-diagonal [L, L] mask: O(L^2) memory over a whole
        micro-batch (a 32k-token micro-batch ran an 80 GB H100 out of memory) and slower than padding."""
        impl = str(getattr(self.config, "_attn_implementation", "") or "")
        if impl.startswith("flash") or "varlen" in impl:
            return True
        log.info("attn_implementation=%s has no varlen kernel: padded micro-batches (model.remove_padding ignored)", impl)
        return False

    # ------------------------------------------------------------------ forward
    def _autocast(self):
        if self.fsdp or self.compute_dtype == torch.float32:
            return contextlib.nullcontext()  # FSDP's MixedPrecisionPolicy casts parameters itself
        return torch.autocast(device_type=self.device.type, dtype=self.compute_dtype)

    def _logits(self, input_ids, position_ids, attention_mask, keep_idx):
        kwargs = dict(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False)
        with self._autocast():
            if keep_idx is not None:
                try:
                    return self.model(**kwargs, logits_to_keep=keep_idx).logits
                except TypeError:  # a model without logits_to_keep
                    pass
            logits = self.model(**kwargs).logits
        return logits if keep_idx is None else logits[:, keep_idx]

    def token_stats(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: Optional[torch.Tensor],
                    keep: torch.Tensor, temperature: float = 1.0, with_entropy: bool = True,
                    packed: Optional[bool] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Rows [n, L] of a batch -> (logprobs [n, L], entropy [n, L] or None), computed where `keep`
        (and t >= 1, attention_mask 1); zero elsewhere. n = 0 runs a dummy one-token forward whose outputs
        are zero-valued but connected to the graph (so FSDP ranks stay in step)."""
        n, L = input_ids.shape
        packed = self.packing if packed is None else packed
        dev = self.device
        if n == 0:
            ids = torch.full((1, 1), self.pad_id, dtype=torch.long, device=dev)
            logits = self._logits(ids, torch.zeros_like(ids), None, None)
            z = logits.float().sum() * 0.0
            empty = torch.zeros(0, L, device=dev) + z
            return empty, (empty if with_entropy else None)
        keep = keep.bool() & attention_mask.bool()
        keep[:, 0] = False
        if packed:
            cols = _valid_cols(attention_mask)
            lens = [int(c.numel()) for c in cols]
            starts = torch.tensor([0] + lens[:-1]).cumsum(0).tolist()
            ids = torch.cat([input_ids[b, cols[b]] for b in range(n)]).to(dev)[None]
            pos = torch.cat([torch.arange(m) for m in lens]).to(dev)[None]
            rows, tcols, src = [], [], []
            for b in range(n):
                j = torch.nonzero(keep[b, cols[b]], as_tuple=False).squeeze(-1)  # index within the sequence
                rows.append(torch.full_like(j, b))
                tcols.append(cols[b][j])
                src.append(starts[b] + j - 1)  # hidden state predicting packed token starts[b] + j
            rows, tcols, src = torch.cat(rows), torch.cat(tcols), torch.cat(src).to(dev)
            labels = ids[0, src + 1]
            if src.numel() == 0:
                logits = self._logits(ids, pos, None, torch.zeros(1, dtype=torch.long, device=dev))
                z = logits.float().sum() * 0.0
                out = torch.zeros(n, L, device=dev) + z
                return out, (out if with_entropy else None)
            logits = self._logits(ids, pos, None, src)[0]
        else:
            width = int(attention_mask.long().cumsum(-1).argmax(-1).max().item()) + 1  # drop trailing padding
            ids = input_ids[:, :width].to(dev)
            am = attention_mask[:, :width].to(dev)
            pos = position_ids[:, :width].to(dev) if position_ids is not None else (am.long().cumsum(-1) - 1).clamp(min=0)
            k = keep[:, :width]
            rows, tcols = torch.nonzero(k, as_tuple=True)
            causal = causal_positions(am, pos)
            # right-padded rows numbered 0, 1, ...: plain causal attention, no mask (see causal_positions)
            logits_all = self._logits(ids, causal, None, None) if causal is not None else self._logits(ids, pos, am, None)
            logits = logits_all[rows.to(dev), tcols.to(dev) - 1]
            labels = ids[rows.to(dev), tcols.to(dev)]
            if rows.numel() == 0:
                z = logits_all.float().sum() * 0.0
                out = torch.zeros(n, L, device=dev) + z
                return out, (out if with_entropy else None)
        lp, ent = logprobs_and_entropy(logits, labels, temperature, with_entropy, self.logits_chunk)
        r, c = rows.to(dev), tcols.to(dev)
        out_lp = torch.zeros(n, L, device=dev, dtype=lp.dtype).index_put((r, c), lp)
        out_ent = torch.zeros(n, L, device=dev, dtype=lp.dtype).index_put((r, c), ent) if with_entropy else None
        return out_lp, out_ent

    # ------------------------------------------------------------------ packing check
    @torch.no_grad()
    def _packing_works(self) -> bool:
        """Packed (position_ids restart, no attention mask) must equal padded log-probs for this model
        and attention implementation; otherwise fall back to padded micro-batches."""
        g = torch.Generator().manual_seed(0)
        vocab = int(getattr(self.config, "vocab_size", 1000))
        ids = torch.randint(0, vocab, (2, 9), generator=g)
        am = torch.ones(2, 9, dtype=torch.long)
        am[0, 5:] = 0
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        was_training = self.model.training
        self.model.eval()
        try:
            a, _ = self.token_stats(ids, am, pos, am.clone(), with_entropy=False, packed=False)
            b, _ = self.token_stats(ids, am, pos, am.clone(), with_entropy=False, packed=True)
            err = (a - b).abs().max().item()
        except Exception as e:  # noqa: BLE001 - any failure means: do not pack
            log.warning("packed sequences unsupported (%s: %s); using padded micro-batches", type(e).__name__, e)
            return False
        finally:
            D.reshard_all(self.model)
            self.model.train(was_training)
        tol = 1e-3 if self.compute_dtype == torch.float32 else 5e-2
        if err > tol:
            impl = getattr(self.config, "_attn_implementation", "?")
            log.warning("packed sequences are not isolated by attn_implementation=%s (max |dlogp|=%.3g); "
                        "using padded micro-batches", impl, err)
            return False
        return True

    # ------------------------------------------------------------------ misc
    def parameters(self):
        return self.model.parameters()

    def to(self, device) -> None:
        self.model.to(device)


# [B, L] tensors that are not on the token axis: `select_rows(trim=True)` slices their rows only.
NON_TOKEN_2D = {"turn_rewards", "kl_objectives", "objective_scores"}


def select_rows(batch: Dict[str, Any], rows: Sequence[int], trim: bool = False) -> Dict[str, Any]:
    """Rows of a batch dict: per-row tensors (first dim B) and per-row lists are indexed, anything else is
    kept as it is. With `trim`, [B, L] token tensors are cut to the longest selected row (attention_mask)."""
    B, L = batch["input_ids"].shape[:2]
    idx = torch.as_tensor(list(rows), dtype=torch.long)
    width = L
    if trim and "attention_mask" in batch and len(rows):
        width = int(batch["attention_mask"][idx].sum(dim=1).max().item())
    out: Dict[str, Any] = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B:
            t = v.index_select(0, idx.to(v.device))
            if width < L and t.dim() >= 2 and v.shape[1] == L and k not in NON_TOKEN_2D:
                t = t[:, :width].contiguous()
            out[k] = t
        elif isinstance(v, list) and len(v) == B:
            out[k] = [v[i] for i in rows]
        else:
            out[k] = v
    return out
