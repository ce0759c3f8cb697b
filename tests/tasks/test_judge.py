"""The LLM-as-judge reward (`agent_rl.tasks.judge:judge_reward`): against the real `agent-rl serve` of the tiny model
(conftest `served_tiny_model`), against small aiohttp servers that fail on purpose (timeouts, 500 then success,
malformed replies, a concurrency counter), and end to end through `agent-rl rollout`. It never raises: a failure is
the fallback score with `judge_failed` = 1."""
import asyncio
import json
import os
import subprocess
import sys
import urllib.request

import pytest
from aiohttp import web

from agent_rl.config.schema import JudgeConfig, RewardConfig
from agent_rl.rollout.trajectory import Trajectory, TurnRecord
from agent_rl.tasks import judge

LENGTH_PARSER = "def by_length(text):\n    return min(len(text), 10) / 10\n"


def traj(answer_text="The answer is <answer>Paris</answer>", question="Capital of France?", gt="Paris",
         source="judged_synth"):
    row = {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
           "data_source": source, "reward_model": {"style": "model", "ground_truth": gt}}
    t = Trajectory(uid="u", sample_index=0, row=row, prompt_ids=[1, 2])
    t.turns = [TurnRecord(index=0, output_ids=[3], logprobs=[0.0], finish_reason="stop", text=answer_text)]
    return t


def cfg(**judge_kw):
    base = dict(max_retries=2, backoff_s=0.01, timeout_s=5.0)
    base.update(judge_kw)
    return RewardConfig(functions={"judged_synth": "agent_rl.tasks.judge:judge_reward"}, judge=JudgeConfig(**base))


@pytest.fixture(autouse=True)
def fresh_cache():
    judge.clear_cache()
    yield
    judge.clear_cache()


