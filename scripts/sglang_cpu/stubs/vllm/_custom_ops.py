"""CPU stand-in for the one vllm kernel sglang 0.5.17 falls back to off CUDA (`RotaryEmbedding`'s
`fallback_rotary_embedding`): rotary position embedding, in place, vllm's signature and layout (cos then sin along the
last dim of `cos_sin_cache`; the first `rot_dim` channels of each head rotate; neox halves or GPT-J pairs)."""
import torch


def rotary_embedding(positions, query, key, head_size, cos_sin_cache, is_neox):
    cos, sin = cos_sin_cache.index_select(0, positions.flatten()).chunk(2, dim=-1)
    rot = cos.shape[-1] * 2
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

    def apply(x):
        heads = x.view(x.shape[0], -1, head_size)
        part = heads[..., :rot].float()
        if is_neox:
            x1, x2 = part[..., : rot // 2], part[..., rot // 2:]
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        else:
            x1, x2 = part[..., 0::2], part[..., 1::2]
            out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        heads[..., :rot] = out.to(heads.dtype)

    apply(query)
    if key is not None:
        apply(key)
