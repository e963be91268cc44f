"""Offline proxy tasks: stand-ins for GLUE, SQuAD and RACE built from WordNet's human-made sense inventory.

With `task.source=proxy` a smoke sweep runs end to end without the real benchmark files, and still measures
something real: every proxy asks a model about word meaning and syntax written down by WordNet's lexicographers.
Each proxy returns exactly the schema of the task it stands in for (interface 4), so features, heads and metrics
are the real ones. What each measures:

- sst2: part of speech in context. A WordNet example sentence with its target word in [brackets]; label 1 if the
  word is used as a verb, 0 as a noun. Only words that WordNet lists as both noun and verb, so the word alone
  does not give the answer: the model must read the syntax around it.
- cola: acceptability. A WordNet example sentence (1) or the same kind of sentence with two adjacent words swapped
  (0); like CoLA, it asks whether the model knows English word order.
- mnli: gloss-to-usage inference. text_a is a WordNet definition, text_b an example sentence. entailment (0): the
  sentence uses a word in the defined sense; neutral (1): it uses the same word in another of its senses;
  contradiction (2): the definition belongs to a word the sentence does not contain. Every example sentence
  appears under all three labels and every definition comes from the same pool, so neither text alone tells
  the label. validation_matched holds out nouns and verbs (as train has); validation_mismatched adjectives
  and adverbs, a register train never saw.
- rte, qnli, wnli: the same pairs collapsed to entailment vs not (neutral and contradiction, half each); qnli
  phrases the definition as a question. Label ids follow each real task (rte/qnli: 0 = entailment; wnli: 1).
- mrpc, qqp: same meaning (Word-in-Context). Two example sentences that use one word; label 1 if in the same
  sense, 0 if in different senses.
- stsb: graded similarity of two example sentences: 5 same word in the same sense, 4 synonyms of one sense,
  2 same word in another sense, 0 unrelated words.
- squad_v1, squad_v2: which word is defined. The question is "Which word means: <definition>?"; the context is
  five example sentences of different senses, one of which uses the defined word, and the answer is that
  occurrence. squad_v2 leaves the defining sentence out of a third of the contexts (no answer).
- race, race_middle, race_high: word sense disambiguation. The article is four example sentences, one of which uses
  the word; the four options are its definition and those of the word's other senses (other words' definitions
  fill in when it has fewer). level: 'middle' for words with 2-3 senses in WordNet, 'high' for 4 or more.

Words are split by lemma: a seeded hash holds out a fifth of all lemmas for evaluation, and training never sees
a held-out lemma nor any synset that contains one, so evaluation tests generalisation, not memory. Labels are
balanced by construction. Built datasets are cached under cache_root()/proxy/, keyed by the WordNet files and
the task's parameters.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import datasets

from plmbench import paths
from plmbench.data import wordnet
from plmbench.data.tasks import glue, race, squad
from plmbench.data.tasks.errors import TaskConfigError
from plmbench.data.wordnet import Synset, Usage, find_lemma

BUILDER_VERSION = 1  # bump when a construction changes: it is part of the cache key
EVAL_FRACTION = 0.2  # share of lemmas held out for evaluation
DEFAULTS = {"train_size": 2000, "eval_size": 500, "seed": 0}  # small enough for a CPU smoke run
SQUAD_SENTENCES, RACE_SENTENCES = 5, 4
MAX_TRIES = 100  # draws per row before a pool counts as exhausted
BUILD_COUNT: Counter[str] = Counter()  # builds per task in this process: a cache hit does not add one


class ProxyTaskError(TaskConfigError):
    """A proxy task that cannot be built as configured."""


def _sid(synset: Synset) -> str:
    return f"{synset.pos}{synset.offset:08d}"  # offsets repeat across parts of speech


@lru_cache(maxsize=2)
def _wordnet(root: Path) -> tuple[tuple[Synset, ...], tuple[Usage, ...], dict, dict]:
    """(synsets, usages, sense counts, irregular forms): the parts of WordNet every proxy draws on."""
    synsets = tuple(wordnet.load_wordnet(root))
    exceptions = wordnet.load_exceptions(root)
    return synsets, tuple(wordnet.usages(synsets, exceptions)), wordnet.sense_counts(synsets), exceptions


class Pool:
    """One split's share of WordNet (some parts of speech only), indexed for drawing rows."""

    def __init__(self, usages: list[Usage], synsets: list[Synset], counts: dict, irregular: dict):
        self.usages, self.irregular = usages, irregular
        self.synsets = {_sid(s): s for s in synsets}
        self.senses: dict[tuple, list[Synset]] = defaultdict(list)  # word (lemma, pos) -> its synsets here
        self.by_pos: dict[str, list[Synset]] = defaultdict(list)
        for synset in synsets:
            self.by_pos[synset.pos].append(synset)
            for lemma in dict.fromkeys(lemma.lower() for lemma in synset.lemmas):
                self.senses[(lemma, synset.pos)].append(synset)
        self.by_sense: dict[tuple, list[Usage]] = defaultdict(list)  # (word, sid) -> usages
        self.by_synset: dict[str, list[Usage]] = defaultdict(list)
        for u in usages:
            self.by_sense[(u.word, _sid(u.synset))].append(u)
            self.by_synset[_sid(u.synset)].append(u)
        self.used_senses: dict[tuple, list[str]] = defaultdict(list)  # word -> sids that have usages of it
        for word, sid in self.by_sense:
            self.used_senses[word].append(sid)
        # Anchors: usages of words with 2+ illustrated senses; of those, senses with 2+ examples; synonyms.
        self.polysemous = [u for u in usages if len(self.used_senses[u.word]) >= 2]
        self.paired = [u for u in self.polysemous if len(self.by_sense[(u.word, _sid(u.synset))]) >= 2]
        self.synonymous = [u for u in usages if len({v.lemma for v in self.by_synset[_sid(u.synset)]}) >= 2]
        both = {lemma for lemma, pos in self.used_senses if pos == "n" and (lemma, "v") in self.used_senses}
        self.noun_verb = {pos: [u for u in usages if u.synset.pos == pos and u.lemma in both] for pos in "nv"}
        level = {1: None, 2: "middle", 3: "middle"}  # RACE's levels by polysemy in all of WordNet
        self.by_level: dict[str | None, list[Usage]] = defaultdict(list)
        for u in usages:
            self.by_level[level.get(counts[u.word], "high")].append(u)

    def mentions(self, sentence: str, synset: Synset) -> bool:
        """Whether the sentence contains any lemma of the synset (in any inflection)."""
        return any(find_lemma(sentence, lemma, synset.pos, self.irregular) for lemma in synset.lemmas)

    def distractors(self, rng: random.Random, count: int, avoid: Synset) -> list[Usage] | None:
        """`count` example sentences of other synsets that never mention `avoid`'s lemmas, or None."""
        chosen: list[Usage] = []
        for _ in range(count * 10):
            u = rng.choice(self.usages)
            if _sid(u.synset) != _sid(avoid) and u not in chosen and not self.mentions(u.sentence, avoid):
                chosen.append(u)
                if len(chosen) == count:
                    return chosen
        return None


