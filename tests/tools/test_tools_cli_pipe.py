"""`agent-rl tools call ... | head -3`: a reader that leaves early ends the command quietly, same exit status."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CALC = os.path.join(REPO, "configs", "tool_config", "calculator_tool_config.yaml")


def run_into_closed_pipe(*argv):
    """Run `agent-rl ARGV` with stdout a pipe whose reader is already gone: every write hits EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "agent_rl.cli.main", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60)
    finally:
        os.close(write_end)
    return proc


@pytest.mark.parametrize("argv, status", [
    (["tools", "call", CALC, "calculator", '{"expression": "17 * 23"}'], 0),
    (["tools", "call", CALC, "calculator", '{"expression": true}'], 1),     # the call's own status is kept
    (["tools", "validate", CALC], 0),
])
def test_closed_stdout_is_quiet(argv, status):
    proc = run_into_closed_pipe(*argv)
    assert proc.stderr == "", proc.stderr          # no BrokenPipeError traceback, no "Exception ignored" line
    assert proc.returncode == status


def test_head_3_shows_the_first_lines():
    cmd = f"{sys.executable} -m agent_rl.cli.main tools call {CALC} calculator '{{\"expression\": \"17 * 23\"}}' | head -3"
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.splitlines() == ["observation:", "391", "status: ok"]
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
    assert proc.returncode == 0
