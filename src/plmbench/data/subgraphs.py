"""The WordNet subgraph of one (question, answer choice) pair: the graph half of KagNet-style reasoning.

As KagNet (Lin et al. 2019) and its successors MHGRN (Feng et al. 2020) and QA-GNN (Yasunaga et al. 2021) do
over ConceptNet, with WordNet in its place:
1. Grounding: the question's concepts and the choice's concepts are the entities the linker finds in each text
   (data/entity_linking.py). A concept in both counts as an answer concept only (QA-GNN's grounding).
2. Retrieval: every entity on a path of at most `hops` edges from a question concept to an answer concept, edges
   taken in either direction. An entity is on such a path when d(Q, e) + d(e, A) <= hops; its weight is the
   number of such paths through it (walk counts, so a path may revisit a node), which ranks it for the cap.
3. Cap: at most `max_nodes` nodes, answer concepts first, then question concepts, then the others by path count
   (ties by entity index), so the result is deterministic.
4. Edges: every triple among the kept nodes (the induced subgraph, as MHGRN and QA-GNN keep it), once forward
   with its relation id and once backward with id + number of relations, so messages flow both ways.

A subgraph is four small tensors: node entity ids, node types (QUESTION, ANSWER, OTHER), a (2, E) edge index into
the nodes (source, target) and the E edge types. `GraphChoiceCollator` joins the subgraphs of a batch into one flat
graph (PyTorch Geometric's layout), with each node's graph number: the (question, choice) sequence it belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from plmbench.data.entity_linking import EntityLinker
from plmbench.data.features import FeatureCollator
from plmbench.data.knowledge_graph import KnowledgeGraph

QUESTION, ANSWER, OTHER = 0, 1, 2  # node types
NODE_TYPES = 3
# Feature columns, one list per choice, and the flat batch keys GraphChoiceCollator makes of them.
GRAPH_COLUMNS = ("graph_nodes", "graph_node_types", "graph_edges", "graph_edge_types")
GRAPH_KEYS = ("graph_node_entity", "graph_node_type", "graph_node_graph", "graph_edge_index", "graph_edge_type")


@dataclass(frozen=True)
class Subgraph:
    nodes: torch.Tensor  # (N,) entity indices into KnowledgeGraph.entities
    node_types: torch.Tensor  # (N,) QUESTION | ANSWER | OTHER
    edge_index: torch.Tensor  # (2, E) source and target positions in `nodes`
    edge_types: torch.Tensor  # (E,) relation id, + number of relations for the reverse direction

    def columns(self) -> dict[str, list[int]]:
        """As feature-row values: the edge index flattened as sources then targets."""
        return {"graph_nodes": self.nodes.tolist(), "graph_node_types": self.node_types.tolist(),
                "graph_edges": self.edge_index.flatten().tolist(), "graph_edge_types": self.edge_types.tolist()}


class Adjacency:
    """Compressed rows of the triples, by head (out-edges) and by tail (in-edges): neighbours in O(degree)."""

    def __init__(self, triples: np.ndarray, num_entities: int):
        self.num_entities = num_entities
        self.out_start, self.out_rows = _compressed(triples, 0, num_entities)  # rows: (relation, tail)
        self.in_start, self.in_rows = _compressed(triples, 2, num_entities)  # rows: (relation, head)

    def neighbours(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(neighbour, which of `nodes` it came from), both directions, one entry per triple."""
        found, origin = [], []
        for position, node in enumerate(nodes.tolist()):
            for start, rows in ((self.out_start, self.out_rows), (self.in_start, self.in_rows)):
                near = rows[start[node]:start[node + 1], 1]
                found.append(near)
                origin.append(np.full(len(near), position))
        if not found:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(found), np.concatenate(origin)

    def walk_counts(self, sources: np.ndarray, steps: int) -> list[dict[int, int]]:
        """counts[d][e] = walks of exactly d edges (either direction) from any source to e, for d = 0..steps."""
        counts = [dict.fromkeys(sources.tolist(), 1)]
        for _ in range(steps):
            frontier = np.fromiter(counts[-1], np.int64, len(counts[-1]))
            weights = np.fromiter(counts[-1].values(), np.int64, len(counts[-1]))
            near, origin = self.neighbours(frontier)
            unique, inverse = np.unique(near, return_inverse=True)
            totals = np.bincount(inverse, weights=weights[origin], minlength=len(unique)).astype(np.int64)
            counts.append(dict(zip(unique.tolist(), totals.tolist())))
        return counts

    def induced_edges(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(source positions, target positions, relation ids) of every triple whose ends are both in `nodes`."""
        position = {node: i for i, node in enumerate(nodes.tolist())}
        sources, targets, relations = [], [], []
        for i, node in enumerate(nodes.tolist()):
            rows = self.out_rows[self.out_start[node]:self.out_start[node + 1]]
            for relation, tail in rows.tolist():
                if tail in position and tail != node:
                    sources.append(i)
                    targets.append(position[tail])
                    relations.append(relation)
        as_array = lambda values: np.asarray(values, dtype=np.int64)
        return as_array(sources), as_array(targets), as_array(relations)


def _compressed(triples: np.ndarray, key: int, num_entities: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((triples[:, 2 - key], triples[:, 1], triples[:, key]))  # by key, relation, other end
    ordered = triples[order]
    start = np.zeros(num_entities + 1, dtype=np.int64)
    np.cumsum(np.bincount(ordered[:, key], minlength=num_entities), out=start[1:])
    return start, np.ascontiguousarray(ordered[:, [1, 2 - key]])


class SubgraphExtractor:
    def __init__(self, graph: KnowledgeGraph, linker: EntityLinker, hops: int = 2, max_nodes: int = 48):
        if hops < 1 or max_nodes < 1:
            raise ValueError(f"subgraph hops={hops}, max_nodes={max_nodes}: both must be positive")
        self.linker, self.hops, self.max_nodes = linker, hops, max_nodes
        self.num_relations = len(graph.relations)
        self.adjacency = Adjacency(graph.triples, len(graph.entities))

    @property
    def edge_types(self) -> int:
        """Relation ids in either direction: what a relational graph network needs a weight for."""
        return 2 * self.num_relations

    def concepts(self, text: str) -> list[int]:
        """The entities linked in `text`, in text order, each once."""
        return list(dict.fromkeys(mention.entity for mention in self.linker.link(text)))

    def for_question(self, question: str, options: Sequence[str]) -> list[Subgraph]:
        """One subgraph per answer choice; the question's concepts and walks are computed once."""
        question_concepts = self.concepts(question)
        walks = self.adjacency.walk_counts(np.asarray(question_concepts, dtype=np.int64), self.hops)
        return [self.extract(question_concepts, self.concepts(option), walks) for option in options]

    def extract(self, question: Sequence[int], answer: Sequence[int],
                question_walks: list[dict[int, int]] | None = None) -> Subgraph:
        answer = list(dict.fromkeys(answer))
        question = [entity for entity in dict.fromkeys(question) if entity not in answer]
        if question_walks is None:
            question_walks = self.adjacency.walk_counts(np.asarray(question, dtype=np.int64), self.hops)
        else:  # walks from the question's concepts less those that are this choice's (QA-GNN's grounding)
            if set(question_walks[0]) != set(question):
                question_walks = self.adjacency.walk_counts(np.asarray(question, dtype=np.int64), self.hops)
        answer_walks = self.adjacency.walk_counts(np.asarray(answer, dtype=np.int64), self.hops)
        paths: dict[int, int] = {}
        if question and answer:
            for to_question in range(self.hops + 1):
                for to_answer in range(self.hops + 1 - to_question):
                    near_answer = answer_walks[to_answer]
                    for entity, count in question_walks[to_question].items():
                        if entity in near_answer:
                            paths[entity] = paths.get(entity, 0) + count * near_answer[entity]
        grounded = set(question) | set(answer)
        others = sorted((e for e in paths if e not in grounded), key=lambda e: (-paths[e], e))
        kept = (answer + question + others)[: self.max_nodes]
        kept_set = set(kept)
        # Shown question nodes first, then answer nodes, then others: the order a reader expects.
        nodes = [e for e in question if e in kept_set] + [e for e in answer if e in kept_set] + \
            [e for e in others if e in kept_set]
        question_set, answer_set = set(question), set(answer)
        types = [QUESTION if e in question_set else ANSWER if e in answer_set else OTHER for e in nodes]
        sources, targets, relations = self.adjacency.induced_edges(np.asarray(nodes, dtype=np.int64))
        edge_index = np.stack([np.concatenate([sources, targets]), np.concatenate([targets, sources])])
        edge_types = np.concatenate([relations, relations + self.num_relations])
        return Subgraph(torch.as_tensor(nodes, dtype=torch.long), torch.as_tensor(types, dtype=torch.long),
                        torch.as_tensor(edge_index, dtype=torch.long).reshape(2, -1),
                        torch.as_tensor(edge_types, dtype=torch.long))


def subgraph_columns(rows: dict, extractor: SubgraphExtractor) -> dict[str, list]:
    """A batch of multiple-choice rows -> GRAPH_COLUMNS, one list per choice in each row (for datasets.map)."""
    out = {column: [] for column in GRAPH_COLUMNS}
    for question, options in zip(rows["question"], rows["options"]):
        per_choice = [graph.columns() for graph in extractor.for_question(question, options)]
        for column in GRAPH_COLUMNS:
            out[column].append([choice[column] for choice in per_choice])
    return out


# ------------------------------------------------------------------------------------------ batches


def batch_subgraphs(graphs: Sequence[Subgraph]) -> dict[str, torch.Tensor]:
    """Subgraphs -> one flat graph: nodes concatenated, edge indices shifted, each node's graph number."""
    sizes = torch.tensor([len(g.nodes) for g in graphs], dtype=torch.long)
    shift = torch.cumsum(sizes, 0) - sizes
    edges = [g.edge_index + offset for g, offset in zip(graphs, shift.tolist())]
    return {
        "graph_node_entity": torch.cat([g.nodes for g in graphs]),
        "graph_node_type": torch.cat([g.node_types for g in graphs]),
        "graph_node_graph": torch.repeat_interleave(torch.arange(len(graphs)), sizes),
        "graph_edge_index": torch.cat(edges, dim=1) if edges else torch.zeros(2, 0, dtype=torch.long),
        "graph_edge_type": torch.cat([g.edge_types for g in graphs]),
    }


def subgraph_of(row: dict, choice: int) -> Subgraph:
    """The subgraph stored in a feature row's GRAPH_COLUMNS for one choice."""
    long = lambda values: torch.as_tensor(values, dtype=torch.long)
    return Subgraph(long(row["graph_nodes"][choice]), long(row["graph_node_types"][choice]),
                    long(row["graph_edges"][choice]).reshape(2, -1), long(row["graph_edge_types"][choice]))


class GraphChoiceCollator(FeatureCollator):
    """FeatureCollator's (B, C, T) inputs plus the flat graph of the B*C subgraphs, in the same row-major order
    as the sequences the backbone encodes."""

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__([{k: v for k, v in row.items() if k not in GRAPH_COLUMNS} for row in rows])
        graphs = [subgraph_of(row, choice) for row in rows for choice in range(len(row["graph_nodes"]))]
        return {**batch, **batch_subgraphs(graphs)}
