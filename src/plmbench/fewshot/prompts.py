"""Prompts for zero-, one- and few-shot evaluation (GPT-3, Brown et al. 2020, section 2 and appendix G).

A prompt is a task description, then k solved demonstrations drawn at random from the TRAIN split, then the
example to solve, ending with the answer cue ("Answer:"). The model's answer is the candidate continuation it gives
the highest likelihood (classification, multiple choice) or its greedy continuation (SQuAD).

Demonstrations are drawn afresh for every evaluated example from a generator seeded by (seed, example index), so a
seed fixes every prompt. A training row whose rendered input is exactly the evaluated example's is never drawn: with
carved or duplicated splits the model would otherwise be shown the answer it is asked for.

A prompt that does not fit the model's context loses whole demonstrations from the front first, and only then
tokens from the left: the example and its answer cue always survive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tokenizers import Tokenizer

from plmbench.data.tokenizer import SpecialTokens


class PromptError(ValueError):
    """A task or setting the prompt builder cannot serve; the message names the key and what is allowed."""


@dataclass(frozen=True)
class PromptStyle:
    """How fields and examples are joined, and where a generated answer ends."""

    field_sep: str
    example_sep: str
    stops: tuple[str, ...]


# gpt3: GPT-3's own layout (appendix G), one field per line. inline: the same fields joined by spaces, for models
# pre-trained on plmbench corpora, which never contain a line break (sentences are joined by spaces), so "\n" is a
# token such a model has never read.
STYLES = {
    "gpt3": PromptStyle(field_sep="\n", example_sep="\n\n", stops=("\n",)),
    "inline": PromptStyle(field_sep=" ", example_sep=" ", stops=("\n", ". ")),
}


@dataclass(frozen=True)
class PromptFormat:
    """One task's prompt: its description, the (label, text) fields of an example, the answer cue, and either the
    candidate answers (scored) or none (generated)."""

    description: str
    fields: Callable[[Mapping], list[tuple[str | None, str]]]
    answer_cue: str
    gold: Callable[[Mapping], str]  # a demonstration's answer text
    choices: Callable[[Mapping], list[str]] | None = None  # None: the answer is generated
    normalise: str = "sum"  # the score that picks the prediction (scoring.NORMALISATIONS)
    compared: tuple[str, ...] = ()  # other scores whose accuracies are recorded beside it


def _verbalised(names: Sequence[str]) -> tuple[Callable, Callable]:
    return (lambda row: names[int(row["label"])]), (lambda row: list(names))


def _nli(description: str, question: str, names: Sequence[str]) -> PromptFormat:
    gold, choices = _verbalised(names)
    return PromptFormat(
        description=description,
        fields=lambda row: [(None, row["text_a"]), ("Question", f"{row['text_b']} {question}")],
        answer_cue="Answer:", gold=gold, choices=choices)


_SST2_GOLD, _SST2_CHOICES = _verbalised(("negative", "positive"))  # hub ids: 0 negative, 1 positive

FORMATS: dict[str, PromptFormat] = {
    "sst2": PromptFormat(
        description="Decide whether the sentiment of each movie review is positive or negative.",
        fields=lambda row: [("Review", row["text_a"])], answer_cue="Sentiment:",
        gold=_SST2_GOLD, choices=_SST2_CHOICES),
    # GPT-3's RTE and ANLI prompts: the premise, then the hypothesis as a question; hub ids 0 entailment, ...
    "rte": _nli("Does the passage imply the statement in the question? Answer yes or no.", "Yes or no?",
                ("yes", "no")),  # 1 not_entailment
    "mnli": _nli("Does the passage imply the statement in the question? Answer yes, no or maybe.",
                 "Yes, no, or maybe?", ("yes", "maybe", "no")),  # 1 neutral, 2 contradiction
    # RACE: the article, the question, each option as the continuation (GPT-3 appendix G), picked by GPT-3's
    # calibrated score P(option | prompt) / P(option | "Answer:") (section 2.4: used for ARC, OpenBookQA and RACE);
    # the per-token mean log-likelihood, the usual score for options of unequal length, is recorded beside it.
    "race": PromptFormat(
        description="Read the article and answer the question.",
        fields=lambda row: [("Article", row["article"]), ("Question", row["question"])], answer_cue="Answer:",
        gold=lambda row: row["options"][int(row["label"])], choices=lambda row: list(row["options"]),
        normalise="calibrated", compared=("mean",)),
    # SQuAD 1.1: the passage and the question; the answer is generated greedily (GPT-3 appendix G).
    "squad": PromptFormat(
        description="Answer each question with a short span copied from the passage.",
        fields=lambda row: [("Passage", row["context"]), ("Question", row["question"])], answer_cue="Answer:",
        gold=lambda row: row["answers"]["text"][0]),
}
TASK_FORMATS = {"sst2": "sst2", "rte": "rte", "mnli": "mnli", "race": "race", "race_middle": "race",
                "race_high": "race", "squad_v1": "squad"}


def format_for(task_cfg: Mapping) -> PromptFormat:
    name = task_cfg.get("name")
    if name not in TASK_FORMATS:
        raise PromptError(f"task.name={name!r} has no few-shot prompt format; allowed: {', '.join(TASK_FORMATS)}")
    return FORMATS[TASK_FORMATS[name]]


def style_named(name: str) -> PromptStyle:
    if name not in STYLES:
        raise PromptError(f"shots.style={name!r}: allowed values are {', '.join(STYLES)}")
    return STYLES[name]


def render_input(fmt: PromptFormat, style: PromptStyle, row: Mapping) -> str:
    """The example's fields and the answer cue, without the answer: also the key that identifies duplicates."""
    fields = [text if label is None else f"{label}: {text}" for label, text in fmt.fields(row)]
    return style.field_sep.join([*(" ".join(f.split()) for f in fields), fmt.answer_cue])


