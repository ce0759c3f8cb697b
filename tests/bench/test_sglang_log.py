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
