"""docs/tools.md's walk-through ("Adding a tool"), run for real from the blocks of the document.

The blocks are the fenced blocks that follow a `<!-- run: ... -->` comment:

- `<!-- run: file=PATH -->`: written to PATH (relative to a fresh folder) exactly as the document shows it;
- `<!-- run: shell -->`: run with bash in that folder; its `# ` comment lines are output lines the command must
  print, in that order (`# ...` lines are skipped);
- `<!-- run: rollout -->`: the `agent-rl rollout` command, run as written plus overrides that make it small
  (the tiny test model, the hf engine, 8 tokens a turn);
- `<!-- run: train -->`: the `agent-rl train` command, composed and checked with the same code as `agent-rl train`
  (every key, file, tool YAML and data file), but not run (minutes on a 2-core CPU).

So a snippet that does not import, a YAML that does not validate, a data script that writes rows the loader
refuses, a command line with a wrong key or an output shown wrongly all fail here.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(REPO, "docs", "tools.md")
BLOCK = re.compile(r"<!-- run: (?P<what>[^>]*?) -->\s*\n```(?P<lang>[\w-]*)\n(?P<body>.*?)\n```", re.S)
TOOL = "my_tools/word_count.py"
YAML = "my_tools/word_count_tool_config.yaml"
DATA_SCRIPT = "make_word_count_data.py"

pytestmark = pytest.mark.timeout(180)


def doc_blocks():
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    return [(m["what"].strip(), m["lang"], m["body"]) for m in BLOCK.finditer(text)]


def files_of(blocks):
    return {what[len("file="):]: body for what, _, body in blocks if what.startswith("file=")}


def commands_of(blocks, kind):
    return [body for what, _, body in blocks if what == kind]


def command_argv(body: str):
    """The one command of a block, continuation lines joined, split as the shell would."""
    lines = [line for line in body.splitlines() if not line.lstrip().startswith("#")]
    return shlex.split(" ".join(line.rstrip().rstrip("\\") for line in lines))


def expected_lines(body: str):
    return [line[2:] for line in body.splitlines() if line.startswith("# ") and not line.startswith("# ...")]


def assert_prints_in_order(out: str, expected, what: str):
    lines = [line.rstrip() for line in out.splitlines()]
    pos = 0
    for want in expected:
        try:
            pos = lines.index(want, pos) + 1
        except ValueError:
            raise AssertionError(f"{what}: the document shows the output line {want!r}, the command printed:\n{out}")


def run_env(tmp):
    """`agent-rl` and `python` of this interpreter first on PATH; small CPU footprint."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "agent-rl").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m agent_rl.cli.main "$@"\n')
    (bin_dir / "agent-rl").chmod(0o755)
    if not (bin_dir / "python").exists():
        (bin_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=REPO)
    return env


@pytest.fixture(scope="module")
def guide(tmp_path_factory):
    """A fresh folder holding the document's files, after its shell blocks ran (in document order)."""
    blocks = doc_blocks()
    tmp = tmp_path_factory.mktemp("tools-guide")
    work = tmp / "work"
    work.mkdir()
    for path, body in files_of(blocks).items():
        dest = work / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(body + "\n", encoding="utf-8")
    env = run_env(tmp)
    shell = []
    for body in commands_of(blocks, "shell"):
        proc = subprocess.run(["bash", "-e", "-c", body], cwd=work, env=env, capture_output=True, text=True, timeout=120)
        shell.append((body, proc))
    return {"blocks": blocks, "dir": work, "env": env, "shell": shell}


def test_the_walkthrough_is_all_there():
    blocks = doc_blocks()
    files = files_of(blocks)
    assert {TOOL, YAML, DATA_SCRIPT} <= set(files), sorted(files)
    assert len(commands_of(blocks, "shell")) >= 2
    assert len(commands_of(blocks, "rollout")) == 1 and len(commands_of(blocks, "train")) == 1
    for what, lang, body in blocks:
        if lang == "python":
            compile(body, what, "exec")          # a syntax error names the block
    # the code the document shows is self-contained: what the old example used without defining it is defined
    tool = files[TOOL]
    assert "import re" in tool and re.search(r"^WORD = ", tool, re.M)
    assert command_argv(commands_of(blocks, "rollout")[0])[:2] == ["agent-rl", "rollout"]
    assert command_argv(commands_of(blocks, "train")[0])[:2] == ["agent-rl", "train"]