def _is_held_out(lemma: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}:{lemma}".encode()).digest()  # stable across processes, unlike hash()
    return int.from_bytes(digest[:8], "big") < EVAL_FRACTION * 2**64


@lru_cache(maxsize=4)
def _held_out(root: Path, seed: int) -> tuple[frozenset[str], frozenset[str]]:
    """(held-out lemmas, synsets holding one): a seeded hash picks EVAL_FRACTION of all lemmas."""
    synsets = _wordnet(root)[0]
    held = frozenset(x for x in {x.lower() for s in synsets for x in s.lemmas} if _is_held_out(x, seed))
    return held, frozenset(_sid(s) for s in synsets if any(lemma.lower() in held for lemma in s.lemmas))


@lru_cache(maxsize=8)  # pools are read-only once built; tasks sharing a seed share them
def split_pools(root: Path, seed: int, pos: str) -> dict[str, Pool]:
    """{'train', 'validation'} pools: held-out lemmas (and every synset holding one) never reach 'train'."""
    synsets, usages, counts, irregular = _wordnet(root)
    held, held_synsets = _held_out(root, seed)
    synsets = [s for s in synsets if s.pos in pos]
    usages = [u for u in usages if u.synset.pos in pos]
    train = (
        [u for u in usages if _sid(u.synset) not in held_synsets],
        [s for s in synsets if _sid(s) not in held_synsets],
    )
    validation = ([u for u in usages if u.lemma in held], [s for s in synsets if _sid(s) in held_synsets])
    return {"train": Pool(*train, counts, irregular), "validation": Pool(*validation, counts, irregular)}


