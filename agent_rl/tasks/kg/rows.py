"""The KG task's rows: the tool name, the prompt texts, the tools kwargs of a row, and what the task requires of its
rows (the registry's `rows` hook, checked when they are written and loaded: agent_rl/tasks/rows.py).

    ability       kgqa
    ground truth  a non-empty list of gold entity names
    extra_info    question, topic_entities (list[str]), hops (int), and tools_kwargs.kg_query.create_kwargs
                  {sample_id, dataset} (the subgraph the KG server looks up)
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

KG_TOOL = "kg_query"          # the tool of the KG task (tools/kg_query.py), as the tool YAML names it
ABILITY = "kgqa"

KG_INSTRUCTIONS = """Answer the question with the knowledge graph tool kg_query. Its actions: get_relations_out, get_relations_in (entity), get_entities_out, get_entities_in (entity, relation). Start at a topic entity, follow relations, then put every answer in <answer></answer>, separated by " | ".

Example
Question: Who directed Blue Harbor? Topic entities: Blue Harbor
<tool_call>
{"name": "kg_query", "arguments": {"action": "get_relations_out", "entity": "Blue Harbor"}}
</tool_call>
Tool: film.film.directed_by, film.film.genre
<tool_call>
{"name": "kg_query", "arguments": {"action": "get_entities_out", "entity": "Blue Harbor", "relation": "film.film.directed_by"}}
</tool_call>
Tool: Ada Lorne
<answer>Ada Lorne</answer>"""

KG_QUESTION = "Question: {question}\nTopic entities: {topics}"


def kg_prompt(question: str, topic_entities: Sequence[str]) -> List[Dict[str, str]]:
    """The chat messages of a KG question (one user message)."""
    if not topic_entities:
        raise ValueError(f"KG question without topic entities: {question!r}")
    text = KG_INSTRUCTIONS + "\n\n" + KG_QUESTION.format(question=question.strip(), topics=", ".join(topic_entities))
    return [{"role": "user", "content": text}]


def kg_tools_kwargs(sample_id: str, dataset: str) -> Dict[str, Any]:
    return {KG_TOOL: {"create_kwargs": {"sample_id": sample_id, "dataset": dataset}}}


def row_problem(row: Dict[str, Any]) -> Optional[str]:
    """What is wrong with a KG row beyond the schema every row follows (`field: problem`), or None."""
    ability = row.get("ability")
    if ability != ABILITY:
        return f"ability: {ability!r} does not match data_source {row.get('data_source')!r} (expected {ABILITY!r})"
    gt = (row.get("reward_model") or {}).get("ground_truth")
    if not (isinstance(gt, (list, tuple)) and gt and all(isinstance(g, str) and g for g in gt)):
        return f"reward_model.ground_truth: KG ground truth must be a non-empty list of entity names, got {gt!r}"
    return None
