"""`evaluate_shots`: a causal LM evaluated zero-, one- or few-shot on a task, with no parameter updates.

Classification and multiple choice: the prediction is the candidate (a verbalised label, or a RACE option) whose
continuation of the prompt is most likely, summed over its tokens. RACE: the candidate with the best calibrated
score log P(option | prompt) - log P(option | "Answer:") (GPT-3 section 2.4); the accuracy of the per-token mean
log-likelihood is recorded beside it (`accuracy_mean_ll`; the shown one also as `accuracy_calibrated`), and
`primary.choice_score` names the score shown. SQuAD 1.1: the greedy continuation up to the style's stop string,
scored by exact match and F1. The evaluated rows are those fine-tuning evaluates (the same seeded cap), so few-shot
and fine-tuned scores of one model compare on the same questions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from functools import partial

import datasets
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm

from plmbench import metrics as task_metrics
from plmbench.data.tokenizer import SpecialTokens
from plmbench.fewshot.prompts import (
    PromptFormat,
    PromptStyle,
    draw_demonstrations,
    encode_answer_cue,
    encode_prompt,
    format_for,
    render_input,
    style_named,
)
from plmbench.fewshot.scoring import answer_text, choose, continuation_logprobs, greedy_generate
from plmbench.lit.finetuning import CAP_SEED

log = logging.getLogger(__name__)


def cap_rows(rows: datasets.Dataset, limit: int | None) -> datasets.Dataset:
    """The rows fine-tuning evaluates under the same cap (its seeded sample)."""
    if limit is None or len(rows) <= limit:
        return rows
    return rows.shuffle(seed=CAP_SEED).select(range(limit))


class _Prompter:
    """Builds each evaluated example's prompt: its demonstrations, fitted into `context` tokens."""

    def __init__(self, fmt: PromptFormat, style: PromptStyle, train, k: int, seed: int, tokenizer: Tokenizer,
                 special: SpecialTokens):
        self.fmt, self.style, self.train, self.k, self.seed = fmt, style, train, k, seed
        self.tokenizer, self.special = tokenizer, special
        self.key = partial(render_input, fmt, style)
        self.shots: list[int] = []
        self.truncated = 0

    def __call__(self, index: int, row: Mapping, budget: int) -> list[int]:
        demos = draw_demonstrations(self.train, self.k, self.seed, index, self.key(row), self.key)
        prompt = encode_prompt(self.fmt, self.style, row, demos, self.tokenizer, self.special, budget)
        self.shots.append(prompt.shots)
        self.truncated += prompt.truncated
        return prompt.ids

    def stats(self) -> dict:
        return {"shots_mean": sum(self.shots) / max(1, len(self.shots)), "shots_min": min(self.shots, default=0),
                "prompts_truncated": self.truncated}


# The suffix of each score's metrics when a format records more than one (accuracy_calibrated, accuracy_mean_ll).
SCORE_KEYS = {"sum": "sum_ll", "mean": "mean_ll", "calibrated": "calibrated"}


def _logprobs(model: nn.Module, pairs: list[tuple[list[int], list[int]]], pad: int, batch_size: int) -> list:
    scores: list[tuple[float, int]] = []
    # One forward per batch of (context, candidate) sequences; a bar on a terminal only (tqdm's disable=None).
    for start in tqdm(range(0, len(pairs), batch_size), desc="few-shot scoring", unit=" batches", disable=None,
                      leave=False):
        chunk = pairs[start:start + batch_size]
        scores += continuation_logprobs(model, [c for c, _ in chunk], [x for _, x in chunk], pad)
    return scores


def option_scores(model: nn.Module, examples, prompter: _Prompter, context: int, batch_size: int,
                  calibrate: bool) -> list[list[tuple]]:
    """Per example, per option: (log P(option | prompt), option tokens), plus log P(option | answer cue alone) when
    `calibrate` (the denominator of GPT-3's calibrated score, computed once per distinct option)."""
    fmt, tokenizer, pad = prompter.fmt, prompter.tokenizer, prompter.special.pad
    pairs: list[tuple[int, list[int], list[int]]] = []  # (example, prompt ids, candidate ids)
    for index, row in enumerate(examples):
        candidates = [tokenizer.encode(f" {c}", add_special_tokens=False).ids for c in fmt.choices(row)]
        prompt = prompter(index, row, context - max(map(len, candidates)))
        pairs += [(index, prompt, candidate) for candidate in candidates]
    scores = _logprobs(model, [(p, c) for _, p, c in pairs], pad, batch_size)
    if calibrate:
        cue = encode_answer_cue(fmt, tokenizer, prompter.special)
        distinct = list(dict.fromkeys(tuple(c) for _, _, c in pairs))
        alone = dict(zip(distinct, _logprobs(model, [(cue, list(c)) for c in distinct], pad, batch_size)))
        scores = [(*score, alone[tuple(c)][0]) for score, (_, _, c) in zip(scores, pairs)]
    per_example: list[list[tuple]] = [[] for _ in range(len(examples))]
    for (index, _, _), score in zip(pairs, scores):
        per_example[index].append(score)
    return per_example


