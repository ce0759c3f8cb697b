"""Our engines against real sglang 0.5.17 on a CPU (tiny model, float32): token-in-token-out generation, aborts,
weight updates, two replicas in one process and as two servers, the bench's engine-side sampler. Skipped unless
scripts/sglang_cpu/setup.sh has run (conftest.py)."""
import json
import re

import pytest

pytestmark = [pytest.mark.sglang_cpu, pytest.mark.slow]


def test_generation_aborts_and_weight_updates_match_transformers(run_script, tiny_model_path):
    r = run_script(["engine_checks.py", tiny_model_path])
    assert r["engine"] == "SGLangEngine"
    assert r["greedy_len"] == 24 and r["greedy_finish"] == "length"
    assert r["greedy_equals_transformers"]                  # the same tokens as transformers' own greedy decoding
    assert r["greedy_logprob_gap"][1] < 1e-4                # and the same log-probs (float32 on both sides)
    assert r["sampled_gap_scaled"] < 1e-4 < r["sampled_gap_plain"]   # log_softmax(logits / T), not T = 1
    a1, a10, early = r["abort"]["a1"], r["abort"]["a10"], r["abort"]["early"]
    assert a1[0] == "abort" and 0 < a1[1] < 1500 and a1[2] == a1[1]
    assert early[0] == "abort" and early[1] < 1500         # aborted before sglang registered it
    assert a10 == ["length", 40]                            # "a1" is a prefix of "a10": untouched
    assert r["noisy_moved"]                                 # the pushed weights generate ...
    assert r["noisy_logprob_gap"][1] < 1e-4                 # ... exactly as transformers with those weights
    assert r["flush"] and r["restored_equals_base"]
    # device=cpu: the idle scheduler waits for work (sleep_on_idle) instead of polling a core (1.0 without)
    assert len(r["idle_scheduler_cores"]) == 1 and r["idle_scheduler_cores"][0] < 0.3, r["idle_scheduler_cores"]
    assert r["ipc_files"]["named"] >= 4 and r["ipc_files"]["left"] == 0   # sglang's socket files gone with it


def test_kv_sessions_generate_what_plain_requests_do(run_script, tiny_model_path):
    r = run_script(["session_checks.py", tiny_model_path])
    assert r["kv_sessions"]
    for case in ("turns", "stop", "cut", "flush", "server_flush"):   # in a session, then the same one plainly
        tokens, logprob_gap = r[case]
        assert tokens and logprob_gap < 1e-5, case
    assert r["stopped"] == "stop" and r["flushed"] and r["server_flushed"]
    assert all(tokens and lp < 1e-5 for tokens, lp in r["concurrent"])
    assert r["abort"][0] == "abort" and 0 < r["abort"][1] < 1500 and r["abort"][2]   # resumed on its whole context
    assert r["sampled_gap"] < 1e-4          # transformers on the whole context: sglang's session held the right KV
    st = r["stats"]
    assert st["appended"] >= 20 and st["restarted"] == 1 and st["aborted"] == 1 and "redone" not in st
    # the running cap below the pool: every trajectory of the 8 at once held a session, sglang ran at most 3
    assert st["limit"] == 9 and "full" not in st and "kv_full" not in st
    assert st["kv_limit"] == r["kv_tokens"] // 2 > 0       # half of the KV pool sglang reports
    log = run_script.last_log.read_text(errors="replace")
    running = [int(m[1]) + int(m[0] or 0) for m in
               re.findall(r"(?:#new-seq: (\d+), .*?)?#running-req: (\d+)", log)]
    assert len(running) > 10 and max(running) == 3, running


@pytest.mark.parametrize("kind", ["sglang", "sglang-server"])
def test_two_replicas_train_and_both_hold_the_actors_weights(run_script, tiny_model_path, tmp_path, kind):
    r = run_script(["replicas_train.py", kind, tiny_model_path, str(tmp_path / "out")])
    assert r["steps"] == [1, 2]
    assert len(r["replicas"]) == 2 and min(r["routed"]) > 0          # both rolled out
    # gc_freeze (a default patch): each server process froze its collector through sglang's /freeze_gc
    assert r["server_gc_frozen"] == ([True, True] if kind == "sglang-server" else [None, None]), r
    # KV sessions by default (rollout.kv_sessions null): each step's 8 trajectories started one, logged per step
    assert [s.get("started") for s in r["sessions"]] == [8, 8], r["sessions"]
    assert r["said_sessions"]                                         # and the run's start says so
    # both replicas' schedulers started through agent-rl's patches (in process: our stderr; servers: their logs)
    logs = run_script.last_log.read_text(errors="replace") + "".join(
        p.read_text(errors="replace") for p in (tmp_path / "out").rglob("sglang-server-*.log"))
    assert logs.count("agent-rl: sglang scheduler patched: delayer_gather, decode_rows, delayer_cap, sample_gumbel, "
                      "gc_freeze\n") == 2, kind
    assert len(r["weights"]) == 6
    for name, (to_actor, to_initial) in r["weights"].items():
        assert to_actor == 0.0, name          # every replica holds exactly the actor's weights after the last sync
        assert to_initial > 1e-5, name        # which training moved


