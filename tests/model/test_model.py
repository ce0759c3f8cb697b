import json
import os
import re

import pytest
import torch

from agent_rl.model import prepare
from agent_rl.rollout.parser import parse_tool_calls

TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic",
                                           "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                          "required": ["expression"]}}}]


def test_tiny_model_loads_and_runs(tiny_model_path, tokenizer):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, len(tokenizer)) and torch.isfinite(logits).all()
    assert model.config.pad_token_id == tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_special_tokens(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.chat_template == prepare.chat_template()
    # no BOS is added behind the template's back
    assert tokenizer("<|im_start|>user\nhi<|im_end|>")["input_ids"][0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_prepared_tokenizer_cleans_up_no_spaces(tokenizer):
    # transformers 5.12.1 (the GPU host's) converts the GGUF's tokenizer with space clean-up set; SmolLM2's own
    # tokenizer_config clears it, and so does every prepared folder
    from transformers import AutoTokenizer

    assert not tokenizer.clean_up_tokenization_spaces
    tok = AutoTokenizer.from_pretrained(prepare.tokenizer_dir())
    tok.clean_up_tokenization_spaces = True
    prepare._install_template(tok)
    assert not tok.clean_up_tokenization_spaces


def test_template_renders_tools_calls_and_responses_hermes_style(tokenizer):
    messages = [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "What is 17 * 23 and 2 + 2?"},
        {"role": "assistant", "content": "Computing.", "tool_calls": [
            {"type": "function", "function": {"name": "calculator", "arguments": {"expression": "17 * 23"}}},
            {"type": "function", "function": {"name": "calculator", "arguments": '{"expression": "2 + 2"}'}}]},
        {"role": "tool", "content": "391"},
        {"role": "tool", "content": "4"},
        {"role": "assistant", "content": "<answer>391 | 4</answer>"},
    ]
    text = tokenizer.apply_chat_template(messages, tools=TOOLS, tokenize=False)
    assert text.startswith("<|im_start|>system\nSYS\n\n# Tools\n")
    assert "<tools>\n" + json.dumps(TOOLS[0]) + "\n</tools>" in text
    assert ('<|im_start|>assistant\nComputing.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n'
            '</tool_call>\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2 + 2"}}\n</tool_call><|im_end|>\n') in text
    # consecutive tool messages share one user turn
    assert ("<|im_start|>user\n<tool_response>\n391\n</tool_response>\n<tool_response>\n4\n</tool_response><|im_end|>\n"
            "<|im_start|>assistant\n<answer>391 | 4</answer><|im_end|>\n") in text
    assert text.count("<|im_start|>") == 5
    # round trip: the rendered assistant turn parses back into the same calls
    turn = re.search(r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>", text, re.DOTALL).group(1)
    parsed = parse_tool_calls(turn)
    assert [(c.name, c.arguments) for c in parsed.calls] == [("calculator", {"expression": "17 * 23"}),
                                                             ("calculator", {"expression": "2 + 2"})]
    assert parsed.content == "Computing."


def test_template_without_tools_and_generation_prompt(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\n")
    with_tools = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=TOOLS, tokenize=False)
    assert with_tools.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools")


def test_completion_marker_versioned(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    assert not prepare.is_complete(str(d))
    (d / ".agent_rl_complete").write_text(json.dumps({"kind": "tiny"}))          # written by an older version
    assert not prepare.is_complete(str(d))
    prepare._mark_complete(str(d), {"kind": "tiny"})
    assert prepare.is_complete(str(d))


def test_install_dir_replaces_outdated_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    new = tmp_path / "new"
    new.mkdir()
    (new / "new.txt").write_text("new")
    prepare._mark_complete(str(new), {"kind": "x"})
    prepare._install_dir(str(new), str(out))
    assert sorted(os.listdir(out)) == [".agent_rl_complete", "new.txt"] and not new.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".old-")] == []


@pytest.mark.slow
def test_prepare_embedded_loads_and_generates():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = prepare.prepare_embedded(log=lambda *_: None)   # cached after the first run (~30 s to convert)
    assert prepare.is_complete(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == len(tok) == 49152
    assert tok.pad_token_id != tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    text = prepare.generate_check(folder, max_new_tokens=12)
    assert len(text.strip()) > 0
    # a trained instruct model, not noise: it answers a plain question with a relevant word
    ids = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                  add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False)
    assert "Paris" in tok.decode(out[0, len(ids):])


def test_random_model_shapes(tmp_path):
    from agent_rl.model.prepare import SHAPES, PrepareError, random_model_dir

    assert {"qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b"} <= set(SHAPES)
    with pytest.raises(PrepareError, match="unknown model shape 'qwen9'"):
        random_model_dir(str(tmp_path / "x"), "qwen9")
    folder = random_model_dir(str(tmp_path / "tiny"), "tiny")
    import json
    cfg = json.load(open(folder + "/config.json"))
    assert cfg["hidden_size"] == 64 and cfg["num_hidden_layers"] == 2 and cfg["vocab_size"] == 49152
    assert random_model_dir(folder, "tiny") == folder       # idempotent
