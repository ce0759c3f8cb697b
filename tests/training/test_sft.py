"""Supervised warm-start: demonstrations are encoded in the rollout token stream (the same ids a full
re-render gives, loss on assistant turns only), and the SFT step lowers the loss of what it trains on."""
import pytest
import torch

from agent_rl.rollout.chat import ChatRenderer
from agent_rl.training.policy import PolicyModel
from agent_rl.rollout.batch import pad_sequences
from agent_rl.training.sft import DemoError, DemoSet, encode_demo, sft_step
from agent_rl.training.optim import build_optimizer, build_scheduler
from agent_rl.config.schema import OptimConfig

TOOLS = [{"type": "function", "function": {"name": "kg_query", "description": "look up",
                                           "parameters": {"type": "object", "properties": {"entity": {"type": "string"}}}}}]
CALL = '<tool_call>\n{"name": "kg_query", "arguments": {"entity": "Blue Harbor"}}\n</tool_call>'
CHAT = [{"role": "user", "content": "Who directed Blue Harbor?"},
        {"role": "assistant", "content": CALL},
        {"role": "tool", "name": "kg_query", "content": "film.film.directed_by"},
        {"role": "assistant", "content": CALL},
        {"role": "tool", "name": "kg_query", "content": "Ada Lorne " * 40},
        {"role": "assistant", "content": "<answer>Ada Lorne</answer>"}]


@pytest.fixture(scope="module")
def renderer(tokenizer):
    return ChatRenderer(tokenizer, TOOLS)


def _segments(ids, mask):
    out, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def test_encoding_is_the_rollout_stream(renderer, tokenizer):
    ids, mask = encode_demo(renderer, CHAT)
    assert renderer.drift(CHAT, ids) == 0             # equals a full re-render of the chat
    assert ids[:len(renderer.prompt_ids(CHAT[:1]))] == renderer.prompt_ids(CHAT[:1])
    eot = tokenizer.decode(renderer.end_of_turn_ids)
    texts = [tokenizer.decode(s) for s in _segments(ids, mask)]
    assert texts == [CALL + eot, CALL + eot, "<answer>Ada Lorne</answer>" + eot]


def test_tool_contents_are_truncated_like_live_observations(renderer):
    seen = []

    def truncate(name, text):
        seen.append(name)
        return text[:20], len(text) - 20

    full, _ = encode_demo(renderer, CHAT)
    cut, mask = encode_demo(renderer, CHAT, truncate)
    assert seen == ["kg_query", "kg_query"] and len(cut) < len(full)
    assert sum(mask) == sum(encode_demo(renderer, CHAT)[1])   # assistant tokens unchanged


@pytest.mark.parametrize("chat, match", [
    ([{"role": "user", "content": "q"}], "at least one assistant"),
    ([{"role": "assistant", "content": "a"}], "at least one assistant"),
    (CHAT[:3], "must end with an assistant"),
    ([CHAT[0], CHAT[1], CHAT[1]], "two assistant messages"),
    ([CHAT[0], {"role": "assistant", "content": ""}], "non-empty string"),
    ([CHAT[0], CHAT[1], {"role": "user", "content": "x"}, CHAT[5]], "expected a tool message"),
    ([CHAT[0], CHAT[1], CHAT[2], {"role": "user", "content": "x"}, CHAT[5]], "expected an assistant"),
])
def test_bad_demonstrations_are_refused(renderer, chat, match):
    with pytest.raises(DemoError, match=match):
        encode_demo(renderer, chat)


def test_demo_set_drops_long_and_cycles_epochs(renderer):
    n = len(encode_demo(renderer, CHAT)[0])
    short = [CHAT[0], {"role": "assistant", "content": "<answer>x</answer>"}]
    demos, dropped = DemoSet.from_messages([CHAT, short, short], renderer, max_length=n - 1, seed=3)
    assert dropped == 1 and len(demos) == 2
    b = demos.next_batch(5, pad_id=0)
    assert b["input_ids"].shape[0] == 5 and demos.epochs == 3
    assert (b["loss_mask"] <= b["attention_mask"]).all()
    with pytest.raises(DemoError, match="longer than"):
        DemoSet.from_messages([CHAT], renderer, max_length=10)
    with pytest.raises(DemoError, match="demonstration 1"):
        DemoSet.from_messages([CHAT, CHAT[:1]], renderer, max_length=4096)


def test_sft_step_lowers_the_demonstration_loss(tiny_model_path, renderer):
    torch.manual_seed(0)
    policy = PolicyModel(tiny_model_path, dtype="float32", device=torch.device("cpu"), remove_padding=False)
    ocfg = OptimConfig(lr=1e-2, weight_decay=0.0)
    opt = build_optimizer(policy.parameters(), ocfg)
    sched = build_scheduler(opt, ocfg, 20)
    batch = pad_sequences([encode_demo(renderer, CHAT)] * 2, 0)
    before = [p.detach().clone() for p in policy.parameters()]
    losses = [sft_step(policy, opt, sched, batch, max_token_len=4096, grad_clip=1.0)["sft/loss"] for _ in range(25)]
    assert losses[-1] < 0.3 * losses[0], losses
    # only assistant tokens carry loss: a batch whose loss mask is empty gives zero loss and no update
    still = [p.detach().clone() for p in policy.parameters()]
    empty = dict(batch, loss_mask=torch.zeros_like(batch["loss_mask"]))
    m = sft_step(policy, opt, sched, empty, max_token_len=4096, grad_clip=1.0)
    assert m["sft/loss"] == 0.0 and m["sft/tokens"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(before, still))
