"""WordNet as a knowledge graph: its size, known edges, the lemma index's sense order, WN18RR alignment, and the
triple-file reader's one-line errors."""


import pytest

from plmbench.data.knowledge_graph import RELATION_NAMES, WN18RR_RELATIONS, load_graph, read_triples
from plmbench.data.tasks.errors import DataError


@pytest.fixture(scope="session")
def graph(wordnet_root):
    return load_graph(wordnet_root)


def test_every_synset_is_an_entity_and_relations_carry_wn18rr_names(graph):
    assert len(graph.entities) == len(set(graph.entities)) == 117659  # wnstats(7WN), WordNet 3.0
    assert set(WN18RR_RELATIONS) <= set(graph.relations) and len(WN18RR_RELATIONS) == 11
    used = {graph.relations[r] for r in set(graph.triples[:, 1].tolist())}
    assert used == set(RELATION_NAMES)  # every pointer symbol of WordNet 3.0 yields edges
    assert graph.triples.shape[1] == 3 and len(graph.triples) > 300_000
    assert graph.triples.min() >= 0 and graph.triples[:, [0, 2]].max() < len(graph.entities)
    assert len({tuple(t) for t in graph.triples.tolist()}) == len(graph.triples)  # no duplicates


def test_dog_is_a_canine_and_hypernyms_mirror_hyponyms(graph):
    dog = graph.index("n.02084071")
    assert graph.synsets[dog].lemmas[0] == "dog"
    hypernyms = graph.edges("n.02084071", "_hypernym")
    assert "n.02083346" in hypernyms  # canine.n.02
    assert graph.synsets[graph.index("n.02083346")].lemmas == ("canine", "canid")
    assert "n.02084071" in graph.edges("n.02083346", "_hyponym")
    hyper, hypo = graph.relation("_hypernym"), graph.relation("_hyponym")
    forward = {(h, t) for h, r, t in graph.triples.tolist() if r == hyper}
    backward = {(t, h) for h, r, t in graph.triples.tolist() if r == hypo}
    assert forward == backward


def test_lemma_index_lists_senses_most_frequent_first(graph):
    dog = graph.senses["dog"]
    assert graph.entities[dog[0].entity] == "n.02084071" and dog[0].number == 1 and dog[0].count == 42
    assert len(dog) == 8 and {s.pos for s in dog} == {"n", "v"}  # 7 noun senses and 1 verb (index files)
    assert [s.count for s in dog] == sorted((s.count for s in dog), reverse=True)
    assert "hot_dog" in graph.senses  # multi-word lemmas keep WordNet's underscores


def test_bare_wn18rr_offsets_resolve_only_when_unambiguous(graph):
    assert graph.index("02084071") == graph.index("n.02084071")
    seen, shared = set(), set()
    for entity in graph.entities:
        offset = entity.partition(".")[2]
        (shared if offset in seen else seen).add(offset)
    assert len(shared) == 296  # offsets count bytes per data.<pos> file, so parts of speech can coincide
    with pytest.raises(KeyError, match="not an entity"):
        graph.index(min(shared))


def test_wn18rr_noun_triples_are_edges_of_the_graph(graph, shared_data):
    triples = read_triples(shared_data / "wn18rr/train.txt")
    assert len(triples) == 86835 and {r for _, r, _ in triples} == set(WN18RR_RELATIONS)
    edges = {tuple(t) for t in graph.triples.tolist()}
    nouns = found = 0
    for head, relation, tail in triples:
        try:
            h, t = graph.index(head), graph.index(tail)
        except KeyError:
            continue  # an offset two parts of speech share, or one this build of WordNet numbers differently
        if graph.entities[h][0] == graph.entities[t][0] == "n":
            nouns += 1
            found += (h, graph.relation(relation), t) in edges
    assert nouns > 45000 and found / nouns > 0.99


@pytest.mark.parametrize(
    "line, problem",
    [
        ("00260881\t_hypernym", r"bad\.txt:2: 2 tab-separated columns"),  # truncated download
        ("00260881\t_hypernym\t00260622\textra", r"bad\.txt:2: 4 tab-separated columns"),
        ("00260881\t_hypernym\t", r"bad\.txt:2: 3 tab-separated columns"),  # empty tail
        ("00260881\t_cousin_of\t00260622", r"bad\.txt:2: unknown relation '_cousin_of'; allowed: _hypernym"),
    ],
)
def test_a_malformed_triple_line_names_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.txt"
    path.write_text(f"00260881\t_hypernym\t00260622\n{line}\n", encoding="utf-8")
    with pytest.raises(DataError, match=problem) as error:
        read_triples(path)
    assert "\n" not in str(error.value)


def test_read_triples_accepts_given_relations_and_skips_blank_lines(tmp_path):
    path = tmp_path / "kg.txt"
    path.write_text("a\t_antonym\tb\r\n\nb\t_antonym\ta\n", encoding="utf-8")
    assert read_triples(path, relations=RELATION_NAMES) == [("a", "_antonym", "b"), ("b", "_antonym", "a")]
    with pytest.raises(DataError, match=r"kg\.txt:1: unknown relation '_antonym'"):
        read_triples(path)
