"""Every id of the model's generation_config `eos_token_id` (an int or a list, e.g. Llama 3's [128001, 128009]) ends a
turn: in the hf engine's stopping check, in the stop_token_ids sent to sglang, and in the agent loop (renderer)."""
import asyncio
import json
import os
import shutil

import pytest
import torch

from agent_rl.engines.base import GenerateOutput, SamplingParams, model_eos_token_ids
from agent_rl.engines.hf import HFEngine
from agent_rl.engines.sglang_engine import SGLangEngine, sampling_params_dict

ROW = {"prompt": [{"role": "user", "content": "hi"}]}
SEED = 1234   # the tiny random model's greedy output repeats one token: sample, with a fixed seed (same tokens each run)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _write(folder, name, data):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump(data, f)


def test_model_eos_token_ids_reads_int_list_and_both_files(tmp_path):
    assert model_eos_token_ids(None) == [] and model_eos_token_ids(str(tmp_path / "nope")) == []
    _write(tmp_path / "a", "generation_config.json", {"eos_token_id": [128001, 128009, 128001]})
    _write(tmp_path / "a", "config.json", {"eos_token_id": 128001})
    assert model_eos_token_ids(str(tmp_path / "a")) == [128001, 128009]
    _write(tmp_path / "b", "config.json", {"eos_token_id": 7, "text_config": {"eos_token_id": [7, 9]}})
    assert model_eos_token_ids(str(tmp_path / "b")) == [7, 9]
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "generation_config.json").write_text("{not json")
    _write(tmp_path / "c", "config.json", {"eos_token_id": None})
    assert model_eos_token_ids(str(tmp_path / "c")) == []


async def _sample(path, prompt, n, rid, **kw):
    eng = HFEngine(path, device="cpu", dtype=torch.float32, seed=0, num_threads=1)
    try:
        return eng, await eng.generate(prompt, SamplingParams(max_new_tokens=n, temperature=1.0, seed=SEED, **kw), rid)
    finally:
        await eng.shutdown()


@pytest.fixture(scope="module")
def chat_prompt(tokenizer):
    from agent_rl.rollout.chat import ChatRenderer

    return ChatRenderer(tokenizer, None).prompt_ids(ROW["prompt"])


@pytest.fixture(scope="module")
def two_eos_model(tiny_model_path, chat_prompt, tmp_path_factory):
    """The tiny model with generation_config eos_token_id = [2, X], X the first token its seeded output reaches at
    the third step or later and not before: (folder, the output up to X, X)."""
    _, free = asyncio.run(_sample(tiny_model_path, chat_prompt, 12, "free", ignore_eos=True))
    ids = free.output_ids
    k = next(i for i in range(2, len(ids)) if ids[i] not in ids[:i] and ids[i] != 2)
    x = ids[k]
    folder = str(tmp_path_factory.mktemp("two-eos") / "model")
    shutil.copytree(tiny_model_path, folder)
    with open(os.path.join(folder, "generation_config.json")) as f:
        gen = json.load(f)
    gen["eos_token_id"] = [2, x]
    _write(folder, "generation_config.json", gen)
    return folder, ids[:k + 1], x


async def test_hf_engine_stops_at_the_second_generation_config_eos(tiny_model_path, chat_prompt, two_eos_model):
    folder, expect, x = two_eos_model
    eng, out = await _sample(folder, chat_prompt, 12, "two")
    assert x in eng.eos_token_ids and 2 in eng.eos_token_ids
    assert out.finish_reason == "stop" and out.output_ids == expect and out.output_ids[-1] == x  # stop id included
    # the same model without the list runs on past it
    _, plain = await _sample(tiny_model_path, chat_prompt, len(expect) + 2, "plain")
    assert plain.output_ids[:len(expect)] == expect and len(plain.output_ids) == len(expect) + 2
    # ignore_eos (benchmarks) ignores it
    _, ign = await _sample(folder, chat_prompt, len(expect) + 2, "ign", ignore_eos=True)
    assert ign.finish_reason == "length" and len(ign.output_ids) == len(expect) + 2


