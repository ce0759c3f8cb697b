"""Prompt hints that fade (`data.prompt_augmentation`, agent_rl/data/hints.py): schedule, per-row decisions, where
the hint goes, the tasks' texts, config errors, metrics, the viewer, and the trainer's use of them (stubbed)."""
import math
import types

import pytest
import yaml

from agent_rl.config.load import ConfigError, compose
from agent_rl.data.hints import (FLAG, PREFIX, PromptHints, hint_prob, insert_hint, is_hinted, row_draw)
from agent_rl.data.loader import PromptLoader
from agent_rl.tasks.arith.rows import math_prompt
from agent_rl.tasks.kg.rows import kg_prompt
from agent_rl.orchestration.traj_metrics import hint_metrics
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.tasks.registry import TASKS, task_hints


def _pa(**kw):
    base = dict(enable=True, guideline_level="concise", hint_text=None, hint_steps=10, start_prob=1.0,
                decay="linear", apply_to_val=False, seed=None)
    base.update(kw)
    return types.SimpleNamespace(**base)


def _kg_row(i, system=False):
    prompt = kg_prompt(f"Who directed film {i}?", [f"Film {i}"])
    if system:
        prompt = [{"role": "system", "content": "You are careful."}] + prompt
    return {"prompt": prompt, "data_source": "kg_synth", "ability": "kgqa",
            "reward_model": {"style": "rule", "ground_truth": ["X"]}, "extra_info": {"index": i}}


# ---------------------------------------------------------------------------------------------------- schedule
def test_linear_schedule_hand_computed():
    assert hint_prob(0, 0.8, 10, "linear") == pytest.approx(0.8)
    assert hint_prob(5, 0.8, 10, "linear") == pytest.approx(0.4)          # halfway: start_prob / 2
    assert hint_prob(9, 0.8, 10, "linear") == pytest.approx(0.08)
    assert hint_prob(10, 0.8, 10, "linear") == 0.0 and hint_prob(500, 0.8, 10, "linear") == 0.0


def test_cosine_and_step_schedules_hand_computed():
    assert hint_prob(0, 1.0, 10, "cosine") == pytest.approx(1.0)
    assert hint_prob(5, 1.0, 10, "cosine") == pytest.approx(0.5)
    assert hint_prob(2, 1.0, 10, "cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))   # 0.9045
    assert hint_prob(2, 1.0, 10, "cosine") == pytest.approx(0.904508, abs=1e-6)
    assert hint_prob(10, 1.0, 10, "cosine") == 0.0
    assert [hint_prob(t, 0.6, 3, "step") for t in range(5)] == [0.6, 0.6, 0.6, 0.0, 0.0]   # KG-R1's cut


def test_zero_hint_steps_never_fades():
    for decay in ("linear", "cosine", "step"):
        assert [hint_prob(t, 0.7, 0, decay) for t in (0, 1, 200, 10 ** 6)] == [0.7] * 4


def test_unknown_decay_is_an_error():
    with pytest.raises(ValueError, match="decay 'exp' is not one of linear, cosine, step"):
        hint_prob(0, 1.0, 10, "exp")


# ---------------------------------------------------------------------------------------------------- decisions
def test_row_draw_is_deterministic_and_keyed_on_seed_step_index_split():
    assert row_draw(1, 3, 7) == row_draw(1, 3, 7)
    draws = {row_draw(1, 3, 7), row_draw(2, 3, 7), row_draw(1, 4, 7), row_draw(1, 3, 8), row_draw(1, 3, 7, "val")}
    assert len(draws) == 5 and all(0.0 <= d < 1.0 for d in draws)
    share = sum(row_draw(0, 1, i) < 0.3 for i in range(4000)) / 4000       # uniform: the share follows p
    assert 0.27 < share < 0.33


def test_decisions_follow_the_probability():
    h = PromptHints(texts={"kg_synth": "look it up"}, start_prob=1.0, hint_steps=4, decay="linear", seed=5)
    assert all(h.decide(0, i) for i in range(200))                    # p = 1
    assert not any(h.decide(4, i) for i in range(200))                # p = 0
    half = [h.decide(2, i) for i in range(400)]                       # p = 0.5
    assert half == [row_draw(5, 2, i) < 0.5 for i in range(400)] and 150 < sum(half) < 250


# ---------------------------------------------------------------------------------------------------- the prompt
def test_hint_goes_before_the_last_question_marker_once_and_nothing_else_changes():
    row = _kg_row(3, system=True)
    original = [dict(m) for m in row["prompt"]]
    h = PromptHints(texts={"kg_synth": "Start with get_relations_out."}, anchors={"kg_synth": "Question:"}, seed=0)
    out = h.apply(row, 0, 3)
    assert row["prompt"] == original and FLAG not in row["extra_info"]          # the data row is left alone
    assert out["extra_info"] == {"index": 3, FLAG: True} and is_hinted(out) is True
    assert out["prompt"][0] == original[0]                                       # system prompt unchanged
    user = out["prompt"][-1]["content"]
    block = PREFIX + "Start with get_relations_out.\n\n"
    assert user.count(PREFIX) == 1 and user.count(block) == 1
    # the worked example also says "Question:"; the hint sits right before the row's own question
    assert user.index(block) + len(block) == user.rindex("Question:")
    assert user.replace(block, "") == original[-1]["content"]


def test_unhinted_row_keeps_its_prompt_and_gets_the_flag():
    h = PromptHints(texts={"kg_synth": "t"}, start_prob=0.0, hint_steps=0, seed=0)
    row = _kg_row(1)
    out = h.apply(row, 0, 1)
    assert out["prompt"] == row["prompt"] and out["extra_info"][FLAG] is False and is_hinted(out) is False
    assert is_hinted(row) is None


def test_without_anchor_the_hint_starts_the_last_user_message():
    msgs = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
            {"role": "user", "content": "second question"}]
    out = insert_hint(msgs, "  be brief ", anchor="Question:")
    assert out[-1]["content"] == "[Hint]: be brief\n\nsecond question" and out[:2] == msgs[:2]
    with pytest.raises(ValueError, match="no user message"):
        insert_hint([{"role": "system", "content": "s"}], "x")


