"""Issue 16, the first hour: `agent-rl train` / `agent-rl rollout` fail at start with one line (exit 2) naming the key
or file for every config, data, model and tool mistake; generation writes only the default data folder of the task
the tools are for; a misspelt key gets "did you mean"; `rollout` takes Hydra overrides and --print-config."""
import os
import subprocess
import sys

import pytest

from agent_rl.cli.main import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARITH_YAML = os.path.join(ROOT, "configs", "tool_config", "arith_tool_config.yaml")
KG_YAML = os.path.join(ROOT, "configs", "tool_config", "kg_query_tool_config.yaml")


def _cli(args, cwd, timeout=240):
    """The real command in a subprocess (cwd: where relative data paths resolve). A run that starts instead of failing
    at once runs into the timeout: a failure too."""
    try:
        r = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"agent-rl {' '.join(args)} started a run instead of failing at start")
    return r.returncode, r.stdout, r.stderr


def _one_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _main(argv, capsys):
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def arith_data(tmp_path_factory):
    from agent_rl.tasks.generate import generate_dataset

    d = tmp_path_factory.mktemp("arith_data")
    generate_dataset("arith", str(d), sizes={"train": 8, "val": 4, "test": 0})
    return d


def _common(tiny_model_path, arith_data, out):
    """A config that would run: tiny model, existing arithmetic data, calculator tools, no generation."""
    return [f"model.path={tiny_model_path}", "rollout.engine=hf", "trainer.use_ray=false",
            f"data.train_files=[{arith_data}/train.parquet]", f"data.val_files=[{arith_data}/val.parquet]",
            "data.generate_if_missing=null", f"tools.config_path={ARITH_YAML}", "tools.kg_store=null",
            "data.train_batch_size=2", "actor.ppo_mini_batch_size=2", "rollout.n=2",
            "rollout.multi_turn.max_new_tokens_per_turn=8", "rollout.progress_bar=false", f"trainer.output_dir={out}"]


# ---------------------------------------------------------------- 1. missing data: never a run, never a write

def test_train_missing_data_path_writes_nothing_and_starts_nothing(tmp_path, tiny_model_path):
    nope = tmp_path / "x" / "nope"
    rc, out, err = _cli(["train", f"data.train_files=[{nope}/train.parquet]", f"model.path={tiny_model_path}",
                         f"tools.config_path={KG_YAML}", f"trainer.output_dir={tmp_path}/out"], cwd=tmp_path)
    line = _one_line(err)
    assert rc == 2, err
    assert "data.train_files" in line and f"{nope}/train.parquet" in line
    assert f"agent-rl data generate kg --out {nope}" in line
    assert "generating" not in out
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


def test_rollout_arith_tools_and_path_never_get_kg_data(tmp_path, tiny_model_path):
    """The issue's command: arith tool YAML + data/arith path, generate_if_missing left at its default (kg)."""
    rc, out, err = _cli(["rollout", f"tools.config_path={ARITH_YAML}", "data.train_files=[data/arith/train.parquet]",
                         f"model.path={tiny_model_path}", "rollout.engine=hf", "--prompts", "1",
                         f"trainer.output_dir={tmp_path}/out"], cwd=tmp_path)
    line = _one_line(err)
    assert rc == 2, err
    assert line.startswith("agent-rl rollout: ") and "data.train_files" in line and "data/arith/train.parquet" in line
    assert "agent-rl data generate arith --out data/arith" in line and "data.generate_if_missing=arith" in line
    assert not (tmp_path / "data").exists() and not (tmp_path / "out").exists()


def test_kg_generation_refused_for_arith_tools(tmp_path, tiny_model_path):
    """The default data/kg folder is missing and generate_if_missing=kg, but the tools are the calculator's."""
    rc, out, err = _cli(["rollout", f"tools.config_path={ARITH_YAML}", f"model.path={tiny_model_path}",
                         "rollout.engine=hf", "--prompts", "1", f"trainer.output_dir={tmp_path}/out"], cwd=tmp_path)
    line = _one_line(err)
    assert rc == 2, err
    assert "data.generate_if_missing" in line and "calculator" in line and "data.generate_if_missing=arith" in line
    assert not (tmp_path / "data").exists()


