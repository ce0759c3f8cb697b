"""Prompt texts of every task, shared by the generators and the converters.

The tool JSON schemas are injected by the chat template, so the texts only say what to do, show
one short worked example, and fix the answer format: `<answer>a | b</answer>` (math also accepts a
final `#### n`).
"""
from __future__ import annotations

from typing import Dict, List, Sequence

ANSWER_SEPARATOR = " | "

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

MATH_INSTRUCTIONS = """Solve the problem step by step. Use the calculator tool for arithmetic, e.g.
<tool_call>
{"name": "calculator", "arguments": {"expression": "12 * 7 + 5"}}
</tool_call>
You may submit your answer with calc_gsm8k_reward (argument: answer; each extra submission lowers the score). Give the final number as <answer>n</answer>."""

MATH_QUESTION = "Problem: {question}"


def kg_prompt(question: str, topic_entities: Sequence[str]) -> List[Dict[str, str]]:
    """The chat messages of a KG question (one user message)."""
    if not topic_entities:
        raise ValueError(f"KG question without topic entities: {question!r}")
    text = KG_INSTRUCTIONS + "\n\n" + KG_QUESTION.format(question=question.strip(), topics=", ".join(topic_entities))
    return [{"role": "user", "content": text}]


def math_prompt(question: str) -> List[Dict[str, str]]:
    """The chat messages of a math word problem (one user message)."""
    return [{"role": "user", "content": MATH_INSTRUCTIONS + "\n\n" + MATH_QUESTION.format(question=question.strip())}]
