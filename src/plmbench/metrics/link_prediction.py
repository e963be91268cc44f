"""Filtered link-prediction ranking (Bordes et al. 2013): MRR, MR and Hits@k over tail and head prediction.

For each test triple (h, r, t) the model scores every entity as the tail of (h, r, ?) and as the head of (?, r, t).
The "filtered" setting removes from the candidates every other entity that makes a true triple in train, valid or
test, so a model is not penalised for ranking another correct answer first. The two directions are pooled: each
test triple contributes one tail rank and one head rank, so the metrics are the mean of the two directions'.

Ties use the "realistic" (mean) rank of Berrendorf et al. 2020: 1 + #(better) + #(equally scored others) / 2, the
expected rank under a random order among ties. The optimistic rank (ties count as beaten) would reward a model
that scores every entity the same with MRR 1; the pessimistic one punishes exact ties that float arithmetic makes.

The model is a callable, so this module knows nothing of any model: `score(queries, direction)` takes an (n, 3)
id tensor and "tail" or "head" and returns (n, num_entities) scores, higher meaning more plausible.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable

import torch

DIRECTIONS = ("tail", "head")
HITS_AT = (1, 3, 10)

Scorer = Callable[[torch.Tensor, str], torch.Tensor]


def known_answers(triple_sets: Iterable[torch.Tensor]) -> dict[str, dict[tuple[int, int], list[int]]]:
    """{'tail': {(h, r): [every true t]}, 'head': {(r, t): [every true h]}} over all the given (n, 3) tensors."""
    answers = {direction: defaultdict(set) for direction in DIRECTIONS}
    for triples in triple_sets:
        for h, r, t in triples.tolist():
            answers["tail"][(h, r)].add(t)
            answers["head"][(r, t)].add(h)
    return {direction: {key: sorted(found) for key, found in table.items()} for direction, table in answers.items()}


def filtered_ranks(score: Scorer, test: torch.Tensor, known: dict, direction: str,
                   batch_size: int = 256) -> torch.Tensor:
    """The realistic filtered rank (float, 1 = best) of each test triple's true answer in `direction`."""
    ranks = []
    for start in range(0, len(test), batch_size):
        queries = test[start:start + batch_size]
        scores = score(queries, direction).detach().float()
        answer = queries[:, 2] if direction == "tail" else queries[:, 0]
        true_score = scores.gather(1, answer[:, None])
        rows, cols = [], []
        for row, (h, r, t) in enumerate(queries.tolist()):
            others = known[direction].get((h, r) if direction == "tail" else (r, t), ())
            rows += [row] * len(others)
            cols += others
        filtered = torch.zeros_like(scores, dtype=torch.bool)
        filtered[rows, cols] = True
        filtered[torch.arange(len(queries)), answer] = True  # the answer itself: neither better nor a tie
        candidates = ~filtered
        better = ((scores > true_score) & candidates).sum(1)
        tied = ((scores == true_score) & candidates).sum(1)
        ranks.append(1 + better.double() + tied.double() / 2)
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.double)


def summarise(ranks: torch.Tensor) -> dict[str, float]:
    """MRR, MR and Hits@1/3/10 (fractions) of a rank tensor."""
    out = {"mrr": (1 / ranks).mean().item(), "mr": ranks.mean().item()}
    out |= {f"hits@{k}": (ranks <= k).double().mean().item() for k in HITS_AT}
    return out


def link_prediction(score: Scorer, test: torch.Tensor, known_triples: Iterable[torch.Tensor],
                    batch_size: int = 256) -> dict[str, float]:
    """Filtered metrics of both directions pooled, plus each direction's own under `tail_` and `head_`.

    `known_triples` are every split's triples (train, valid, test): the true answers to filter out."""
    known = known_answers(known_triples)
    by_direction = {direction: filtered_ranks(score, test, known, direction, batch_size) for direction in DIRECTIONS}
    out = summarise(torch.cat(list(by_direction.values())))
    for direction, ranks in by_direction.items():
        out |= {f"{direction}_{name}": value for name, value in summarise(ranks).items()}
    return out | {"triples": len(test)}
