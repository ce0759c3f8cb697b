"""tools.max_failed_calls_per_step: a step whose tool backend is down stops the run (one line), counting only the
failures on the tool's side, with the real kg_query tool against a closed port."""
import socket
import types

import pytest

from agent_rl.orchestration.tool_health import ToolFailures, check_tool_failures, failed_calls
from agent_rl.tool_runtime.runtime import ToolRuntime
from tools.kg_query import KGQueryTool

SCHEMA = {"type": "function", "function": {"name": "kg_query", "description": "KG look-up", "parameters": {
    "type": "object", "properties": {"action": {"type": "string"}, "entity": {"type": "string"},
                                     "relation": {"type": "string"}}, "required": ["action", "entity"]}}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_backend_down_fails_the_step_after_n():
    url = f"http://127.0.0.1:{free_port()}"   # nothing listens there
    rt = ToolRuntime([KGQueryTool({"server_url": url, "connect_retries": 0, "request_timeout_s": 1}, SCHEMA)])
    kw = {"kg_query": {"create_kwargs": {"sample_id": "q1", "dataset": "tiny"}}}
    records = []
    async with rt.session("t", kw) as s:
        for _ in range(3):
            records.append(await s.call("kg_query", {"action": "get_relations_out", "entity": "Paris"}))
        records.append(await s.call("kg_query", {"entity": "Paris", "bogus": 1}))   # the model's mistake: not counted
    await rt.close()
    metrics = rt.metrics.snapshot()
    assert failed_calls(metrics) == {"exception": 3}
    traj = types.SimpleNamespace(turns=[types.SimpleNamespace(tool_calls=records)])
    check_tool_failures(4, metrics, [traj], limit=None)    # off by default
    check_tool_failures(4, metrics, [traj], limit=3)       # 3 is not more than 3
    with pytest.raises(ToolFailures) as e:
        check_tool_failures(4, metrics, [traj], limit=2)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("step 4: 3 tool calls failed on the tool's side (exception 3)")
    assert "tools.max_failed_calls_per_step=2" in msg and "kg_query:" in msg and url in msg
