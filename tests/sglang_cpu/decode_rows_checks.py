"""agent-rl's `decode_rows` scheduler patch (engines/sglang_patches/decode_rows.py) against real sglang 0.5.17 on a CPU:
the same seeded workload through an engine with sglang's decode-result code as shipped and one with the patch, each
scheduler recording, after every decode pass, every row's state (tokens, finish reason and length, log-probs, stream
offsets, time stats set) and its counters of tokens and passes, at each wave's arrival (an idle engine) its free KV
slots and cache sizes, and every message to the detokenizer. Requests reach the scheduler in waves that are released whole, in a fixed order (`_Gate`), and
sampling is seeded, so both runs see the same batches: their records must be equal pass by pass.

The workload covers what the patch leaves to sglang's own calls and what it files itself: greedy and sampled rows,
finishes by stop token and by length, aborts of running requests, `ignore_eos`, requests with and
without log-probs, and multi-turn requests in streaming sessions (top and token-id log-probs, which the patch leaves
to sglang's own filer, fail in sglang 0.5.17 on a CPU before any decode pass: its CPU sampler returns lists where
`move_logprobs_to_cpu` expects tensors). Prints one
JSON line (records compared, what the workload hit, the decode-result function's time per row in each run);
test_real_sglang.py asserts. argv: MODEL_DIR."""
import asyncio
import functools
import json
import os
import sys
import tempfile
import time

import decode_rows_checks   # this module, importable in sglang's spawned scheduler (the script's folder is on its path)
from engine_checks import CPU_KWARGS, run_engine_recorded

# requests per wave: a probe, two waves (the second continues sessions of the first), and one request whose arrival
# marks the end of the second (the engine's counters are recorded when a wave arrives at an idle scheduler)
WAVES = (8, 24, 16, 1)
ABORTED = ("w1-05", "w2-06")   # aborted while running, after their third token


# ---------------------------------------------------------------------------------------------- in the scheduler
def run_recorded(names, out_path, waves, *args, **kwargs):
    """sglang's run_scheduler_process with `names` of agent-rl's patches applied, its decode passes recorded to
    `out_path` (JSON lines) and its generate requests released in `waves`."""
    from agent_rl.engines.sglang_patches import apply

    applied = apply(names)
    write, processor = _record(out_path, applied)
    from sglang.srt.managers.scheduler import Scheduler

    scheduler, take = [], Scheduler.process_input_requests

    def process_input_requests(self, recv_reqs):   # the scheduler itself (the gate runs inside its receiver)
        scheduler[:] = [self]
        return take(self, recv_reqs)
    Scheduler.process_input_requests = process_input_requests
    _Gate.install(list(waves), lambda: not scheduler or _idle(scheduler[0]),
                  lambda: processor and write({"idle": _counters(processor[0])}))
    from sglang.srt.managers.scheduler import run_scheduler_process

    return run_scheduler_process(*args, **kwargs)


def _row(req):
    lp = req.logprob
    return [req.rid, len(req.origin_input_ids), list(req.output_ids),
            req.finished_reason.to_json() if req.finished_reason is not None else None, req.finished_len,
            req.to_finish is not None, req.is_retracted, req.finished_output, req.send_token_offset,
            req.send_decode_id_offset, req.time_stats.last_decode_finish_time > 0,
            req.time_stats.completion_time > 0,
            None if lp is None or lp.output_token_logprobs_val is None else
            [list(lp.output_token_logprobs_val), list(lp.output_token_logprobs_idx),
             list(lp.output_top_logprobs_val or []), list(lp.output_top_logprobs_idx or []),
             [list(v) for v in lp.output_token_ids_logprobs_val or []]],
            req.reasoning_tokens, req.cached_tokens]


