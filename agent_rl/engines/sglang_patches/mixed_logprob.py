"""`mixed_logprob`: sglang's mixed chunked prefill (`enable_mixed_chunk`) for requests that return log-probs.

With `enable_mixed_chunk` sglang runs a prefill in the same forward pass as the running decode batch: each running
request is one more row of one token in the extend pass (`ScheduleBatch.mix_with_running`), so a new turn's prefill no
longer stalls every running trajectory for a pass. sglang 0.5.17 does this only when neither batch returns log-probs
(`Scheduler._get_new_batch_prefill_raw`, "TODO (lianmin): support return_logprob + mixed chunked prefill"); every
rollout request returns them. What breaks with log-probs is `mix_with_running` giving each decode row the log-prob
start 0 of its one-token extend ("TODO (lianmin): Revisit this. It should be seq_len - 1"): that asks the logits
processor for an input log-prob of the row's last token, with no token id filed for it
(`extend_input_logprob_token_ids` covers only the prefill rows).

Patched: a decode row's log-prob start is its extend length (1): no input log-prob, as for a prompt whose
`logprob_start_len` is -1 (every rollout request's), and the result processor files only the row's output token
log-prob (`_apply_prefill_logprobs`: zero input log-probs). The scheduler then mixes, by sglang's own steps, the
batches it declined only for their log-probs. Without `enable_mixed_chunk` (sglang's default) nothing changes.
Checked on a CPU with real sglang (`tests/sglang_cpu/mixed_checks.py`): the same greedy tokens and log-probs with and
without mixing, mixed passes counted.

Applied only where the installed sglang's sources of both functions hash to `SOURCES_SHA256` (sglang 0.5.17).
"""
from __future__ import annotations

# sha256 (first 16 hex digits) of sglang 0.5.17's `Scheduler._get_new_batch_prefill_raw` and
# `ScheduleBatch.mix_with_running`, joined in this order
SOURCES_SHA256 = "6cde69159c9a1124"


def _sources():
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.managers.scheduler import Scheduler

    return [Scheduler._get_new_batch_prefill_raw, ScheduleBatch.mix_with_running]


def patch() -> bool:
    """Patch `Scheduler._get_new_batch_prefill_raw` and `ScheduleBatch.mix_with_running`; False where their sources
    differ from sglang 0.5.17's (or sglang has none)."""
    from agent_rl.engines.sglang_patches import install, source_digest, unpatched

    try:
        sources = _sources()
    except (ImportError, AttributeError):
        return False
    from sglang.srt.managers.schedule_batch import ScheduleBatch
    from sglang.srt.managers.scheduler import Scheduler

    prefill, mix = unpatched(Scheduler, "_get_new_batch_prefill_raw"), unpatched(ScheduleBatch, "mix_with_running")
    if prefill is True:
        return True
    if isinstance(prefill, bool) or isinstance(mix, bool) or source_digest(*sources) != SOURCES_SHA256:
        return False

    def mix_with_running(self, running_batch):
        running_bs = running_batch.batch_size()
        mix(self, running_batch)
        if running_bs:   # each decode row extends by one token: its log-probs start there (no input log-prob), not at 0
            self.extend_logprob_start_lens[-running_bs:] = self.extend_lens[-running_bs:]

    def _get_new_batch_prefill_raw(self, prefill_delayer_single_pass, running_batch):
        new_batch, running_batch = prefill(self, prefill_delayer_single_pass, running_batch)
        if (new_batch is None or not self.is_mixed_chunk or new_batch.decoding_reqs is not None
                or running_batch.is_empty() or new_batch.input_embeds is not None
                or not (new_batch.return_logprob or running_batch.return_logprob)):
            return new_batch, running_batch
        # declined by sglang for the log-probs alone: its mixing steps, as it runs them without log-probs
        running_batch.filter_batch()
        if not running_batch.is_empty():
            running_batch.prepare_for_decode()
            new_batch.mix_with_running(running_batch)
            new_batch.decoding_reqs = running_batch.reqs
        return new_batch, ScheduleBatch(reqs=[], batch_is_full=running_batch.batch_is_full)

    install(ScheduleBatch, "mix_with_running", mix_with_running, mix)
    return install(Scheduler, "_get_new_batch_prefill_raw", _get_new_batch_prefill_raw, prefill)