def _meta(anchor: Usage, relation: str, *synsets: Synset) -> dict:
    """Private columns (dropped before the dataset is made): what tests check disjointness and balance with."""
    return {
        "_lemma": anchor.lemma,
        "_relation": relation,
        "_synsets": sorted({_sid(anchor.synset), *(_sid(s) for s in synsets)}),
    }


# Row drawers: (pool, rng, relation) -> row or None (a failed draw; the caller draws again).


def _pos_in_context(pool: Pool, rng: random.Random, relation: str) -> dict | None:
    anchor = rng.choice(pool.noun_verb[relation])
    start, end = anchor.span
    text = f"{anchor.sentence[:start]}[{anchor.sentence[start:end]}]{anchor.sentence[end:]}"
    return {"text_a": text, "text_b": "", **_meta(anchor, relation)}


def _acceptability(pool: Pool, rng: random.Random, relation: str) -> dict | None:
    anchor = rng.choice(pool.usages)
    words = anchor.sentence.split(" ")
    # Never the first word (its capital would give the swap away) nor one carrying punctuation. Sentences with
    # nothing to swap are left out of both classes, or sentence length alone would tell the label.
    swappable = [
        i
        for i in range(1, len(words) - 1)
        if words[i].isalpha() and words[i + 1].isalpha() and words[i].lower() != words[i + 1].lower()
    ]
    if not swappable:
        return None
    if relation == "unacceptable":
        i = rng.choice(swappable)
        words[i], words[i + 1] = words[i + 1], words[i]
    return {"text_a": " ".join(words), "text_b": "", **_meta(anchor, relation)}


def _gloss_usage(pool: Pool, rng: random.Random, relation: str, question: bool = False) -> dict | None:
    anchor = rng.choice(pool.polysemous)
    if relation == "entailment":
        defined = anchor.synset
    elif relation == "neutral":
        defined = pool.synsets[
            rng.choice([s for s in pool.used_senses[anchor.word] if s != _sid(anchor.synset)])
        ]
    else:  # a definition drawn like an entailed one, of a word the sentence does not contain
        defined = rng.choice(pool.polysemous).synset
        if pool.mentions(anchor.sentence, defined):
            return None
    text_a = f"Which word in the sentence means: {defined.gloss}?" if question else defined.gloss
    return {"text_a": text_a, "text_b": anchor.sentence, **_meta(anchor, relation, defined)}


def _usage_pair(pool: Pool, rng: random.Random, relation: str) -> dict | None:
    anchor = rng.choice(pool.synonymous if relation == "synonym" else pool.paired)
    if relation == "same_sense":
        partner = rng.choice(pool.by_sense[(anchor.word, _sid(anchor.synset))])
    elif relation == "synonym":
        partner = rng.choice([u for u in pool.by_synset[_sid(anchor.synset)] if u.lemma != anchor.lemma])
    elif relation == "other_sense":
        other = rng.choice([s for s in pool.used_senses[anchor.word] if s != _sid(anchor.synset)])
        partner = rng.choice(pool.by_sense[(anchor.word, other)])
    else:  # unrelated: neither sentence uses the other's word
        partner = rng.choice(pool.usages)
        if pool.mentions(anchor.sentence, partner.synset) or pool.mentions(partner.sentence, anchor.synset):
            return None
    if partner.sentence == anchor.sentence:
        return None
    pair = [anchor.sentence, partner.sentence]
    rng.shuffle(pair)
    return {"text_a": pair[0], "text_b": pair[1], **_meta(anchor, relation, partner.synset)}