def _record(out_path, applied):
    from sglang.srt.managers.scheduler_components import batch_result_processor as brp
    from sglang.srt.managers.scheduler_components import output_streamer as osm

    f = open(out_path, "w", buffering=1)
    f.write(json.dumps({"applied": applied}) + "\n")
    seen = []   # the decode-result processor, once a decode pass ran
    timing = {"s": 0.0, "rows": 0, "passes": 0}
    decode = brp.SchedulerBatchResultProcessor.process_batch_result_decode

    from sglang.srt.managers.schedule_batch import FINISH_ABORT

    def recorded(self, batch, result):
        for req in batch.reqs:   # an abort of a running request, as sglang's abort_request files it, at a fixed token
            if req.rid in ABORTED and len(req.output_ids) == 3 and req.finished_reason is None and not req.to_finish:
                req.to_finish = FINISH_ABORT()
        t0 = time.perf_counter()
        out = decode(self, batch, result)
        timing["s"] += time.perf_counter() - t0
        timing["rows"] += len(batch.reqs)
        timing["passes"] += 1
        seen[:] = [self]
        # the KV counters between passes move with when sglang frees a finished request's cache (after a pass or
        # at the next: the machine's pace decides), so they are recorded at each wave's arrival, on an idle engine
        f.write(json.dumps({"decode": [_row(r) for r in batch.reqs],
                            "generated": self.metrics_reporter.num_generated_tokens,
                            "forward_ct": self.metrics_reporter.forward_ct_decode, "timing": dict(timing)}) + "\n")
        return out
    brp.SchedulerBatchResultProcessor.process_batch_result_decode = recorded
    payload = osm._GenerationStreamAccumulator.to_payload

    def sent(self, **kw):
        out = payload(self, **kw)
        if out is not None:
            keys = ("rids", "finished_reasons", "output_ids", "decode_ids", "read_offsets", "prompt_tokens",
                    "completion_tokens", "cached_tokens", "retraction_counts", "output_token_logprobs_val",
                    "output_token_logprobs_idx", "output_top_logprobs_val", "output_top_logprobs_idx",
                    "output_token_ids_logprobs_val", "no_stop_trim")
            f.write(json.dumps({"sent": {k: _plain(getattr(out, k, None)) for k in keys if k != "rids"},
                                "n": len(out.rids)}, default=str) + "\n")
        return out
    osm._GenerationStreamAccumulator.to_payload = sent
    return (lambda record: f.write(json.dumps(record) + "\n")), seen


def _idle(scheduler):
    """No batch in flight: the last loop pass ran none and no result waits (the overlap loop's queue)."""
    return (getattr(scheduler, "last_batch", None) is None and not getattr(scheduler, "result_queue", None)
            and not scheduler.running_batch.reqs)


def _counters(scheduler):
    cache = scheduler.tree_cache
    return {"free_kv": int(scheduler.token_to_kv_pool_allocator.available_size()),
            "evictable": int(cache.evictable_size()), "protected": int(cache.protected_size())}


def _plain(v):
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


class _Gate:
    """Holds generate requests until a wave's count has arrived and the engine is `idle()` (with the overlap loop, a
    finished request's last pass may still run after its output went out), then hands them to the scheduler
    together, ordered by their ids (the arrival order between requests sent at once is up to the OS); `on_wave()`
    first."""

    @staticmethod
    def install(waves, idle, on_wave):
        from sglang.srt.managers.io_struct import BatchTokenizedGenerateReqInput, TokenizedGenerateReqInput
        from sglang.srt.managers.scheduler_components.request_receiver import SchedulerRequestReceiver

        recv, held = SchedulerRequestReceiver.recv_requests, []

        def recv_requests(self):
            out = []
            for r in recv(self):
                if isinstance(r, BatchTokenizedGenerateReqInput):
                    held.extend(r)
                elif isinstance(r, TokenizedGenerateReqInput):
                    held.append(r)
                else:
                    out.append(r)
            if waves and len(held) >= waves[0] and idle():
                on_wave()
                n = waves.pop(0)
                out += sorted(held[:n], key=lambda r: r.rid)
                del held[:n]
            return out
        SchedulerRequestReceiver.recv_requests = recv_requests


