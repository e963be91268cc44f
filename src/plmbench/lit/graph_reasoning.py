"""The `reasoner` option of fine-tuning (conf/reasoner/): what a multiple-choice run adds for a graph reasoner.

`reasoner=none` (NoReasoner) leaves fine-tuning as it was. `reasoner=rgcn` (GraphReasoning) grounds every
(question, choice) pair in WordNet and stores its subgraph beside the features (data/subgraphs.py), batches the
subgraphs with the inputs, and replaces the multiple-choice head by models/graph_reasoner.py's. The node features
are a TransE table: `entity_table: auto` is the one knowledge=ernie fuses (models/entity_table.py, cached by content),
a path is a torch.save'd (n_entities, 100) tensor, and null trains TransE on the whole WordNet graph with the
`transe` settings, cached by content too (models/transe_cache).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from functools import cached_property

import datasets
import torch
from omegaconf import DictConfig, OmegaConf

from plmbench.data.features import FeatureCollator
from plmbench.data.subgraphs import GRAPH_COLUMNS, GraphChoiceCollator, SubgraphExtractor, subgraph_columns
from plmbench.data.tokenizer import SpecialTokens
from plmbench.errors import UserError, load_weights_only
from plmbench.models.config import ModelConfig
from plmbench.models.entity_table import AUTO, build_entity_table
from plmbench.models.graph_reasoner import GraphChoiceHead, ReasonerConfig
from plmbench.models.transe import TransEConfig

log = logging.getLogger(__name__)


class ReasonerError(UserError):
    """A reasoner setting that cannot work with the task or its files; the message names the key."""


class NoReasoner:
    """Plain fine-tuning: the task kind's own head, features and collator."""

    columns: tuple[str, ...] = ()

    def check(self, task: Mapping) -> None:
        return None

    def attach(self, rows: datasets.Dataset, features: datasets.Dataset) -> datasets.Dataset:
        return features

    def collator(self, special: SpecialTokens) -> FeatureCollator | None:
        return None  # the task kind's collator

    def head(self, config: ModelConfig, num_labels: int) -> torch.nn.Module | None:
        return None  # the task kind's head


class GraphReasoning(NoReasoner):
    columns = GRAPH_COLUMNS

    def __init__(self, hops: int = 2, max_nodes: int = 48, layers: int = 2, dim: int = 100, bases: int = 8,
                 dropout: float = 0.1, linking: str = "first", entity_table: str | None = None,
                 transe: Mapping | None = None, wordnet_dir: str | None = None):
        for key, value in (("hops", hops), ("max_nodes", max_nodes), ("layers", layers), ("dim", dim),
                           ("bases", bases)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ReasonerError(f"reasoner.{key}={value!r}: must be a positive integer")
        self.hops, self.max_nodes, self.linking = hops, max_nodes, linking
        self.reasoner = ReasonerConfig(dim=dim, layers=layers, bases=bases, dropout=float(dropout))
        self.entity_table_path, self.wordnet_dir = entity_table, wordnet_dir
        transe = dict(transe or {})
        unknown = set(transe) - {field.name for field in dataclasses.fields(TransEConfig)}
        if unknown:
            raise ReasonerError(f"reasoner.transe.{min(unknown)}: not a TransE setting; allowed: "
                                f"{', '.join(field.name for field in dataclasses.fields(TransEConfig))}")
        self.transe = TransEConfig(**transe)

    def check(self, task: Mapping) -> None:
        if task["kind"] != "multiple_choice":
            raise ReasonerError(f"reasoner=rgcn with task.kind={task['kind']}: the graph reasoner scores "
                                "multiple-choice answers only; use reasoner=none")

    @cached_property
    def extractor(self) -> SubgraphExtractor:
        from plmbench.data.entity_linking import EntityLinker

        linker = EntityLinker.from_wordnet(self.wordnet_dir, method=self.linking)
        return SubgraphExtractor(linker.graph, linker, self.hops, self.max_nodes)

    @cached_property
    def entity_table(self) -> torch.Tensor:
        graph = self.extractor.linker.graph
        if self.entity_table_path == AUTO:  # the fusion rows' table: one TransE build serves both systems
            return load_weights_only(build_entity_table(self.wordnet_dir)).float()
        if self.entity_table_path is not None:
            table = load_weights_only(self.entity_table_path)
            if not isinstance(table, torch.Tensor) or table.shape[0] != len(graph.entities):
                shape = tuple(table.shape) if isinstance(table, torch.Tensor) else type(table).__name__
                raise ReasonerError(f"reasoner.entity_table={self.entity_table_path}: holds {shape}, expected a "
                                    f"tensor of {len(graph.entities)} rows (one per WordNet synset)")
            return table.float()
        from plmbench.models.transe_cache import cached_transe

        model, cached = cached_transe(torch.as_tensor(graph.triples), len(graph.entities), len(graph.relations),
                                      self.transe)
        log.info("TransE entity table %s (%d entities, dim %d)", "from cache" if cached else "trained",
                 len(graph.entities), self.transe.dim)
        return model.entity.weight.detach().clone()

    def attach(self, rows: datasets.Dataset, features: datasets.Dataset) -> datasets.Dataset:
        """The features with each choice's subgraph; multiple-choice features are one row per question."""
        graphs = rows.map(lambda batch: subgraph_columns(batch, self.extractor), batched=True, batch_size=100,
                          remove_columns=rows.column_names, load_from_cache_file=False, desc="subgraphs")
        nodes = [len(n) for row in graphs["graph_nodes"] for n in row]
        log.info("subgraphs: %d choices, %.1f nodes on average, %d empty", len(nodes),
                 sum(nodes) / max(1, len(nodes)), sum(n == 0 for n in nodes))
        return datasets.concatenate_datasets([features, graphs], axis=1)

    def collator(self, special: SpecialTokens) -> FeatureCollator:
        return GraphChoiceCollator(special)

    def head(self, config: ModelConfig, num_labels: int) -> torch.nn.Module:
        return GraphChoiceHead(config, num_labels, self.entity_table, self.extractor.edge_types, self.reasoner)


def build_reasoning(cfg: DictConfig) -> NoReasoner:
    """The run's reasoner option, from cfg.reasoner's `_target_` (none when the config has no reasoner group)."""
    node = cfg.get("reasoner")
    if node is None or node.get("_target_") is None:
        return NoReasoner()
    from hydra.utils import instantiate

    try:
        return instantiate(OmegaConf.to_container(node, resolve=True), _convert_="all")
    except ReasonerError:
        raise
    except Exception as error:  # noqa: BLE001 - Hydra wraps the constructor's TypeError in its own
        cause = error.__cause__ if isinstance(error.__cause__, ReasonerError) else None
        if cause is not None:
            raise cause from None
        raise ReasonerError(f"reasoner: {' '.join(str(error).split())[:300]}") from None
