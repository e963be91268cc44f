"""Subgraph extraction for the graph reasoner: a tiny hand-built graph whose subgraphs are known by hand, the flat
batching of subgraphs, and one CommonsenseQA question on the real WordNet graph (skipped without its files)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from plmbench.data.entity_linking import EntityLinker
from plmbench.data.knowledge_graph import KnowledgeGraph, Sense
from plmbench.data.subgraphs import (
    ANSWER,
    OTHER,
    QUESTION,
    GraphChoiceCollator,
    SubgraphExtractor,
    batch_subgraphs,
    subgraph_columns,
)
from plmbench.data.tokenizer import SpecialTokens

CSQA = Path("/work/shared/data/commonsenseqa") if Path("/work/shared/data/commonsenseqa").is_dir() else \
    Path(__file__).resolve().parents[2] / "shared/data/commonsenseqa"

# dog -> pet <- cat (two hops between dog and cat, through pet, twice over: pet is both hypernym and also_see);
# dog -> mammal <- cat (once); dog -> canine -> animal <- feline <- cat (four hops); car -> vehicle; car has wheel.
NAMES = ["dog", "cat", "pet", "mammal", "canine", "feline", "animal", "car", "vehicle", "wheel"]
RELATIONS = ("_hypernym", "_also_see", "_has_part")
EDGES = [("dog", 0, "pet"), ("dog", 1, "pet"), ("cat", 0, "pet"), ("dog", 0, "mammal"), ("cat", 0, "mammal"),
         ("dog", 0, "canine"), ("canine", 0, "animal"), ("cat", 0, "feline"), ("feline", 0, "animal"),
         ("car", 0, "vehicle"), ("car", 2, "wheel")]
E = {name: i for i, name in enumerate(NAMES)}


def tiny_extractor(hops: int = 2, max_nodes: int = 48) -> SubgraphExtractor:
    triples = np.asarray(sorted((E[h], r, E[t]) for h, r, t in EDGES), dtype=np.int64)
    senses = {name: (Sense(i, "n", 1, 0),) for i, name in enumerate(NAMES)}
    graph = KnowledgeGraph(tuple(f"n.{i:08d}" for i in range(len(NAMES))), (), RELATIONS, triples, senses)
    return SubgraphExtractor(graph, EntityLinker(graph, {}), hops=hops, max_nodes=max_nodes)


def named(graph) -> list[str]:
    return [NAMES[i] for i in graph.nodes.tolist()]


def edges(graph) -> set[tuple[str, int, str]]:
    nodes = named(graph)
    return {(nodes[s], r, nodes[t]) for (s, t), r in zip(graph.edge_index.T.tolist(), graph.edge_types.tolist())}


def test_two_hop_paths_join_question_and_answer_through_their_shared_neighbours():
    cat, car = tiny_extractor().for_question("which animal is most like a dog", ["cat", "car"])
    # 'animal' is a question concept too; pet (2 paths: two relations join dog and pet) ranks before mammal and
    # feline (1 each, tied: by entity index); canine is 1 hop from dog but 3 from cat, so it stays out.
    assert named(cat) == ["animal", "dog", "cat", "pet", "mammal", "feline"]
    assert cat.node_types.tolist() == [QUESTION, QUESTION, ANSWER, OTHER, OTHER, OTHER]
    forward = {(h, r, t) for h, r, t in EDGES if h in named(cat) and t in named(cat)}
    assert edges(cat) == forward | {(t, r + len(RELATIONS), h) for h, r, t in forward}  # both directions
    # car is 3+ hops from every question concept: only the grounded nodes, and no edge joins them.
    assert named(car) == ["animal", "dog", "car"] and car.edge_index.shape == (2, 0) and len(car.edge_types) == 0


def test_the_cap_keeps_grounded_nodes_then_the_most_travelled_and_is_deterministic():
    extractor = tiny_extractor(max_nodes=3)
    first = extractor.for_question("a dog", ["a cat"])[0]
    assert named(first) == ["dog", "cat", "pet"]  # pet: 2 paths, mammal: 1
    again = extractor.for_question("a dog", ["a cat"])[0]
    assert all(torch.equal(getattr(first, k), getattr(again, k))
               for k in ("nodes", "node_types", "edge_index", "edge_types"))
    assert named(tiny_extractor(max_nodes=1).for_question("a dog", ["a cat"])[0]) == ["cat"]  # answer first


def test_hops_bound_the_paths():
    one = tiny_extractor(hops=1).for_question("dog", ["cat"])[0]
    assert named(one) == ["dog", "cat"]  # not adjacent
    four = tiny_extractor(hops=4).for_question("dog", ["cat"])[0]
    assert set(named(four)) == {"dog", "cat", "pet", "mammal", "canine", "feline", "animal"}


def test_a_concept_in_question_and_choice_is_an_answer_concept_and_no_concept_is_an_empty_graph():
    same = tiny_extractor().for_question("dog", ["dog"])[0]
    assert named(same) == ["dog"] and same.node_types.tolist() == [ANSWER]
    empty = tiny_extractor().for_question("what is it", ["none of these"])[0]
    assert len(empty.nodes) == 0 and empty.edge_index.shape == (2, 0)


def test_batching_shifts_edges_and_numbers_graphs_in_row_major_choice_order():
    extractor = tiny_extractor()
    rows = {"question": ["dog", "what"], "options": [["cat", "car"], ["nothing", "car"]]}
    columns = subgraph_columns(rows, extractor)
    features = [{"input_ids": [[1, 5, 2], [1, 6, 2]], "token_type_ids": [[0, 0, 0]] * 2, "labels": label,
                 **{key: columns[key][i] for key in columns}} for i, label in enumerate([0, 1])]
    batch = GraphChoiceCollator(SpecialTokens(pad=0, cls=1, sep=2, mask=3, unk=4))(features)
    assert batch["input_ids"].shape == (2, 2, 3) and batch["labels"].tolist() == [0, 1]
    graphs = [g for q, opts in zip(rows["question"], rows["options"]) for g in extractor.for_question(q, opts)]
    assert batch["graph_node_graph"].tolist() == [i for i, g in enumerate(graphs) for _ in range(len(g.nodes))]
    assert torch.equal(batch["graph_node_entity"], torch.cat([g.nodes for g in graphs]))
    flat = batch_subgraphs(graphs)
    assert torch.equal(flat["graph_edge_index"], batch["graph_edge_index"])
    # every edge stays inside its own graph
    owner = batch["graph_node_graph"]
    assert torch.equal(owner[batch["graph_edge_index"][0]], owner[batch["graph_edge_index"][1]])


# ------------------------------------------------------------------------------------------ real WordNet


@pytest.fixture(scope="module")
def wordnet_extractor():
    try:
        linker = EntityLinker.from_wordnet()
    except (FileNotFoundError, OSError) as error:
        pytest.skip(f"no WordNet files: {error}")
    return SubgraphExtractor(linker.graph, linker, hops=2, max_nodes=48)


def test_a_commonsenseqa_question_on_wordnet(wordnet_extractor):
    """The first dev question: every choice grounded, every edge a WordNet triple, every other node within reach.
    WordNet is sparse for CommonsenseQA (ConceptNet, which KagNet used, is not): over the first 40 dev questions
    a choice's subgraph had on average 6.4 nodes and 1.1 edges at 2 hops (16% of choices with any edge), 7.4
    nodes and 7.3 edges at 3 hops (31%). This question's choices join it only at 3 hops."""
    path = CSQA / "dev_data.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    row = json.loads(path.read_text().splitlines()[0])
    question = row["question"]["stem"]  # "A revolving door is convenient for two direction travel, ..."
    options = [choice["text"] for choice in row["question"]["choices"]]  # bank, library, department store, mall, ...
    linker = wordnet_extractor.linker
    triples = linker.graph.triples
    relations = len(linker.graph.relations)

    def near(node: int) -> set[int]:
        return set(triples[triples[:, 0] == node, 2].tolist()) | set(triples[triples[:, 2] == node, 0].tolist())

    by_hops = {2: wordnet_extractor.for_question(question, options),
               3: SubgraphExtractor(linker.graph, linker, hops=3, max_nodes=48).for_question(question, options)}
    for hops, subgraphs in by_hops.items():
        assert len(subgraphs) == 5
        for option, sub in zip(options, subgraphs):
            types, nodes = sub.node_types.tolist(), sub.nodes.tolist()
            assert types.count(ANSWER) >= 1 and types.count(QUESTION) >= 3 and len(nodes) <= 48, (option, types)
            assert types == sorted(types) and len(set(nodes)) == len(nodes)  # question, answer, other; no repeats
            grounded = {n for n, t in zip(nodes, types) if t != OTHER}
            for node, kind in zip(nodes, types):  # d(Q, e) + d(e, A) <= 3 with both >= 1: e touches Q or A
                assert kind != OTHER or near(node) & grounded, (hops, option, node)
            for (source, target), relation in zip(sub.edge_index.T.tolist(), sub.edge_types.tolist()):
                head, tail, rel = (nodes[source], nodes[target], relation) if relation < relations else \
                    (nodes[target], nodes[source], relation - relations)
                assert ((triples[:, 0] == head) & (triples[:, 1] == rel) & (triples[:, 2] == tail)).any()
    assert not any(len(sub.edge_types) for sub in by_hops[2])
    mall = by_hops[3][options.index("mall")]  # mall ~ promenade ~ walk, a kind of travel
    assert (mall.node_types == OTHER).sum() >= 2 and len(mall.edge_types) > 0