# ---------------------------------------------------------------------------------------------- the driver
async def workload(engine, tm):
    """The waves; each request's (output ids, finish reason, log-probs) by id."""
    from sglang.srt.managers.io_struct import OpenSessionReqInput

    results = {}

    async def gen(rid, ids, sp, **kw):
        out = await engine.async_generate(input_ids=ids, sampling_params=sp, rid=rid, **kw)
        meta = out["meta_info"]
        results[rid] = [out["output_ids"], meta["finish_reason"], meta.get("output_token_logprobs"),
                        meta.get("output_top_logprobs"), meta.get("output_token_ids_logprobs")]
        return out

    def prompt(k, n):
        return [100 + (7 * k + j) % 900 for j in range(n)]

    shared = prompt(99, 20)   # a prefix several prompts share (radix-cache hits)
    wave1_ids = [(shared if k % 3 == 0 else []) + prompt(k + 10, 8 + (5 * k) % 40) for k in range(WAVES[1])]
    # wave 0, a probe: 8 prompts of wave 1 (its sampled ones), sampled among each step's 2 likeliest tokens: this random
    # model's outputs repeat one token, the other of the two is where wave 1's sampled requests stop (at any step)
    await asyncio.gather(*(gen(f"w0-{k:02d}", wave1_ids[8 + k], {"max_new_tokens": 24, "temperature": 1.0, "top_k": 2,
                                                                 "ignore_eos": True}, return_logprob=True)
                           for k in range(WAVES[0])))
    stops = []
    for k in range(WAVES[0]):
        out = results[f"w0-{k:02d}"][0]
        common = max(set(out), key=lambda t: (out.count(t), t))
        stops.append(sorted(set(out) - {common}) or [common])

    sessions = [f"s{k}" for k in range(4)]
    for sid in sessions:
        assert await tm.open_session(OpenSessionReqInput(capacity_of_str_len=1 << 30, session_id=sid,
                                                         streaming=True), None) == sid
    wave1 = []
    for k in range(WAVES[1]):
        ids = wave1_ids[k]
        sp = {"max_new_tokens": 5 + (7 * k) % 36, "temperature": 0.0 if k < 8 or k >= 16 else 1.0,
              "stop_token_ids": sorted({t for st in stops for t in st}), "no_stop_trim": True}
        if 8 <= k < 16:   # sampled among the 2 likeliest: each step may write the probe's other token
            sp.update(top_k=2, stop_token_ids=stops[k - 8], max_new_tokens=30)
        kw = {"return_logprob": k < 20}
        if 16 <= k < 20:   # past sglang's forced output interval (50 tokens): a partial message to the detokenizer
            sp = dict(sp, ignore_eos=True, max_new_tokens=17 + 20 * (k - 16))
        if k < 4:
            kw["session_params"] = {"id": sessions[k]}
        wave1.append(gen(f"w1-{k:02d}", ids, sp, **kw))
    await asyncio.gather(*wave1)
    wave2 = []
    for k in range(WAVES[2]):
        sp = {"max_new_tokens": 9 + (5 * k) % 30, "temperature": 0.0 if k % 2 else 1.0,
              "stop_token_ids": stops[k % len(stops)], "no_stop_trim": True, "top_k": 2}
        kw = {"return_logprob": True}
        if k < 4:   # the next turn of the session: only the new tokens (an observation)
            ids, kw["session_params"] = [800 + k, 801 + k, 802 + k], {"id": sessions[k]}
        else:
            ids = prompt(k + 50, 6 + 3 * k)
        wave2.append(gen(f"w2-{k:02d}", ids, sp, **kw))
    await asyncio.gather(*wave2)
    await gen("w3-00", prompt(77, 5), {"max_new_tokens": 2, "temperature": 0.0})   # the end of wave 2, on record
    return results, stops


