"""Real sglang 0.5.17 on a CPU: the side install of scripts/sglang_cpu/setup.sh (`AGENT_RL_SGLANG_CPU`, default
~/.cache/agent-rl/sglang-cpu). Tests marked `sglang_cpu` skip themselves without it (CI has none); each runs a script
of this folder in a process of its own, with that install on PYTHONPATH (sglang's processes inherit it)."""
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def side_install() -> str:
    return os.environ.get("AGENT_RL_SGLANG_CPU") or os.path.expanduser("~/.cache/agent-rl/sglang-cpu")


def _ready(d: str) -> bool:
    return os.path.isfile(os.path.join(d, "ready"))   # written by setup.sh once sglang imports


def pytest_collection_modifyitems(config, items):
    if _ready(side_install()):
        return
    skip = pytest.mark.skip(reason=f"needs real sglang on CPU: bash scripts/sglang_cpu/setup.sh (none in {side_install()})")
    for item in items:
        if "sglang_cpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def run_script(tmp_path):
    """run_script(args, timeout) -> the JSON of the command's last stdout line; the log's tail on failure. The
    command's stderr (sglang's log among it) stays in `run_script.last_log`."""
    d = side_install()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(d, "stubs"), os.path.join(d, "site"), ROOT]),
               NO_PROXY="127.0.0.1,localhost")

    def run(args, timeout=600):
        log = run.last_log = tmp_path / f"run-{len(list(tmp_path.glob('run-*.log')))}.log"
        with open(log, "w") as f:
            proc = subprocess.run([sys.executable, *args], cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=f,
                                  text=True, timeout=timeout)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
        if proc.returncode != 0 or not lines:
            tail = log.read_text(errors="replace").splitlines()[-40:]
            pytest.fail(f"{args[0]} exited {proc.returncode}; stdout: {proc.stdout[-2000:]}\nlog tail:\n" + "\n".join(tail))
        return json.loads(lines[-1])

    return run
