"""Hint texts of the KG task (`data.prompt_augmentation`, agent_rl/data/hints.py): how to look an answer up with the
`kg_query` tool, after KG-R1's `[Hint]:` guidelines. Levels: concise | detailed. They say how to search, never what
the answer is or how it is scored."""
from __future__ import annotations

from typing import Dict

CONCISE = ("Call kg_query with get_relations_out on a topic entity, pick the relation that matches the question, "
           "then call get_entities_out with that entity and relation; for a question with several hops, repeat from "
           "the entities you found. Copy entity and relation names exactly. Put every answer in <answer></answer>, "
           "separated by \" | \".")

DETAILED = """Answer from the knowledge graph, not from memory. Look the facts up with kg_query, one step at a time:
1. List the relations of a topic entity: {"action": "get_relations_out", "entity": "<topic entity>"} (get_relations_in lists the relations that point at it).
2. Pick the relation that matches what the question asks and get the entities it leads to: {"action": "get_entities_out", "entity": "<same entity>", "relation": "<relation>"} (get_entities_in for a relation that points at the entity).
3. If the question needs another hop, repeat steps 1 and 2 from the entities you found.
4. Copy entity and relation names exactly as the question or an earlier result writes them. A reply saying a name is not found means it was not copied exactly; a reply with no results means: try another relation or the other direction.
5. When a result holds the answer, stop and write every answer entity in <answer></answer>, separated by " | "."""


def hint_texts() -> Dict[str, str]:
    return {"concise": CONCISE, "detailed": DETAILED}
