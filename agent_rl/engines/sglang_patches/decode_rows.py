"""`decode_rows`: sglang's per-row work after each decode pass, without the calls that change nothing.

After every decode pass sglang's scheduler files each running request's new token
(`SchedulerBatchResultProcessor.process_batch_result_decode`) through a dozen small calls a row: finish checks
(`Req.update_finish_state` and three `_check_*` helpers), time stats, reasoning tokens, the finished-request handler,
the log-prob filer, and then the output streamer's per-row `accept` (`_stream_output_generation`). On the GPU host this
is 24-30% of the scheduler thread, the engine's bound (docs/benchmarks-log.md, twenty-fourth session). For the common
row (no grammar, stop strings, top log-probs, hidden states, reasoning, metrics or tracing) most of those calls return
without changing anything. Patched, a row does the few assignments they would make and calls sglang's own function for
everything else: a row that may finish at this token (length, stop or EOS token, an id outside the vocabulary, a
pending abort) goes through `update_finish_state`, a finished row through the handler, a row asking for more than the
token's log-prob through `_apply_decode_logprobs`; the streamer hands sglang's `_stream_output_generation` only the
rows it would output (finished, streaming, or at the forced interval). The batch's outputs, each request's state and
what reaches the detokenizer are the same (tests/sglang_cpu/decode_rows_checks.py: a seeded run of each, compared
pass by pass).

Applied only where the installed sglang's sources of every function this relies on hash to `SOURCES_SHA256` (sglang
0.5.17): each skipped call was read there. Speculative batches, idle batches and requests of a class other than
sglang's `Req` run sglang's code as shipped.
"""
from __future__ import annotations

import time

# sha256 (first 16 hex digits) of the sources, joined in this order, of what the fast path reads or skips
SOURCES_SHA256 = "c34c58110686ac9e"


def _sources():
    from sglang.srt.managers.schedule_batch import Req
    from sglang.srt.managers.scheduler_components import batch_result_processor as brp
    from sglang.srt.managers.scheduler_components import output_streamer as osm
    from sglang.srt.observability.req_time_stats import SchedulerReqTimeStats

    b, s = brp.SchedulerBatchResultProcessor, osm.SchedulerOutputStreamer
    return [b.process_batch_result_decode, b._normalize_decode_outputs, b._handle_finish_state_updated_req,
            b._mamba_prefix_cache_update, b._maybe_collect_customized_info, b._maybe_update_reasoning_tokens,
            b._apply_decode_logprobs, Req.finished, Req.update_finish_state, Req._check_vocab_boundary_finish,
            Req._check_str_based_finish, Req._check_token_based_finish, SchedulerReqTimeStats.set_last_decode_finish_time,
            s._stream_output_generation, s._maybe_log_time_stats, osm._GenerationStreamAccumulator.accept]


def patch() -> bool:
    """Patch sglang's decode-result and output-streamer functions; False where their sources differ from sglang
    0.5.17's (or sglang has none)."""
    from agent_rl.engines.sglang_patches import install, source_digest, unpatched

    try:
        sources = _sources()
    except (ImportError, AttributeError):
        return False
    from sglang.srt.managers.scheduler_components import batch_result_processor as brp
    from sglang.srt.managers.scheduler_components import output_streamer as osm

    b, s = brp.SchedulerBatchResultProcessor, osm.SchedulerOutputStreamer
    decode, stream = unpatched(b, "process_batch_result_decode"), unpatched(s, "_stream_output_generation")
    if decode is True:
        return True
    if source_digest(*sources) != SOURCES_SHA256:
        return False
    from sglang.srt.observability.req_time_stats import SchedulerReqTimeStats

    install(b, "process_batch_result_decode",
            _decode(decode, brp, SchedulerReqTimeStats.set_last_decode_finish_time), decode)
    return install(s, "_stream_output_generation", _stream(stream, osm), stream)