def test_generation_fills_the_default_folder_of_the_task(tmp_path, tiny_model_path):
    """What the gsm8k example does (absolute $ROOT/data/arith paths from $ROOT): generated, then one rollout step."""
    data = tmp_path / "data" / "arith"
    rc, out, err = _cli(["rollout", "--prompts", "1", "--show", "0", f"tools.config_path={ARITH_YAML}",
                         f"data.train_files=[{data}/train.parquet]", f"data.val_files=[{data}/val.parquet]",
                         "data.generate_if_missing=arith", "tools.kg_store=null", f"model.path={tiny_model_path}",
                         "rollout.engine=hf", "rollout.n=2", "rollout.multi_turn.max_new_tokens_per_turn=8",
                         "rollout.progress_bar=false", f"trainer.output_dir={tmp_path}/out"], cwd=tmp_path, timeout=400)
    assert rc == 0, err[-3000:]
    assert "generating the embedded arith data set into data/arith" in out
    assert (data / "train.parquet").exists() and "wrote 2 trajectories" in out


def test_prepare_data_rules(tmp_path, monkeypatch):
    """In-process: only the default folder's generator files, of the task the tools are for; kg writes the store."""
    from agent_rl.config.load import ConfigError, compose
    from agent_rl.orchestration import prepare

    monkeypatch.chdir(tmp_path)

    def cfg(*over):
        return compose([f"tools.config_path={KG_YAML}", *over], check_paths=False)

    with pytest.raises(ConfigError, match=r"data.train_files: file not found: data/kg/other.parquet .*writes train.parquet"):
        prepare.prepare_data(cfg("data.train_files=[data/kg/other.parquet]"), log=lambda s: None)
    with pytest.raises(ConfigError, match=r"data.val_files: file not found: elsewhere/val.parquet"):
        prepare.prepare_data(cfg("data.val_files=[elsewhere/val.parquet]"), log=lambda s: None)
    with pytest.raises(ConfigError, match=r"data.generate_if_missing: 'yes' is not one of kg, arith"):
        prepare.prepare_data(cfg("data.generate_if_missing=yes"), log=lambda s: None)
    with pytest.raises(ConfigError, match=r"data.train_files: file not found: data/kg/train.parquet"):
        prepare.prepare_data(cfg("data.generate_if_missing=arith"), log=lambda s: None)
    assert not (tmp_path / "data").exists() and not (tmp_path / "elsewhere").exists()
    # only what the rollout reads is checked there: the train files
    assert prepare.check_data(cfg("data.val_files=[elsewhere/val.parquet]"), keys=("train_files",)) == "data/kg"
    msgs = []
    prepare.prepare_data(cfg(), log=msgs.append)          # the defaults: data/kg of the working directory
    assert msgs == ["generating the embedded kg data set into data/kg (= `agent-rl data generate kg --out data/kg`)"]
    assert {p.name for p in (tmp_path / "data" / "kg").iterdir()} == {"train.parquet", "val.parquet", "test.parquet",
                                                                       "kg_store.json"}
    msgs.clear()
    prepare.prepare_data(cfg(), log=msgs.append)          # present: nothing to do
    assert msgs == []


# ---------------------------------------------------------------- 2. config, data, model, tool errors: one line, exit 2

def _tool_yaml(tmp_path, name, old, new):
    with open(ARITH_YAML, encoding="utf-8") as f:
        text = f.read()
    assert old in text
    p = tmp_path / name
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize("command", ["train", "rollout"])
def test_bad_tool_yaml_is_one_line(command, tmp_path, tiny_model_path, arith_data, capsys):
    bad_class = _tool_yaml(tmp_path, "bad_class.yaml", "tools.calculator.CalculatorTool", "tools.calculator.CalculatorToool")
    bad_schema = _tool_yaml(tmp_path, "bad_schema.yaml", "type: string", "type: 5")
    for path, words in [(bad_class, ["class_name 'tools.calculator.CalculatorToool'", "has no attribute"]),
                        (bad_schema, ["tool_schema.function.parameters is not a valid JSON Schema", "properties/expression/type"])]:
        rc, _, err = _main([command, *_common(tiny_model_path, arith_data, tmp_path / "out"), f"tools.config_path={path}"],
                           capsys)
        line = _one_line(err)
        assert rc == 2 and line.startswith(f"agent-rl {command}: config error: tools.config_path: {path}: tools[0] (calculator)")
        assert all(w in line for w in words), line
    assert not (tmp_path / "out").exists()


def _model_dir(tmp_path, source, name, files):
    """A folder with some files of the model folder `source`."""
    d = tmp_path / name
    d.mkdir()
    for f in files:
        with open(os.path.join(str(source), f), "rb") as src:
            (d / f).write_bytes(src.read())
    return d