def render_prompt(fmt: PromptFormat, style: PromptStyle, row: Mapping, demonstrations: Sequence[Mapping]) -> str:
    solved = [f"{render_input(fmt, style, d)} {fmt.gold(d)}" for d in demonstrations]
    return style.example_sep.join([fmt.description, *solved, render_input(fmt, style, row)])


def draw_demonstrations(train, k: int, seed: int, index: int, exclude: str, key: Callable[[Mapping], str]) -> list:
    """k training rows for evaluated example `index`, never one whose key equals `exclude` (the example itself or an
    exact duplicate of it). Fewer than k only when the train split has fewer eligible rows."""
    if k < 0:
        raise PromptError(f"k={k}: the number of demonstrations must be >= 0")
    if k == 0:
        return []
    rng = np.random.default_rng([seed, index])
    picked: list = []
    # A first draw of a few more than k nearly always suffices; the full permutation is the rare fallback.
    first = rng.choice(len(train), size=min(len(train), k + 8), replace=False)
    for order in (first, rng.permutation(len(train))):
        for i in order:
            row = train[int(i)]
            if key(row) != exclude and not any(row is p or key(row) == key(p) for p in picked):
                picked.append(row)
                if len(picked) == k:
                    return picked
    return picked


@dataclass
class Prompt:
    ids: list[int]
    shots: int  # demonstrations kept after fitting the context
    truncated: bool  # tokens were cut from the left after every demonstration was dropped


def encode_prompt(fmt: PromptFormat, style: PromptStyle, row: Mapping, demonstrations: Sequence[Mapping],
                  tokenizer: Tokenizer, special: SpecialTokens, budget: int) -> Prompt:
    """Token ids of the prompt, at most `budget` long. The prompt opens with the separator token, which is how every
    document begins in causal pre-training (documents are joined by it), as GPT-2 opens with <|endoftext|>."""
    if budget < 2:
        raise PromptError(f"prompt budget {budget}: the model's context leaves no room for a prompt")
    tokenizer.encode_special_tokens = True  # text that spells "</s>" stays text
    demos = list(demonstrations)
    while True:
        ids = [special.sep, *tokenizer.encode(render_prompt(fmt, style, row, demos), add_special_tokens=False).ids]
        if len(ids) <= budget or not demos:
            break
        demos = demos[1:]
    return Prompt(ids=ids[-budget:], shots=len(demos), truncated=len(ids) > budget)


def encode_answer_cue(fmt: PromptFormat, tokenizer: Tokenizer, special: SpecialTokens) -> list[int]:
    """The context of the calibrated score's denominator: the answer cue alone, opening a document as a prompt does
    (GPT-3's answer_context, "Answer: "; an option's own tokens carry the space before it)."""
    tokenizer.encode_special_tokens = True
    return [special.sep, *tokenizer.encode(fmt.answer_cue, add_special_tokens=False).ids]