class FakeJudge:
    """A tiny OpenAI-shaped server whose behaviour a test scripts: `replies` is a list of (status, body text, delay s)
    used in order (the last repeats). Records requests, headers and the most requests in flight at once."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests, self.headers = [], []
        self.in_flight = self.max_in_flight = 0

    async def handle(self, request):
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self.requests.append(await request.json())
            self.headers.append(dict(request.headers))
            status, body, delay = self.replies[min(len(self.requests) - 1, len(self.replies) - 1)]
            await asyncio.sleep(delay)
            return web.Response(status=status, text=body, content_type="application/json")
        finally:
            self.in_flight -= 1

    async def __aenter__(self):
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()


def completion(content):
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "finish_reason": "stop"}]})


OK7 = (200, completion("Score: 7"), 0.0)


def run(coro):
    return asyncio.run(coro)


# ---------------------------------------------------------------------------------------------- real server
def test_against_agent_rl_serve_with_a_length_parser(served_tiny_model, tmp_path):
    """The tiny model's text is random, so the score is its reply's length (capped at 10 chars, over 10): the judge
    must send the filled template and score exactly the reply a direct request for the same prompt gets."""
    (tmp_path / "parsers.py").write_text(LENGTH_PARSER)
    rc = cfg(base_url=served_tiny_model["url"] + "/v1", model="tiny", max_tokens=4,
             parser=f"{tmp_path}/parsers.py:by_length", prompt_template="Q: {question} A: {answer} Gold: {ground_truth}")
    score, comps = run(judge.judge_reward(traj(), rc))
    assert comps["judge_failed"] == 0 and comps["judge_attempts"] == 1 and comps["judge_cached"] == 0
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Q: Capital of France? A: Paris Gold: Paris"}],
            "max_tokens": 4, "temperature": 0.0}
    req = urllib.request.Request(served_tiny_model["url"] + "/v1/chat/completions", data=json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as r:
        reply = json.loads(r.read())["choices"][0]["message"]["content"]
    assert score == comps["judge_score"] == min(len(reply), 10) / 10
    assert comps["judge_latency_s"] > 0


def test_a_regex_that_never_matches_gives_the_fallback(served_tiny_model):
    rc = cfg(base_url=served_tiny_model["url"] + "/v1", max_tokens=4, score_regex=r"NEVER_EMITTED_(\d+)",
             fallback_score=0.25)
    before = judge.FAILURES["unparsed"]
    score, comps = run(judge.judge_reward(traj(), rc))
    assert score == 0.25 and comps["judge_failed"] == 1 and comps["judge_attempts"] == 1   # no retry for a parse
    assert judge.FAILURES["unparsed"] == before + 1


def test_an_unknown_model_name_is_a_failed_judgment_not_a_crash(served_tiny_model):
    rc = cfg(base_url=served_tiny_model["url"] + "/v1", model="gpt-4o", max_tokens=4)
    score, comps = run(judge.judge_reward(traj(), rc))
    assert (score, comps["judge_failed"], comps["judge_attempts"]) == (0.0, 1.0, 1.0)   # 404: not retried


# ---------------------------------------------------------------------------------------------- injected failures
def test_prompt_fields_model_temperature_and_api_key(monkeypatch):
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")

    async def main():
        async with FakeJudge([OK7]) as srv:
            rc = cfg(base_url=srv.base_url, model="judge-x", api_key_env="MY_JUDGE_KEY", system_prompt="Be fair.",
                     prompt_template='{"q": "{question}"} {response} | {answer} | {ground_truth} | {other}')
            out = await judge.judge_reward(traj(gt=["Paris", "Paname"]), rc)
            return out, srv

    (score, comps), srv = run(main())
    assert score == pytest.approx(0.7) and comps["judge_failed"] == 0
    (req,) = srv.requests
    assert req["model"] == "judge-x" and req["temperature"] == 0.0 and req["max_tokens"] == 32
    assert req["messages"] == [{"role": "system", "content": "Be fair."}, {"role": "user", "content":
                               '{"q": "Capital of France?"} The answer is <answer>Paris</answer> | Paris | '
                               'Paris | Paname | {other}'}]
    assert srv.headers[0]["Authorization"] == "Bearer sk-test-123"
    assert "sk-test-123" not in json.dumps(req)


@pytest.mark.parametrize("reply,expected", [("Score: 10", 1.0), ("**Score**: 4.5/10", 0.45), ("score=12", 1.0),
                                            ("Score: -3", 0.0)])
def test_scores_are_normalised(reply, expected):
    async def main():
        async with FakeJudge([(200, completion(reply), 0)]) as srv:
            return await judge.judge_reward(traj(), cfg(base_url=srv.base_url))

    score, comps = run(main())
    assert score == pytest.approx(expected) and comps["judge_failed"] == 0


def test_a_judge_that_times_out_gives_the_fallback_after_retries():
    async def main():
        async with FakeJudge([(200, completion("Score: 9"), 1.0)]) as srv:
            out = await judge.judge_reward(traj(), cfg(base_url=srv.base_url, timeout_s=0.2, max_retries=1,
                                                       fallback_score=0.1))
            return out, srv

    (score, comps), srv = run(main())
    assert score == 0.1 and comps["judge_failed"] == 1 and comps["judge_attempts"] == 2 and len(srv.requests) == 2
    assert comps["judge_latency_s"] < 2.5


def test_500_then_success_is_retried():
    async def main():
        async with FakeJudge([(500, '{"error": "busy"}', 0), (503, "overloaded", 0), OK7]) as srv:
            out = await judge.judge_reward(traj(), cfg(base_url=srv.base_url, max_retries=3))
            return out, srv

    (score, comps), srv = run(main())
    assert score == pytest.approx(0.7) and comps["judge_failed"] == 0 and comps["judge_attempts"] == 3
    assert len(srv.requests) == 3


def test_500_forever_ends_in_the_fallback():
    async def main():
        async with FakeJudge([(500, "down", 0)]) as srv:
            out = await judge.judge_reward(traj(), cfg(base_url=srv.base_url, max_retries=2, fallback_score=0.5))
            return out, srv

    (score, comps), srv = run(main())
    assert (score, comps["judge_failed"], comps["judge_attempts"], len(srv.requests)) == (0.5, 1.0, 3.0, 3)


@pytest.mark.parametrize("reply", [(200, "{not json", 0), (200, '{"choices": []}', 0),
                                   (200, '{"choices": [{"message": {"content": null}}]}', 0), (400, "bad", 0)])
def test_malformed_replies_and_client_errors_are_not_retried(reply):
    async def main():
        async with FakeJudge([reply, OK7]) as srv:
            out = await judge.judge_reward(traj(), cfg(base_url=srv.base_url, max_retries=3))
            return out, srv

    (score, comps), srv = run(main())
    assert (score, comps["judge_failed"], len(srv.requests)) == (0.0, 1.0, 1)


def test_nothing_listening_is_a_failed_judgment():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    score, comps = run(judge.judge_reward(traj(), cfg(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)))
    assert score == 0.0 and comps["judge_failed"] == 1 and comps["judge_attempts"] == 2


def test_a_bad_row_or_a_raising_parser_never_raises(tmp_path):
    (tmp_path / "p.py").write_text("def boom(text):\n    raise RuntimeError('parser bug')\n")

    async def main():
        async with FakeJudge([OK7]) as srv:
            a = await judge.judge_reward(traj(), cfg(base_url=srv.base_url, parser=f"{tmp_path}/p.py:boom"))
            broken = traj()
            broken.row = {"prompt": 5}
            b = await judge.judge_reward(broken, cfg(base_url=srv.base_url))
            return a, b

    (sa, ca), (sb, cb) = run(main())
    assert ca["judge_failed"] == 1 and sa == 0.0
    assert cb["judge_failed"] == 1 and sb == 0.0


# ---------------------------------------------------------------------------------------------- cache, concurrency
def test_identical_requests_are_answered_once():
    async def main():
        async with FakeJudge([OK7]) as srv:
            rc = cfg(base_url=srv.base_url)
            first = await judge.judge_reward(traj(), rc)
            second = await judge.judge_reward(traj(), rc)
            together = await asyncio.gather(*[judge.judge_reward(traj(gt="Lyon"), rc) for _ in range(4)])
            other = await judge.judge_reward(traj(gt="Nice"), rc)
            return first, second, together, other, srv

    first, second, together, other, srv = run(main())
    assert len(srv.requests) == 3           # Paris once, Lyon once (4 concurrent calls), Nice once
    assert first[1]["judge_cached"] == 0 and second[1]["judge_cached"] == 1 and second[1]["judge_attempts"] == 0
    assert second[0] == first[0] == pytest.approx(0.7)
    assert sorted(c["judge_cached"] for _, c in together) == [0, 1, 1, 1]
    assert other[1]["judge_cached"] == 0


def test_cache_off_asks_every_time():
    async def main():
        async with FakeJudge([OK7]) as srv:
            rc = cfg(base_url=srv.base_url, cache=False)
            for _ in range(2):
                await judge.judge_reward(traj(), rc)
            return srv

    assert len(run(main()).requests) == 2


def test_max_concurrency_caps_requests_in_flight():
    async def main():
        async with FakeJudge([(200, completion("Score: 5"), 0.15)]) as srv:
            rc = cfg(base_url=srv.base_url, max_concurrency=3)
            outs = await asyncio.gather(*[judge.judge_reward(traj(gt=f"g{i}"), rc) for i in range(10)])
            return outs, srv

    outs, srv = run(main())
    assert len(srv.requests) == 10 and all(c["judge_failed"] == 0 for _, c in outs)
    assert srv.max_in_flight == 3


# ---------------------------------------------------------------------------------------------- dispatch
def test_dispatch_awaits_the_async_judge():
    from agent_rl.tasks import compute_reward, compute_reward_async

    async def in_loop():
        async with FakeJudge([OK7]) as srv:
            rc = cfg(base_url=srv.base_url)
            out = await compute_reward_async(traj(), rc)
            with pytest.raises(RuntimeError, match="compute_reward_async"):
                compute_reward(traj(gt="x"), rc)     # a sync call inside a loop would block it: refused
            return out, srv.base_url

    (score, comps), url = run(in_loop())
    assert score == pytest.approx(0.7) and comps["judge_score"] == pytest.approx(0.7)
    # no loop running: the sync dispatch runs the coroutine itself (the reply is cached by now)
    score, comps = compute_reward(traj(), cfg(base_url=url))
    assert score == pytest.approx(0.7) and comps["judge_cached"] == 1


def test_the_scheduler_awaits_an_async_reward_fn():
    from agent_rl.rollout.scheduler import RolloutScheduler

    async def reward(t):
        await asyncio.sleep(0)
        return 0.5, {"x": 2}

    sched = RolloutScheduler(None, None, None, None, reward_fn=reward)
    sched._drift_left = 0
    t = traj()
    asyncio.run(sched._finalize(t))
    assert t.reward == 0.5 and t.reward_components == {"x": 2.0}


def test_a_trajectory_cut_while_being_judged_still_gets_its_reward():
    """The step cancels the task of a trajectory of a cut group; a finished trajectory must not keep reward 0 (it may
    be carried into the next step, which does not score finished trajectories again)."""
    from agent_rl.rollout.scheduler import RolloutScheduler

    async def slow_reward(t):
        await asyncio.sleep(0.3)
        return 0.75, {"judge_score": 0.75}

    async def main():
        sched = RolloutScheduler(None, None, None, None, reward_fn=slow_reward)
        sched._drift_left = 0
        t = traj()
        task = asyncio.ensure_future(sched._finalize(t))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.wait([task])
        return t, task

    t, task = asyncio.run(main())
    assert task.cancelled() and t.reward == 0.75 and t.reward_components == {"judge_score": 0.75}


def test_config_checks():
    from agent_rl.config.load import ConfigError, compose

    with pytest.raises(ConfigError, match="reward.judge.base_url"):
        compose(["reward.functions.s=agent_rl.tasks.judge:judge_reward"], check_paths=False)
    with pytest.raises(ConfigError, match="reward.judge.score_max"):
        compose(["reward.judge.score_max=0"], check_paths=False)
    with pytest.raises(ConfigError, match="reward.judge.score_regex"):
        compose(["reward.judge.score_regex=(unclosed"], check_paths=False)
    c = compose(["reward.functions.s=agent_rl.tasks.judge:judge_reward", "reward.judge.base_url=http://x/v1"],
                check_paths=False)
    assert c.reward.judge.temperature == 0.0 and c.reward.judge.api_key_env is None


# ---------------------------------------------------------------------------------------------- end to end
def test_agent_rl_rollout_scores_with_the_judge(served_tiny_model, tiny_model_path, tmp_path):
    """`agent-rl rollout` on a data source whose reward is the judge, pointing at the running `agent-rl serve`."""
    from agent_rl.data.parquet_io import write_rows

    (tmp_path / "parsers.py").write_text(LENGTH_PARSER)
    rows = [{"prompt": [{"role": "user", "content": f"Name a city, number {i}."}], "data_source": "judged_synth",
             "ability": "chat", "reward_model": {"style": "rule", "ground_truth": f"city {i}"},
             "extra_info": {"split": "train", "index": i}} for i in range(2)]
    write_rows(str(tmp_path / "train.parquet"), rows)
    health = lambda: json.loads(urllib.request.urlopen(served_tiny_model["url"] + "/health", timeout=30).read())
    served_before = health()["served"]
    out = tmp_path / "rollout.jsonl"
    cmd = [sys.executable, "-m", "agent_rl.cli.main", "rollout", "--out", str(out), "--show", "0",
           f"model.path={tiny_model_path}", "tools.config_path=null", f"data.train_files=[{tmp_path}/train.parquet]",
           f"data.val_files=[{tmp_path}/train.parquet]", "data.generate_if_missing=null", "rollout.n=2",
           "data.train_batch_size=2", "rollout.multi_turn.max_new_tokens_per_turn=8", "model.dtype=float32",
           "actor.ppo_mini_batch_size=2", "sft.steps=0",
           "reward.functions.judged_synth=agent_rl.tasks.judge:judge_reward",
           f"reward.judge.base_url={served_tiny_model['url']}/v1", "reward.judge.model=tiny", "reward.judge.max_tokens=4",
           f"reward.judge.parser={tmp_path}/parsers.py:by_length",
           "reward.judge.prompt_template='Grade: {answer}'"]   # quoted: braces are Hydra syntax
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    trajs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(trajs) == 4
    for t in trajs:
        c = t["reward_components"]
        assert c["judge_failed"] == 0 and 0 <= c["judge_score"] <= 1 and t["reward"] == c["judge_score"]
    misses = sum(1 for t in trajs if t["reward_components"]["judge_cached"] == 0)
    assert health()["served"] - served_before == misses >= 1   # every uncached judgment is one served completion


@pytest.mark.parametrize("reply,score", [("Yes.", 1.0), ("yes, it matches", 1.0), ("**Correct**", 1.0), ("True", 1.0),
                                         ("No, the student answer is not the same", 0.0), ("Incorrect.", 0.0),
                                         ("false", 0.0), ("The answer is yes", None), ("Yesterday", None), ("", None)])
def test_yes_no_parser(reply, score):
    assert judge.yes_no(reply) == score
    jc = JudgeConfig(parser="agent_rl.tasks.judge:yes_no")
    assert judge.parse_score(reply, jc) == score
