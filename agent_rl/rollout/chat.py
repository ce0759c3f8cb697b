"""Chat rendering for token-in-token-out rollouts (design decision 1).

`ChatRenderer` turns the first messages into prompt ids and every tool turn into the ids appended
after the sampled assistant tokens. It renders with the model's own chat template when that
template renders tools (checked by rendering a sentinel tool), else with the project's Hermes /
Qwen2.5-style template (`agent_rl/model/chat_template.jinja`).

Token stream of a trajectory:

    prompt_ids(messages)                  ... <|im_start|>assistant\\n
    sampled ids of turn 1                 ... <|im_end|>                (the stop token is sampled)
    observation_ids(tool_msgs, True)      \\n<|im_start|>user\\n<tool_response>...<|im_end|>\\n<|im_start|>assistant\\n
    sampled ids of turn 2 ...

`observation_ids` is computed once per tool turn by rendering the *delta*: a fixed dummy
conversation is rendered with and without the tool messages and the text after the dummy
assistant's end-of-turn string is tokenized. The render is the rollout's hottest CPU cost, so the
delta of each message shape is rendered once with placeholders and filled in afterwards, where
probes and the first real renders prove that equal to rendering (`obs_template.py`). Nothing sampled
is ever re-tokenized. `drift` compares
that incremental stream with a full re-render of the conversation, as a metric only.

For `drift`, assistant messages hold the decoded sampled text *without* the final end-of-turn
token, with tool calls left inline in `content` (not as structured `tool_calls`, which a template
would re-serialise differently).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

from agent_rl.engines.base import model_eos_token_ids
from agent_rl.model.prepare import chat_template as project_chat_template
from agent_rl.rollout.obs_template import ObservationTemplates
from agent_rl.rollout.split_encode import SplitEncoder

_SENTINEL_TOOL = "agent_rl_sentinel_tool_7f3a"
_SENTINEL_TEXT = "agent_rl_sentinel_text_7f3a"
_DUMMY_TEXT = "agent_rl_dummy"


def _sentinel_tools() -> List[Dict[str, Any]]:
    return [{"type": "function", "function": {"name": _SENTINEL_TOOL, "description": "sentinel",
                                              "parameters": {"type": "object", "properties": {}}}}]


def template_renders_tools(tokenizer, template: Optional[str] = None) -> bool:
    """True when `template` (default: the tokenizer's) puts a tool schema into the prompt."""
    if template is None and not getattr(tokenizer, "chat_template", None):
        return False
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tools=_sentinel_tools(),
                                             chat_template=template, tokenize=False, add_generation_prompt=True)
    except Exception:
        return False
    return _SENTINEL_TOOL in text


