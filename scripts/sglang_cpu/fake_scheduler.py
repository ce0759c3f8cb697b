"""A fake sglang scheduler process: every `step_s` one decode step for every running request; requests received
join at the next step (their prefill step); each step's finished requests go back as one BatchTokenIDOutput."""
import time
from array import array

import zmq


def run(port_args, step_s: float):
    from sglang.srt.managers.io_struct import BatchTokenIDOutput, sock_recv, sock_send

    ctx = zmq.Context(2)
    pull = ctx.socket(zmq.PULL); pull.connect(port_args.scheduler_input_ipc_name)
    push = ctx.socket(zmq.PUSH); push.connect(port_args.tokenizer_ipc_name)
    running = {}   # rid -> [left, n, prompt_len]
    nxt = time.perf_counter()
    while True:
        while True:
            try:
                obj = sock_recv(pull, zmq.NOBLOCK)
            except zmq.Again:
                break
            items = getattr(obj, "batch", None) or [obj]
            for r in items:
                if getattr(r, "input_ids", None) is None:   # not a generate request (an abort, a flush, ...)
                    continue
                n = int(r.sampling_params.max_new_tokens)
                running[r.rid] = [n, n, len(r.input_ids)]
        done = []
        for rid, st in running.items():
            st[0] -= 1
            if st[0] <= 0:
                done.append(rid)
        if done:
            k = len(done)
            ns = [running[r][1] for r in done]
            msg = BatchTokenIDOutput(
                rids=done, http_worker_ipcs=[None] * k,
                finished_reasons=[{"type": "length", "length": n} for n in ns],
                decoded_texts=[""] * k, decode_ids=[array("i", [7] * n) for n in ns], read_offsets=[0] * k,
                output_ids=[array("i", [7] * n) for n in ns], skip_special_tokens=[False] * k,
                spaces_between_special_tokens=[True] * k, no_stop_trim=[True] * k,
                prompt_tokens=[running[r][2] for r in done], reasoning_tokens=[0] * k, completion_tokens=ns,
                cached_tokens=[0] * k,
                input_token_logprobs_val=[[-1.0] for _ in done], input_token_logprobs_idx=[[7] for _ in done],
                output_token_logprobs_val=[[-0.5] * n for n in ns], output_token_logprobs_idx=[[7] * n for n in ns],
                input_top_logprobs_val=[], input_top_logprobs_idx=[], output_top_logprobs_val=[],
                output_top_logprobs_idx=[], input_token_ids_logprobs_val=[], input_token_ids_logprobs_idx=[],
                output_token_ids_logprobs_val=[], output_token_ids_logprobs_idx=[], output_token_entropy_val=None,
                output_token_sampling_mask=None, output_token_sampling_logprobs=None, output_hidden_states=None,
                routed_experts=None, indexer_topk=None, placeholder_tokens_idx=None, placeholder_tokens_val=None,
                retraction_counts=[0] * k)
            sock_send(push, msg)
            for r in done:
                del running[r]
        nxt += step_s
        time.sleep(max(0.0, nxt - time.perf_counter()))
        if nxt < time.perf_counter() - 1:
            nxt = time.perf_counter()
