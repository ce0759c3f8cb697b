"""Entity types, Freebase-like relations and question patterns of the synthetic knowledge graph.

`RELATIONS[name] = (subject type, object type, most objects per subject)`. CVT types (`marriage`,
`tenure`, `education`, `performance`) are nameless nodes (`m.0xxxxx`) that join several facts, as
in Freebase. `IN_MAX` bounds how many subjects may point at one object through a relation when the
generator adds distractor facts. A `Pattern` is a question: one or more branches (topic type + path
of `out:`/`in:` steps) whose answers are intersected, and natural-language templates ({0}, {1} are
the topic names).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

CVT_TYPES = ("marriage", "tenure", "education", "performance")
VALUE_TYPES = ("genre", "profession", "degree", "title", "industry", "year")

RELATIONS: Dict[str, Tuple[str, str, int]] = {
    "people.person.place_of_birth": ("person", "city", 1),
    "people.person.nationality": ("person", "country", 1),
    "people.person.profession": ("person", "profession", 2),
    "people.person.places_lived": ("person", "city", 2),
    "people.person.date_of_birth": ("person", "year", 1),
    "people.person.spouse_s": ("person", "marriage", 1),
    "people.person.employment_history": ("person", "tenure", 3),
    "people.person.education": ("person", "education", 2),
    "people.marriage.spouse": ("marriage", "person", 2),
    "people.marriage.location_of_ceremony": ("marriage", "city", 1),
    "people.marriage.from": ("marriage", "year", 1),
    "business.employment_tenure.company": ("tenure", "company", 1),
    "business.employment_tenure.title": ("tenure", "title", 1),
    "business.employment_tenure.from": ("tenure", "year", 1),
    "education.education.institution": ("education", "university", 1),
    "education.education.degree": ("education", "degree", 1),
    "film.film.directed_by": ("film", "person", 2),
    "film.film.produced_by": ("film", "person", 2),
    "film.film.written_by": ("film", "person", 2),
    "film.film.genre": ("film", "genre", 3),
    "film.film.country": ("film", "country", 1),
    "film.film.language": ("film", "language", 2),
    "film.film.initial_release_date": ("film", "year", 1),
    "film.film.starring": ("film", "performance", 4),
    "film.performance.actor": ("performance", "person", 1),
    "film.performance.character": ("performance", "character", 1),
    "location.location.containedby": ("city", "country", 1),
    "location.country.capital": ("country", "city", 1),
    "location.country.official_language": ("country", "language", 2),
    "location.country.currency_used": ("country", "currency", 1),
    "organization.organization.founders": ("company", "person", 3),
    "organization.organization.headquarters": ("company", "city", 1),
    "organization.organization.date_founded": ("company", "year", 1),
    "business.business_operation.industry": ("company", "industry", 2),
    "education.educational_institution.location": ("university", "city", 1),
}

# Mandatory links of a CVT node: (relation, direction seen from the CVT, count).
CVT_LINKS: Dict[str, List[Tuple[str, str, int]]] = {
    "marriage": [("people.marriage.spouse", "out", 2), ("people.person.spouse_s", "in", 2)],
    "tenure": [("business.employment_tenure.company", "out", 1), ("people.person.employment_history", "in", 1)],
    "education": [("education.education.institution", "out", 1), ("people.person.education", "in", 1)],
    "performance": [("film.performance.actor", "out", 1), ("film.performance.character", "out", 1),
                    ("film.film.starring", "in", 1)],
}

IN_MAX: Dict[str, int] = {"location.location.containedby": 6, "people.person.place_of_birth": 3,
                          "people.person.places_lived": 3, "people.person.nationality": 4,
                          "organization.organization.headquarters": 2, "location.country.capital": 1,
                          "location.country.official_language": 3, "location.country.currency_used": 2,
                          "film.film.language": 4, "film.film.country": 4,
                          "people.marriage.spouse": 1, "film.performance.actor": 5}
DEFAULT_IN_MAX = 3


@dataclass(frozen=True)
class Pattern:
    name: str
    branches: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (topic type, path steps)
    templates: Tuple[str, ...]

    @property
    def hops(self) -> int:
        return max(len(path) for _, path in self.branches)

    @property
    def through_cvt(self) -> bool:
        return any(RELATIONS[s.split(":", 1)[1]][0 if s.startswith("in:") else 1] in CVT_TYPES
                   for _, path in self.branches for s in path)


def P(name: str, topic: str, path: str, *templates: str) -> Pattern:
    return Pattern(name, ((topic, tuple(path.split())),), templates)


PATTERNS: List[Pattern] = [
    # 1 hop
    P("birthplace", "person", "out:people.person.place_of_birth", "Where was {0} born?", "What is the place of birth of {0}?"),
    P("nationality", "person", "out:people.person.nationality", "What is the nationality of {0}?", "Which country is {0} a citizen of?"),
    P("profession", "person", "out:people.person.profession", "What is the profession of {0}?", "What does {0} do for a living?"),
    P("director", "film", "out:film.film.directed_by", "Who directed {0}?", "Who is the director of the film {0}?"),
    P("genre", "film", "out:film.film.genre", "What genre is the film {0}?", "Which genres does {0} belong to?"),
    P("film_country", "film", "out:film.film.country", "Which country produced the film {0}?"),
    P("city_country", "city", "out:location.location.containedby", "Which country is {0} in?", "In what country is the city {0}?"),
    P("capital", "country", "out:location.country.capital", "What is the capital of {0}?"),
    P("language", "country", "out:location.country.official_language", "What language is spoken in {0}?", "What is the official language of {0}?"),
    P("currency", "country", "out:location.country.currency_used", "What currency is used in {0}?"),
    P("founders", "company", "out:organization.organization.founders", "Who founded {0}?", "Who are the founders of {0}?"),
    P("headquarters", "company", "out:organization.organization.headquarters", "Where is {0} headquartered?"),
    P("university_city", "university", "out:education.educational_institution.location", "In which city is {0}?"),
    P("films_directed", "person", "in:film.film.directed_by", "Which films did {0} direct?", "What films were directed by {0}?"),
    P("born_in_city", "city", "in:people.person.place_of_birth", "Who was born in {0}?", "Which people were born in {0}?"),
    Pattern("founder_born_in", (("company", ("out:organization.organization.founders",)),
                                ("city", ("in:people.person.place_of_birth",))),
            ("Which founder of {0} was born in {1}?",)),
    # 2 hops
    P("birth_country", "person", "out:people.person.place_of_birth out:location.location.containedby",
      "In which country was {0} born?", "What country is the birthplace of {0} in?"),
    P("director_birthplace", "film", "out:film.film.directed_by out:people.person.place_of_birth", "Where was the director of {0} born?"),
    P("director_nationality", "film", "out:film.film.directed_by out:people.person.nationality", "What is the nationality of the director of {0}?"),
    P("spouse", "person", "out:people.person.spouse_s out:people.marriage.spouse", "Who is {0} married to?", "Who is the spouse of {0}?"),
    P("employers", "person", "out:people.person.employment_history out:business.employment_tenure.company",
      "Which companies has {0} worked for?", "Where has {0} been employed?"),
    P("alma_mater", "person", "out:people.person.education out:education.education.institution",
      "Which university did {0} attend?", "Where did {0} study?"),
    P("cast", "film", "out:film.film.starring out:film.performance.actor", "Who acted in {0}?", "Who starred in the film {0}?"),
    P("films_acted", "person", "in:film.performance.actor in:film.film.starring", "Which films did {0} act in?", "In which films did {0} appear?"),
    P("hq_country", "company", "out:organization.organization.headquarters out:location.location.containedby", "In which country is {0} headquartered?"),
    P("country_capital_of_city", "city", "out:location.location.containedby out:location.country.capital",
      "What is the capital of the country where {0} is located?"),
    P("directed_genres", "person", "in:film.film.directed_by out:film.film.genre", "What genres are the films directed by {0}?"),
    P("founder_nationality", "company", "out:organization.organization.founders out:people.person.nationality",
      "What is the nationality of the founders of {0}?"),
    P("city_language", "city", "out:location.location.containedby out:location.country.official_language",
      "What language is spoken in the country where {0} is located?"),
    Pattern("directed_and_acted", (("person", ("in:film.film.directed_by",)),
                                   ("person", ("in:film.performance.actor", "in:film.film.starring"))),
            ("Which film directed by {0} did {1} act in?", "In which of the films directed by {0} did {1} appear?")),
    # 3 hops
    P("director_birth_country", "film",
      "out:film.film.directed_by out:people.person.place_of_birth out:location.location.containedby",
      "In which country was the director of {0} born?"),
    P("spouse_birthplace", "person", "out:people.person.spouse_s out:people.marriage.spouse out:people.person.place_of_birth",
      "Where was the spouse of {0} born?"),
    P("employer_hq", "person",
      "out:people.person.employment_history out:business.employment_tenure.company out:organization.organization.headquarters",
      "In which cities are the companies {0} worked for headquartered?"),
    P("directors_of_films_acted", "person", "in:film.performance.actor in:film.film.starring out:film.film.directed_by",
      "Who directed the films that {0} acted in?"),
    P("founder_birth_country", "company",
      "out:organization.organization.founders out:people.person.place_of_birth out:location.location.containedby",
      "In which country were the founders of {0} born?"),
    P("alma_mater_city", "person",
      "out:people.person.education out:education.education.institution out:education.educational_institution.location",
      "In which city is the university that {0} attended?"),
    P("cast_nationality", "film", "out:film.film.starring out:film.performance.actor out:people.person.nationality",
      "What are the nationalities of the actors in {0}?"),
]


def patterns_by_hops() -> Dict[int, List[Pattern]]:
    out: Dict[int, List[Pattern]] = {}
    for p in PATTERNS:
        out.setdefault(p.hops, []).append(p)
    return out


def step_types(step: str) -> Tuple[str, str]:
    """(type at the step's start, type at its end)."""
    direction, rel = step.split(":", 1)
    subj, obj, _ = RELATIONS[rel]
    return (subj, obj) if direction == "out" else (obj, subj)


def check_patterns() -> None:
    for p in PATTERNS:
        for topic, path in p.branches:
            cur = topic
            for s in path:
                start, end = step_types(s)
                if start != cur:
                    raise ValueError(f"pattern {p.name}: step {s} starts at {start}, path is at {cur}")
                cur = end
        ends = {step_types(path[-1])[1] for _, path in p.branches}
        if len(ends) != 1:
            raise ValueError(f"pattern {p.name}: branches end at different types {ends}")


check_patterns()