def test_validation_rows_untouched_unless_apply_to_val():
    row = _kg_row(0)
    off = PromptHints(texts={"kg_synth": "t"}, start_prob=1.0, hint_steps=0, seed=0)
    assert off.apply(row, 0, 0, split="val") is row
    on = PromptHints(texts={"kg_synth": "t"}, start_prob=1.0, hint_steps=0, seed=0, apply_to_val=True)
    assert is_hinted(on.apply(row, 0, 0, split="val")) is True


# ---------------------------------------------------------------------------------------------------- the tasks' texts
def test_task_texts_levels_and_anchors():
    for name in ("kg", "arith", "gsm8k"):
        texts, anchor = task_hints(TASKS[name].data_sources[0])
        assert set(texts) == {"concise", "detailed"} and all(t.strip() for t in texts.values())
        assert anchor
    assert task_hints("my_own_source") == ({}, None)
    # the anchor is the question marker of the prompts the tasks really write
    kg_anchor, math_anchor = TASKS["kg"].hint_anchor, TASKS["arith"].hint_anchor
    assert kg_prompt("q?", ["E"])[-1]["content"].rfind(kg_anchor) > 0
    assert math_prompt("2+2?")[-1]["content"].rfind(math_anchor) > 0


def test_kg_hints_name_only_real_actions_of_the_tool():
    with open("configs/tool_config/kg_query_tool_config.yaml") as f:
        fn = yaml.safe_load(f)["tools"][0]["tool_schema"]["function"]
    actions = set(fn["parameters"]["properties"]["action"]["enum"])
    import re

    for text in task_hints("kg_synth")[0].values():
        assert fn["name"] in text
        named = set(re.findall(r"get_(?:relations|entities)_\w+", text))
        assert named and named <= actions, named - actions
        assert {"get_relations_out", "get_entities_out"} <= named