def _squad(pool: Pool, rng: random.Random, relation: str) -> dict | None:
    anchor = rng.choice(pool.usages)
    answerable = relation == "answerable"
    others = pool.distractors(rng, SQUAD_SENTENCES - answerable, avoid=anchor.synset)
    if others is None:
        return None
    sentences = others + [anchor] * answerable
    rng.shuffle(sentences)
    context = " ".join(u.sentence for u in sentences)
    answers: dict[str, list] = {"text": [], "answer_start": []}
    if answerable:
        before = sentences[: sentences.index(anchor)]
        start = sum(len(u.sentence) + 1 for u in before) + anchor.span[0]  # +1: the joining space
        text = context[start : start + anchor.span[1] - anchor.span[0]]
        answers = {"text": [text], "answer_start": [start]}
    return {
        "context": context,
        "question": f"Which word means: {anchor.synset.gloss}?",
        "answers": answers,
        **_meta(anchor, relation, *(u.synset for u in others)),
    }


def _race(pool: Pool, rng: random.Random, relation: str) -> dict | None:
    anchor = rng.choice(pool.by_level[relation])
    senses = [s for s in pool.senses[anchor.word] if _sid(s) != _sid(anchor.synset)]
    wrong = rng.sample(senses, min(3, len(senses)))
    for _ in range(MAX_TRIES):  # too few senses in this split: other words' definitions fill in
        if len(wrong) == 3:
            break
        other = rng.choice(pool.by_pos[anchor.synset.pos])
        if anchor.lemma not in (lemma.lower() for lemma in other.lemmas) and other not in wrong:
            wrong.append(other)
    options = [anchor.synset.gloss] + [s.gloss for s in wrong]
    others = pool.distractors(rng, RACE_SENTENCES - 1, avoid=anchor.synset)
    if len(set(options)) != 4 or others is None:
        return None
    order = list(range(4))
    rng.shuffle(order)
    sentences = others + [anchor]
    rng.shuffle(sentences)
    word = anchor.sentence[anchor.span[0] : anchor.span[1]]
    return {
        "article": " ".join(u.sentence for u in sentences),
        "question": f'What does "{word}" mean in this passage?',
        "options": [options[i] for i in order],
        "label": order.index(0),
        "level": relation,
        **_meta(anchor, relation, *wrong, *(u.synset for u in others)),
    }


@dataclass(frozen=True)
class Proxy:
    """How one real task's proxy is drawn: which pool, which relations (balanced), how relations become labels."""

    kind: str
    draw: Callable[[Pool, random.Random, str], dict | None]
    relations: tuple[str, ...]  # drawn equally often; repeat one to weight it
    labels: Mapping[str, int | float] | None  # relation -> label; None: the drawer sets its own columns
    description: str
    pos: str = "nvar"  # parts of speech in train (and in every evaluation split but MNLI's mismatched one)


# fmt: off
NLI3 = {"entailment": 0, "neutral": 1, "contradiction": 2}
NLI2 = ("entailment", "entailment", "neutral", "contradiction")  # not_entailment: half neutral, half contradiction
RTE_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 1}
WNLI_LABELS = {"entailment": 1, "neutral": 0, "contradiction": 0}  # WNLI's 1 is entailment
WIC = {"same_sense": 1, "other_sense": 0}
STS = {"same_sense": 5.0, "synonym": 4.0, "other_sense": 2.0, "unrelated": 0.0}
WIC_LINE = "proxy: do two WordNet examples use their shared word in the same sense (WiC)"
NLI_LINE = "proxy: does the sentence use a word in the sense defined (WordNet, 2-way)"

