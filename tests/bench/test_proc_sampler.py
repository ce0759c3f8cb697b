import json
import subprocess
import sys
import time

import os
import threading

from agent_rl.bench.proc_sampler import ProcSampler, parse_cpu_list, processes_line, thread_stats
from agent_rl.cli.main import main as cli_main

BURN = "import time\nt = time.time()\nwhile time.time() - t < 30: pass\n"


def _sampled_while(children, seconds):
    """A sampler's summary of `seconds` with these child processes running; they are killed after."""
    try:
        s = ProcSampler(interval_s=0.1).start()
        time.sleep(seconds)
        return s.stop()
    finally:
        for c in children:
            c.kill()
            c.wait()


def test_a_busy_child_is_seen_by_its_title_with_its_threads():
    # argv[0] set as sglang's retitled processes show it (`sglang::scheduler`)
    child = subprocess.Popen(["sglang::burner", "-c", BURN], executable=sys.executable)
    out = _sampled_while([child], 1.5)
    procs = {p["name"]: p for p in out["processes"]}
    assert set(procs) >= {"bench", "sglang::burner"}
    burner = procs["sglang::burner"]
    assert burner["pid"] == child.pid and burner["cpu_cores_mean"] > 0.3     # a busy loop holds about one core
    assert burner["cpu_cores_peak"] >= burner["cpu_cores_mean"] * 0.9
    assert burner["threads"] and burner["threads"][0]["cpu_cores_mean"] > 0.3
    assert procs["bench"]["cpu_cores_mean"] < burner["cpu_cores_mean"]       # this process mostly sleeps
    assert out["processes"][0]["name"] == "sglang::burner"                     # busiest first
    assert 0 < out["host_busy_frac"] <= 1 and out["host_cpus"] >= 1 and out["samples"] >= 5


def test_a_child_seen_before_its_command_line_is_readable_is_named_at_a_later_sample(monkeypatch):
    import agent_rl.bench.proc_sampler as ps

    child = subprocess.Popen(["sglang::late", "-c", BURN], executable=sys.executable)
    real, seen = ps.process_title, []

    def title(proc):   # the first look finds the empty command line of a process inside execve
        seen.append(proc.pid)
        return "" if proc.pid == child.pid and seen.count(child.pid) == 1 else real(proc)
    monkeypatch.setattr(ps, "process_title", title)
    out = _sampled_while([child], 0.5)
    names = {p["pid"]: p["name"] for p in out["processes"]}
    assert names[child.pid] == "sglang::late" and seen.count(child.pid) == 2, (names, seen.count(child.pid))
    assert seen.count(os.getpid()) == 0        # this process is `bench` without a look at its command line


def _burner(title, cpu):
    child = subprocess.Popen([title, "-c", BURN], executable=sys.executable)
    os.sched_setaffinity(child.pid, {cpu})
    return child


def test_two_busy_processes_on_one_cpu_are_seen_sharing_it():
    out = _sampled_while([_burner("sglang::a", 0), _burner("sglang::b", 0)], 1.2)
    procs = {p["name"]: p for p in out["processes"]}
    for name in ("sglang::a", "sglang::b"):
        p = procs[name]
        assert p["main_thread_busy_intervals"] >= 3 and p["main_thread_cpus"] == 1
        assert p["main_thread_shared_frac"] > 0.5          # the other one sat on the same CPU
        assert p["main_thread_preempted_per_s"] > 1        # ... and took it away while this one could run
    assert "(core shared" in processes_line(out) and "preempted" in processes_line(out)
    if os.path.exists("/proc/pressure/cpu"):
        assert out["cpu_pressure_frac"] > 0.1              # one of the two always waited for the CPU
        assert "CPU pressure" in processes_line(out)
    assert out["host_steal_frac"] is None or 0 <= out["host_steal_frac"] <= out["host_steal_frac_peak"] <= 1


def test_machine_counters_read_cgroup_throttling_and_cpu_pressure(monkeypatch):
    import agent_rl.bench.proc_sampler as ps

    files = {"/sys/fs/cgroup/cpu.stat": "usage_usec 90\nnr_throttled 3\nthrottled_usec 2500000\n",
             "/proc/pressure/cpu": "some avg10=1.00 avg60=0.50 avg300=0.10 total=1500000\nfull avg10=0 total=0\n"}
    monkeypatch.setattr(ps, "_read", lambda path: files.get(path, ""))
    assert ps.machine_counters() == {"throttled_s": 2.5, "cpu_pressure_s": 1.5}
    files = {"/sys/fs/cgroup/cpu/cpu.stat": "nr_periods 10\nthrottled_time 4000000000\n"}   # cgroup v1, in ns
    assert ps.machine_counters() == {"throttled_s": 4.0}
    files = {}
    assert ps.machine_counters() == {}
    summary = {"processes": [{"name": "sglang::scheduler", "cpu_cores_mean": 1.0, "main_thread_preempted_per_s": 12.5}],
               "host_busy_frac": 0.1, "host_cpus": 16, "host_steal_frac": 0.031, "cgroup_throttled_frac": 0.0}
    assert processes_line(summary) == "sglang::scheduler 1.00 (preempted 12.5/s); host 10% of 16, steal 3.1%"