@pytest.mark.parametrize("command", ["train", "rollout"])
def test_model_folder_that_is_not_a_model_is_one_line(command, tmp_path, tiny_model_path, arith_data, capsys):
    cases = [
        (_model_dir(tmp_path, tiny_model_path, "no_config", ["tokenizer.json", "tokenizer_config.json"]), "has no config.json"),
        (_model_dir(tmp_path, tiny_model_path, "no_weights", ["config.json", "tokenizer.json", "tokenizer_config.json"]),
         "has no model weights"),
        (_model_dir(tmp_path, tiny_model_path, "no_tokenizer", ["config.json", "model.safetensors"]), "has no tokenizer"),
        # tokenizer files there but incomplete: transformers' sentencepiece error, raised while the trainer is built
        (_model_dir(tmp_path, tiny_model_path, "half_tokenizer", ["config.json", "model.safetensors", "tokenizer_config.json"]),
         "cannot load a tokenizer"),
    ]
    empty_type = tmp_path / "no_model_type"
    empty_type.mkdir()
    (empty_type / "config.json").write_text("{}")
    cases.append((empty_type, "config.json has no model_type"))
    for folder, words in cases:
        rc, _, err = _main([command, *_common(tiny_model_path, arith_data, tmp_path / "out"), f"model.path={folder}"],
                           capsys)
        line = _one_line(err)
        assert rc == 2 and line.startswith(f"agent-rl {command}: config error: model.path: ") and str(folder) in line
        assert words in line, line


@pytest.mark.parametrize("command", ["train", "rollout"])
def test_unreadable_parquet_is_one_line_before_anything_is_written(command, tmp_path, tiny_model_path, arith_data, capsys):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    rc, _, err = _main([command, *_common(tiny_model_path, arith_data, tmp_path / "out"), f"data.train_files=[{bad}]"],
                       capsys)
    line = _one_line(err)
    assert rc == 2 and f"config error: data.train_files: {bad}: cannot read as parquet" in line
    assert not (tmp_path / "out").exists()


def test_config_error_reaching_main_is_one_line(monkeypatch, capsys):
    """A ConfigError a command does not catch itself (e.g. raised while a trainer is built) is still exit 2."""
    from agent_rl.cli import view
    from agent_rl.config.load import ConfigError

    def boom(args):
        raise ConfigError("model.path: broken\nsecond line")

    monkeypatch.setattr(view, "run", boom)
    rc, _, err = _main(["view", "x.jsonl"], capsys)
    assert rc == 2 and _one_line(err) == "agent-rl view: config error: model.path: broken second line"


# ---------------------------------------------------------------- 3. did you mean

@pytest.mark.parametrize("override,meant", [
    ("rollout.multi_turn.max_turnz=3", "rollout.multi_turn.max_assistant_turns"),
    ("trainer.total_steps=3", "trainer.total_training_steps"),
    ("data.trian_files=[a.parquet]", "data.train_files"),
    ("rollot.n=4", "rollout.n"),
    ("actor.optim.lrr=1e-6", "actor.optim.lr"),
    ("rollout.temperature=0.5", "rollout.sampling.temperature"),
])
def test_misspelt_key_did_you_mean(override, meant, capsys):
    rc, _, err = _main(["train", override], capsys)
    line = _one_line(err)
    assert rc == 2 and f"{override.split('=')[0]}: unknown config key, did you mean {meant}?" in line


def test_misspelt_key_without_a_near_one_and_in_rollout_and_config_file(tmp_path, capsys):
    rc, _, err = _main(["train", "foo.bar=1"], capsys)
    assert rc == 2 and "foo.bar: unknown config key (misspelt? see docs/config.md)" in _one_line(err)
    rc, _, err = _main(["rollout", "rollout.multi_turn.max_turnz=3"], capsys)
    assert rc == 2 and "did you mean rollout.multi_turn.max_assistant_turns?" in _one_line(err)
    (tmp_path / "mine.yaml").write_text("defaults:\n  - agent_rl_schema\n  - _self_\n\ndata:\n  train_batch_sise: 4\n")
    rc, _, err = _main(["train", "--config-dir", str(tmp_path), "--config-name", "mine", "--print-config"], capsys)
    assert rc == 2 and "data.train_batch_sise: unknown config key, did you mean data.train_batch_size?" in _one_line(err)


# ---------------------------------------------------------------- 4. rollout --help and --print-config

def test_rollout_help_says_overrides():
    r = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "rollout", "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0
    assert "key=value" in r.stdout and "--print-config" in r.stdout and "docs/config.md" in r.stdout


def test_rollout_print_config(capsys):
    rc, out, err = _main(["rollout", "--print-config", "rollout.n=3", "tools.config_path=x.yaml"], capsys)
    assert rc == 0, err
    assert "'n': 3" in out and "config_path: x.yaml" in out
