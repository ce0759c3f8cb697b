"""`delayer_cap`: sglang's prefill delayer holds a prefill while fewer rows are free than its largest recent prefill
admitted ("slot condition", 0.5.17 `PrefillDelayer._negotiate_should_allow_prefill_pure`), so that on a full engine
the turns that end one by one are admitted together every few passes, not a few at a time in a prefill pass each. It
counts the free rows against `max_running_requests`. With KV sessions and more trajectories in flight than decode rows
(`sglang_engine.scheduling_kwargs`: 128 x 8 with over-sampling or carry-over), that is the request pool, sized for
every trajectory's session (rows + trajectories), while the running batch is capped lower, at
`pp_max_micro_batch_size`: the delayer then sees rows free that are not, never delays, and a full engine with a long
queue runs a prefill pass for every few rows that free up (H100, 135M 128 x 8 heavy tail, tree 6b5eb6f:
over-sampling 456 prefill passes in two steps against plain async's 154, 38% of the engine's time).

Patched, the delayer counts free rows against the running cap where that is lower (one pipeline stage and one
data-parallel rank, as our engine runs it): sglang's own rule, with the cap it was written for. Where the two are equal
(every engine our config starts without that split) nothing changes.
"""
from __future__ import annotations

_NEGOTIATE_PARAMS = ["self", "local_prefillable", "token_usage", "running_batch", "max_prefill_bs",
                     "max_running_requests", "waiting_queue_len"]


def running_cap() -> int:
    """sglang's cap on running requests per batch (`pp_max_micro_batch_size`) where one pipeline stage runs; 0 where it
    cannot be read or does not apply."""
    try:
        from sglang.srt.runtime_context import get_parallel

        parallel = get_parallel()
        if parallel.pp_size != 1:
            return 0
        return int(parallel.pp_max_micro_batch_size or 0)
    except Exception:   # an sglang without this context, or it is not published yet: leave the delayer as it is
        return 0


def patch() -> bool:
    """Patch `PrefillDelayer._negotiate_should_allow_prefill`; False where the installed sglang has no such function of
    this signature."""
    from agent_rl.engines.sglang_patches import delayer_method, install

    found = delayer_method("_negotiate_should_allow_prefill", _NEGOTIATE_PARAMS)
    if not isinstance(found, tuple):
        return found
    PrefillDelayer, original = found

    def _negotiate_should_allow_prefill(self, local_prefillable, token_usage, running_batch=0, max_prefill_bs=0,
                                        max_running_requests=0, waiting_queue_len=0):
        if getattr(self, "dp_size", 1) == 1:
            cap = running_cap()
            if 0 < cap < max_running_requests:
                max_running_requests = cap
        return original(self, local_prefillable, token_usage, running_batch, max_prefill_bs, max_running_requests,
                        waiting_queue_len)

    return install(PrefillDelayer, "_negotiate_should_allow_prefill", _negotiate_should_allow_prefill, original)
