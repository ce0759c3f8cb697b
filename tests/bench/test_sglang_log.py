from agent_rl.bench.sglang_log import markdown, parse
from agent_rl.cli.main import main as cli_main

LOG = """\
[2026-12-01 10:00:00] agent-rl bench: mode turn-batched start
[2026-12-01 10:00:00] Prefill batch, #new-seq: 256, #new-token: 32768, #cached-token: 0, token usage: 0.01, #running-req: 0, #queue-req: 0, #pending-token: 0,
[2026-12-01 10:00:01] Decode batch, #running-req: 256, #token: 40000, token usage: 0.02, cuda graph: True, gen throughput (token/s): 45000.00, #queue-req: 0
[2026-12-01 10:00:02] Prefill batch, #new-seq: 128, #new-token: 2048, #cached-token: 30720, token usage: 0.02, #running-req: 128, #queue-req: 3, #pending-token: 0,
[2026-12-01 10:00:02] Decode batch, #running-req: 300, #token: 40000, token usage: 0.02, cuda graph: False, gen throughput (token/s): 30000.00, #queue-req: 1
[2026-12-01 10:00:03] agent-rl bench: mode turn-batched end
[2026-12-01 10:00:03] Decode batch, #running-req: 9, #token: 1, token usage: 0.0, cuda graph: True, gen throughput (token/s): 1.00, #queue-req: 0
[2026-12-01 10:00:04] agent-rl bench: mode async start
[2026-12-01 10:00:05] agent-rl bench: mode async end
"""


def test_parse_splits_by_mode_and_summarises():
    rows = parse(LOG.splitlines())
    assert [r["mode"] for r in rows] == ["turn-batched", "async"]
    tb = rows[0]
    assert tb["prefill_passes"] == 2 and tb["prefill_seqs_per_pass"] == 192
    assert abs(tb["cache_hit_rate"] - 30720 / (32768 + 2048 + 30720)) < 1e-12
    assert tb["decode_batch_mean"] == 278 and tb["decode_batch_max"] == 300   # the line outside the marks is ignored
    assert tb["cuda_graph_frac"] == 0.5 and tb["queue_max"] == 3 and tb["gen_tokens_per_s_mean"] == 37500
    assert rows[1]["prefill_passes"] == 0 and rows[1]["decode_batch_mean"] is None
    md = markdown(rows)
    assert "| turn-batched | 2 | 192.0 | 47% | 278 / 256 / 256 / 300 | 50% |" in md and "| async | 0 |" in md


def test_cli(tmp_path, capsys):
    log = tmp_path / "bench.log"
    log.write_text(LOG)
    assert cli_main(["bench", "sglang-log", str(log)]) == 0
    assert "| turn-batched |" in capsys.readouterr().out
    assert cli_main(["bench", "sglang-log", str(tmp_path / "missing.log")]) == 2
    (tmp_path / "plain.log").write_text("nothing here\n")
    assert cli_main(["bench", "sglang-log", str(tmp_path / "plain.log")]) == 2
    assert "no 'agent-rl bench: mode" in capsys.readouterr().err


GPU_CSV = """\
2026/12/01 09:59:59.500, 0, 100 MiB, 0 %, 345 MHz, 3201 MHz, 75.10 W, 30, 0x0000000000000001
2026/12/01 10:00:00.200, 0, 90000 MiB, 40 %, 1980 MHz, 3201 MHz, 300.00 W, 40, 0x0000000000000000
2026/12/01 10:00:01.700, 0, 90000 MiB, 60 %, 1500 MHz, 3201 MHz, 500.00 W, 44, 0x0000000000000004
2026/12/01 10:00:03.900, 0, 90000 MiB, 50 %, 1800 MHz, 3201 MHz, 400.00 W, 41, 0x0000000000000000
2026/12/01 10:00:04.400, 0, 90000 MiB, 10 %, [N/A], 3201 MHz, 100.00 W, 39, 0x0000000000000001
torn line
2026/12/01 10:00:06.000, 0, 90000 MiB, 0 %, 1980 MHz, 3201 MHz, 90.00 W, 38, 0x0000000000000000
"""


