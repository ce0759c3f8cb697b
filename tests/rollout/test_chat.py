import copy

import pytest

from agent_rl.rollout.chat import ChatRenderer, template_renders_tools
from agent_rl.rollout.parser import parse_tool_calls

TOOLS = [{"type": "function", "function": {"name": "calculator", "description": "Evaluate arithmetic",
                                           "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                                                          "required": ["expression"]}}}]

# A template that renders tools in its own way (not ours): the renderer must use it as is.
OTHER_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|im_start|>tool\n{{ m.content }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tok_with_template(tokenizer, template):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def _roll(renderer, user, turns, stopped_on_length=()):
    """Build the incremental token stream of a conversation whose assistant texts are tokenized normally.
    turns: list of (assistant_text, [tool contents] or None)."""
    messages = [{"role": "user", "content": user}]
    ids = renderer.prompt_ids(messages)
    for k, (text, tool_contents) in enumerate(turns):
        ended = k not in stopped_on_length
        ids += renderer.encode(text) + (renderer.end_of_turn_ids if ended else [])
        messages.append({"role": "assistant", "content": text})
        if tool_contents is not None:
            tool_msgs = [{"role": "tool", "content": c} for c in tool_contents]
            ids += renderer.observation_ids(tool_msgs, assistant_ended=ended)
            messages += tool_msgs
    return messages, ids


@pytest.mark.parametrize("system_prompt", [None, "You are a careful calculator user."])
def test_incremental_equals_full_render(tokenizer, system_prompt):
    r = ChatRenderer(tokenizer, TOOLS, system_prompt)
    a1 = 'I will compute it.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n</tool_call>'
    a2 = "Two more.<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"1+1\"}}</tool_call>" \
         "<tool_call>{\"name\": \"calculator\", \"arguments\": {\"expression\": \"2+2\"}}</tool_call>"
    a3 = "The result is <answer>391</answer>"
    messages, ids = _roll(r, "What is 17 * 23?", [(a1, ["391"]), (a2, ["2", "4\nwith newline "]), (a3, None)])
    assert r.drift(messages, ids) == 0
    assert ids == r.full_ids(messages)
    assert parse_tool_calls(a1).calls[0].arguments == {"expression": "17 * 23"}
    text = tokenizer.decode(ids)
    assert text.count("<tool_response>") == 3
    if system_prompt:
        assert system_prompt in text
    # ends right after the sampled end-of-turn token
    assert ids[-1] == r.end_of_turn_ids[-1]


def test_length_stopped_turn_gets_end_of_turn_prepended(tokenizer):
    r = ChatRenderer(tokenizer, TOOLS)
    obs_ended = r.observation_ids([{"role": "tool", "content": "x"}], assistant_ended=True)
    obs_cut = r.observation_ids([{"role": "tool", "content": "x"}], assistant_ended=False)
    assert obs_cut == r.end_of_turn_ids + obs_ended
    messages, ids = _roll(r, "q", [("partial <tool_call>{\"name\"", ["error: unclosed"]), ("done", None)],
                          stopped_on_length={0})
    assert r.drift(messages, ids) == 0


def test_observation_shape(tokenizer):
    r = ChatRenderer(tokenizer, TOOLS)
    text = tokenizer.decode(r.observation_ids([{"role": "tool", "content": "391"}, {"role": "tool", "content": "7"}]))
    assert text == ("\n<|im_start|>user\n<tool_response>\n391\n</tool_response>\n<tool_response>\n7\n</tool_response>"
                    "<|im_end|>\n<|im_start|>assistant\n")


def test_stop_ids_and_end_of_turn(tokenizer):
    r = ChatRenderer(tokenizer, TOOLS)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert r.end_of_turn_ids == [im_end]
    assert im_end in r.stop_token_ids and tokenizer.eos_token_id in r.stop_token_ids


def test_prompt_system_prompt_only_when_absent(tokenizer):
    r = ChatRenderer(tokenizer, None, "SYS-PROMPT")
    t1 = tokenizer.decode(r.prompt_ids([{"role": "user", "content": "hi"}]))
    assert t1.startswith("<|im_start|>system\nSYS-PROMPT<|im_end|>") and t1.endswith("<|im_start|>assistant\n")
    t2 = tokenizer.decode(r.prompt_ids([{"role": "system", "content": "OWN"}, {"role": "user", "content": "hi"}]))
    assert "OWN" in t2 and "SYS-PROMPT" not in t2


def test_tools_rendered(tokenizer):
    r = ChatRenderer(tokenizer, TOOLS)
    t = tokenizer.decode(r.prompt_ids([{"role": "user", "content": "hi"}]))
    assert '"name": "calculator"' in t and "<tools>" in t


def test_falls_back_to_project_template(tokenizer):
    plain = _tok_with_template(tokenizer, "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    assert not template_renders_tools(plain)
    r = ChatRenderer(plain, TOOLS)
    assert r.template_source == "project"
    assert "<tools>" in plain.decode(r.prompt_ids([{"role": "user", "content": "hi"}]))


def test_uses_model_template_that_renders_tools(tokenizer):
    other = _tok_with_template(tokenizer, OTHER_TEMPLATE)
    r = ChatRenderer(other, TOOLS)
    assert r.template_source == "model"
    assert other.decode(r.prompt_ids([{"role": "user", "content": "hi"}])).startswith("<|im_start|>system\nTOOLS: calculator")
    assert other.decode(r.observation_ids([{"role": "tool", "content": "5"}])) == \
        "\n<|im_start|>tool\n5<|im_end|>\n<|im_start|>assistant\n"
    messages, ids = _roll(r, "q", [("call", ["5"]), ("<answer>5</answer>", None)])
    assert r.drift(messages, ids) == 0


def test_drift_counts_differences(tokenizer):
    r = ChatRenderer(tokenizer, TOOLS)
    messages, ids = _roll(r, "q", [("a", ["5"]), ("b", None)])
    assert r.drift(messages, ids) == 0
    bad = list(ids)
    bad[-3] = bad[-3] + 1
    assert r.drift(messages, bad) == 1
    assert r.drift(messages, ids[:-2]) == 2
    # a re-tokenization that merges differently is detected: drop the "\n" after an end-of-turn
    eot = r.end_of_turn_ids[0]
    k = len(ids) - 1 - ids[::-1].index(eot, 1)  # an earlier end-of-turn
    assert r.drift(messages, ids[:k + 1] + ids[k + 2:]) > 0


TRIMMING_TEMPLATE = (
    "{% for t in tools or [] %}{{ t.function.name }}\n{% endfor %}{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'tool' %}{{ m.content | trim }}"
    "{% if m.content.startswith('ERR') %} (failed){% endif %}{% else %}{{ m.content }}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

CONTENTS = ["5", "  spaced  \n", "", "a {b} {{c}} 'q' \"d\"", "<tool_response>x</tool_response>", "ERR boom", "数字 ✓"]


@pytest.mark.parametrize("template", [None, TRIMMING_TEMPLATE])
def test_fast_observation_equals_rendering(tokenizer, template):
    """The substitution path gives exactly the two-render delta, for the project template and for a template that
    trims and branches on contents (which must fall back to rendering)."""
    tok = _tok_with_template(tokenizer, template) if template else tokenizer
    r = ChatRenderer(tok, TOOLS)
    for c in CONTENTS * 3:
        for msgs in ([{"role": "tool", "name": "calculator", "content": c}],
                     [{"role": "tool", "name": "calculator", "content": c}, {"role": "tool", "name": "kg", "content": c + "!"}]):
            assert r.observation_text(msgs) == r._render_observation([dict(m) for m in msgs])
    st = r._obs_templates
    if template is None:
        assert st.fast_calls > st.rendered_calls   # the project template is content-transparent
    else:
        assert st.fast_calls == 0                  # trim / startswith: the probes catch it, every call renders


def test_fast_observation_turns_off_on_a_mismatch(tokenizer):
    """A template transformation the probes miss is caught by the checked first real calls."""
    tok = _tok_with_template(tokenizer, TRIMMING_TEMPLATE.replace("startswith('ERR')", "startswith('zz-rare')"))
    tok.chat_template = tok.chat_template.replace("{{ m.content | trim }}", "{{ m.content }}")
    r = ChatRenderer(tok, TOOLS)
    msgs = [{"role": "tool", "name": "calculator", "content": "ok"}]
    assert r.observation_text(msgs) == r._render_observation(msgs) and r._obs_templates.fast_calls == 1
    rare = [{"role": "tool", "name": "calculator", "content": "zz-rare"}]
    assert r.observation_text(rare) == r._render_observation(rare)   # differs from substitution: detected, rendered
    assert r.observation_text(msgs) == r._render_observation(msgs)
    assert r._obs_templates.fast_calls == 1 and r._obs_templates.rendered_calls == 2


def test_observation_shapes_are_bounded(tokenizer):
    """Tool names come from the model's text (unknown tools), so a run meets ever new message shapes: the remembered
    shapes stop at `max_shapes` (each costs a few renders and stays for the run); later shapes render, exactly."""
    r = ChatRenderer(tokenizer, TOOLS)
    st = r._obs_templates
    default, st.max_shapes = getattr(st, "max_shapes", None), 4
    for i in range(40):
        msgs = [{"role": "tool", "name": f"invented_tool_{i}", "content": f"out {i}"}]
        assert r.observation_text(msgs) == r._render_observation([dict(m) for m in msgs])
    assert len(st._shapes) == 4 and len(st._checked) == 4 and st.rendered_calls == 36
    fast = st.fast_calls
    assert r.observation_text([{"role": "tool", "name": "invented_tool_0", "content": "again"}]).count("again") == 1
    assert st.fast_calls == fast + 1            # a remembered shape keeps its fast path
    assert default == 256


def test_decode_is_the_tokenizers_decode(tokenizer):
    """The agent loop decodes every turn with `ChatRenderer.decode` (the Rust backend where that is the same);
    special tokens are kept, as `tokenizer.decode(ids, skip_special_tokens=False)` keeps them."""
    import random

    r = ChatRenderer(tokenizer)
    assert r._fast_decode
    rng = random.Random(0)
    ids = r.encode("plain text, ünïcödé ✓ 数字  two spaces\n\nnew lines <tool_call>{\"a\": 1}</tool_call>")
    for seq in [ids, ids + r.end_of_turn_ids, [], r.stop_token_ids] + \
            [[rng.randrange(len(tokenizer)) for _ in range(rng.randrange(1, 64))] for _ in range(200)]:
        assert r.decode(seq) == tokenizer.decode(seq, skip_special_tokens=False)


def test_decode_falls_back_when_the_tokenizer_cleans_up_spaces(tokenizer):
    import copy

    text = 'x , y . {"a" : 1 } don \'t'
    ids = tokenizer.encode(text, add_special_tokens=False)
    tok = copy.deepcopy(tokenizer)
    # set but skipped for a BPE tokenizer (transformers 5.12.1's GGUF conversion leaves it so): the fast decode
    tok.clean_up_tokenization_spaces = True
    assert tok.decode(ids) == text and ChatRenderer(tok)._fast_decode
    # a tokenizer that does clean up spaces keeps transformers' decode (the probe text tells)
    tok.clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output = True
    assert tok.decode(ids) != text and not ChatRenderer(tok)._fast_decode


def test_prompt_and_full_ids_encoded_piecewise_are_the_whole_encodings(tokenizer):
    """`prompt_ids` / `full_ids` encode the texts between added tokens one by one (the system prompt with its tool
    list from a cache): the ids are exactly those of encoding the rendered text whole."""
    r = ChatRenderer(tokenizer, [{"type": "function", "function": {"name": "calculator", "description": "Evaluate.",
                                  "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}}}}])
    assert r._pieces.enabled
    questions = ["What is 17 * 23?", "  leading spaces\n\nand blank lines  ", "ünïcödé ✓ 数字 <tool_call>x</tool_call>",
                 "", "<|im_end|> inside", "tab\tend\\n"]
    for q in questions * 2:   # the second round reads the pieces from the cache
        msgs = [{"role": "user", "content": q}]
        assert r.prompt_ids(msgs) == r.encode(r.render(r.with_system(msgs), add_generation_prompt=True))
        conv = msgs + [{"role": "assistant", "content": "<tool_call>\n{\"name\": \"calculator\"}\n</tool_call>"},
                       {"role": "tool", "name": "calculator", "content": " 391 "}]
        assert r.full_ids(conv) == r.encode(r.render(r.with_system(conv), add_generation_prompt=True))
        tool_msgs = [{"role": "tool", "name": "calculator", "content": q}]
        assert r.observation_ids(tool_msgs) == r.encode(r.observation_text(tool_msgs))
    assert r._pieces.enabled and r._pieces.split_calls > r._pieces.verify_calls


def test_piecewise_encoding_turns_itself_off_on_a_difference(tokenizer):
    from agent_rl.rollout.split_encode import SplitEncoder

    enc = SplitEncoder(tokenizer)
    assert enc.enabled
    text = "<|im_start|>user\nhello<|im_end|>\n"
    enc._cache["user\nhello"] = [1, 2, 3]          # a wrong piece: the check against the whole encoding catches it
    assert enc.encode(text) == enc.whole(text) and not enc.enabled
    assert enc.encode(text) == enc.whole(text)


def test_piecewise_encoding_needs_plain_added_tokens(tokenizer):
    """An added token that eats its neighbours' whitespace makes the pieces depend on each other: no split."""
    import copy

    from tokenizers import AddedToken

    from agent_rl.rollout.split_encode import SplitEncoder

    tok = copy.deepcopy(tokenizer)
    tok.add_tokens([AddedToken("<strip_me>", lstrip=True, rstrip=True)])
    enc = SplitEncoder(tok)
    assert not enc.enabled
    text = "a  <strip_me>  b<|im_end|>"
    assert enc.encode(text) == tok.backend_tokenizer.encode(text, add_special_tokens=False).ids
