"""The rollout's CPU fast paths (docs/benchmarks-log.md, CPU cost of the rollout loop) change no trajectory: the same
scripted rollout with every one of them switched off and on gives the same token ids, loss masks, log-probs, texts,
tool calls, observations, stop reasons and drift."""
from agent_rl.config.schema import MultiTurnConfig, RolloutConfig
from agent_rl.rollout.chat import ChatRenderer
from agent_rl.rollout.scheduler import RolloutScheduler
from agent_rl.tool_runtime.base import BaseTool, ToolResponse
from agent_rl.tool_runtime.runtime import ToolRuntime
from rollout_fakes import ScriptedEngine

SCHEMA = {"type": "function", "function": {"name": "lookup", "description": "Look a value up.", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["key"],
    "properties": {"key": {"type": "string", "enum": ["a", "b", "c"]}, "n": {"type": "integer", "minimum": 0}}}}}

SCRIPTS = [  # per question, per turn
    ['<tool_call>\n{"name": "lookup", "arguments": {"key": "a", "n": 2}}\n</tool_call>', "<answer>A2</answer>"],
    ['<tool_call>{"name": "lookup", "arguments": {"key": "z"}}</tool_call>',            # refused by the schema
     '<tool_call>{"name": "lookup", "arguments": {"key": "b", "n": 2.0}}</tool_call>',  # 2.0: jsonschema's call
     "  <answer>B</answer>\n\n"],
    ['<tool_call>{"name": lookup}</tool_call> ünïcödé ✓  数字', "<answer>x</answer>"],  # malformed
    ['<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
     '<tool_call>{"name": "lookup", "arguments": {"key": "c", "extra": 1}}</tool_call>', "no answer " * 30],
]


class Lookup(BaseTool):
    async def execute(self, instance_id, arguments, **kw):
        return ToolResponse(text=f"  value of {arguments['key']}: {arguments.get('n', 0)} <|im_end|> \n"), 0.0, {}


def script(tokenizer):
    def answer(ids, rid):
        text = tokenizer.decode(ids)
        q = int(text.split("question ")[1].split(":")[0])
        turn = int(rid.rsplit("-t", 1)[1].split("-")[0])
        return SCRIPTS[q][min(turn, len(SCRIPTS[q]) - 1)]
    return answer


def strip(t):
    d = t.to_json()
    for k in ("start_time", "end_time"):
        d.pop(k)
    for turn in d["turns"]:
        turn.pop("gen_latency_s"), turn.pop("tool_latency_s")
        for c in turn["tool_calls"]:
            c.pop("latency_s")
    d["uid"] = d["uid"].split("-", 1)[1]
    return d


async def rollout(tokenizer, fast: bool):
    rt = ToolRuntime([Lookup({}, SCHEMA)], tokenizer=tokenizer, max_tool_response_tokens=64)
    renderer = ChatRenderer(tokenizer, rt.schemas, system_prompt="Use the tool.")
    if not fast:
        renderer._fast_decode = False
        renderer._pieces._split = None
        rt._validators["lookup"].fast = None
    else:
        assert renderer._fast_decode and renderer._pieces.enabled and rt._validators["lookup"].fast is not None
    cfg = RolloutConfig(n=2, progress_bar=False, max_model_len=4096, drift_checks_per_step=-1,
                        multi_turn=MultiTurnConfig(max_assistant_turns=3, max_new_tokens_per_turn=48))
    sched = RolloutScheduler(ScriptedEngine(tokenizer, script(tokenizer)), renderer, rt, cfg)
    rows = [{"prompt": [{"role": "user", "content": f"question {i}: what is it?"}], "data_source": "x",
             "reward_model": {"ground_truth": ""}, "extra_info": {"index": i}} for i in range(len(SCRIPTS))]
    out = []
    for step in range(2):   # the second step reads the prompt pieces from the cache
        res = await sched.run_step(rows, step=step)
        out += [strip(t) for t in sorted(res.trajectories, key=lambda t: t.id)]
    return out


async def test_fast_paths_change_no_trajectory(tokenizer):
    slow, fast = await rollout(tokenizer, False), await rollout(tokenizer, True)
    assert len(fast) == 2 * 2 * len(SCRIPTS)
    statuses = {c["status"] for t in fast for turn in t["turns"] for c in turn["tool_calls"]}
    assert {"ok", "invalid_arguments", "parse_error", "unknown_tool"} <= statuses
    assert {t["stop_reason"] for t in fast} >= {"answer", "max_new_tokens_per_turn"}
    assert all(t["drift"] is not None for t in fast)
    assert fast == slow