async def test_agent_loop_ends_the_turn_at_a_generation_config_eos(tokenizer, two_eos_model):
    from agent_rl.config.schema import MultiTurnConfig
    from agent_rl.rollout.agent_loop import run_trajectory
    from agent_rl.rollout.chat import ChatRenderer
    from agent_rl.rollout.trajectory import Trajectory

    folder, _, x = two_eos_model
    renderer = ChatRenderer(tokenizer, None, model_path=folder)
    assert x in renderer.stop_token_ids and tokenizer.eos_token_id in renderer.stop_token_ids
    assert not renderer.turn_closed([5, x]) and renderer.turn_closed([5, tokenizer.convert_tokens_to_ids("<|im_end|>")])
    eng = HFEngine(folder, device="cpu", dtype=torch.float32, seed=0, num_threads=1)
    try:
        traj = Trajectory(uid="g", sample_index=0, row=ROW, prompt_ids=renderer.prompt_ids(ROW["prompt"]))
        traj = await run_trajectory(traj, eng, renderer, None, MultiTurnConfig(max_new_tokens_per_turn=64),
                                    SamplingParams(max_new_tokens=64, temperature=1.0, seed=SEED), "r")
    finally:
        await eng.shutdown()
    turn = traj.turns[0]
    assert turn.finish_reason == "stop" and turn.output_ids[-1] == x and x not in turn.output_ids[:-1]
    assert traj.stop_reason == "answer" and traj.response_ids == turn.output_ids
    assert turn.text == tokenizer.decode(turn.output_ids[:-1], skip_special_tokens=False)   # terminator not in the text


def test_sglang_sampling_params_carry_every_terminator():
    sp = SamplingParams(max_new_tokens=4, stop_token_ids=[128009, 5])
    d = sampling_params_dict(sp, [128001, 128009])
    assert d["stop_token_ids"] == [128009, 5, 128001]
    assert sampling_params_dict(SamplingParams(max_new_tokens=4), [128001, 128009])["stop_token_ids"] == [128001, 128009]
    # ignore_eos (benchmarks): the model's terminators are not added
    assert "stop_token_ids" not in sampling_params_dict(SamplingParams(max_new_tokens=4, ignore_eos=True), [128001])
    assert "stop_token_ids" not in sampling_params_dict(SamplingParams(max_new_tokens=4))


async def test_sglang_wrapper_sends_the_models_terminators(monkeypatch):
    import agent_rl.engines.sglang_engine as S

    seen = []

    class Fake:
        async def async_generate(self, input_ids, sampling_params, return_logprob, rid, **extra):
            seen.append(sampling_params)
            return {"output_ids": [128009], "meta_info": {"finish_reason": {"type": "stop", "matched": 128009},
                                                          "prompt_tokens": 1,
                                                          "output_token_logprobs": [(-0.1, 128009, None)]}}

    eng = SGLangEngine.wrap(Fake(), eos_token_ids=[128001, 128009])
    out = await eng.generate([1], SamplingParams(max_new_tokens=4, stop_token_ids=[7]), "a")
    assert isinstance(out, GenerateOutput) and out.finish_reason == "stop" and out.output_ids == [128009]
    assert seen[0]["stop_token_ids"] == [7, 128001, 128009]


def test_sglang_engine_reads_terminators_from_the_model_folder(tmp_path, monkeypatch):
    """__init__ takes the terminators from the folder before starting sglang (a stand-in sglang module here)."""
    import sys
    import types

    _write(tmp_path, "generation_config.json", {"eos_token_id": [128001, 128008, 128009]})
    started = {}

    class FakeSGL:
        def __init__(self, **kw):
            started.update(kw)

    fake = types.ModuleType("sglang")
    fake.Engine = FakeSGL
    sa = types.ModuleType("sglang.srt.server_args")

    import dataclasses

    @dataclasses.dataclass
    class ServerArgs:
        model_path: str = ""

    sa.ServerArgs = ServerArgs
    for name, mod in [("sglang", fake), ("sglang.srt", types.ModuleType("sglang.srt")), ("sglang.srt.server_args", sa)]:
        monkeypatch.setitem(sys.modules, name, mod)
    eng = SGLangEngine(str(tmp_path))
    assert eng.eos_token_ids == [128001, 128008, 128009] and started["skip_tokenizer_init"] is True
