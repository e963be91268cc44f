"""TransE (Bordes et al. 2013): a relation is a translation between entity embeddings, h + r ≈ t.

score(h, r, t) = -||h + r - t||, L1 or L2 (L1 by default, as the paper chose for WordNet). As in the paper's
Algorithm 1, relations are initialised uniformly in ±6/sqrt(dim) and L2-normalised once; entities are initialised
the same way and renormalised to unit L2 norm before every minibatch, which stops the loss from being lowered by
merely growing the entity norms. Negatives replace the head or the tail of a training triple by a random entity:
with probability 1/2 ("uniform", the paper) or, per relation, tails-per-head / (tails-per-head + heads-per-tail)
("bern", Wang et al. 2014), which corrupts the "many" side of 1-N and N-1 relations less often and so makes fewer
false negatives.

Two losses, named by `loss`:
- "margin": the paper's margin ranking loss, mean over pairs of max(0, margin + d(pos) - d(neg)).
- "self_adversarial": Sun et al. 2019 (RotatE), -log σ(γ - d(pos)) - Σ_i p_i log σ(d(neg_i) - γ), where the
  p_i are a softmax of the negatives' scores at `adversarial_temperature`, held constant (no gradient), so the
  negatives the model finds plausible weigh most; γ is `margin`.
Both are minimised with Adam (the paper used plain SGD; Adam reaches the same fit in fewer epochs).

Training is a plain torch loop over (n, 3) id tensors; all randomness comes from one generator seeded by `seed`,
so a run is reproducible on the same machine and thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TransEConfig:
    """Everything that changes the trained embeddings (so it all enters the cache key). The defaults are the
    ones measured on WN18RR (bench/transe_wn18rr.py)."""

    dim: int = 100
    norm: int = 1  # 1 or 2: the distance ||h + r - t||_p
    loss: str = "margin"  # a key of LOSSES
    margin: float = 5.0  # the ranking margin, or γ of the self-adversarial loss; random L1 distances are ~11
    adversarial_temperature: float = 1.0  # self_adversarial only
    negatives: int = 16  # corrupted triples per training triple
    corruption: str = "bern"  # a key of CORRUPTIONS
    epochs: int = 15
    batch_size: int = 4096
    lr: float = 0.01
    seed: int = 0


class TransE(nn.Module):
    def __init__(self, num_entities: int, num_relations: int, dim: int = 100, norm: int = 1,
                 generator: torch.Generator | None = None):
        super().__init__()
        if norm not in (1, 2):
            raise ValueError(f"transe norm={norm!r}: must be 1 (L1) or 2 (L2)")
        self.norm = norm
        self.entity = nn.Embedding(num_entities, dim)
        self.relation = nn.Embedding(num_relations, dim)
        bound = 6 / math.sqrt(dim)
        with torch.no_grad():
            for table in (self.entity, self.relation):
                table.weight.uniform_(-bound, bound, generator=generator)
            self.relation.weight.div_(self.relation.weight.norm(dim=1, keepdim=True))
            self.normalise_entities()

    @torch.no_grad()
    def normalise_entities(self) -> None:
        self.entity.weight.div_(self.entity.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def distance(self, heads: torch.Tensor, relations: torch.Tensor, tails: torch.Tensor) -> torch.Tensor:
        """||h + r - t|| for broadcastable id tensors."""
        translated = self.entity(heads) + self.relation(relations) - self.entity(tails)
        return translated.norm(p=self.norm, dim=-1)

    @torch.no_grad()
    def score_all(self, queries: torch.Tensor, direction: str) -> torch.Tensor:
        """(n, num_entities) scores -||h + r - e|| ("tail") or -||e + r - t|| ("head") for (n, 3) id queries."""
        heads, relations, tails = queries.unbind(1)
        if direction == "tail":
            anchor = self.entity(heads) + self.relation(relations)
        elif direction == "head":
            anchor = self.entity(tails) - self.relation(relations)  # ||e + r - t|| = ||e - (t - r)||
        else:
            raise ValueError(f"direction={direction!r}: must be 'tail' or 'head'")
        return -torch.cdist(anchor, self.entity.weight, p=self.norm)


# ------------------------------------------------------------------------------------------ negatives


def uniform_head_probability(triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    return torch.full((num_relations,), 0.5)


def bernoulli_head_probability(triples: torch.Tensor, num_relations: int) -> torch.Tensor:
    """Per relation, tph / (tph + hpt): 1-N relations (many tails per head) get their head corrupted more."""
    probability = torch.full((num_relations,), 0.5)
    for relation in range(num_relations):
        chosen = triples[triples[:, 1] == relation]
        if len(chosen) == 0:
            continue
        tails_per_head = len(chosen) / len(torch.unique(chosen[:, 0]))
        heads_per_tail = len(chosen) / len(torch.unique(chosen[:, 2]))
        probability[relation] = tails_per_head / (tails_per_head + heads_per_tail)
    return probability


CORRUPTIONS: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {
    "uniform": uniform_head_probability,
    "bern": bernoulli_head_probability,
}


def corrupt(batch: torch.Tensor, negatives: int, num_entities: int, head_probability: torch.Tensor,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(negative heads, negative tails), each (batch, negatives): one of the two replaced by a random entity."""
    heads, relations, tails = batch.unbind(1)
    shape = (len(batch), negatives)
    replace_head = torch.rand(shape, generator=generator) < head_probability[relations][:, None]
    random = torch.randint(num_entities, shape, generator=generator)
    return (torch.where(replace_head, random, heads[:, None]), torch.where(replace_head, tails[:, None], random))