def _decode(original, brp, set_last_decode_finish_time):
    from sglang.srt.managers.schedule_batch import Req

    perf = time.perf_counter

    def process_batch_result_decode(self, batch, result):
        if not batch.spec_algorithm.is_none():
            return original(self, batch, result)
        # as sglang's, to the loop
        if result.copy_done is not None:
            result.copy_done.synchronize()
        if result.routed_experts_output is not None:
            result.routed_experts_output.finalize()
            result.routed_experts_output = None
        if result.indexer_topk_output is not None:
            result.indexer_topk_output.finalize()
            result.indexer_topk_output = None
        logits_output, can_run_cuda_graph = result.logits_output, result.can_run_cuda_graph
        next_token_ids, next_token_logprobs = self._normalize_decode_outputs(
            batch=batch, result=result, logits_output=logits_output, next_token_ids=result.next_token_ids)
        self.metrics_reporter.num_generated_tokens += len(batch.reqs)
        if brp.get_observability().enable_metrics:
            self.metrics_collector.increment_decode_cuda_graph_pass(value=can_run_cuda_graph)
        self.token_to_kv_pool_allocator.free_group_begin()

        skip_done = self.enable_overlap or self.enable_overlap_mlx
        think_end_ids = self.model_config.think_end_ids
        # the handler does nothing for an unfinished row without mamba state when these hold
        plain_handler = (not brp.get_disagg().disaggregation_decode_enable_offload_kvcache
                         and (logits_output is None or logits_output.customized_info is None))
        for i, req in enumerate(batch.reqs):
            if type(req) is not Req:
                _row(self, req, i, batch, result, logits_output, next_token_ids, next_token_logprobs, skip_done)
                continue
            if skip_done and (req.finished_reason is not None or req.is_retracted):
                continue
            next_token_id = next_token_ids[i]
            token = next_token_id[0]
            out = req.output_ids
            out.append(token)
            if req.require_reasoning and think_end_ids:
                req.update_reasoning_tokens(next_token_id, think_end_ids)
            stats = req.time_stats
            if (type(stats).set_last_decode_finish_time is not set_last_decode_finish_time or stats.enable_metrics
                    or stats.trace_ctx.tracing_enable):
                stats.set_last_decode_finish_time()
            else:
                stats.last_decode_finish_time = perf()
            sp = req.sampling_params
            # update_finish_state returns without a change when all of this holds; otherwise it decides
            if not (req.finished_reason is None and not req.to_finish and len(out) < sp.max_new_tokens
                    and 0 <= token < req.vocab_size and not sp.stop_strs and not sp.stop_regex_strs
                    and req.grammar is None
                    and (sp.ignore_eos or (req.tokenizer is None
                                           and not (sp.stop_token_ids and token in sp.stop_token_ids)
                                           and not (req.eos_token_ids and token in req.eos_token_ids)))):
                req.update_finish_state(1)
            if not (plain_handler and req.finished_reason is None and req.mamba_ping_pong_track_buffer is None):
                self._handle_finish_state_updated_req(req, batch, result, i, logits_output)
            if req.return_logprob:
                lp = req.logprob
                if lp.top_logprobs_num > 0 or lp.token_ids_logprob is not None or next_token_logprobs is None:
                    self._apply_decode_logprobs(req=req, i=i, batch=batch, next_token_id=next_token_id,
                                                next_token_logprobs=next_token_logprobs, logits_output=logits_output)
                else:
                    lp.output_token_logprobs_val.append(next_token_logprobs[i])
                    lp.output_token_logprobs_idx.append(token)
            if req.return_sampling_mask or req.return_hidden_states or req.grammar is not None:
                _rare(self, req, i, result, logits_output, next_token_id)

        # as sglang's, from the loop on
        self.output_streamer.stream_output(batch.reqs, batch.return_logprob)
        self.token_to_kv_pool_allocator.free_group_end()
        self.metrics_reporter.forward_ct_decode = (self.metrics_reporter.forward_ct_decode + 1) % (1 << 30)
        self.metrics_reporter.report_decode_stats(can_run_cuda_graph, running_batch=batch,
                                                  num_correct_drafts=result.num_correct_drafts)

    return process_batch_result_decode


def _row(self, req, i, batch, result, logits_output, next_token_ids, next_token_logprobs, skip_done) -> None:
    """One row as sglang 0.5.17's loop files it (non-speculative), every call made."""
    if skip_done and (req.finished() or req.is_retracted):
        return
    next_token_id = next_token_ids[i]
    req.output_ids.extend(next_token_id)
    self._maybe_update_reasoning_tokens(req, next_token_id)
    req.time_stats.set_last_decode_finish_time()
    req.update_finish_state(len(next_token_id))
    self._handle_finish_state_updated_req(req, batch, result, i, logits_output)
    if req.return_logprob:
        self._apply_decode_logprobs(req=req, i=i, batch=batch, next_token_id=next_token_id,
                                    next_token_logprobs=next_token_logprobs, logits_output=logits_output)
    _rare(self, req, i, result, logits_output, next_token_id)


def _rare(self, req, i, result, logits_output, next_token_id) -> None:
    """The end of sglang 0.5.17's loop body for a non-speculative row: sampling masks, hidden states, grammar."""
    if req.return_sampling_mask:
        self.add_sampling_mask_return_values(i, req, logits_output)
    if req.return_hidden_states and logits_output.hidden_states is not None:
        stride = result.speculative_num_draft_tokens or 1
        self._append_decode_hidden_states(req=req, hidden_states=logits_output.hidden_states, start=i * stride,
                                          accept_len=len(next_token_id))
    if req.grammar is not None:
        self._accept_grammar_tokens(req, next_token_id)
        req.grammar.finished = req.finished()


def _stream(original, osm):
    from sglang.srt.managers.schedule_batch import Req

    def _stream_output_generation(self, reqs, return_logprob, skip_req=None, is_idle_batch=False):
        if is_idle_batch:
            return original(self, reqs, return_logprob, skip_req, is_idle_batch)
        force = osm.DEFAULT_FORCE_STREAM_INTERVAL
        rows = []
        for req in reqs:
            if req is skip_req:
                continue
            if (type(req) is not Req or req.return_hidden_states or req.return_routed_experts
                    or req.return_indexer_topk or req.return_sampling_mask):
                # the accumulator's optional columns depend on every row: sglang's, on all of them
                return original(self, reqs, return_logprob, skip_req, is_idle_batch)
            # `accept` returns at once, and the time-stats log skips, for an unfinished row that does not stream
            # and is not at the forced interval
            if req.finished_reason is None and not req.stream and len(req.output_ids) % force:
                continue
            rows.append(req)
        if rows:   # no row: sglang's builds an empty accumulator and sends nothing
            original(self, rows, return_logprob, None, False)

    return _stream_output_generation
