import subprocess
import sys

from agent_rl.cli.main import main


def _run(argv, capsys):
    rc = main(["train", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_type_error_names_key_in_one_line(capsys):
    rc, out, err = _run(["rollout.n=x"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "rollout.n" in lines[0] and "config error" in lines[0]


def test_unknown_key_names_key(capsys):
    rc, _, err = _run(["rollout.multi_turn.max_turnz=3"], capsys)
    assert rc == 2 and err.strip().count("\n") == 0
    assert "rollout.multi_turn.max_turnz" in err and "unknown config key" in err


def test_bad_choice_and_missing_model(capsys):
    rc, _, err = _run(["actor.kl_loss_type=k9"], capsys)
    assert rc == 2 and "actor.kl_loss_type" in err
    rc, _, err = _run(["model.path=/nonexistent/model"], capsys)
    assert rc == 2 and "model.path" in err and "/nonexistent/model" in err


def test_stop_strings_parse_and_reject_empty(capsys):
    rc, out, _ = _run(["--print-config", 'rollout.multi_turn.stop_strings=["</tool_call>"]'], capsys)
    assert rc == 0 and "stop_strings:\n    - </tool_call>" in out
    rc, _, err = _run(['rollout.multi_turn.stop_strings=[""]'], capsys)
    assert rc == 2 and "rollout.multi_turn.stop_strings" in err


def test_not_an_override(capsys):
    rc, _, err = _run(["rollout.n"], capsys)
    assert rc == 2 and "key=value" in err


def test_print_config(capsys):
    rc, out, _ = _run(["--print-config", "rollout.n=7", "trainer.experiment_name=abc"], capsys)
    assert rc == 0
    assert "'n': 7" in out and "output_dir: outputs/abc" in out


def test_entry_point_subprocess_one_line():
    r = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", "train", "rollout.n=x"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "rollout.n" in r.stderr


def test_config_dir_and_name(tmp_path, capsys):
    (tmp_path / "my_run.yaml").write_text("defaults:\n  - agent_rl_schema\n  - _self_\n\nrollout:\n  n: 5\n"
                                          "trainer:\n  experiment_name: mine\n")
    rc, out, err = _run(["--config-dir", str(tmp_path), "--config-name", "my_run", "--print-config",
                         "actor.optim.lr=3e-6"], capsys)
    assert rc == 0, err
    assert "'n': 5" in out and "experiment_name: mine" in out and "lr: 3.0e-06" in out
    rc, _, err = _run(["--config-dir", str(tmp_path), "--config-name", "nope", "--print-config"], capsys)
    assert rc == 2 and err.strip().count("\n") == 0 and "nope" in err


def test_over_sampling_alone_is_advised_against(caplog):
    from agent_rl.config.load import compose

    def warned(*overrides):
        caplog.clear()
        compose(list(overrides), check_paths=False)
        return [r.getMessage() for r in caplog.records if "rollout.over_sample_rate" in r.getMessage()]

    assert len(warned("rollout.over_sample_rate=0.5")) == 1 and "partial_rollout=true" in warned("rollout.over_sample_rate=0.5")[0]
    # it resumes the cut groups, or the extras replace groups without signal: nothing to say
    assert warned("rollout.over_sample_rate=0.5", "rollout.partial_rollout=true") == []
    assert warned("rollout.over_sample_rate=0.5", "algorithm.filter_groups.enable=true") == []
    assert warned() == []
