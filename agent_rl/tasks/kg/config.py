"""The KG task's config keys (`Task.config` in agent_rl/tasks/registry.py): the KG server's in the `tools` section,
the reward weights in `reward`. They keep their names there (`tools.kg_server_url=...`, `cfg.tools.kg_store`,
`reward.kg_answer_metric=hits1`): `agent_rl/config/extend.py` adds them to those sections, and docs/config.md
lists them with the framework's keys.

`tools_settings(cfg.tools)` / `reward_settings(cfg.reward)` read them from a section, with these defaults where the
section has none (a bare `RewardConfig()` built in code).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from agent_rl.config.schema import F

ANSWER_METRICS = ("f1", "em", "hits1")


@dataclass
class KGToolsConfig:
    kg_server_url: str = F("http://127.0.0.1:8001", "KG server base URL used by kg_query")
    kg_server_autostart: bool = F(True, "start the KG server in-process when nothing answers at kg_server_url")
    kg_store: Optional[str] = F("data/kg/kg_store.json", "KG store file the autostarted server loads")


@dataclass
class KGRewardConfig:
    kg_answer_metric: str = F("f1", "f1 | em | hits1: the answer score of KG QA", choices=ANSWER_METRICS)
    kg_answer_weight: float = F(1.0, "weight of the answer score")
    kg_format_weight: float = F(0.1, "weight of the format score: every turn well-formed and a non-empty answer (per "
                                     "turn: the turn well-formed)")
    kg_validity_weight: float = F(0.1, "weight of query validity: distinct successful look-ups, up to kg_validity_cap, "
                                       "over the cap")
    kg_validity_cap: int = F(2, "distinct successful look-ups that earn full validity (2 = one hop: relations, then "
                                "entities)")
    kg_retrieval_weight: float = F(0.2, "weight of retrieval: a get_entities_* look-up returned a gold answer "
                                        "(outcome, and on the first turn that did)")


def _settings(cls, section: Any):
    return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls) if hasattr(section, f.name)})


def tools_settings(tools_cfg: Any) -> KGToolsConfig:
    return _settings(KGToolsConfig, tools_cfg)


def reward_settings(reward_cfg: Any) -> KGRewardConfig:
    return _settings(KGRewardConfig, reward_cfg)
