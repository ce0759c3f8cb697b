"""KG look-ups on a tiny store: matching, ordering, error types and helpful messages."""
import pytest

from tools.kg_index import (KG_ENTITY_NOT_FOUND, KG_FORMAT_ERROR, KG_NO_RESULTS, KG_RELATION_NOT_FOUND,
                            KG_SAMPLE_NOT_FOUND, KG_SUCCESS, KGIndex)
from conftest import SAMPLES


@pytest.fixture(scope="module")
def index():
    return KGIndex(SAMPLES)


def test_relations_out_and_in_sorted_dedup(index):
    r = index.query("q1", "get_relations_out", "Barack Obama")
    assert r.success and r.error_type == KG_SUCCESS
    assert r.data == ["people.person.children", "people.person.place_of_birth", "people.person.spouse"]
    assert "people.person.children, people.person.place_of_birth, people.person.spouse" in r.result
    r = index.query("q1", "get_relations_in", "Barack Obama")
    assert r.data == ["government.position_held.office_holder", "people.person.spouse"]


def test_entities_out_and_in(index):
    r = index.query("q1", "get_entities_out", "Barack Obama", "people.person.children")
    assert r.data == ["Malia Obama", "Sasha Obama"] and "Malia Obama, Sasha Obama" in r.result
    r = index.query("q1", "get_entities_in", "Hawaii", "location.location.containedby")
    assert r.data == ["Honolulu"] and r.error_type == KG_SUCCESS


def test_aliases_and_case_insensitive_names(index):
    assert index.query("q1", "get_tail_relations", "Honolulu").data == ["location.location.containedby"]
    assert index.query("q1", "get_head_relations", "Hawaii").data == ["location.location.containedby"]
    assert index.query("q1", "get_tail_entities", "barack obama", "PEOPLE.PERSON.SPOUSE").data == ["Michelle Obama"]
    assert index.query("q1", "get_head_entities", "  HAWAII ", "location.location.containedby").data == ["Honolulu"]


def test_lookups_restricted_to_sample(index):
    r = index.query("q2", "get_relations_out", "Barack Obama")
    assert r.error_type == KG_ENTITY_NOT_FOUND and not r.success
    assert '"Barack Obama" is not in the knowledge graph of this question' in r.result


def test_relation_not_found_lists_relations_and_direction_hint(index):
    r = index.query("q1", "get_entities_out", "Barack Obama", "people.person.height")
    assert r.error_type == KG_RELATION_NOT_FOUND and "people.person.children" in r.result and r.data == []
    r = index.query("q1", "get_entities_out", "Hawaii", "location.location.containedby")
    assert r.error_type == KG_RELATION_NOT_FOUND and "incoming relation: try get_entities_in" in r.result
    assert "no outgoing relations" in r.result


def test_no_results_and_sample_not_found(index):
    r = index.query("q2", "get_relations_out", "Nowhere")
    assert r.error_type == KG_NO_RESULTS and "no outgoing relations" in r.result
    assert index.query("q9", "get_relations_out", "Paris").error_type == KG_SAMPLE_NOT_FOUND


@pytest.mark.parametrize("action, entity, relation, needle", [
    ("get_everything", "Paris", None, "Valid actions"),
    ("get_relations_out", "", None, "non-empty entity"),
    ("get_entities_out", "Paris", None, "needs a relation"),
    (None, "Paris", None, "Unknown action"),
    ("get_relations_out", "Paris", "location.location.containedby", "takes no relation"),
    ("get_head_relations", "France", "", "takes no relation"),
])
def test_format_errors(index, action, entity, relation, needle):
    r = index.query("q2", action, entity, relation)
    assert r.error_type == KG_FORMAT_ERROR and needle in r.result


def test_relation_listing_is_capped():
    triples = [["hub", f"rel.{i:03d}", f"x{i}"] for i in range(300)]
    idx = KGIndex({"big": triples})
    r = idx.query("big", "get_relations_out", "hub")
    assert len(r.data) == 300 and "(100 more)" in r.result
    r = idx.query("big", "get_entities_out", "hub", "rel.nope")
    assert r.error_type == KG_RELATION_NOT_FOUND and "(270 more)" in r.result


def test_bad_store_rejected():
    with pytest.raises(ValueError, match="triple 0"):
        KGIndex({"s": [["a", "b"]]})
