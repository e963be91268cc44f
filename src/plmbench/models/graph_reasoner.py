"""A relational graph network that scores a multiple-choice answer from [LM state; graph pooling].

The graph is a choice's WordNet subgraph (data/subgraphs.py), batched flat: every node carries the number of the
(question, choice) sequence it belongs to. The recipe follows QA-GNN (Yasunaga et al. 2021), with R-GCN's layer:
- Node features: the frozen TransE vector of the node's entity (Bordes et al. 2013, models/transe.py), projected to
  the graph width, plus a learned embedding of the node's type (question, answer, other).
- LM context node (QA-GNN's choice, not MHGRN's concatenation): each graph gets one more node whose feature is the
  projected [CLS] state, joined to the question and answer nodes by four edge types of its own (context -> question,
  context -> answer and their reverses), so the question's reading conditions every message the graph passes.
- Layers: R-GCN (Schlichtkrull et al. 2018) with basis decomposition, W_r = sum_b a_rb V_b, messages normalised by
  the target's in-degree per relation, plus a self-connection; a residual and LayerNorm around each layer keep two
  layers of a freshly initialised network stable beside a pre-trained backbone.
- Pooling: attention over the graph's concept nodes with [CLS] as the query (QA-GNN's graph pooling).
- Score: MLP([CLS state; pooled graph vector]). A graph with no concept nodes pools to zeros, so its choice is
  scored from [CLS] alone: the degenerate case is the plain multiple-choice head with a wider scorer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.subgraphs import ANSWER, GRAPH_KEYS, NODE_TYPES, OTHER
from plmbench.models.config import ModelConfig
from plmbench.models.heads import Pooler
from plmbench.models.task_heads import SUMMARY_TOKEN

CONTEXT = NODE_TYPES  # the LM context node's type, after data/subgraphs.py's question, answer and other
CONTEXT_EDGE_TYPES = 4  # context -> question, context -> answer, question -> context, answer -> context


@dataclass(frozen=True)
class ReasonerConfig:
    dim: int = 100  # graph width: TransE's, so the projection starts near square
    layers: int = 2
    bases: int = 8  # R-GCN basis matrices shared by all edge types
    dropout: float = 0.1


class RelationalGraphConv(nn.Module):
    """h_i' = W_0 h_i + sum_r sum_{j in N_r(i)} W_r h_j / c_ir, with W_r = sum_b a_rb V_b (R-GCN, eq. 2-3).

    Rows are gathered with index_select, never x[index], here and in GraphReasoner: on CPU the backward of x[index]
    (index_put_ with accumulate) adds a repeated row's gradients in thread order, so one seed trained to different
    weights run to run."""

    def __init__(self, dim: int, edge_types: int, bases: int):
        super().__init__()
        self.edge_types = edge_types
        self.bases = nn.Parameter(torch.empty(bases, dim, dim))
        self.coefficients = nn.Parameter(torch.empty(edge_types, bases))
        self.self_loop = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.bases)
        nn.init.xavier_uniform_(self.coefficients)

    def forward(self, h: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
        source, target = edge_index
        projected = torch.einsum("nd,bde->nbe", h, self.bases)  # every node through every basis once
        messages = torch.einsum("eb,ebd->ed", self.coefficients.index_select(0, edge_type),
                                 projected.index_select(0, source))
        slot = target * self.edge_types + edge_type  # c_ir: in-edges of node i with relation r
        degree = torch.zeros(h.shape[0] * self.edge_types, device=h.device, dtype=h.dtype)
        degree.index_add_(0, slot, torch.ones_like(slot, dtype=h.dtype))
        messages = messages / degree[slot].unsqueeze(-1)
        return self.self_loop(h).index_add(0, target, messages.to(h.dtype))


def segment_softmax(scores: torch.Tensor, segment: torch.Tensor, segments: int) -> torch.Tensor:
    """Softmax of `scores` within each segment id."""
    top = torch.full((segments,), -math.inf, device=scores.device, dtype=scores.dtype)
    top = top.scatter_reduce(0, segment, scores, reduce="amax")
    weights = (scores - top.index_select(0, segment)).exp()
    total = torch.zeros(segments, device=scores.device, dtype=scores.dtype).index_add(0, segment, weights)
    return weights / total.index_select(0, segment)


class GraphReasoner(nn.Module):
    """(N, H) [CLS] states and a flat batch of N graphs -> (N,) choice scores."""

    def __init__(self, hidden_size: int, entity_table: torch.Tensor, edge_types: int, config: ReasonerConfig):
        super().__init__()
        dim = config.dim
        self.register_buffer("entity_table", entity_table.float(), persistent=False)  # frozen, not a parameter
        self.relation_types = edge_types
        self.entity_projection = nn.Linear(entity_table.shape[1], dim)
        self.context_projection = nn.Linear(hidden_size, dim)
        self.node_type = nn.Embedding(NODE_TYPES + 1, dim)
        self.layers = nn.ModuleList(RelationalGraphConv(dim, edge_types + CONTEXT_EDGE_TYPES, config.bases)
                                    for _ in range(config.layers))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(config.layers))
        self.dropout = nn.Dropout(config.dropout)
        self.query, self.key = nn.Linear(hidden_size, dim), nn.Linear(dim, dim)
        self.scorer = nn.Sequential(nn.Linear(hidden_size + dim, dim), nn.GELU(), nn.Dropout(config.dropout),
                                    nn.Linear(dim, 1))

    def context_edges(self, node_type: torch.Tensor, node_graph: torch.Tensor, concepts: int):
        """QA-GNN's edges between each graph's context node (at concepts + graph number) and its Q/A nodes."""
        grounded = torch.nonzero(node_type != OTHER).squeeze(-1)
        context = concepts + node_graph[grounded]
        is_answer = (node_type[grounded] == ANSWER).long()
        base = self.relation_types
        edge_index = torch.cat([torch.stack([context, grounded]), torch.stack([grounded, context])], dim=1)
        edge_type = torch.cat([base + is_answer, base + 2 + is_answer])
        return edge_index, edge_type

    def forward(self, cls: torch.Tensor, graph_node_entity: torch.Tensor, graph_node_type: torch.Tensor,
                graph_node_graph: torch.Tensor, graph_edge_index: torch.Tensor,
                graph_edge_type: torch.Tensor) -> torch.Tensor:
        graphs, concepts = cls.shape[0], graph_node_entity.shape[0]
        entities = self.entity_projection(self.entity_table[graph_node_entity].to(cls.dtype))
        context = self.context_projection(cls)
        types = torch.cat([graph_node_type, torch.full((graphs,), CONTEXT, device=cls.device, dtype=torch.long)])
        h = torch.cat([entities, context]) + self.node_type(types)
        extra_index, extra_type = self.context_edges(graph_node_type, graph_node_graph, concepts)
        edge_index = torch.cat([graph_edge_index, extra_index], dim=1)
        edge_type = torch.cat([graph_edge_type, extra_type])
        for layer, norm in zip(self.layers, self.norms):
            h = norm(h + self.dropout(F.gelu(layer(h, edge_index, edge_type))))
        nodes = h[:concepts]  # pool over concept nodes; the context node's state reaches them through the edges
        attention = (self.key(nodes) * self.query(cls).index_select(0, graph_node_graph)).sum(-1) / \
            math.sqrt(nodes.shape[-1])
        weights = segment_softmax(attention, graph_node_graph, graphs)
        pooled = torch.zeros(graphs, nodes.shape[-1], device=cls.device, dtype=nodes.dtype)
        pooled = pooled.index_add(0, graph_node_graph, weights.unsqueeze(-1) * nodes)  # empty graph: zeros
        return self.scorer(torch.cat([cls, self.dropout(pooled)], dim=-1)).squeeze(-1)


class GraphChoiceHead(nn.Module):
    """The multiple-choice head with a graph reasoner: BERT's pooler on the summary token gives the [CLS] state
    (so a pre-trained pooler loads as it does for the plain head), the reasoner scores each (B * C) sequence.
    TaskModel initialises its linear layers as BERT does its classifiers; the R-GCN bases keep Xavier's."""

    batch_keys = GRAPH_KEYS  # what TaskModel passes on from the batch

    def __init__(self, config: ModelConfig, num_labels: int, entity_table: torch.Tensor, edge_types: int,
                 reasoner: ReasonerConfig | None = None):
        super().__init__()
        self.num_choices = num_labels
        self.summary = SUMMARY_TOKEN[config.causal]
        self.pooler = Pooler(config)
        self.dropout = nn.Dropout(config.dropout)
        self.reasoner = GraphReasoner(config.hidden_size, entity_table, edge_types, reasoner or ReasonerConfig())

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor, **graph: torch.Tensor) -> torch.Tensor:
        cls = self.dropout(self.pooler(self.summary(hidden, attention_mask)))
        return self.reasoner(cls, **graph).view(-1, self.num_choices)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.cross_entropy(logits.float(), batch["labels"])
