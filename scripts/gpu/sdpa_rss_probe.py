"""GPU probe: host RSS of the actor's forward / backward passes (agent_rl.training.policy) over training-like steps,
with SDPA's cuDNN backend as the trainer sets it (off: agent_rl/model/attention.py) or forced back on (before the change).

    python3 scripts/gpu/sdpa_rss_probe.py --all $OUT/sdpa        # every mode, each in its own process (~5 min)

Needs torch and transformers (on the GPU host: after the bundle install, PYTHONPATH=$PWD:/tmp/site). A SmolLM2-135M-shaped random model (bf16 autocast, sdpa, padded
micro-batches: the GPU host has no flash_attn), 128 rows per step: old log-probs (budget 8192), reference log-probs
(16384), one update pass (8192, forward + backward). Modes LENGTHS:CUDNN[:masked], LENGTHS = kg (rows ~600-1700
tokens), arith (~550) or fixed (1600), CUDNN = default (as the trainer leaves it) or on, masked = padded rows with an
attention mask (before policy.causal_positions; now right-padded rows run causal attention without one). Prints the SDPA backend chosen for the first
attention call, then RSS per step and the distinct attention shapes seen so far.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


def make_model(path):
    from transformers import LlamaConfig, LlamaForCausalLM
    import torch
    if os.path.exists(os.path.join(path, "config.json")):
        return
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
                      tie_word_embeddings=True, rope_theta=100000.0, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(path)


def lengths_for(kind, rng, B):
    if kind == "kg":
        return [rng.randint(560, 610) + min(1100, max(40, int(rng.lognormvariate(5.8, 0.6)))) for _ in range(B)]
    if kind == "arith":
        return [rng.randint(470, 490) + rng.randint(60, 106) for _ in range(B)]
    if kind == "fixed":
        return [1600] * B
    raise ValueError(kind)


def run(args):
    import torch
    import torch.nn.functional as F
    from agent_rl.training.actor import compute_log_probs_with
    from agent_rl.training.microbatch import plan_micro_batches
    from agent_rl.training.policy import PolicyModel, select_rows

    shapes = set()
    seen_choice = {}
    orig = F.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False, **kw):
        shapes.add((tuple(q.shape), None if attn_mask is None else tuple(attn_mask.shape), torch.is_grad_enabled()))
        if not seen_choice:
            try:
                qq, kk, vv = q, k, v
                if q.is_cuda and torch.is_autocast_enabled("cuda"):   # the call itself runs on autocast's dtype
                    dt = torch.get_autocast_dtype("cuda")
                    qq, kk, vv = q.to(dt), k.to(dt), v.to(dt)
                c = torch._fused_sdp_choice(qq, kk, vv, attn_mask, dropout_p, is_causal, scale=scale, enable_gqa=enable_gqa)
                seen_choice["backend"] = str(torch.nn.attention.SDPBackend(c))
            except Exception as e:  # noqa: BLE001
                seen_choice["backend"] = f"? {type(e).__name__}: {e}"
            seen_choice.update(q=str(tuple(q.shape)), q_stride=str(q.stride()), k=str(tuple(k.shape)),
                               k_stride=str(k.stride()), mask=None if attn_mask is None else f"{attn_mask.dtype} {tuple(attn_mask.shape)}",
                               gqa=enable_gqa, causal=is_causal)
            print("sdpa:", json.dumps(seen_choice), flush=True)
        return orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                    enable_gqa=enable_gqa, **kw)

    F.scaled_dot_product_attention = sdpa
    if args.masked:   # the trainer before right-padded rows ran causal without a mask (policy.causal_positions)
        import agent_rl.training.policy as P
        P.causal_positions = lambda am, pos: None
    dev = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    policy = PolicyModel(args.model, dtype="bfloat16", mixed_precision=True, device=dev, remove_padding=True, trainable=True)
    if args.cudnn == "on":
        torch.backends.cuda.enable_cudnn_sdp(True)
    print(f"masked={args.masked} packing={policy.packing} cudnn={torch.backends.cudnn.version()} cudnn_sdp={torch.backends.cuda.cudnn_sdp_enabled()} "
          f"torch={torch.__version__}", flush=True)
    rng = random.Random(args.seed)
    opt = torch.optim.SGD(policy.model.parameters(), lr=0.0)
    B = args.rows
    print(f"start rss {rss_gb():.3f} GB", flush=True)
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        lens = lengths_for(args.lengths, rng, B)
        L = max(lens)
        ids = torch.randint(3, 49152, (B, L))
        am = torch.zeros(B, L, dtype=torch.long)
        lm = torch.zeros(B, L, dtype=torch.long)
        for i, n in enumerate(lens):
            am[i, :n] = 1
            lm[i, 580:n] = 1
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        batch = {"input_ids": ids, "attention_mask": am, "position_ids": pos, "loss_mask": lm}
        compute_log_probs_with(policy, batch, 1.0, 8192, with_entropy=False, positions="loss_mask")
        compute_log_probs_with(policy, batch, 1.0, 16384, with_entropy=False, positions="loss_mask")
        policy.model.train()
        for part in plan_micro_batches(lens, 8192):
            mb = select_rows(batch, part)
            lp, ent = policy.token_stats(mb["input_ids"], mb["attention_mask"], mb["position_ids"], mb["loss_mask"],
                                         1.0, with_entropy=True)
            (lp.sum() / 1e4 + ent.sum() * 0.0).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        print(json.dumps({"step": step, "rss_gb": round(rss_gb(), 3),
                          "maxrss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 3),
                          "s": round(time.perf_counter() - t0, 2), "shapes": len(shapes)}), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--all", default=None)
    ap.add_argument("--model", default="/tmp/smol-rand")
    ap.add_argument("--lengths", default="kg")
    ap.add_argument("--cudnn", default="default", choices=["default", "on"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rows", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--masked", action="store_true", help="padded rows with an attention mask (the trainer before 2026-12-02e)")
    ap.add_argument("--modes", default="kg:on:masked,kg:default:masked,kg:default,arith:default")
    args = ap.parse_args()
    if args.all:
        make_model(args.model)
        os.makedirs(args.all, exist_ok=True)
        for spec in args.modes.split(","):
            lengths, cudnn, *rest = spec.split(":")
            tag = spec.replace(":", "-")
            cmd = [sys.executable, __file__, "--model", args.model, "--lengths", lengths, "--cudnn", cudnn,
                   "--steps", str(args.steps), "--rows", str(args.rows)] + (["--masked"] if "masked" in rest else [])
            print(f"=== {spec}", flush=True)
            t0 = time.perf_counter()
            with open(os.path.join(args.all, f"{tag}.log"), "w") as f:
                p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                f.write(p.stdout)
            lines = p.stdout.strip().splitlines()
            keep = [l for l in lines if l.startswith(("sdpa:", "masked=", "start", "{"))]
            print("\n".join(keep[:4] + keep[-3:] if len(keep) > 8 else keep), flush=True)
            if p.returncode:
                print("\n".join(lines[-15:]))
            print(f"({time.perf_counter() - t0:.0f} s)", flush=True)
        return
    run(args)


if __name__ == "__main__":
    main()
