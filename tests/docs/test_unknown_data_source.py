"""A data_source without a reward function is an explicit decision (docs/tools.md, "Rewards for a new data_source"):
an error at the first scored trajectory, one line, unless a documented default is configured."""
import pytest

from agent_rl.config.load import ConfigError
from agent_rl.config.schema import RewardConfig
from agent_rl.tasks import REWARD_FNS, UnknownDataSourceError, compute_reward, register_reward, reward_fn_for
from agent_rl.rollout.trajectory import Trajectory, TurnRecord

MATHLIKE = {"data_source": "word_count", "ability": "math", "reward_model": {"style": "rule", "ground_truth": "6"}}


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    for name in ("word_count", "my_source"):
        REWARD_FNS.pop(name, None)


def traj(row, text="<answer>6</answer>"):
    t = Trajectory(uid="u", sample_index=0, row=row, prompt_ids=[1])
    t.turns = [TurnRecord(index=0, output_ids=[2], logprobs=[0.0], finish_reason="stop", text=text)]
    return t


def test_unknown_source_is_an_error_not_math():
    """It used to be scored by the arithmetic reward because the row said ability: math / had a string truth."""
    with pytest.raises(UnknownDataSourceError) as e:
        compute_reward(traj(MATHLIKE), RewardConfig())
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("no reward function for data_source 'word_count'")
    assert "(known: arith_synth, cwq, gsm8k, kg_synth, webqsp)" in msg
    assert "register_reward('word_count', fn)" in msg and "reward.default_reward=kg|arith|gsm8k|infer" in msg
    assert "reward.functions.word_count=package.module:function" in msg
    assert isinstance(e.value, ValueError)   # load_rows' check: the CLIs report it as a one-line config error
    with pytest.raises(UnknownDataSourceError):
        reward_fn_for({"data_source": "other", "ability": "kgqa", "reward_model": {"ground_truth": ["x"]}})


def test_the_shipped_sources_are_unchanged():
    assert reward_fn_for({"data_source": "gsm8k"}).__name__ == "arith_reward"
    assert reward_fn_for({"data_source": "arith_synth"}).__name__ == "arith_reward"
    for ds in ("kg_synth", "webqsp", "cwq"):
        assert reward_fn_for({"data_source": ds}).__name__ == "kg_reward"


def test_register_reward_for_the_new_source():
    register_reward("word_count", lambda t, cfg: (0.5, {"k": 1}))
    assert compute_reward(traj(MATHLIKE), RewardConfig()) == (0.5, {"k": 1.0})
    with pytest.raises(ValueError):
        register_reward("", lambda t, c: (0, {}))
    with pytest.raises(TypeError):
        register_reward("my_source", "not a function")


@pytest.mark.parametrize("name, expect", [("arith", "arith_reward"), ("kg", "kg_reward"), ("infer", "arith_reward")])
def test_configured_default(name, expect):
    assert reward_fn_for(MATHLIKE, name).__name__ == expect
    assert reward_fn_for({"data_source": "gsm8k"}, name).__name__ == "arith_reward"    # a registered source keeps its own
    if name != "kg":   # the arithmetic reward of "<answer>6</answer>" against ground truth "6"
        assert compute_reward(traj(MATHLIKE), RewardConfig(default_reward=name))[0] == 1.0


def test_default_infer_follows_ability_then_ground_truth_type():
    assert reward_fn_for({"data_source": "x", "ability": "kgqa"}, "infer").__name__ == "kg_reward"
    assert reward_fn_for({"data_source": "x", "reward_model": {"ground_truth": ["a"]}}, "infer").__name__ == "kg_reward"
    assert reward_fn_for({"data_source": "x", "reward_model": {"ground_truth": "3"}}, "infer").__name__ == "arith_reward"
    with pytest.raises(UnknownDataSourceError, match="the default 'infer' found no ability"):
        reward_fn_for({"data_source": "x", "reward_model": {"ground_truth": {"a": 1}}}, "infer")


def test_bad_default_names_the_key():
    from agent_rl.config.load import compose
    from agent_rl.orchestration.prepare import check_rewards

    with pytest.raises(ConfigError, match="reward.default_reward: 'math' is not one of kg, arith, gsm8k, infer"):
        check_rewards(compose(["reward.default_reward=math"], check_paths=False))     # part of check_files
    with pytest.raises(ValueError, match="reward.default_reward: 'math' is not one of kg, arith, gsm8k, infer"):
        reward_fn_for(MATHLIKE, "math")


def test_loader_check_refuses_the_rows_at_load(tmp_path):
    """`load_rows(check=reward_fn_for)` catches it before any rollout (docs/data.md)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from agent_rl.data.loader import load_rows

    row = dict(MATHLIKE, prompt=[{"role": "user", "content": "q"}], extra_info={"index": 0})
    path = str(tmp_path / "wc.parquet")
    pq.write_table(pa.Table.from_pylist([row]), path)
    assert len(load_rows(path)) == 1
    with pytest.raises(ValueError, match=r"wc.parquet row 0: no reward function for data_source 'word_count'"):
        load_rows(path, check=reward_fn_for)
