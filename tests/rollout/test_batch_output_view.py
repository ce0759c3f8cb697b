"""build_batch layout, trajectory JSONL round trip, HTML view (escaping, turns, token colouring)."""
import json
import math

import pytest
import torch

import argparse

from agent_rl.cli import view as view_cli
from agent_rl.rollout.batch import build_batch
from agent_rl.rollout.output import read_trajectories, step_path, write_trajectories
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tool_runtime.record import ToolCallRecord
from agent_rl.rollout.view import render_html


def cli_main(argv):
    """`agent-rl view ...` through its module (the dispatcher imports every subcommand)."""
    parser = argparse.ArgumentParser()
    view_cli.add_arguments(parser)
    return view_cli.run(parser.parse_args(argv[1:]))


def make_traj(uid, k, prompt, turns, reward=0.0, turn_rewards=()):
    resp, mask, lps = [], [], []
    for t in turns:
        resp += t.output_ids + t.observation_ids
        mask += [1] * len(t.output_ids) + [0] * len(t.observation_ids)
        lps += t.logprobs + [0.0] * len(t.observation_ids)
    return Trajectory(uid=uid, sample_index=k, row={"prompt": [{"role": "user", "content": "q <b>&"}], "data_source": "kg_synth",
                                                    "reward_model": {"ground_truth": ["x"]}},
                      prompt_ids=prompt, response_ids=resp, loss_mask=mask, rollout_logprobs=lps, turns=list(turns),
                      reward=reward, turn_rewards=list(turn_rewards), status="finished", stop_reason="answer")


def T(i, out, obs=(), text="", calls=()):
    return TurnRecord(index=i, output_ids=list(out), logprobs=[-0.5 - j for j in range(len(out))], finish_reason="stop",
                      text=text, observation_ids=list(obs), tool_calls=list(calls))


def test_build_batch_layout():
    a = make_traj("g1", 0, [5, 6, 7], [T(0, [10, 11], [20, 21, 22]), T(1, [12])], reward=1.0, turn_rewards=[0.1, 0.2])
    b = make_traj("g1", 1, [5, 6], [T(0, [13])], reward=0.0, turn_rewards=[0.3])
    c = make_traj("g2", 0, [8], [], reward=0.5)
    batch = build_batch([a, b, c], pad_token_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "position_ids", "loss_mask", "rollout_logprobs", "turn_index",
                          "rewards", "turn_rewards", "group_index", "uids"}
    assert batch["input_ids"].shape == (3, 9)
    assert batch["input_ids"][0].tolist() == [5, 6, 7, 10, 11, 20, 21, 22, 12]
    assert batch["input_ids"][1].tolist() == [5, 6, 13, 0, 0, 0, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]
    assert batch["position_ids"][1].tolist() == [0, 1, 2, 0, 0, 0, 0, 0, 0]
    assert batch["position_ids"][0].tolist() == list(range(9))
    assert batch["loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 0, 0, 0, 1]
    assert batch["rollout_logprobs"][0].tolist() == [0, 0, 0, -0.5, -1.5, 0, 0, 0, -0.5]
    assert batch["turn_index"][0].tolist() == [-1, -1, -1, 0, 0, -1, -1, -1, 1]
    assert batch["turn_index"][2].tolist() == [-1] * 9
    assert batch["rewards"].tolist() == [1.0, 0.0, 0.5]
    tr = batch["turn_rewards"]
    assert tr.shape == (3, 2) and tr[0].tolist() == pytest.approx([0.1, 0.2]) and tr[1, 0].item() == pytest.approx(0.3)
    assert math.isnan(tr[1, 1].item()) and torch.isnan(tr[2]).all()
    assert batch["group_index"].tolist() == [0, 0, 1] and batch["uids"] == ["g1", "g1", "g2"]
    assert batch["input_ids"].dtype == torch.long and batch["rollout_logprobs"].dtype == torch.float32


def test_build_batch_rejects_inconsistent_turns():
    a = make_traj("g", 0, [1], [T(0, [10, 11])])
    a.response_ids[0] = 99
    with pytest.raises(ValueError):
        build_batch([a], pad_token_id=0)


def sample_trajs(tokenizer):
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    call = ToolCallRecord(name="kg_query", arguments={"entity": "<script>alert(1)</script>"},
                          observation="rel <i>&amp; x</i>", status="ok", latency_s=0.01)
    t0 = T(0, enc('<tool_call>{"name": "kg_query"}</tool_call>') + [2], enc("\nTOOL_OBS_MARK"),
           text='<tool_call>{"name": "kg_query"}</tool_call>', calls=[call])
    t1 = T(1, enc("<answer>x</answer>") + [2], text="<answer>x</answer>")
    tr = make_traj("g", 0, enc("PROMPT_MARK"), [t0, t1], reward=0.75, turn_rewards=[0.1, float("nan")])
    tr.reward_components = {"f1": 0.5, "format": 1.0}
    return [tr]


def test_jsonl_round_trip(tmp_path, tokenizer):
    trajs = sample_trajs(tokenizer)
    path = write_trajectories(step_path(str(tmp_path / "r"), 3), trajs, tokenizer=tokenizer, step=3)
    assert path.endswith("step_000003.jsonl")
    lines = open(path).read().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec == read_trajectories(path)[0]
    assert rec["id"] == "g/0" and rec["step"] == 3 and rec["reward"] == 0.75 and rec["turn_rewards"] == [0.1, None]
    assert rec["turns"][1]["text"] == "<answer>x</answer>"
    assert rec["turns"][0]["observation_text"] == "\nTOOL_OBS_MARK" and rec["prompt_text"] == "PROMPT_MARK"
    assert rec["response_ids"] == trajs[0].response_ids and rec["loss_mask"] == trajs[0].loss_mask


@pytest.mark.parametrize("with_tokenizer", [True, False])
def test_view_html(tmp_path, tokenizer, tokenizer_path, with_tokenizer):
    trajs = sample_trajs(tokenizer)
    path = write_trajectories(str(tmp_path / "t.jsonl"), trajs, tokenizer=tokenizer)
    out = tmp_path / "page.html"
    argv = ["view", path, "-o", str(out)] + (["--tokenizer", tokenizer_path] if with_tokenizer else [])
    assert cli_main(argv) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "rel &lt;i&gt;&amp;amp; x&lt;/i&gt;" in page
    assert "assistant turn 0" in page and "assistant turn 1" in page
    assert "&lt;answer&gt;x&lt;/answer&gt;" in page and "0.75" in page and "f1" in page
    assert 'class="tok m1"' in page and 'class="tok m0"' in page
    if with_tokenizer:  # one span per response token, coloured by its mask
        assert page.count('class="tok m1"') == sum(trajs[0].loss_mask)
        assert page.count('class="tok m0"') == len(trajs[0].loss_mask) - sum(trajs[0].loss_mask)
    assert "TOOL_OBS_MARK" in page and "PROMPT_MARK" in page


def test_view_without_text_fields_falls_back_on_messages(tokenizer):
    rec = json.loads(json.dumps(sample_trajs(tokenizer)[0].to_json()))
    page = render_html([rec])
    assert "q &lt;b&gt;&amp;" in page and 'class="tok m0"' in page and "rel &lt;i&gt;&amp;amp; x&lt;/i&gt;" in page


def test_view_missing_file(tmp_path):
    assert cli_main(["view", str(tmp_path / "nope.jsonl")]) == 2
    assert render_html([]).count("no trajectories") == 1