def _choice_metrics(model: nn.Module, metric, task_cfg: Mapping, examples, prompter: _Prompter, context: int,
                    batch_size: int) -> dict:
    """The metrics of the format's score; with compared scores, every score's also under its suffix."""
    fmt = prompter.fmt
    rules = (fmt.normalise, *fmt.compared)
    scores = option_scores(model, examples, prompter, context, batch_size, calibrate="calibrated" in rules)
    by_rule = {rule: _score(metric, task_cfg, examples, [choose(s, rule) for s in scores]) for rule in rules}
    metrics = dict(by_rule[fmt.normalise])
    if fmt.compared:
        metrics.update({f"{key}_{SCORE_KEYS[rule]}": value for rule, values in by_rule.items()
                        for key, value in values.items()})
    return metrics


def _generated_answers(model: nn.Module, examples, prompter: _Prompter, context: int, batch_size: int,
                       max_answer_tokens: int) -> list[str]:
    tokenizer, special, stops = prompter.tokenizer, prompter.special, prompter.style.stops
    prompts = [prompter(index, row, context - max_answer_tokens) for index, row in enumerate(examples)]
    decode = partial(tokenizer.decode, skip_special_tokens=True)
    answers = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="few-shot generation", unit=" batches",
                      disable=None, leave=False):
        generated = greedy_generate(model, prompts[start:start + batch_size], max_answer_tokens, special.pad,
                                    {special.sep, special.pad, special.cls}, decode, stops)
        answers += [answer_text(decode(ids), stops) for ids in generated]
    return answers


def _score(metric, task_cfg: Mapping, examples, predictions) -> dict:
    kind = task_cfg["kind"]
    if kind == "span":
        ids = examples["id"]
        return metric.compute(predictions=[{"id": i, "prediction_text": p} for i, p in zip(ids, predictions)],
                              references=[{"id": i, "answers": a} for i, a in zip(ids, examples["answers"])])
    if kind == "multiple_choice" and "level" in examples.column_names:  # RACE scores per level; CSQA has none
        return metric.compute(predictions=predictions, references=examples["label"], levels=examples["level"])
    return metric.compute(predictions=predictions, references=examples["label"])


def evaluate_shots(model: nn.Module, tokenizer: Tokenizer, special: SpecialTokens, task_cfg: Mapping,
                   data: datasets.DatasetDict, k: int, seed: int, max_examples: int | None = None,
                   style: str = "gpt3", batch_size: int = 32, max_answer_tokens: int | None = None,
                   context: int | None = None) -> dict:
    """Metrics of `model` (a CausalLM) on every eval split of the task with k demonstrations from data['train'].

    `context` is the longest input in tokens, prompt and answer together: the sequence length the model was
    pre-trained on (positions beyond it were never trained), at most model.config.max_positions (the default).

    Returns the keys fine-tuning's metrics.json uses for results ("best": the first split's metrics, other splits
    as "<split>/<metric>"; "best_by_split"; "primary"), plus k, seed, style and per split how many demonstrations
    the prompts kept ("shots_mean", "shots_min") and how many were cut from the left ("prompts_truncated").
    """
    started = time.perf_counter()
    fmt, prompt_style = format_for(task_cfg), style_named(style)
    if task_cfg["kind"] == "span" and task_cfg["metric"]["name"] != "squad":
        raise ValueError(f"task {task_cfg['name']}: generation is scored with the squad metric only (SQuAD 1.1); "
                         f"metric {task_cfg['metric']['name']} needs a no-answer decision greedy decoding lacks")
    metric_name, metric_config = task_cfg["metric"]["name"], task_cfg["metric"].get("config")
    metric = task_metrics.load(metric_name, metric_config)
    primary = task_metrics.PRIMARY[metric_config or metric_name]
    if context is not None and not 2 < int(context) <= model.config.max_positions:
        raise ValueError(f"context={context}: must be in 3..model.max_positions={model.config.max_positions}")
    context = int(context or model.config.max_positions)
    answer_tokens = int(max_answer_tokens or task_cfg.get("max_answer_length") or 30)
    was_training = model.training
    model.eval()
    by_split, stats, sizes = {}, {}, {}
    try:
        for split in task_cfg["eval_splits"]:
            examples = cap_rows(data[split], max_examples)
            prompter = _Prompter(fmt, prompt_style, data["train"], k, seed, tokenizer, special)
            if fmt.choices is not None:
                by_split[split] = _choice_metrics(model, metric, task_cfg, examples, prompter, context, batch_size)
            else:
                predictions = _generated_answers(model, examples, prompter, context, batch_size, answer_tokens)
                by_split[split] = _score(metric, task_cfg, examples, predictions)
            stats[split], sizes[split] = prompter.stats(), len(examples)
            log.info("%s %d-shot %s: %s (%s)", task_cfg["name"], k, split, by_split[split], stats[split])
    finally:
        model.train(was_training)
    first = task_cfg["eval_splits"][0]
    flat = dict(by_split[first])
    for split, values in by_split.items():
        if split != first:
            flat.update({f"{split}/{key}": value for key, value in values.items()})
    return {"status": "finished", "task": str(task_cfg["name"]), "task_kind": str(task_cfg["kind"]), "k": k,
            "seed": seed, "style": style, "context": context, "best": flat, "best_by_split": by_split,
            "primary": {"name": primary, "split": first, "value": by_split[first].get(primary),
                        **({"choice_score": fmt.normalise} if fmt.choices is not None else {})},
            "prompts": stats, "eval_examples": sizes, "wall_seconds": time.perf_counter() - started}
