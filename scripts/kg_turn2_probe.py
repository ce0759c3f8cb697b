"""Probe: can a model make the second KG look-up? (docs/results.md, section 3)

Forces a perfect first turn -- `get_relations_out` on the topic entity and the KG store's real answer --
on one-hop training questions, samples the second turn, and counts tool calls, `get_entities_out` calls,
successful ones, and those that returned a gold answer entity (what the retrieval reward pays for).

    python scripts/kg_turn2_probe.py [--hint] [--questions 8] [--samples 16] [--model DIR] [--data data/kg]

`--hint` appends "Next: get_entities_out with ..." to the observation. CPU: about 3 min for 8 x 16.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import pyarrow.parquet as pq
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from agent_rl.model.prepare import prepare_embedded  # noqa: E402
from agent_rl.tasks.kg.reward import gold_names, returns_gold  # noqa: E402
from agent_rl.rollout.chat import ChatRenderer  # noqa: E402
from agent_rl.rollout.parser import parse_tool_calls  # noqa: E402
from tools.kg_index import KGIndex  # noqa: E402

HINT = '\nNext: get_entities_out with entity "{entity}" and the relation that answers the question.'


def first_turn(entity: str) -> str:
    call = {"name": "kg_query", "arguments": {"action": "get_relations_out", "entity": entity}}
    return "<tool_call>\n" + json.dumps(call) + "\n</tool_call>"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hint", action="store_true")
    ap.add_argument("--questions", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--model", default=None, help="HF folder (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--data", default=os.path.join(ROOT, "data/kg"), help="folder with train.parquet + kg_store.json")
    args = ap.parse_args()

    model_dir = args.model or prepare_embedded(log=lambda _: None)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tool_yaml = yaml.safe_load(open(os.path.join(ROOT, "configs/tool_config/kg_query_tool_config.yaml")))
    renderer = ChatRenderer(tok, [t["tool_schema"] for t in tool_yaml["tools"]])
    kg = KGIndex.from_path(os.path.join(args.data, "kg_store.json"))
    rows = [r for r in pq.read_table(os.path.join(args.data, "train.parquet")).to_pylist()
            if r["extra_info"]["hops"] == 1][:args.questions]
    torch.manual_seed(0)

    stats = dict(samples=0, tool_calls=0, get_entities_out=0, succeeded=0, retrieved=0, answers=0)
    for row in rows:
        sid = row["extra_info"]["sample_id"]
        entity = row["extra_info"]["topic_entities"][0]
        obs = kg.query(sid, "get_relations_out", entity).result + (HINT.format(entity=entity) if args.hint else "")
        msgs = renderer.with_system(row["prompt"]) + [{"role": "assistant", "content": first_turn(entity)},
                                                       {"role": "tool", "name": "kg_query", "content": obs}]
        ids = torch.tensor([renderer.prompt_ids(msgs)] * args.samples)
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, top_p=1.0,
                                 temperature=args.temperature, max_new_tokens=80, pad_token_id=tok.eos_token_id)
        golds = set(gold_names(row["reward_model"]["ground_truth"]))
        for seq in out[:, ids.shape[1]:]:
            text = tok.decode(seq, skip_special_tokens=False)
            text = text.split("</tool_call>")[0] + "</tool_call>" if "</tool_call>" in text else text.split("<|im_end|>")[0]
            stats["samples"] += 1
            parsed = parse_tool_calls(text)
            if not parsed.has_calls:
                stats["answers"] += "<answer>" in text
                continue
            stats["tool_calls"] += 1
            call = parsed.calls[0]
            if call.ok and call.arguments.get("action") == "get_entities_out":
                stats["get_entities_out"] += 1
                res = kg.query(sid, "get_entities_out", call.arguments.get("entity"), call.arguments.get("relation"))
                if res.success:
                    stats["succeeded"] += 1
                    stats["retrieved"] += returns_gold(res.data, res.result, golds)
    print(json.dumps({"hint": args.hint, "model": model_dir, **stats}))


if __name__ == "__main__":
    main()
