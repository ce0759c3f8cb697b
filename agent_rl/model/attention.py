"""Keep PyTorch's cuDNN attention backend out of the processes that run our own model forwards (the actor, the
reference, the `hf` engine).

`scaled_dot_product_attention`'s cuDNN backend builds one cuDNN graph per distinct call signature (batch, heads,
query / key lengths, strides, mask shape, forward or backward) and keeps every graph, with its compiled kernels, in a
per-thread cache that is never evicted (`MHAGraphCache` in aten/src/ATen/native/cudnn/MHA.cpp). Since torch 2.10 it
is SDPA's first choice on sm90 / sm100 (H100, H200, B200) once the runtime cuDNN is newer than 9.15.0
(`check_prefer_cudnn_attention` in aten/src/ATen/native/transformers/cuda/sdp_utils.cpp), which the cuDNN of the
torch 2.11 CUDA 13 wheels is. Our padded micro-batches are (rows, longest row) shaped, so almost every micro-batch of a
step is a shape never seen before: on an H200 the trainer worker's host RSS grew 0.3 GB a step on the KG task for
25 steps and was still growing at step 100 (23.6 GB), while the arithmetic task, whose rows all have about the same
length, stopped growing after about 40 steps (docs/training.md, "Host memory"). The `hf` engine's decode steps
(one more key position each step) would add a graph per step.

`avoid_cudnn_attention()` switches that backend off for the process (SDPA's backend switches are process-wide);
flash attention, the memory-efficient kernel (what runs with a padding mask) and the math fallback stay as they
were, and none of them caches per shape.
"""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def avoid_cudnn_attention() -> bool:
    """Switch SDPA's cuDNN backend off in this process. Returns True when it was on (and now is off)."""
    import torch

    cuda = getattr(torch.backends, "cuda", None)
    if cuda is None or not hasattr(cuda, "enable_cudnn_sdp") or not cuda.cudnn_sdp_enabled():
        return False
    cuda.enable_cudnn_sdp(False)
    log.info("scaled_dot_product_attention: cuDNN backend off (it caches a graph per shape, never evicted)")
    return True
