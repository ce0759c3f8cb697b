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