def test_gpu_figures_per_mode_span():
    from agent_rl.bench.sglang_log import parse_gpu_csv

    gpu = parse_gpu_csv(GPU_CSV.splitlines())
    assert len(gpu) == 6 and gpu[4]["sm_mhz"] is None and gpu[2]["reasons"] == 4
    tb, asy = parse(LOG.splitlines(), gpu)
    g = tb["gpu"]   # 10:00:00 .. the end of 10:00:03 (the end mark's second): three samples
    assert g["samples"] == 3 and g["sm_mhz_min"] == 1500 and g["sm_mhz_max"] == 1980 and g["power_w_mean"] == 400
    assert abs(g["sm_mhz_mean"] - 1760) < 1e-9 and g["util_mean"] == 50 and g["temp_c_max"] == 44
    assert g["reasons"] == ["sw power cap"]                        # the idle bit of another span is not counted
    assert g["reason_shares"] == {"sw power cap": 1 / 3}           # one sample of three carried it
    assert asy["gpu"]["samples"] == 1 and asy["gpu"]["sm_mhz_mean"] is None and asy["gpu"]["reasons"] == []
    md = markdown([tb, asy])
    assert "| turn-batched | 3 | 1760 (1500-1980) | 3201 | 400 | 50 | 44 | sw power cap (33% of samples) |" in md
    assert "| async | 1 | – (–-–) |" in md and md.rstrip().endswith("| none |")   # only the idle bit: no reason
    old = parse_gpu_csv(["2026/12/01 10:00:01.000, 0, 9 MiB, 5 %"])   # the four-field log of older pipelines
    assert old[0]["util"] == 5 and old[0]["sm_mhz"] is None and old[0]["reasons"] is None
    assert parse(LOG.splitlines(), old)[0]["gpu"]["reasons"] is None     # not logged: unknown, not "none"
    assert parse_gpu_csv(["2026/12/01 10:00:01.000, 0, 9 MiB, 5 %, 1 MHz, 2 MHz, 3 W, 4, 0x00z"])[0]["reasons"] is None
    assert "GPU samples" not in markdown(parse(LOG.splitlines()))       # without --gpu-csv: no GPU table


def test_cli_with_gpu_csv(tmp_path, capsys):
    log, csv = tmp_path / "bench.log", tmp_path / "gpu.csv"
    log.write_text(LOG)
    csv.write_text(GPU_CSV)
    assert cli_main(["bench", "sglang-log", str(log), "--gpu-csv", str(csv)]) == 0
    assert "| turn-batched | 3 | 1760 (1500-1980)" in capsys.readouterr().out
    assert cli_main(["bench", "sglang-log", str(log), "--gpu-csv", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "none.csv" in err


TAGGED = """\
[2026-12-01 10:00:00] agent-rl bench: mode async start
[2026-12-01 10:00:00 R0] Prefill batch, #new-seq: 10, #new-token: 100, #cached-token: 0, #running-req: 0, #queue-req: 0,
[2026-12-01 10:00:00.250 R1] Prefill batch, #new-seq: 20, #new-token: 200, #cached-token: 0, #running-req: 0, #queue-req: 0,
[2026-12-01 10:00:01 R1] Decode batch, #running-req: 20, cuda graph: True, gen throughput (token/s): 900.00, #queue-req: 0
[2026-12-01 10:00:02] agent-rl bench: mode async end
"""


def test_a_replica_at_a_time(tmp_path, capsys):
    from agent_rl.bench.sglang_log import replica_lines, replicas_in

    lines = TAGGED.splitlines()
    assert replicas_in(lines) == [0, 1]
    one = parse(replica_lines(lines, 1))
    assert one[0]["prefill_passes"] == 1 and one[0]["prefill_seqs_per_pass"] == 20 and one[0]["decode_batch_mean"] == 20
    assert parse(replica_lines(lines, 0))[0]["prefill_seqs_per_pass"] == 10
    log = tmp_path / "replicas.log"
    log.write_text(TAGGED)
    assert cli_main(["bench", "sglang-log", str(log)]) == 2               # two schedulers' lines never summed together
    assert "--replica 0 | 1" in capsys.readouterr().err
    assert cli_main(["bench", "sglang-log", str(log), "--replica", "2"]) == 2
    assert "no lines of replica 2" in capsys.readouterr().err
    assert cli_main(["bench", "sglang-log", str(log), "--replica", "0", "--fit-cost"]) == 0
    assert "| async | 1 | 10.0 |" in capsys.readouterr().out
    (tmp_path / "one.log").write_text(LOG)
    assert cli_main(["bench", "sglang-log", str(tmp_path / "one.log"), "--replica", "0"]) == 2   # nothing tagged
    assert "none tagged" in capsys.readouterr().err