# ------------------------------------------------------------------------------------------ losses


def margin_ranking_loss(positive: torch.Tensor, negative: torch.Tensor, config: TransEConfig) -> torch.Tensor:
    """positive: (b,) distances; negative: (b, k)."""
    return F.relu(config.margin + positive[:, None] - negative).mean()


def self_adversarial_loss(positive: torch.Tensor, negative: torch.Tensor, config: TransEConfig) -> torch.Tensor:
    weights = torch.softmax(config.adversarial_temperature * (config.margin - negative), dim=1).detach()
    negative_term = -(weights * F.logsigmoid(negative - config.margin)).sum(1)
    positive_term = -F.logsigmoid(config.margin - positive)
    return (positive_term + negative_term).mean() / 2


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor, TransEConfig], torch.Tensor]] = {
    "margin": margin_ranking_loss,
    "self_adversarial": self_adversarial_loss,
}


# ------------------------------------------------------------------------------------------ training


def check(config: TransEConfig) -> None:
    for key, table in (("loss", LOSSES), ("corruption", CORRUPTIONS)):
        if getattr(config, key) not in table:
            raise ValueError(f"transe {key}={getattr(config, key)!r}: must be one of {', '.join(table)}")
    for key in ("dim", "negatives", "batch_size"):
        if getattr(config, key) < 1:
            raise ValueError(f"transe {key}={getattr(config, key)!r}: must be a positive integer")


def train_transe(triples: torch.Tensor, num_entities: int, num_relations: int, config: TransEConfig,
                 on_epoch: Callable[[int, float, TransE], None] | None = None) -> TransE:
    """TransE fitted to the (n, 3) training triples; `on_epoch(epoch, mean loss, model)` is called after each."""
    check(config)
    generator = torch.Generator().manual_seed(config.seed)
    model = TransE(num_entities, num_relations, config.dim, config.norm, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    head_probability = CORRUPTIONS[config.corruption](triples, num_relations)
    loss_fn = LOSSES[config.loss]
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(triples), generator=generator)
        total = 0.0
        for start in range(0, len(triples), config.batch_size):
            batch = triples[order[start:start + config.batch_size]]
            model.normalise_entities()
            heads, relations, tails = batch.unbind(1)
            negative_heads, negative_tails = corrupt(batch, config.negatives, num_entities, head_probability,
                                                     generator)
            positive = model.distance(heads, relations, tails)
            negative = model.distance(negative_heads, relations[:, None], negative_tails)
            loss = loss_fn(positive, negative, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if on_epoch is not None:
            on_epoch(epoch, total / len(triples), model)
    model.normalise_entities()  # scored as trained: with unit-norm entities
    return model
