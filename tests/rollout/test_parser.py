import pytest

from agent_rl.rollout.formats import FORMATS, get_parser, parse_llama3_json, parse_mistral
from agent_rl.rollout.parser import extract_answer, parse_tool_calls


def test_single_call_and_content():
    text = 'Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "17 * 23"}}\n</tool_call>'
    r = parse_tool_calls(text)
    assert len(r.calls) == 1
    c = r.calls[0]
    assert c.ok and c.name == "calculator" and c.arguments == {"expression": "17 * 23"}
    assert r.content == "Let me compute."


def test_several_calls_whitespace_tolerant():
    text = ('<tool_call>{"name":"a","arguments":{"x":1}}</tool_call>\n\n'
            '<tool_call>\n\n   {"name": "b",\n "arguments": {"y": [1, 2]}}  \n</tool_call>done')
    r = parse_tool_calls(text)
    assert [c.name for c in r.calls] == ["a", "b"]
    assert r.calls[1].arguments == {"y": [1, 2]}
    assert all(c.ok for c in r.calls)
    assert r.content == "done"


def test_arguments_as_json_string_and_missing_and_fence():
    r = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"q\\": \\"hi\\"}"}</tool_call>'
                         '<tool_call>{"name": "g"}</tool_call>'
                         '<tool_call>```json\n{"name": "h", "arguments": {}}\n```</tool_call>')
    assert [(c.name, c.arguments, c.error) for c in r.calls] == [("f", {"q": "hi"}, None), ("g", {}, None), ("h", {}, None)]


def test_malformed_calls_have_errors():
    r = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": 1}</tool_call>'
                         '<tool_call>{"arguments": {}}</tool_call>'
                         '<tool_call>[1, 2]</tool_call>'
                         '<tool_call>{"name": "k", "arguments": [1]}</tool_call>'
                         '<tool_call>{"name": "s", "arguments": "not json"}</tool_call>'
                         '<tool_call>  </tool_call>')
    assert len(r.calls) == 6
    assert all(c.error and c.arguments is None for c in r.calls)
    assert r.calls[0].name == "f" and "invalid JSON" in r.calls[0].error
    assert "name" in r.calls[1].error
    assert "object" in r.calls[2].error
    assert r.calls[3].name == "k" and "arguments" in r.calls[3].error
    assert r.calls[4].name == "s"
    assert "empty" in r.calls[5].error


def test_unclosed_call_at_end_is_malformed():
    r = parse_tool_calls('ok <tool_call>{"name": "a", "arguments": {}}</tool_call> then <tool_call>\n{"name": "calc", "argu')
    assert len(r.calls) == 2
    assert r.calls[0].ok
    assert r.calls[1].error and "unclosed" in r.calls[1].error and r.calls[1].name == "calc"
    assert r.content == "ok  then"