def test_busy_threads_on_sibling_hyperthreads_share_a_core():
    s = ProcSampler()
    s._cores = {0: frozenset({0, 8}), 8: frozenset({0, 8}), 1: frozenset({1, 9}), 9: frozenset({1, 9})}
    s._file_main_threads([(10, 11, 1.0, 0), (20, 21, 0.9, 8), (30, 31, 1.0, 1), (30, 32, 0.1, 9)])
    assert s._main_shared == {10: 1, 20: 1}             # 0 and 8 are one core; 9's thread is not busy
    assert s._main_busy == {10: 1, 20: 1, 30: 1}
    s._file_main_threads([(10, 11, 0.1, 0), (20, 21, 0.9, 8)])   # 10 idle this interval: 20 alone on its core
    assert s._main_shared == {10: 1, 20: 1} and s._main_busy[20] == 2
    s._file_main_threads([(40, 41, 1.0, 5), (40, 42, 1.0, 5)])   # two busy threads of one process on one CPU
    assert s._main_shared[40] == 1                      # an unknown topology: a CPU is its own core


def test_thread_stats_and_cpu_lists():
    assert parse_cpu_list("0-2,8\n") == [0, 1, 2, 8] and parse_cpu_list("3") == [3]
    stats = thread_stats(os.getpid())
    secs, cpu = stats[threading.get_native_id()]
    assert secs >= 0 and cpu in os.sched_getaffinity(0)
    assert thread_stats(-1) == {}


def test_without_psutil_it_reports_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)
    assert ProcSampler().start().stop() is None


def test_processes_line():
    assert processes_line(None) == "-"
    summary = {"processes": [{"name": "sglang::scheduler", "cpu_cores_mean": 0.984, "threads": []},
                             {"name": "bench", "cpu_cores_mean": 0.41, "threads": []},
                             {"name": "sglang::detokenizer", "cpu_cores_mean": 0.05, "threads": []},
                             {"name": "other", "cpu_cores_mean": 0.01, "threads": []}],
               "host_busy_frac": 0.094, "host_cpus": 16, "host_mhz_mean": 2900.4}
    assert processes_line(summary) == ("sglang::scheduler 0.98, bench 0.41, sglang::detokenizer 0.05; "
                                       "host 9% of 16, 2900 MHz")


def test_bench_rollout_sample_cpu(tmp_path, tiny_model_path):
    args = ["bench", "rollout", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path,
            "--prompts", "4", "--n", "2", "--turns", "2", "--tokens-per-turn", "8", "--modes", "async",
            "--steps", "1", "--no-ceiling", "--no-progress", "--out", str(tmp_path)]
    assert cli_main(args + ["--sample-cpu", "--rounds", "2"]) == 0
    out = json.load(open(tmp_path / "rollout_bench.json"))
    (m,) = out["modes"]
    assert "bench" in [p["name"] for p in m["process_cpu"]["processes"]]   # the simulated engine runs in it
    assert out["round_results"][1]["modes"][0]["process_cpu"]["processes"]   # every round keeps its own
    md = open(tmp_path / "summary.md").read()
    assert "CPU cores by process" in md and "- round 2, async: bench " in md


def test_bench_suite_sample_cpu_reaches_its_summary(tmp_path, tiny_model_path):
    args = ["bench", "suite", "--engine", "sim", "--sim-cost", "0.2,1", "--model", tiny_model_path, "--prompts", "2",
            "--n", "2", "--turns", "2", "--tokens-per-turn", "8", "--heavy-tail-prompts", "2", "--steps", "1",
            "--ceiling-prompts", "4,8", "--ceiling-new-tokens", "8", "--no-progress", "--out", str(tmp_path),
            "--sample-cpu"]
    assert cli_main(args) == 0
    suite = json.load(open(tmp_path / "suite.json"))
    assert all(m["process_cpu"]["processes"] for sc in suite["scenario_modes"].values() for m in sc)
    md = open(tmp_path / "summary.md").read()
    assert "CPU cores by process; host |" in md