def run(model, names):
    from agent_rl.engines.sglang_engine import server_args_kwargs
    from agent_rl.engines.sglang_patches import engine_class

    out_path = tempfile.mktemp(prefix="decode-rows-", suffix=".jsonl")
    cls = engine_class(runner=functools.partial(decode_rows_checks.run_recorded, tuple(names), out_path, WAVES))
    kwargs = server_args_kwargs(model, 0.4, 512, 1, "float32", False,
                                dict(CPU_KWARGS, enable_streaming_session=True), 64)
    (results, stops), lines = run_engine_recorded(
        cls, kwargs, lambda engine: workload(engine, engine.tokenizer_manager), out_path)
    return results, stops, lines


def main():
    model = sys.argv[1]
    # sglang's own forced-output interval (agent-rl's engines set it out of reach, ENGINE_ENV; a test process that
    # started one passes that on): unfinished rows at every 50th token go to the detokenizer, the streamer's other path
    os.environ["SGLANG_FORCE_STREAM_INTERVAL"] = "50"
    base, stops, lines_base = run(model, ())
    patched, stops_p, lines_patched = run(model, ("decode_rows",))

    def untimed(lines):
        """The passes' and messages' records in order, then the idle engine's (where an idle record falls between
        two passes is the machine's pace: a finished request's last overlap pass may come before or after it)."""
        records = [{k: v for k, v in line.items() if k != "timing"} for line in lines[1:]]
        return [r for r in records if "idle" not in r] + [r for r in records if "idle" in r]

    decodes = [ln for ln in lines_base[1:] if "decode" in ln]
    timing = {name: [ln for ln in lines if "timing" in ln][-1]["timing"] for name, lines in
              (("base", lines_base), ("patched", lines_patched))}
    records_base, records_patched = untimed(lines_base), untimed(lines_patched)
    first_diff = next((i for i, (a, b) in enumerate(zip(records_base, records_patched)) if a != b), None)
    where = None   # what differs in the first record that does: its keys, and for decode records the rows' columns
    if first_diff is not None:
        a, b = records_base[first_diff], records_patched[first_diff]
        where = {"keys": {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                          and k not in ("decode", "sent")}}
        if "decode" in a and "decode" in b:
            where["rows"] = [[ra[0], [c for c, (x, y) in enumerate(zip(ra, rb)) if x != y], ra, rb]
                             for ra, rb in zip(a["decode"], b["decode"]) if ra != rb][:3]
        else:
            where["records"] = [a, b]
    ended = {}   # requests that finished in a decode pass (past their prefill's one token), by how
    for ln in decodes:
        for row in ln["decode"]:
            if row[3] is not None and len(row[2]) > 1:
                ended.setdefault(row[0], row[3]["type"])
    reasons = [r[1]["type"] + ("" if r[1]["type"] != "stop" else ":" + str(r[1].get("matched"))) for r in base.values()]
    res = {"applied": [lines_base[0]["applied"], lines_patched[0]["applied"]],
           "records": [len(lines_base) - 1, len(lines_patched) - 1],
           "same_records": records_base == records_patched, "first_difference": first_diff,
           "difference": where,
           "same_outputs": base == patched and stops == stops_p, "requests": len(base),
           "decode_passes": len(decodes), "rows": sum(len(ln["decode"]) for ln in decodes),
           "messages": sum(1 for ln in lines_base[1:] if "sent" in ln),
           "idle_records": sum(1 for ln in lines_base[1:] if "idle" in ln),
           "partial_messages": sum(1 for ln in lines_base[1:] if "sent" in ln and None in ln["sent"]["finished_reasons"]),
           "finishes": {k: reasons.count(k) for k in sorted(set(reasons))},
           "decode_finishes": {k: list(ended.values()).count(k) for k in sorted(set(ended.values()))},
           "us_per_row": {k: round(t["s"] / max(1, t["rows"]) * 1e6, 2) for k, t in timing.items()}}
    print(json.dumps(res), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