def test_from_config_resolves_texts_and_refuses_what_it_cannot_serve():
    rows = [_kg_row(0), {**_kg_row(1), "data_source": "webqsp"}]
    h = PromptHints.from_config(_pa(guideline_level="detailed", seed=9), rows, task_hints, seed=1)
    assert h.texts["webqsp"] == task_hints("kg_synth")[0]["detailed"] and h.anchors["kg_synth"] == "Question:"
    assert h.seed == 9 and PromptHints.from_config(_pa(), rows, task_hints, seed=1).seed == 1
    with pytest.raises(ValueError, match=r"^guideline_level: 'verbose' is not a hint level of data_source 'kg_synth' "
                                         r"\(one of concise, detailed\)$"):
        PromptHints.from_config(_pa(guideline_level="verbose"), rows, task_hints, seed=1)
    toy = [{**_kg_row(0), "data_source": "toy"}]
    with pytest.raises(ValueError, match="^hint_text: data_source 'toy' belongs to no task with hint texts"):
        PromptHints.from_config(_pa(), toy, task_hints, seed=1)
    assert PromptHints.from_config(_pa(hint_text="mine"), toy, task_hints, seed=1).texts == {"toy": "mine"}
    no_user = [{**_kg_row(0), "prompt": [{"role": "system", "content": "s"}]}]
    with pytest.raises(ValueError, match="^enable: row 0 .* has no user message"):
        PromptHints.from_config(_pa(), no_user, task_hints, seed=1)


# ---------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("override, message", [
    ("data.prompt_augmentation.decay=exp", "data.prompt_augmentation.decay: 'exp' is not one of linear, cosine, step"),
    ("data.prompt_augmentation.start_prob=1.5", "data.prompt_augmentation.start_prob: must be in [0, 1], got 1.5"),
    ("data.prompt_augmentation.start_prob=-0.1", "data.prompt_augmentation.start_prob: must be in [0, 1], got -0.1"),
    ("data.prompt_augmentation.hint_steps=-1",
     "data.prompt_augmentation.hint_steps: must be >= 0 (0 = never fades), got -1"),
    ("data.prompt_augmentation.hint_text=' '", "data.prompt_augmentation.hint_text: must be a non-empty text"),
    ("data.prompt_augmentation.guideline_level=''", "data.prompt_augmentation.guideline_level: must name a hint level"),
    ("data.prompt_augmentation.hint_steps=many", "data.prompt_augmentation.hint_steps:"),
    ("data.prompt_augmentation.hint_step=5", "data.prompt_augmentation.hint_step: unknown config key, did you mean "
                                             "data.prompt_augmentation.hint_steps?"),
])
def test_bad_config_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        compose([override], check_paths=False)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_config_defaults():
    pa = compose([], check_paths=False).data.prompt_augmentation
    assert (pa.enable, pa.guideline_level, pa.hint_text, pa.hint_steps, pa.start_prob, pa.decay, pa.apply_to_val,
            pa.seed) == (False, "concise", None, 200, 1.0, "linear", False, None)
    pa = compose(["data.prompt_augmentation.enable=true", "data.prompt_augmentation.decay=step",
                  "data.prompt_augmentation.hint_steps=0"], check_paths=False).data.prompt_augmentation
    assert pa.enable and pa.decay == "step" and pa.hint_steps == 0


# ---------------------------------------------------------------------------------------------------- metrics, view
def _traj(uid, i, reward, hinted):
    row = {"data_source": "kg_synth", "extra_info": {} if hinted is None else {FLAG: hinted}}
    return Trajectory(uid=uid, sample_index=i, row=row, prompt_ids=[1], reward=reward)


def test_hint_metrics_split_groups_and_rewards():
    trajs = [_traj("a", 0, 1.0, True), _traj("a", 1, 0.5, True), _traj("b", 0, 0.0, True),
             _traj("c", 0, 0.0, False), _traj("c", 1, 0.0, False), _traj("c", 2, 0.3, False)]
    m = hint_metrics(trajs)     # share of groups (rows), not of trajectories (that would be 1/2)
    assert m == {"hints/share": pytest.approx(2 / 3), "reward/hinted": pytest.approx(0.5),
                 "reward/unhinted": pytest.approx(0.1)}
    only = hint_metrics(trajs[:3])
    assert only == {"hints/share": 1.0}                                   # one kind: no reward split
    assert hint_metrics([_traj("d", 0, 1.0, None)]) == {}                 # hints off
    assert set(hint_metrics(trajs, prefix="val/")) == {"val/hints/share", "val/reward/hinted", "val/reward/unhinted"}


