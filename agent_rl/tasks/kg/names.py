"""Plausible invented names for the synthetic knowledge graph, drawn from a seeded `random.Random`.

`NameBook` hands out names per entity type and never repeats a name within one sample unless asked
to (same-name twins are made on purpose by the generator). Value-like types (genre, language,
profession, ...) come from fixed lists: within a sample one name is one entity.
"""
from __future__ import annotations

import random
from typing import Dict, List, Set

FIRST = ["Ada", "Bram", "Cora", "Dario", "Elin", "Fenna", "Gideon", "Hana", "Ivo", "Jora", "Kasimir", "Lise", "Milo",
         "Nadia", "Oskar", "Petra", "Quinn", "Rosa", "Soren", "Tamsin", "Ulla", "Viggo", "Wren", "Yara", "Zeno",
         "Anouk", "Benedek", "Carys", "Dov", "Esme", "Falk", "Greta", "Hugo", "Ines", "Jarek", "Katya", "Lorenz",
         "Mira", "Nils", "Odile", "Pavel", "Rhea", "Stellan", "Tova", "Ugo", "Vera", "Wim", "Xenia", "Yusuf", "Zora"]
SYL_A = ["Val", "Mor", "Ast", "Bel", "Cor", "Dun", "Ell", "Fen", "Gar", "Hal", "Ist", "Kel", "Lor", "Mar", "Nor",
         "Ost", "Pel", "Quar", "Ros", "Sel", "Tor", "Ul", "Ven", "Wyn", "Zan", "Bra", "Cal", "Dre", "Esk", "Tar"]
SYL_B = ["a", "e", "i", "o", "u", "ar", "en", "or", "il", "an", "eth", "ov", "ir", "ad", "em"]
SURNAME_END = ["mont", "berg", "ski", "vane", "hart", "ley", "quist", "dotter", "ez", "ani", "ford", "wick",
               "holm", "ard", "etti", "sen", "oza", "rin", "ssey", "ell"]
CITY_END = ["ford", "heim", "ora", "ville", "burg", "mouth", "stad", "port", "grad", "haven", "wick", "ton",
            "aro", "enza", "field"]
COUNTRY_END = ["ia", "land", "stan", "ova", "ria", "mark", "ador", "esia", "ania", "or"]
FILM_ADJ = ["Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Distant", "Frozen", "Burning", "Quiet",
            "Wandering", "Iron", "Paper", "Midnight", "Northern", "Glass", "Hollow", "Velvet"]
FILM_NOUN = ["Harbor", "Orchard", "Kingdom", "River", "Letters", "Garden", "Horizon", "Lantern", "Tide", "Mirror",
             "Station", "Summer", "Empire", "Winter", "Voyage", "Engine", "Shadows", "Bridge", "Island", "Promise"]
COMPANY_END = ["Industries", "Systems", "Group", "Labs", "Holdings", "Motors", "Pictures", "Analytics", "Foods",
               "Dynamics", "Works", "Networks"]
VALUES: Dict[str, List[str]] = {
    "genre": ["Drama", "Comedy", "Thriller", "Science Fiction", "Documentary", "Romance", "Horror", "Animation",
              "Western", "Musical", "Crime", "Fantasy"],
    "profession": ["Actor", "Film director", "Screenwriter", "Physicist", "Architect", "Novelist", "Painter",
                   "Engineer", "Politician", "Composer", "Journalist", "Economist", "Chef", "Photographer"],
    "degree": ["Bachelor of Arts", "Bachelor of Science", "Master of Arts", "Master of Science",
               "Doctor of Philosophy", "Master of Fine Arts"],
    "title": ["Chief Executive Officer", "Chief Technology Officer", "Software Engineer", "Designer",
              "Product Manager", "Research Scientist", "Accountant", "Sales Director"],
    "industry": ["Software", "Aerospace", "Film production", "Retail", "Biotechnology", "Shipping", "Banking",
                 "Renewable energy", "Publishing", "Telecommunications"],
}


class NameBook:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: Set[str] = set()

    def _root(self) -> str:
        r = self.rng
        return r.choice(SYL_A) + r.choice(SYL_B) + (r.choice(["", "l", "n", "r", "s", "v"]) if r.random() < 0.5 else "")

    def _make(self, etype: str) -> str:
        r = self.rng
        if etype == "person":
            return f"{r.choice(FIRST)} {self._root().capitalize()}{r.choice(SURNAME_END)}"
        if etype == "city":
            return (r.choice(["Port ", "San ", "New ", "Lake ", ""]) if r.random() < 0.25 else "") + \
                self._root().capitalize() + r.choice(CITY_END)
        if etype == "country":
            return (r.choice(["Republic of ", "Kingdom of "]) if r.random() < 0.15 else "") + \
                self._root().capitalize().rstrip("aeiou") + r.choice(COUNTRY_END)
        if etype == "film":
            form = r.random()
            if form < 0.4:
                return f"The {r.choice(FILM_ADJ)} {r.choice(FILM_NOUN)}"
            if form < 0.7:
                return f"{r.choice(FILM_NOUN)} of {self._root().capitalize()}{r.choice(CITY_END)}"
            return f"{r.choice(FILM_ADJ)} {r.choice(FILM_NOUN)}"
        if etype == "company":
            return f"{self._root().capitalize()}{r.choice(['', 'tek', 'ex', 'ion', 'a'])} {r.choice(COMPANY_END)}"
        if etype == "university":
            if r.random() < 0.5:
                return f"University of {self._root().capitalize()}{r.choice(CITY_END)}"
            return f"{self._root().capitalize()}{r.choice(SURNAME_END)} Institute of Technology"
        if etype == "character":
            return f"{r.choice(['Captain ', 'Doctor ', 'Inspector ', 'Lady ', ''])}{r.choice(FIRST)} {self._root().capitalize()}"
        if etype == "language":
            return self._root().capitalize().rstrip("aeiou") + r.choice(["ian", "ese", "ish", "ic", "i"])
        if etype == "currency":
            return f"{self._root().capitalize()} {r.choice(['crown', 'mark', 'dinar', 'florin', 'lira'])}"
        if etype == "year":
            return str(r.randint(1940, 2015))
        if etype in VALUES:
            return r.choice(VALUES[etype])
        raise ValueError(f"no name generator for entity type {etype!r}")

    def fresh(self, etype: str) -> str:
        """A name not used yet in this sample."""
        for _ in range(200):
            name = self._make(etype)
            if name not in self.used:
                self.used.add(name)
                return name
        raise RuntimeError(f"name generator exhausted for type {etype!r}")

    def value(self, etype: str) -> str:
        """A value-like name (may repeat: the same name is the same entity)."""
        return self._make(etype)

    def cvt_id(self) -> str:
        """A nameless node id like m.0k3x9q."""
        alphabet = "0123456789bcdfghjklmnpqrstvwxyz"
        while True:
            name = "m.0" + "".join(self.rng.choice(alphabet) for _ in range(5))
            if name not in self.used:
                self.used.add(name)
                return name