def test_shell_blocks_run_and_print_what_the_document_shows(guide):
    assert guide["shell"]
    for body, proc in guide["shell"]:
        assert proc.returncode == 0, f"block failed:\n{body}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        assert_prints_in_order(proc.stdout, expected_lines(body), body.splitlines()[0])
    outs = "\n".join(p.stdout for _, p in guide["shell"])
    assert "calc_reward: 1.0" in outs and "OK my_tools/word_count_tool_config.yaml: word_count" in outs
    for split in ("train", "val"):
        assert (guide["dir"] / "data" / "word_count" / f"{split}.parquet").exists()


def test_rows_load_and_tool_runs_through_the_real_runtime(guide):
    """The rows pass the loader's check; the document's module, imported by its YAML, serves a real session and
    registers the reward of its data_source; that reward adds the tool's calc_reward."""
    import asyncio

    from agent_rl.data.loader import load_rows
    from agent_rl.tasks import REWARD_FNS, compute_reward, reward_fn_for
    from agent_rl.rollout.trajectory import Trajectory, TurnRecord
    from agent_rl.tool_runtime.runtime import ToolRuntime

    work = guide["dir"]
    rows = load_rows([str(work / "data" / "word_count" / "train.parquet")])
    assert len(rows) == 64 and {r["data_source"] for r in rows} == {"word_count"}
    row = rows[0]
    target = row["extra_info"]["tools_kwargs"]["word_count"]["create_kwargs"]["target"]
    text = row["prompt"][-1]["content"].split('"')[1]
    assert str(target) == row["reward_model"]["ground_truth"] == str(len(text.split()))

    async def session():
        rt = ToolRuntime.from_yaml(str(work / YAML))
        try:
            async with rt.session("doc", row["extra_info"]["tools_kwargs"]) as s:
                rec = await s.call("word_count", json.dumps({"text": text}))
                bad = await s.call("word_count", {"text": text, "extra": True})
                rewards = await s.calc_rewards()
        finally:
            await rt.close()
        return rec, bad, rewards

    try:
        rec, bad, rewards = asyncio.run(session())
        assert rec.status == "ok" and rec.observation == f"{target} words" and rec.metrics == {"words": target}
        assert bad.status == "invalid_arguments" and "'extra' was unexpected" in bad.observation
        assert rewards == {"word_count": 1.0}
        assert "word_count" in REWARD_FNS and reward_fn_for(row).__name__ == "word_count_reward"
        traj = Trajectory(uid="u", sample_index=0, row=row, prompt_ids=[1])
        traj.turns = [TurnRecord(index=0, output_ids=[2], logprobs=[0.0], finish_reason="stop",
                                 text=f"<answer>{target}</answer>")]
        traj.tool_rewards = rewards
        score, comps = compute_reward(traj, None)
        assert score == pytest.approx(1.2) and comps == {"correct": 1.0, "counted": 1.0, "answered": 1.0}
    finally:
        REWARD_FNS.pop("word_count", None)     # registered by the document's module: keep other tests clean


def test_rollout_command_runs(guide, tiny_model_path):
    work, out = guide["dir"], guide["dir"] / "rollout.jsonl"
    argv = command_argv(commands_of(guide["blocks"], "rollout")[0])
    small = [f"model.path={tiny_model_path}", "rollout.engine=hf", "rollout.multi_turn.max_new_tokens_per_turn=8",
             "rollout.progress_bar=false", f"trainer.output_dir={work / 'outputs'}", "--out", str(out)]
    proc = subprocess.run(argv + small, cwd=work, env=guide["env"], capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"{shlex.join(argv)}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 4     # --prompts 2 groups x rollout.n=2
    for rec in recs:
        assert rec["row"]["data_source"] == "word_count"
        assert set(rec["reward_components"]) == {"correct", "counted", "answered"}   # the registered reward
    assert "rollout/reward/counted" in proc.stdout
    assert "past_key_values" not in proc.stderr and "Traceback" not in proc.stderr


def test_train_command_composes_and_passes_the_start_checks(guide, monkeypatch):
    from agent_rl.config.load import compose
    from agent_rl.tasks import REWARD_FNS

    argv = command_argv(commands_of(guide["blocks"], "train")[0])
    overrides = [a for a in argv[2:] if not a.startswith("--")]
    monkeypatch.chdir(guide["dir"])
    try:
        cfg = compose(overrides, check_paths=True)    # what `agent-rl train` checks before it starts anything
    finally:
        REWARD_FNS.pop("word_count", None)
    assert cfg.tools.config_path == YAML and cfg.data.train_files == ["data/word_count/train.parquet"]
    assert cfg.trainer.total_training_steps >= 1 and cfg.data.generate_if_missing is None