def test_viewer_shows_the_flag():
    from agent_rl.rollout.output import trajectory_record
    from agent_rl.rollout.view import render_html

    recs = [trajectory_record(_traj("a", 0, 1.0, True)), trajectory_record(_traj("b", 0, 0.0, False))]
    assert recs[0]["row"]["extra_info"][FLAG] is True
    page = render_html(recs)
    assert page.count("hint <b>yes</b>") == 1 and page.count("hint <b>no</b>") == 1
    assert "hinted prompts 1 of 2" in page
    assert "hint <b>" not in render_html([trajectory_record(_traj("c", 0, 1.0, None))])


# ---------------------------------------------------------------------------------------------------- in the trainer
def _stub_trainer(rows, hints, seed=3):
    from agent_rl.orchestration.train_data import TrainData
    from agent_rl.orchestration.trainer import Trainer

    tr = Trainer.__new__(Trainer)
    tr.data = TrainData(PromptLoader(rows, batch_size=1, shuffle=True, seed=seed), [],
                        types.SimpleNamespace(ok=lambda row: True), hints)
    return tr


def test_trainer_draws_hint_each_row_by_its_position_and_a_resume_replays_them():
    rows = [_kg_row(i) for i in range(10)]
    hints = PromptHints(texts={"kg_synth": "look"}, anchors={"kg_synth": "Question:"}, start_prob=1.0, hint_steps=4,
                        seed=11)
    a = _stub_trainer(rows, hints)
    step1 = a._take_rows(4, step=1)
    assert all(is_hinted(r) for r in step1)                              # t = 0: p = 1
    state = a.data.loader.state_dict()
    step2 = a._take_rows(4, step=2)                                      # t = 1: p = 0.75
    b = _stub_trainer(rows, hints)
    b.data.loader.load_state_dict(state)
    assert b._take_rows(4, step=2) == step2                              # a resumed run replays the same choices
    for r in step2:
        i = r["extra_info"]["index"]                                    # row i sits at position i of the data
        assert is_hinted(r) == (row_draw(11, 1, i) < 0.75)
        assert r["prompt"][-1]["content"].count(PREFIX) == int(is_hinted(r))
    assert all(FLAG not in r["extra_info"] and PREFIX not in r["prompt"][-1]["content"] for r in rows)


def test_trainer_validation_rows_get_no_hint_unless_apply_to_val():
    rows = [_kg_row(i) for i in range(3)]
    sent = []

    class Group:
        def call_each(self, method, args):
            sent.extend(r for part, _step in args for r in part)
            return [([], {}) for _ in args]

    for apply_to_val in (False, True):
        sent.clear()
        tr = _stub_trainer(rows, PromptHints(texts={"kg_synth": "t"}, start_prob=1.0, hint_steps=0, seed=0,
                                             apply_to_val=apply_to_val))
        tr.data.val_rows, tr.group, tr.world_size, tr.step = rows, Group(), 1, 0
        tr.cfg = types.SimpleNamespace(data=types.SimpleNamespace(val_batch_size=8))
        assert tr.validate() == {}
        if apply_to_val:
            assert [is_hinted(r) for r in sent] == [True] * 3
        else:
            assert sent == rows and all(is_hinted(r) is None for r in sent)


def test_trainer_reports_an_unknown_level_as_a_config_error():
    from agent_rl.orchestration.train_data import _load_hints

    cfg = compose(["data.prompt_augmentation.enable=true", "data.prompt_augmentation.guideline_level=verbose"],
                  check_paths=False)
    with pytest.raises(ConfigError, match=r"^data\.prompt_augmentation\.guideline_level: 'verbose' is not a hint "
                                          r"level of data_source 'kg_synth'"):
        _load_hints(cfg, [_kg_row(0)], [])
    cfg.data.prompt_augmentation.enable = False
    assert _load_hints(cfg, [_kg_row(0)], []) is None
