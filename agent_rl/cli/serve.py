"""`agent-rl serve MODEL [--host H] [--port P] [--engine hf|sglang|auto]`: an OpenAI-compatible chat-completions
server over our engines, for a judge (`agent_rl.tasks.judge`) or a person to talk to any checkpoint.

MODEL is an HF folder, a checkpoint `global_step_N` (its `hf/` model) or `embedded`. The server logic is
`agent_rl/orchestration/serve.py`; docs/serve.md."""
from __future__ import annotations

import asyncio
import os
import sys

HELP = "Serve a model or checkpoint over an OpenAI-compatible chat-completions API (/v1/chat/completions)"


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="HF model folder, a checkpoint (global_step_N or its hf/ folder) or `embedded`")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port, printed at start)")
    parser.add_argument("--engine", choices=("auto", "hf", "sglang"), default="auto",
                        help="generation engine (default auto: sglang with CUDA and sglang installed, else hf)")
    parser.add_argument("--served-model-name", default=None, metavar="NAME",
                        help="model id of /v1/models and the `model` requests may name (default: MODEL as given)")
    parser.add_argument("--max-model-len", type=int, default=None, metavar="N",
                        help="context length, prompt + completion (default: the model's max_position_embeddings)")
    parser.add_argument("--default-max-tokens", type=int, default=1024, metavar="N",
                        help="max_tokens of a request that names none (default 1024, at most what the context leaves)")
    parser.add_argument("--max-batch-size", type=int, default=64, metavar="N", help="hf engine: rows decoded together (default 64)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.8, metavar="F",
                        help="sglang engine: fraction of GPU memory for weights + KV cache (default 0.8)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None,
                        help="weights dtype (default: bfloat16 on GPU, float32 on CPU)")
    parser.add_argument("--seed", type=int, default=None, help="engine seed (requests may still pass their own `seed`)")
    parser.add_argument("--drain-s", type=float, default=5.0, metavar="S",
                        help="on SIGINT / SIGTERM, seconds requests in flight may still finish (default 5)")


def run(args) -> int:
    def fail(msg: str) -> int:
        print(f"agent-rl serve: {msg}", file=sys.stderr)
        return 2

    if args.model != "embedded" and not os.path.isdir(args.model):
        return fail(f"MODEL: not found: {args.model} (an HF model folder, a checkpoint's global_step_N[/hf], or `embedded`)")
    from agent_rl.orchestration.serve import resolve_model_path

    path = resolve_model_path(args.model) if args.model != "embedded" else args.model
    if path != "embedded" and not os.path.isfile(os.path.join(path, "config.json")):
        return fail(f"MODEL: {args.model} has no config.json (nor hf/config.json): not a Hugging Face model folder or checkpoint")
    if not 0 <= args.port <= 65535:
        return fail(f"--port: must be in [0, 65535], got {args.port}")
    for key, value in (("--default-max-tokens", args.default_max_tokens), ("--max-batch-size", args.max_batch_size)):
        if value < 1:
            return fail(f"{key}: must be >= 1, got {value}")
    if args.max_model_len is not None and args.max_model_len < 2:
        return fail(f"--max-model-len: must be >= 2, got {args.max_model_len}")
    from agent_rl.engines import resolve_engine_kind

    if resolve_engine_kind(args.engine) == "sglang":
        import importlib.util

        import torch

        if not torch.cuda.is_available() or importlib.util.find_spec("sglang") is None:
            return fail("--engine sglang needs a CUDA device and the sglang package: --engine hf runs here")
    from agent_rl.orchestration.serve import serve

    try:
        return asyncio.run(serve(args.model, host=args.host, port=args.port, engine=args.engine,
                                 served_model_name=args.served_model_name, max_model_len=args.max_model_len,
                                 default_max_tokens=args.default_max_tokens, max_batch_size=args.max_batch_size,
                                 gpu_memory_utilization=args.gpu_memory_utilization, seed=args.seed, dtype=args.dtype,
                                 drain_s=args.drain_s, log=lambda m: print(m, flush=True)))
    except OSError as e:
        return fail(str(e))