def test_bench_routes_groups_over_two_replicas_samples_and_logs_each_scheduler(run_script, tiny_model_path, tmp_path):
    from engine_checks import CPU_KWARGS

    out = tmp_path / "bench"
    kwargs = [a for k, v in dict(CPU_KWARGS, log_level="info").items() for a in ("--engine-kwarg", f"{k}={v}")]
    done = run_script(["-c", "import json; from agent_rl.cli.main import main; print(json.dumps({'rc': main()}))",
                "bench", "rollout", "--engine", "sglang", "--engine-replicas", "2", "--model", tiny_model_path,
                *kwargs, "--prompts", "6", "--n", "2", "--turns", "2", "--tokens-per-turn", "8",
                "--tool-latency", "0", "--modes", "async@replicas1,async,carryover,async@nosessions",
                "--over-sample", "0.5",
                "--steps", "1", "--rounds", "1", "--sample-engine-stacks", "--sample-stacks", "--no-progress",
                "--turns-ceiling", "--out", str(out)])
    assert done["rc"] == 0
    data = json.loads((out / "rollout_bench.json").read_text())
    # the engine alone on the turns: every planned token, each trajectory's turns in its session on its group's replica
    turns = data["ceiling"]["turns"]
    assert turns["requests"] == 24 and turns["output_tokens"] == 12 * 2 * 8 and turns["ratio_to_raw"] > 0
    assert turns["kv_sessions"]["appended"] == 12 and turns["kv_sessions"]["started"] == 12
    modes = {m["mode"]: m for m in data["modes"]}
    assert modes["async"]["replica_requests"][0] > 0 and modes["async"]["replica_requests"][1] > 0
    assert modes["async@replicas1"]["replica_requests"][1] == 0
    # KV sessions by default (`--kv-sessions` unset): the plain mode keeps them, @nosessions sends plain requests
    assert modes["async"]["kv_sessions"]["appended"] == 12 and "kv_sessions" not in modes["async@nosessions"]
    carry = [m for name, m in modes.items() if "carryover" in name]
    assert carry and all(min(m["replica_requests"]) > 0 for m in carry)
    next_batch = 0.0
    for m in modes.values():
        stacks = m["engine_stacks"]
        assert stacks["processes"] == 2 and set(stacks["titles"]) == {"sglang::scheduler"}   # one per replica
        assert stacks["samples"] > 0 and "sglang" in stacks["owners"]
        # both samplers by a timer signal on the thread they sample (the scheduler's main thread, our event loop)
        assert stacks["method"] == "signal" and m["loop_stacks"]["method"] == "signal"
        # our loop's thread was seen at work (its few requests' CPU: which package a look lands in is chance)
        assert sum(v for k, v in m["loop_stacks"]["owners"].items() if k != "idle") > 0
        steps = dict(stacks["loop_steps"])     # the steps of sglang's scheduler loop (event_loop_overlap's callees)
        assert steps.get("scheduler.py:run_batch", 0) > 0, steps      # a CPU's forward: most of a mode's work
        next_batch += steps.get("scheduler.py:get_next_batch_to_run", 0)
    # choosing a batch is a few ms of a CPU mode's run, so one mode's 5 ms samples can miss it (seen 2026-12-07): all
    # modes together must not
    assert next_batch > 0
    assert data["ceiling"]["engine_stacks"]["samples"] > 0    # the raw engine run too

    from agent_rl.bench.sglang_log import parse, replica_lines, replicas_in

    lines = run_script.last_log.read_text(errors="replace").splitlines()
    assert replicas_in(lines) == [0, 1]                  # each scheduler's lines carry its replica
    per = [{r["mode"]: r for r in parse(replica_lines(lines, k))} for k in (0, 1)]
    assert per[0]["async"]["prefill_passes"] > 0 and per[1]["async"]["prefill_passes"] > 0
    assert per[0]["async@replicas1"]["prefill_passes"] > 0 and per[1]["async@replicas1"]["prefill_passes"] == 0


def test_scheduler_patches_decide_as_sglang_does_without_the_gather(run_script, tiny_model_path):
    r = run_script(["patch_checks.py", tiny_model_path])
    assert r["applied"] == ["delayer_gather"] and r["again"] == ["delayer_gather"]
    # sglang's prefill delayer over one rank: the same 200 decisions and buffers, both kinds of decision among them
    assert r["passes"] == 200 and r["same"] and r["allowed"] > 0 and r["delayed"] > 0 and r["light"] == "_OneRank"
    assert r["same_buffered"]                # another sglang's negotiation: the numbers in the gather's buffer
    assert r["gathers_before"] == 200 and r["gathers_after"] == 0 and r["gathers_buffered"] == 0
    assert r["gathers_two_ranks"] == 1
    # an engine with the patches (all of them, the default) generates the same as one without
    assert r["generate_same"] and r["info"] == [["delayer_gather", "decode_rows", "delayer_cap", "sample_gumbel",
                                                 "gc_freeze"], []]
    log = run_script.last_log.read_text(errors="replace")
    # its scheduler said so; the other's not
    assert log.count("agent-rl: sglang scheduler patched: delayer_gather, decode_rows, delayer_cap, sample_gumbel, "
                     "gc_freeze\n") == 1
    assert "agent-rl: sglang scheduler patched: nothing" not in log