PROXIES: dict[str, Proxy] = {
    "sst2": Proxy("classification", _pos_in_context, ("n", "v"), {"n": 0, "v": 1},
                  "proxy: is the [bracketed] word a verb or a noun here (WordNet examples)", pos="nv"),
    "cola": Proxy("classification", _acceptability, ("acceptable", "unacceptable"),
                  {"acceptable": 1, "unacceptable": 0}, "proxy: WordNet example vs. two adjacent words swapped"),
    "mnli": Proxy("classification", _gloss_usage, tuple(NLI3), NLI3,
                  "proxy: does the sentence use a word in the sense defined (3-way; mismatched: adj/adv)", pos="nv"),
    "rte": Proxy("classification", _gloss_usage, NLI2, RTE_LABELS, NLI_LINE),
    "qnli": Proxy("classification", partial(_gloss_usage, question=True), NLI2, RTE_LABELS,
                  "proxy: does the sentence hold a word meaning the definition asked for (WordNet)"),
    "wnli": Proxy("classification", _gloss_usage, NLI2, WNLI_LABELS, NLI_LINE),
    "mrpc": Proxy("classification", _usage_pair, tuple(WIC), WIC, WIC_LINE),
    "qqp": Proxy("classification", _usage_pair, tuple(WIC), WIC, WIC_LINE),
    "stsb": Proxy("regression", _usage_pair, tuple(STS), STS,
                  "proxy: similarity of two WordNet examples, 0 unrelated .. 5 same word and sense"),
    "squad_v1": Proxy("span", _squad, ("answerable",), None, "proxy: find the word a WordNet definition defines"),
    "squad_v2": Proxy("span", _squad, ("answerable", "answerable", "unanswerable"), None,
                      "proxy: find the word a WordNet definition defines; a third have none"),
    "race": Proxy("multiple_choice", _race, ("middle", "high"), None,
                  "proxy: pick a word's WordNet sense in context among 4 definitions"),
    "race_middle": Proxy("multiple_choice", _race, ("middle",), None,
                         "proxy: pick a word's WordNet sense in context (words with 2-3 senses)"),
    "race_high": Proxy("multiple_choice", _race, ("high",), None,
                       "proxy: pick a word's WordNet sense in context (words with 4+ senses)"),
}
FEATURES = {"classification": glue.features, "regression": glue.features, "span": squad.features,
            "multiple_choice": race.features}  # the real loaders' schemas, so a proxy can never drift from them
# fmt: on
PROXY_DESCRIPTIONS: dict[str, str] = {name: proxy.description for name, proxy in PROXIES.items()}


def _draw_balanced(proxy: Proxy, pool: Pool, n: int, rng: random.Random, where: str) -> list[dict]:
    """n distinct rows, each relation equally often (in a shuffled order)."""
    plan = [proxy.relations[i % len(proxy.relations)] for i in range(n)]
    rng.shuffle(plan)
    rows, seen = [], set()
    for relation in plan:
        for _ in range(MAX_TRIES):
            row = proxy.draw(pool, rng, relation)
            if row is None:
                continue
            key = json.dumps({k: v for k, v in row.items() if not k.startswith("_")}, sort_keys=True)
            if key not in seen:
                break
        else:
            raise ProxyTaskError(
                f"proxy {where}: WordNet yields too few distinct rows for {n} (stopped at {len(rows)}); "
                f"lower task.proxy.train_size / eval_size"
            )
        seen.add(key)
        if proxy.labels is not None:
            row["label"] = proxy.labels[relation]
        rows.append(row)
    return rows