def test_calls_inside_think_are_not_executed():
    text = ('<think>maybe <tool_call>{"name": "a", "arguments": {}}</tool_call></think>'
            '<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    assert [c.name for c in parse_tool_calls(text).calls] == ["b"]
    # unclosed think hides the rest
    assert parse_tool_calls('<think>x <tool_call>{"name": "a", "arguments": {}}</tool_call>').calls == []


def test_no_calls():
    r = parse_tool_calls("The answer is <answer>42</answer>")
    assert r.calls == [] and not r.has_calls and r.content == "The answer is <answer>42</answer>"


def test_extract_answer_last_wins_and_ignores_think():
    assert extract_answer("<answer> 1 </answer> then <answer>\n2\n</answer>") == "2"
    assert extract_answer("no answer") is None
    assert extract_answer("<answer>a | b</answer><think><answer>x</answer></think>") == "a | b"
    assert extract_answer("<answer></answer>") == ""


# ---------------------------------------------------------------- formats by name (agent_rl.rollout.formats)

# Per format: one call, two calls, one malformed call.
FORMAT_SAMPLES = {
    "hermes": {
        "single": '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>',
        "multi": '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call>\n'
                 '<tool_call>{"name": "search", "arguments": {"q": "x"}}</tool_call>',
        "malformed": '<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>',
    },
    "llama3_json": {
        "single": '{"name": "calculator", "parameters": {"expression": "2+3"}}',
        "multi": '<|python_tag|>{"name": "calculator", "parameters": {"expression": "2+3"}}; '
                 '{"name": "search", "parameters": {"q": "x"}}',
        "malformed": '{"name": "calculator", "parameters": {"expression": }',
    },
    "mistral": {
        "single": '[TOOL_CALLS][{"name": "calculator", "arguments": {"expression": "2+3"}}]',
        "multi": '[TOOL_CALLS][{"name": "calculator", "arguments": {"expression": "2+3"}}, '
                 '{"name": "search", "arguments": {"q": "x"}}]',
        "malformed": '[TOOL_CALLS][{"name": "calculator", "arguments": {"expression": }]',
    },
}


def test_every_registered_format_has_samples():
    assert set(FORMATS) == set(FORMAT_SAMPLES)
    assert get_parser(None) is get_parser("hermes") is parse_tool_calls  # the default


@pytest.mark.parametrize("fmt", sorted(FORMAT_SAMPLES))
def test_format_single_multi_malformed_and_no_call(fmt):
    parse, s = get_parser(fmt), FORMAT_SAMPLES[fmt]
    one = parse(s["single"])
    assert [(c.name, c.arguments, c.error) for c in one.calls] == [("calculator", {"expression": "2+3"}, None)]
    two = parse(s["multi"])
    assert [(c.name, c.arguments) for c in two.calls] == [("calculator", {"expression": "2+3"}), ("search", {"q": "x"})]
    assert all(c.ok for c in two.calls)
    bad = parse(s["malformed"])
    assert len(bad.calls) == 1 and not bad.calls[0].ok and bad.calls[0].arguments is None
    assert "invalid JSON" in bad.calls[0].error and bad.calls[0].name == "calculator"
    plain = parse("The answer is <answer>42</answer>")
    assert plain.calls == [] and plain.content == "The answer is <answer>42</answer>"


def test_llama3_json_tag_separators_list_and_content():
    r = parse_llama3_json('Let me look.<|python_tag|>{"name": "a", "parameters": {"x": 1}}<|eom_id|>')
    assert [(c.name, c.arguments) for c in r.calls] == [("a", {"x": 1})] and r.content == "Let me look."
    # `;`, `,` or a newline between calls; "arguments" accepted as well as "parameters"
    r = parse_llama3_json('{"name": "a", "parameters": {}};{"name": "b", "arguments": {"y": 2}},\n{"name": "c"}')
    assert [(c.name, c.arguments) for c in r.calls] == [("a", {}), ("b", {"y": 2}), ("c", {})]
    # one JSON list of calls; text after the last call is content
    r = parse_llama3_json('[{"name": "a", "parameters": {}}, {"name": "b", "parameters": {"q": "z"}}]\nchecking both')
    assert [c.name for c in r.calls] == ["a", "b"] and r.content == "checking both"
    # a call after thinking is parsed; one inside thinking is not
    r = parse_llama3_json('<think>maybe {"name": "x"}</think>\n{"name": "calc", "parameters": {"e": "1"}}')
    assert [c.name for c in r.calls] == ["calc"]
    assert parse_llama3_json('<think>{"name": "x", "parameters": {}}</think> no call').calls == []


def test_llama3_json_malformed_calls_are_parse_errors():
    # a broken first call does not hide the next one
    r = parse_llama3_json('{"name": "a", "parameters": {"x": 1}; {"name": "b", "parameters": {}}')
    assert [(c.name, c.ok) for c in r.calls] == [("a", False), ("b", True)]
    assert "invalid JSON" in r.calls[0].error
    # truncated by the token limit
    r = parse_llama3_json('{"name": "calc", "parameters": {"expression": "1 +')
    assert len(r.calls) == 1 and r.calls[0].name == "calc" and "invalid JSON" in r.calls[0].error
    # <|python_tag|> announces a call: whatever follows must be one
    assert "invalid JSON" in parse_llama3_json('<|python_tag|>brave_search.call(query="x")').calls[0].error
    assert "empty" in parse_llama3_json("<|python_tag|>").calls[0].error
    bad = parse_llama3_json('{"parameters": {}}; {"name": "k", "parameters": [1]}; [1]')
    assert [c.ok for c in bad.calls] == [False, False] and "name" in bad.calls[0].error
    assert "arguments" in bad.calls[1].error


def test_llama3_json_text_without_call():
    for text in ["5", "The result is {5}.", "[1, 2] are the numbers", "", "Call {\"name\": \"a\"} later"]:
        r = parse_llama3_json(text)
        assert r.calls == [] and r.content == text.strip()


def test_mistral_v11_calls_content_and_errors():
    r = parse_mistral('Sure.[TOOL_CALLS]calculator[ARGS]{"expression": "2+3"}[TOOL_CALLS]search[ARGS]{"q": "x"}')
    assert [(c.name, c.arguments) for c in r.calls] == [("calculator", {"expression": "2+3"}), ("search", {"q": "x"})]
    assert r.content == "Sure."
    r = parse_mistral('[TOOL_CALLS]f[CALL_ID]abc123XYZ[ARGS]{"a": 1}')
    assert [(c.name, c.arguments) for c in r.calls] == [("f", {"a": 1})]
    r = parse_mistral('[TOOL_CALLS]calculator[ARGS]{"expression": ')
    assert len(r.calls) == 1 and r.calls[0].name == "calculator" and "invalid JSON" in r.calls[0].error
    assert "empty" in parse_mistral("[TOOL_CALLS]").calls[0].error
    r = parse_mistral('[TOOL_CALLS][{"name": "a", "arguments": {}}, [2]] and then text')
    assert [c.ok for c in r.calls] == [True, False] and r.content == "and then text"


def test_dotted_path_format(tmp_path, monkeypatch):
    (tmp_path / "my_calls.py").write_text(
        "from agent_rl.rollout.parser import ParseResult, ParsedCall\n"
        "def parse(text):\n"
        "    if not text.startswith('CALL '):\n"
        "        return ParseResult(content=text)\n"
        "    name, _, arg = text[5:].partition(' ')\n"
        "    return ParseResult(calls=[ParsedCall(name, {'expression': arg}, text)])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parse = get_parser("my_calls:parse")
    assert [(c.name, c.arguments) for c in parse("CALL calculator 1+1").calls] == [("calculator", {"expression": "1+1"})]
    for name, msg in [("nosuch", "is not one of hermes, llama3_json, mistral"),
                      ("my_calls:missing", "has no attribute .missing."), ("no_such_module_xyz:f", "ModuleNotFoundError")]:
        with pytest.raises(ValueError, match=msg) as ei:
            get_parser(name)
        assert "\n" not in str(ei.value)