def test_delayer_cap_gathers_a_full_engines_prefills(run_script, tiny_model_path):
    r = run_script(["delayer_cap_checks.py", tiny_model_path])
    without, cap = r["without"], r["cap"]
    assert without["applied"] == ["delayer_gather", "decode_rows"]
    assert cap["applied"] == ["delayer_gather", "decode_rows", "delayer_cap"]
    assert without["all_done"] and cap["all_done"] and without["admitted"] == cap["admitted"] == 32
    # sglang's delayer counts free rows against the request pool (40) unpatched, against the running cap (8) patched
    assert without["caps_seen"] == [40] and cap["caps_seen"] == [8] and cap["max_running_seen"] <= 8
    # so with 24 requests waiting it delays where unpatched it admits a row or two a pass
    assert without["delays_with_queue"] == 0 and cap["delays_with_queue"] > 0
    assert cap["prefill_passes"] < without["prefill_passes"], r


def test_sample_gumbel_draws_the_tokens_sglang_draws(run_script, tiny_model_path):
    r = run_script(["sample_checks.py", tiny_model_path])
    assert r["applied"] == ["delayer_gather", "decode_rows", "delayer_cap", "sample_gumbel", "gc_freeze"]
    assert r["all_done"]
    # every draw of the run (prefill and decode passes, batches of several rows): sglang's tokens, and the generator
    # left where sglang's own draw leaves it
    assert r["draws"] > 20 and r["same_tokens"] == r["same_state"] == r["draws"], r
    assert r["dtypes"] == ["torch.int32"] and r["largest_batch"] > 1


def test_decode_rows_leaves_every_decode_pass_as_sglang_files_it(run_script, tiny_model_path):
    r = run_script(["decode_rows_checks.py", tiny_model_path])
    assert r["applied"] == [[], ["decode_rows"]]   # sglang 0.5.17's sources: the patch applies
    # pass by pass the same rows' state, engine counters and messages to the detokenizer; the same outputs
    assert r["same_records"] and r["same_outputs"] and r["records"][0] == r["records"][1] > 100, r
    # what the workload hit: decode passes of several rows, finishes by length and by stop token in them, a
    # message at the forced interval of unfinished rows, the sessions' second turns among the 49 requests
    assert r["decode_passes"] > 50 and r["rows"] > 5 * r["decode_passes"] and r["requests"] == 49
    assert r["idle_records"] == 3      # free KV and cache sizes as waves 1, 2 and the last request arrive
    assert r["decode_finishes"].get("length", 0) >= 10 and r["decode_finishes"].get("stop", 0) >= 1
    assert r["decode_finishes"].get("abort") == 2      # the two aborted while running
    assert r["partial_messages"] >= 1 and r["messages"] > r["partial_messages"]


def test_mixed_logprob_mixes_prefills_into_decode_passes_with_the_same_logprobs(run_script, tiny_model_path):
    r = run_script(["mixed_checks.py", tiny_model_path])
    declined, mixed = r["declined"], r["mixed"]
    assert mixed["applied"] == ["delayer_gather", "decode_rows", "mixed_logprob"]
    assert "mixed_logprob" not in declined["applied"]
    # sglang mixes no prefill into a decode batch that returns log-probs, enable_mixed_chunk or not ...
    assert declined["mixed_passes"] == 0 and declined["extend_passes"] > 0
    # ... the patch lets it: waves arriving while earlier requests decode run in passes with them
    assert mixed["mixed_passes"] >= 2 and mixed["mixed_decode_rows"] > mixed["mixed_passes"], r
    for run in (declined, mixed):
        assert run["requests"] == 22 and run["lengths_ok"]
        assert run["max_logprob_gap"] < 1e-4, r     # transformers' log-probs of the same tokens (greedy and T 0.7)
    assert r["greedy_same"] == r["greedy"] == 16


def test_gc_freeze_takes_the_schedulers_start_up_heap_out_of_full_collections(run_script, tiny_model_path):
    r = run_script(["gc_checks.py", tiny_model_path])
    assert r["applied"][-1] == "gc_freeze" and r["all_done"]
    # as sglang ships (the loop entered, before the patch acts): the start-up heap (torch, sglang, the model) sits in
    # the oldest generation, which every full collection walks; nothing frozen (3.12 starts with a few hundred
    # interpreter objects of its own frozen)
    assert r["start"]["oldest"] > 100_000 and r["start"]["frozen"] < 1000, r
    # patched: all of it in the permanent generation as the loop starts, and still there after the requests (sglang's
    # loop unfroze nothing); what a full collection walks is what the scheduler allocated since
    for at in ("loop", "flush"):
        assert r[at]["frozen"] > 0.9 * r["start"]["oldest"], r
        assert r[at]["oldest"] < 0.01 * r[at]["frozen"], r
