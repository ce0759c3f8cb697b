"""A tiny KG store shared by the KG tests, and a KG server on a free loopback port."""
import pytest

from tools.kg_store import save_kg_store

SAMPLES = {
    "q1": [
        ["Barack Obama", "people.person.spouse", "Michelle Obama"],
        ["Barack Obama", "people.person.children", "Malia Obama"],
        ["Barack Obama", "people.person.children", "Sasha Obama"],
        ["Barack Obama", "people.person.children", "Sasha Obama"],          # duplicate triple
        ["Barack Obama", "people.person.place_of_birth", "Honolulu"],
        ["Michelle Obama", "people.person.spouse", "Barack Obama"],
        ["Honolulu", "location.location.containedby", "Hawaii"],
        ["m.0cvt1", "government.position_held.office_holder", "Barack Obama"],
    ],
    "q2": [
        ["Paris", "location.location.containedby", "France"],
        ["France", "location.country.capital", "Paris"],
        ["Lonely", "base.isolated.nothing", "Nowhere"],
    ],
}


@pytest.fixture(scope="session")
def kg_store_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("kg") / "kg_store.json")
    save_kg_store(path, SAMPLES, dataset="tiny")
    return path


@pytest.fixture
async def kg_server(kg_store_path):
    from tools.kg_server import start_kg_server

    runner, url = await start_kg_server(kg_store_path, "127.0.0.1", 0)
    try:
        yield url
    finally:
        await runner.cleanup()