def build_proxy(name: str, train_size: int, eval_size: int, seed: int, root: Path) -> dict[str, list[dict]]:
    """The rows of each split, with private `_lemma`, `_relation` and `_synsets` columns (no caching)."""
    proxy = PROXIES[name]
    BUILD_COUNT[name] += 1
    pools = split_pools(root, seed, proxy.pos)
    eval_pools = {"validation": pools["validation"]}
    if name == "mnli":
        eval_pools = {
            "validation_matched": pools["validation"],
            "validation_mismatched": split_pools(root, seed, "ar")["validation"],
        }
    splits = {"train": (pools["train"], train_size)} | {
        split: (pool, eval_size) for split, pool in eval_pools.items()
    }
    out = {}
    for split, (pool, size) in splits.items():
        rng = random.Random(f"{seed}:{name}:{split}")  # str seeds hash stably across processes
        rows = _draw_balanced(proxy, pool, size, rng, f"{name}/{split}")
        for i, row in enumerate(rows):
            if proxy.kind in ("classification", "regression"):
                row["idx"] = i
            else:  # ids and titles unique per row: each proxy passage is its own "article"
                row["id"] = f"proxy-{name}-{split}-{i:05d}-0"
                if proxy.kind == "span":
                    row["title"] = f"proxy-{name}-{split}-{i:05d}"
        out[split] = rows
    return out


def proxy_params(task_cfg: Mapping, error: type[TaskConfigError] = ProxyTaskError) -> dict:
    """task.proxy's sizes and seed, DEFAULTS filled in; `error` names the task family (proxy task or probe)."""
    given = dict(task_cfg.get("proxy") or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise error(f"task.proxy: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(DEFAULTS)}")
    params = DEFAULTS | given
    for key, value in params.items():
        least = 0 if key == "seed" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise error(f"task.proxy.{key}={value!r}: expected an integer >= {least}")
    return params


def _root(wordnet_root: str | Path | None) -> Path:
    root = Path(wordnet_root) if wordnet_root is not None else wordnet.default_root()
    if not (root / "data.noun").is_file():
        raise ProxyTaskError(
            f"{root}: not a WordNet dict directory (no data.noun); proxy tasks are built from WordNet"
        )
    return root.resolve()


def cache_dir(name: str, params: Mapping, root: Path) -> Path:
    """cache_root()/proxy/<name>-<key>: the key hashes the WordNet files (names, sizes) and the task parameters."""
    files = sorted((path.name, path.stat().st_size) for path in root.iterdir() if path.is_file())
    blob = json.dumps(
        {"files": files, "task": name, "params": dict(params), "version": BUILDER_VERSION}, sort_keys=True
    )
    return paths.cache_root() / "proxy" / f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def load_proxy(
    task_cfg: Mapping, data_dir: str | Path | None = None, wordnet_root: str | Path | None = None
) -> datasets.DatasetDict:
    """The proxy for task_cfg.name, built once and then loaded from the cache.

    task_cfg: `name`, `kind` (must match the real task's), optional `proxy: {train_size, eval_size, seed}`.
    data_dir: unused (it locates real task files; proxies need none), accepted so load_task can pass it on.
    wordnet_root: a WordNet dict directory; None means $PLMBENCH_WORDNET_DIR or the Debian wordnet-base package.
    """
    name = task_cfg.get("name")
    if name not in PROXIES:
        raise ProxyTaskError(f"task.name={name!r} has no proxy; allowed: {', '.join(PROXIES)}")
    kind = PROXIES[name].kind
    if task_cfg.get("kind") != kind:
        raise ProxyTaskError(
            f"task.kind={task_cfg.get('kind')!r} for task.name={name!r}: its proxy is {kind!r}"
        )
    params, root = proxy_params(task_cfg), _root(wordnet_root)
    target = cache_dir(name, params, root)
    if not (target / "dataset_dict.json").is_file():
        _save(target, build_proxy(name, root=root, **params), FEATURES[kind](task_cfg))
    return datasets.load_from_disk(str(target))


def _save(target: Path, splits: dict[str, list[dict]], features: datasets.Features) -> None:
    """Write the rows (private columns dropped) where load_from_disk finds them, atomically."""
    public = {
        split: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
        for split, rows in splits.items()
    }
    built = datasets.DatasetDict(
        {split: datasets.Dataset.from_list(rows, features=features) for split, rows in public.items()}
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    built.save_to_disk(str(scratch))
    try:
        os.replace(scratch, target)  # a reader sees a whole dataset or none
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(scratch, ignore_errors=True)