class ChatRenderer:
    """`stop_token_ids` (every id that ends an assistant turn, passed to the engine with each request): the
    tokenizer's eos, the template's end-of-turn token when it is one token, and the model's terminators (every
    `eos_token_id` of `model_path`'s generation_config.json / config.json, e.g. Llama 3's [128001, 128009];
    `model_path` defaults to the tokenizer's folder). `turn_closed(ids)` says whether sampled ids already close the
    turn as the template does; a turn that stopped on another terminator is closed with the end-of-turn ids before
    a tool observation (the sampled terminator stays: token in, token out)."""

    def __init__(self, tokenizer, tools: Optional[List[Dict[str, Any]]] = None, system_prompt: Optional[str] = None,
                 model_path: Optional[str] = None):
        self.tokenizer = tokenizer
        self.tools = list(tools) if tools else None
        self.system_prompt = system_prompt
        if template_renders_tools(tokenizer):
            self.template: str = tokenizer.chat_template
            self.template_source = "model"
        else:
            self.template = project_chat_template()
            self.template_source = "project"
        self.end_of_turn_text = self._find_end_of_turn()
        self.end_of_turn_ids: List[int] = self.encode(self.end_of_turn_text) if self.end_of_turn_text else []
        stop: List[int] = []
        eos = tokenizer.eos_token_id
        for t in ([eos] if isinstance(eos, int) else list(eos or [])):
            if t is not None and t not in stop:
                stop.append(int(t))
        if len(self.end_of_turn_ids) == 1 and self.end_of_turn_ids[0] not in stop:
            stop.append(self.end_of_turn_ids[0])
        if model_path is None:
            model_path = getattr(tokenizer, "name_or_path", None)
        stop += [t for t in model_eos_token_ids(model_path) if t not in stop]
        self.stop_token_ids: List[int] = stop
        if not self.end_of_turn_ids and isinstance(eos, int):
            self.end_of_turn_ids = [eos]
        self._obs_before: Optional[tuple] = None
        self._obs_templates = ObservationTemplates(self._render_observation)
        self._fast_decode = self._backend_decodes_alike()
        self._pieces = SplitEncoder(tokenizer)

    # ---------------------------------------------------------------- basics
    def encode(self, text: str) -> List[int]:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)  # the fast tokenizer's Rust object: what
        if backend is not None:                                         # __call__ runs, without its per-call overhead
            return backend.encode(text, add_special_tokens=False).ids
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode_pieces(self, text: str, cache: bool) -> List[int]:
        """`encode(text)`, the texts between added tokens encoded one by one, recurring ones remembered when `cache`
        (`split_encode.py`; the same ids, checked)."""
        return self._pieces.encode(text, cache=cache) if self._pieces.enabled else self.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of sampled ids, special tokens kept: what `tokenizer.decode(ids, skip_special_tokens=False)` returns,
        by the fast tokenizer's Rust object where that is the same (`_backend_decodes_alike`)."""
        if self._fast_decode:
            return self.tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=False)
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def _backend_decodes_alike(self) -> bool:
        """Whether `tokenizer.decode` of a list of ints is just its backend's decode: a fast tokenizer whose class keeps
        transformers' own `decode` / `_decode`, checked on a probe text that any space clean-up would change (" ,",
        " n't", ...: transformers skips `clean_up_tokenization_spaces` for BPE tokenizers, which leave it set)."""
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None:
            return False
        for name in ("decode", "_decode"):
            owner = next((c for c in type(tok).__mro__ if name in vars(c)), None)
            if owner is None or not owner.__module__.startswith("transformers.tokenization_utils"):
                return False
        try:
            probe = (self.encode(" Probe: text, 42 spaces  and\nlines ✓ a , b . c ! d ? e ' f n't g 'm h 's i 've j 're")
                     + list(self.end_of_turn_ids) + list(self.stop_token_ids))
            return backend.decode(probe, skip_special_tokens=False) == tok.decode(probe, skip_special_tokens=False)
        except Exception:
            return False

    def render(self, messages: Sequence[Dict[str, Any]], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(list(messages), tools=self.tools, chat_template=self.template,
                                                  tokenize=False, add_generation_prompt=add_generation_prompt)

    def with_system(self, messages: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
        msgs = [dict(m) for m in messages]
        if self.system_prompt and not (msgs and msgs[0].get("role") == "system"):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        return msgs

    def _find_end_of_turn(self) -> str:
        """The text the template writes right after an assistant message's content, whitespace stripped."""
        text = self.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": _SENTINEL_TEXT}],
                           add_generation_prompt=False)
        i = text.rfind(_SENTINEL_TEXT)
        return text[i + len(_SENTINEL_TEXT):].strip() if i >= 0 else ""

    def _cut_after_last_end_of_turn(self, text: str) -> int:
        if not self.end_of_turn_text:
            return len(text)
        i = text.rfind(self.end_of_turn_text)
        return len(text) if i < 0 else i + len(self.end_of_turn_text)

    # ---------------------------------------------------------------- API
    def prompt_ids(self, messages: Sequence[Dict[str, Any]]) -> List[int]:
        """Ids of the conversation so far plus the assistant header (system prompt added when configured and absent)."""
        return self._encode_pieces(self.render(self.with_system(messages), add_generation_prompt=True), cache=True)

    def observation_text(self, tool_messages: Sequence[Dict[str, Any]]) -> str:
        """Text after the assistant's end-of-turn token up to and including the next assistant header."""
        tool_msgs = [{"role": "tool", **{k: v for k, v in m.items() if k != "role"}} for m in tool_messages]
        fast = self._obs_templates.text(tool_msgs)
        return fast if fast is not None else self._render_observation(tool_msgs)

    def _render_observation(self, tool_msgs: List[Dict[str, Any]]) -> str:
        """The delta by two renders (the reference the fast path is checked against)."""
        if self._obs_before is None:
            base = self.with_system([{"role": "user", "content": _DUMMY_TEXT}, {"role": "assistant", "content": _DUMMY_TEXT}])
            before = self.render(base, add_generation_prompt=False)
            self._obs_before = (base, before, self._cut_after_last_end_of_turn(before))
        base, before, cut = self._obs_before
        after = self.render(base + tool_msgs, add_generation_prompt=True)
        if after[:cut] != before[:cut]:
            raise ValueError("chat template renders earlier turns differently when tool messages follow; "
                             "cannot compute an incremental observation")
        return after[cut:]

    def turn_closed(self, output_ids: Sequence[int]) -> bool:
        """Whether an assistant turn's sampled ids end the way the template ends a turn: with its single
        end-of-turn token (e.g. `<|im_end|>`, `<|eot_id|>`); with a template whose end of turn is not one token, with
        any stop token. False for a turn cut on length, or stopped on another terminator (Llama 3's
        `<|end_of_text|>` where the template writes `<|eot_id|>`): those get the end-of-turn ids before an
        observation (`observation_ids(assistant_ended=False)`)."""
        if not output_ids:
            return False
        if len(self.end_of_turn_ids) == 1:
            return int(output_ids[-1]) == self.end_of_turn_ids[0]
        return int(output_ids[-1]) in self.stop_token_ids

    def observation_ids(self, tool_messages: Sequence[Dict[str, Any]], assistant_ended: bool = True) -> List[int]:
        """Ids of the tool turn(s) + next assistant header. `assistant_ended=False` (the turn stopped on length)
        prepends the end-of-turn ids so the turn is closed as the template would close it."""
        ids = self._encode_pieces(self.observation_text(tool_messages), cache=False)
        return ids if assistant_ended else list(self.end_of_turn_ids) + ids

    def full_text(self, messages: Sequence[Dict[str, Any]]) -> str:
        """Full re-render of a conversation as text, in the incremental stream's shape: ends with the assistant header
        when the last message is not an assistant one, else right after that assistant's end-of-turn token."""
        msgs = self.with_system(messages)
        if msgs and msgs[-1].get("role") == "assistant":
            text = self.render(msgs, add_generation_prompt=False)
            return text[: self._cut_after_last_end_of_turn(text)]
        return self.render(msgs, add_generation_prompt=True)

    def full_ids(self, messages: Sequence[Dict[str, Any]]) -> List[int]:
        """`full_text(messages)` tokenised."""
        return self._encode_pieces(self.full_text(messages), cache=False)

    def threaded_encoder(self) -> Optional[Callable[[str], List[int]]]:
        """A function that tokenises a text as `encode` does but lets other Python threads run meanwhile (the fast
        tokenizer's batch call releases the interpreter lock, its single-text call does not), for work off the event
        loop's thread; None without a fast tokenizer."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        return lambda text: backend.encode_batch([text], add_special_tokens=False)[0].ids

    def drift(self, messages: Sequence[Dict[str, Any]], ids: Sequence[int]) -> int:
        """Tokens where `ids` (prompt + response, built incrementally) differ from a full re-render of `messages`:
        differing positions over the common length + the length difference. A metric only."""
        return count_drift(self.full_ids(messages), ids)


def count_drift(full: Sequence[int], ids: Sequence[int]) -> int:
    """Positions where `ids` differ from `full` over their common length, plus the difference of their lengths."""
    n = min(len(full), len(ids))
    return sum(1 for a, b in zip(full[:n], ids[:n]) if a != b) + abs(len(full) - len(ids))
