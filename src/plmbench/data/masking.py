"""Masked-LM corruption: choose 15% of the tokens, replace 80% of those by [MASK], 10% by a random token, keep 10%.

One selection rule covers the three published variants. The candidates (every non-special token) are grouped into
units, the units into spans, and whole spans are chosen in random order until the sequence's budget is spent:

- token (BERT): a unit is one token, a span is one unit;
- whole_word (BERT's later whole-word masking): a unit is a word (a piece that starts a word plus its
  continuation pieces), a span is one word;
- ngram (ALBERT): a unit is a word, and spans of n = 1..max_ngram words are drawn with p(n) ∝ 1/n.

The budget is BERT's: max(1, round(rate × candidates)), capped at `max_predictions`. In BERT the words are added
while they fit; here the span that crosses the budget is taken with probability (budget left / its length), which
keeps the expected count equal to the budget without a per-token loop. All of it runs on a padded batch.
Like ALBERT's greedy fill, stopping at the budget favours short spans a little: the chosen n-grams come out
about 1-2 points more often unigrams than p(n) says.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from plmbench.data.tokenizer import SpecialTokens

IGNORE_INDEX = -100  # the label torch's cross-entropy skips
MODES = ("token", "whole_word", "ngram")


class Masker:
    def __init__(
        self,
        vocab_size: int,
        special: SpecialTokens,
        *,
        rate: float = 0.15,
        mode: str = "token",
        max_ngram: int = 3,
        max_predictions: int | None = None,
        mask_prob: float = 0.8,
        random_prob: float = 0.1,
    ):
        if mode not in MODES:
            raise ValueError(f"data.masking.mode={mode!r} is not one of {'|'.join(MODES)}")
        if not 0.0 < rate <= 1.0:
            raise ValueError(f"data.masking.rate={rate} must be in (0, 1]")
        if max_ngram < 1:
            raise ValueError(f"data.masking.max_ngram={max_ngram} must be >= 1")
        if max_predictions is not None and max_predictions < 1:
            raise ValueError(f"data.masking.max_predictions={max_predictions} must be >= 1 or null")
        if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1:
            raise ValueError(f"mask_prob={mask_prob} + random_prob={random_prob} must be probabilities summing to <= 1")
        self.rate, self.mode, self.max_predictions = rate, mode, max_predictions
        self.mask_prob, self.random_prob = mask_prob, random_prob
        self.mask_id = special.mask
        self.special_ids = torch.tensor(sorted(set(special.ids())))
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[self.special_ids] = True
        self.replacement_ids = torch.arange(vocab_size)[~is_special]  # random tokens come from the real vocab
        n = torch.arange(1, (max_ngram if mode == "ngram" else 1) + 1, dtype=torch.float64)
        self.span_probs = (1.0 / n) / (1.0 / n).sum()
        self._span_cdf = self.span_probs.cumsum(0)[:-1].float()  # bucket edges; the last bucket is open

    def __call__(
        self, input_ids: torch.Tensor, word_start: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked_input_ids, labels): labels hold the original id where a token was chosen, -100 elsewhere."""
        selected, _ = self.select(input_ids, word_start, generator)
        u = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
        to_mask = selected & (u < self.mask_prob)
        to_random = selected & (u >= self.mask_prob) & (u < self.mask_prob + self.random_prob)
        replacements = self.replacement_ids.to(input_ids.device)
        pick = torch.randint(len(replacements), input_ids.shape, generator=generator, device=input_ids.device)
        masked = torch.where(to_mask, torch.full_like(input_ids, self.mask_id), input_ids)
        masked = torch.where(to_random, replacements[pick].to(input_ids.dtype), masked)
        labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
        return masked, labels

    def select(
        self, input_ids: torch.Tensor, word_start: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(selected, span_id), both [batch, length]: which tokens are predicted, and the span each candidate
        belongs to (-1 for special tokens and padding). Exposed so tests can check the span statistics."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
        device = input_ids.device
        candidate = ~torch.isin(input_ids, self.special_ids.to(device))
        unit_start = self._unit_starts(candidate, word_start)
        unit = (unit_start.long().cumsum(1) - 1).clamp(min=0)

        # Cut the unit sequence into spans of iid lengths n ~ p(n): span j covers units [end[j-1], end[j]).
        u = torch.rand(input_ids.shape, generator=generator, device=device)
        lengths = torch.bucketize(u, self._span_cdf.to(device), right=True) + 1
        span_end = lengths.cumsum(1)
        span = torch.searchsorted(span_end, unit.contiguous(), right=True)
        span_tokens = torch.zeros_like(span).scatter_add_(1, span, candidate.long())

        # Take spans in random order while the budget lasts; the crossing span with probability left/length.
        n_candidates = candidate.sum(1, keepdim=True)
        budget = torch.round(n_candidates * self.rate).clamp(min=1).minimum(n_candidates)
        cap = n_candidates if self.max_predictions is None else n_candidates.clamp(max=self.max_predictions)
        budget = budget.minimum(cap)
        priority = torch.rand(input_ids.shape, generator=generator, device=device)
        priority = priority.masked_fill(span_tokens == 0, 2.0)  # empty spans sort last
        order = priority.argsort(1)
        length = span_tokens.gather(1, order)
        end = length.cumsum(1)
        before = end - length
        take = (end <= budget) & (length > 0)
        crossing = (before < budget) & (end > budget) & (end <= cap)
        chance = (budget - before).double() / length.clamp(min=1)
        take |= crossing & (torch.rand(input_ids.shape, generator=generator, device=device) < chance)
        span_taken = torch.zeros_like(take).scatter(1, order, take)
        selected = candidate & span_taken.gather(1, span)
        return selected, span.masked_fill(~candidate, -1)

    def _unit_starts(self, candidate: torch.Tensor, word_start: torch.Tensor | None) -> torch.Tensor:
        if self.mode == "token":
            return candidate
        if word_start is None:
            raise ValueError(f"data.masking.mode={self.mode} needs word_start (which pieces begin a word)")
        if word_start.shape != candidate.shape:
            raise ValueError(f"word_start shape {tuple(word_start.shape)} != input_ids {tuple(candidate.shape)}")
        # A word never reaches across a special token: a piece after one starts a new word.
        previous_is_candidate = F.pad(candidate[:, :-1], (1, 0), value=False)
        return candidate & (word_start.bool() | ~previous_is_candidate)
