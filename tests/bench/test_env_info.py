import subprocess

from agent_rl.bench.env_info import COMMIT_ENV, commit_line, git_commit


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_git_commit_reads_the_repository_and_its_dirty_flag(tmp_path, monkeypatch):
    monkeypatch.delenv(COMMIT_ENV, raising=False)
    assert git_commit(str(tmp_path)) == {"commit": None, "dirty": None}   # not a repository
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    _git(tmp_path, "add", "a.py")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(str(tmp_path)) == {"commit": head, "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    env = git_commit(str(tmp_path))
    assert env == {"commit": head, "dirty": True}
    assert commit_line(env) == f"- git commit: {head} (dirty tree)"


def test_the_environment_variable_names_the_commit_of_a_copied_tree(tmp_path, monkeypatch):
    # the GPU host runs a copy of the working tree over another commit's history, or a `git archive` of an old one
    monkeypatch.setenv(COMMIT_ENV, " 45fd22b \n")
    env = git_commit(str(tmp_path))
    assert env == {"commit": "45fd22b", "dirty": None, "commit_source": COMMIT_ENV}
    assert commit_line(env) == f"- git commit: 45fd22b (as ${COMMIT_ENV} gives it)"
    monkeypatch.setenv(COMMIT_ENV, "  ")   # blank: ignored
    assert git_commit(str(tmp_path)) == {"commit": None, "dirty": None}
    assert commit_line({}) == "- git commit: unknown"


def test_the_environment_names_the_host_cpu_and_how_fast_it_runs_python():
    from agent_rl.bench.env_info import cpu_probe_ms, device_line, environment

    env = environment("cpu")
    assert env["cpu"] and env["cpu_probe_ms"] > 0
    assert 0 < cpu_probe_ms(repeats=1)
    line = device_line(env)   # a CPU device already names the CPU: only the probe is added
    assert env["cpu"] in env["device"] and line.startswith(f"- device: {env['device']}; fixed Python work ")
    gpu = dict(env, device="NVIDIA H100 80GB HBM3 x1")
    assert device_line(gpu).startswith(f"- device: NVIDIA H100 80GB HBM3 x1; host CPU {env['cpu']}, fixed Python work ")
    assert f"python {env['python']}, torch {env['torch']}" in line
    # results written before the host CPU was recorded still print
    old = {k: v for k, v in env.items() if k not in ("cpu", "cpu_probe_ms")}
    assert device_line(old) == (f"- device: {env['device']}; python {env['python']}, torch {env['torch']}, "
                                f"transformers {env['transformers']}, sglang {env['sglang'] or 'not installed'}")
