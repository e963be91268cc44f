"""Scoring with a causal LM, no parameter updates: the log-likelihood of candidate continuations, and greedy answers.

The model is plmbench's CausalLM (objectives/clm.py): `model.backbone(ids, attention_mask)` gives hidden states and
`model.lm_head` maps them to vocabulary logits. Sequences are right-padded, so with the causal mask every real
position sees exactly the tokens a single unpadded sequence would; the LM head runs only on the positions scored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from plmbench.data.collate import pad_sequences

# How a candidate's log-likelihood becomes its score. sum: log P(option | prompt). mean: that per option token.
# calibrated: log P(option | prompt) - log P(option | answer cue alone), GPT-3's P(completion | context) /
# P(completion | answer_context) (Brown et al. 2020, section 2.4; used for ARC, OpenBookQA and RACE), which
# discounts options that are likely whatever the question.
NORMALISATIONS = ("sum", "mean", "calibrated")


def _batch(sequences: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(map(len, sequences))
    ids = torch.from_numpy(pad_sequences(sequences, pad, length)).to(device)
    lengths = torch.tensor([len(s) for s in sequences], device=device)
    return ids, (torch.arange(length, device=device)[None, :] < lengths[:, None]).long()


@torch.no_grad()
def continuation_logprobs(model: nn.Module, contexts: Sequence[Sequence[int]],
                          continuations: Sequence[Sequence[int]], pad: int) -> list[tuple[float, int]]:
    """(sum of log p(token | everything before it), token count) of each continuation after its context, all pairs
    in one forward pass. Every context needs at least one token (the first continuation token is predicted from it)."""
    if len(contexts) != len(continuations) or not contexts:
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations: need equal, non-zero")
    if any(len(c) == 0 for c in contexts) or any(len(x) == 0 for x in continuations):
        raise ValueError("every context and every continuation needs at least one token")
    device = next(model.parameters()).device
    ids, mask = _batch([[*c, *x] for c, x in zip(contexts, continuations)], pad, device)
    hidden = model.backbone(ids, mask)
    rows, positions, targets = [], [], []
    for row, (context, continuation) in enumerate(zip(contexts, continuations)):
        for j, token in enumerate(continuation):
            rows.append(row)
            positions.append(len(context) + j - 1)  # the position whose output predicts this token
            targets.append(token)
    rows_t = torch.tensor(rows, device=device)
    logits = model.lm_head(hidden[rows_t, torch.tensor(positions, device=device)]).float()
    token_logprobs = F.log_softmax(logits, dim=-1).gather(1, torch.tensor(targets, device=device)[:, None])[:, 0]
    sums = torch.zeros(len(contexts), dtype=torch.float64, device=device).index_add_(0, rows_t,
                                                                                       token_logprobs.double())
    return [(float(s), len(x)) for s, x in zip(sums.tolist(), continuations)]


def option_value(score: Sequence[float], normalise: str) -> float:
    """One candidate's score from (log P(option | prompt), option tokens[, log P(option | answer cue)])."""
    total, count, *unconditional = score
    if normalise == "calibrated":
        if not unconditional:
            raise ValueError("normalise='calibrated' needs each option's log-likelihood after the answer cue alone")
        return total - unconditional[0]
    return total / count if normalise == "mean" else total


def choose(scores: Sequence[Sequence[float]], normalise: str) -> int:
    """Index of the best candidate under one of NORMALISATIONS ("mean": for options of unequal length)."""
    if normalise not in NORMALISATIONS:
        raise ValueError(f"normalise={normalise!r}: allowed values are {', '.join(NORMALISATIONS)}")
    values = [option_value(score, normalise) for score in scores]
    return max(range(len(values)), key=values.__getitem__)  # the first of equal scores


@torch.no_grad()
def greedy_generate(model: nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, pad: int,
                    stop_ids: set[int], decode: Callable[[list[int]], str], stops: Sequence[str]) -> list[list[int]]:
    """Greedy continuation of each prompt: the most likely next token, one at a time, until a stop token, a stop
    string in the decoded continuation, or max_new_tokens. Returns the generated ids (a stop token excluded).

    The backbone has no key/value cache, so each step reruns the sequences; answers are a few tokens long.
    """
    device = next(model.parameters()).device
    generated: list[list[int]] = [[] for _ in prompts]
    active = list(range(len(prompts)))
    for _ in range(max_new_tokens):
        if not active:
            break
        sequences = [[*prompts[i], *generated[i]] for i in active]
        ids, mask = _batch(sequences, pad, device)
        hidden = model.backbone(ids, mask)
        last = hidden[torch.arange(len(active), device=device), mask.sum(1) - 1]
        next_tokens = model.lm_head(last).float().argmax(-1).tolist()
        still = []
        for i, token in zip(active, next_tokens):
            if token in stop_ids:
                continue
            generated[i].append(token)
            if not any(stop in decode(generated[i]) for stop in stops):
                still.append(i)
        active = still
    return generated


def answer_text(generated: str, stops: Sequence[str]) -> str:
    """The generated text up to the first stop string, without surrounding white space."""
    cut = min([generated.find(s) for s in stops if s in generated] or [len(generated)])
    return generated[:cut].strip()
