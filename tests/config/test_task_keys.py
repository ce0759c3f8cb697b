"""The config keys a task adds to a section (`Task.config`): the KG task's `tools.kg_server_url`, `tools.kg_store`,
`reward.kg_answer_metric`, ... and the arithmetic task's `reward.arith_format_weight` keep their spelling on the
command line, in YAML and in code (`cfg.tools.kg_store`), are checked like the framework's keys, survive pickling
into another process (Ray workers) and are in docs/config.md; agent_rl/config/schema.py does not define them."""
import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
from omegaconf import OmegaConf

from agent_rl.config import docs
from agent_rl.config.load import ConfigError, compose, default_config, section_class, to_yaml, validate
from agent_rl.config.schema import RewardConfig, ToolsConfig
from agent_rl.tasks import registry

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OLD_KEYS = {   # what users, the example scripts and scripts/gpu/pipeline.sh pass
    "tools.kg_server_url": ("http://127.0.0.1:8011", "http://127.0.0.1:8011"),
    "tools.kg_server_autostart": ("false", False),
    "tools.kg_store": ("null", None),
    "reward.kg_answer_metric": ("hits1", "hits1"),
    "reward.kg_answer_weight": ("2.0", 2.0),
    "reward.kg_format_weight": ("0.3", 0.3),
    "reward.kg_validity_weight": ("0.4", 0.4),
    "reward.kg_validity_cap": ("3", 3),
    "reward.kg_retrieval_weight": ("0.5", 0.5),
    "reward.arith_format_weight": ("0.1", 0.1),
}


def _get(cfg, key):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_old_keys_set_the_values_code_reads():
    cfg = compose([f"{k}={v}" for k, (v, _) in OLD_KEYS.items()], check_paths=False)
    for key, (_, want) in OLD_KEYS.items():
        assert _get(cfg, key) == want, key
    cfg = compose([], check_paths=False)      # trainer.yaml's default store, the tasks' defaults
    assert cfg.tools.kg_store == "data/kg/kg_store.json" and cfg.tools.kg_server_url == "http://127.0.0.1:8001"
    assert cfg.reward.kg_answer_metric == "f1" and cfg.reward.kg_validity_cap == 2 and cfg.reward.arith_format_weight == 0.0
    cfg.tools.kg_store = "/abs/kg_store.json"     # the trainer makes it absolute for the workers
    assert cfg.tools.kg_store == "/abs/kg_store.json"


def test_the_keys_are_the_tasks_not_the_schemas():
    base = {f.name for f in dataclasses.fields(ToolsConfig)} | {f.name for f in dataclasses.fields(RewardConfig)}
    assert not [k for k in base if k.startswith(("kg_", "arith_"))]
    assert {"kg_server_url", "kg_server_autostart", "kg_store"} <= {f.name for f in dataclasses.fields(section_class("tools"))}
    assert isinstance(default_config().tools, ToolsConfig) and isinstance(default_config().reward, RewardConfig)


@pytest.mark.parametrize("override, message", [
    ("reward.kg_answer_metric=f2", "reward.kg_answer_metric: 'f2' is not one of f1, em, hits1"),
    ("tools.kg_server_autostart=maybe", "tools.kg_server_autostart: Value 'maybe' is not a valid bool"),
    ("reward.kg_validity_cap=x", "reward.kg_validity_cap: Value 'x' of type 'str' could not be converted to Integer"),
    ("reward.arith_format_weight=heavy", "reward.arith_format_weight: Value 'heavy' of type 'str' could not be converted"),
    ("tools.kg_stor=x", "tools.kg_stor: unknown config key, did you mean tools.kg_store?"),
    ("reward.kg_answer_metrc=f1", "reward.kg_answer_metrc: unknown config key, did you mean reward.kg_answer_metric?"),
])
def test_a_bad_value_is_one_line(override, message):
    with pytest.raises(ConfigError) as e:
        compose([override], check_paths=False)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_bad_value_in_the_train_cli_exits_2(capsys):
    from agent_rl.cli.main import main

    assert main(["train", "reward.kg_answer_metric=f2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "reward.kg_answer_metric" in err


def test_pickle_copy_yaml_and_dict_round_trips(tmp_path):
    cfg = compose(["tools.kg_store=/x/kg_store.json", "reward.kg_answer_metric=em"], check_paths=False)
    for other in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg),
                  validate(OmegaConf.to_container(OmegaConf.create(to_yaml(cfg))), check_paths=False),
                  validate(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True), check_paths=False)):
        assert other == cfg and type(other.tools) is type(cfg.tools)
        assert other.tools.kg_store == "/x/kg_store.json" and other.reward.kg_answer_metric == "em"
    # a fresh process that imported nothing before (a Ray worker) reads the keys of a pickled config
    (tmp_path / "cfg.pkl").write_bytes(pickle.dumps(cfg))
    code = ("import pickle, sys; assert 'agent_rl' not in sys.modules; cfg = pickle.load(open(sys.argv[1], 'rb')); "
            "print(cfg.tools.kg_store, cfg.reward.kg_answer_metric, cfg.reward.arith_format_weight)")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cfg.pkl")], capture_output=True, text=True,
                       env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/x/kg_store.json", "em", "0.0"]


def test_the_keys_are_in_docs_config_md():
    text = open(docs.default_path(), encoding="utf-8").read()
    for key in OLD_KEYS:
        assert f"| `{key}` |" in text, key
    assert "(task key: `agent_rl/tasks/kg/config.py`)" in text


def test_a_task_added_to_the_registry_adds_its_keys(tmp_path, monkeypatch):
    (tmp_path / "toy_keys.py").write_text(textwrap.dedent('''
        from dataclasses import dataclass

        from agent_rl.config.schema import F


        @dataclass
        class ToyTools:
            toy_server: str = F("http://toy", "the toy server", choices=("http://toy", "http://other"))
        '''))
    spec = f"{tmp_path / 'toy_keys.py'}:ToyTools"
    toy = registry.Task(name="toy", data_sources=("toy",), reward="x:y", config=(("tools", spec),))
    monkeypatch.setitem(registry.TASKS, "toy", toy)
    cfg = compose(["tools.toy_server=http://other", "tools.kg_store=null"], check_paths=False)
    assert cfg.tools.toy_server == "http://other" and cfg.tools.kg_store is None
    with pytest.raises(ConfigError, match=r"^tools.toy_server: 'x' is not one of http://toy, http://other$"):
        compose(["tools.toy_server=x"], check_paths=False)
    assert "| `tools.toy_server` | str | `http://toy` | the toy server (task key:" in docs.render()
    clash = registry.Task(name="clash", data_sources=("c",), reward="x:y",
                          config=(("tools", "agent_rl.tasks.kg.config:KGToolsConfig"), ("tools", spec)))
    monkeypatch.setitem(registry.TASKS, "clash", clash)     # the KG task's class again: once
    assert compose([], check_paths=False).tools.toy_server == "http://toy"
    monkeypatch.setitem(registry.TASKS, "clash", dataclasses.replace(clash, config=(("nope", spec),)))
    with pytest.raises(ConfigError, match="'nope' is not a config section"):
        compose([], check_paths=False)
