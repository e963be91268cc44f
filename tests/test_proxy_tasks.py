"""WordNet proxy tasks: the real tasks' schemas, balanced labels, lemma-disjoint splits, no one-sided shortcut."""

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plmbench.data.tasks import load_task
from plmbench.data.tasks import proxy as proxy_module
from plmbench.data.tasks.proxy import (
    BUILD_COUNT,
    PROXIES,
    PROXY_DESCRIPTIONS,
    ProxyTaskError,
    build_proxy,
    load_proxy,
)
from plmbench.data.wordnet import lemma_forms, load_exceptions, load_wordnet

REPO = Path(__file__).resolve().parents[1]
SMALL = {"train_size": 48, "eval_size": 24, "seed": 0}
EVAL_SPLITS = {"mnli": ["validation_matched", "validation_mismatched"]}



@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def by_gloss(wordnet_root):
    """definition -> synsets that have it, to check rows against WordNet itself."""
    found = {}
    for synset in load_wordnet(wordnet_root):
        found.setdefault(synset.gloss, []).append(synset)
    return found


def cfg(name: str, **proxy) -> dict:
    return {"name": name, "kind": PROXIES[name].kind, "proxy": SMALL | proxy}


@pytest.mark.parametrize("name", sorted(PROXIES))
def test_schema_splits_and_balanced_labels(name, wordnet_root):
    data = load_proxy(cfg(name), wordnet_root=wordnet_root)
    kind = PROXIES[name].kind
    assert list(data) == ["train", *EVAL_SPLITS.get(name, ["validation"])]
    assert data["train"].features == proxy_module.FEATURES[kind](cfg(name))  # the real loader's schema
    assert data["train"].num_rows == 48 and all(data[s].num_rows == 24 for s in list(data)[1:])
    assert name in PROXY_DESCRIPTIONS and "proxy" in PROXY_DESCRIPTIONS[name]
    for split in data.values():
        if kind == "span":
            assert len(set(split["id"])) == split.num_rows
            continue
        counts = Counter(split["label"])
        if kind == "multiple_choice":
            assert set(counts) <= {0, 1, 2, 3} and all(len(options) == 4 for options in split["options"])
            continue
        labels = set(PROXIES[name].labels.values())
        assert set(counts) == labels
        if kind == "classification":
            single_sentence = name in ("sst2", "cola")
            assert all((text == "") == single_sentence for text in split["text_b"])
            relations = Counter(PROXIES[name].relations)  # each relation equally often, mapped to labels
            expected = {label: 0 for label in labels}
            for relation, times in relations.items():
                expected[PROXIES[name].labels[relation]] += (
                    times * split.num_rows // len(PROXIES[name].relations)
                )
            assert dict(counts) == expected


def test_squad_answers_are_the_defined_word_at_its_offset(wordnet_root, by_gloss):
    exceptions = load_exceptions(wordnet_root)
    for name in ("squad_v1", "squad_v2"):
        rows = build_proxy(name, 90, 30, 0, wordnet_root)
        for row in rows["train"] + rows["validation"]:
            gloss = row["question"].removeprefix("Which word means: ").removesuffix("?")
            if not row["answers"]["text"]:
                assert name == "squad_v2" and row["_relation"] == "unanswerable"
                continue
            (text,), (start,) = row["answers"]["text"], row["answers"]["answer_start"]
            assert row["context"][start : start + len(text)] == text
            assert any(text.lower() in lemma_forms(row["_lemma"], s.pos, exceptions) for s in by_gloss[gloss])
        unanswerable = sum(not r["answers"]["text"] for r in rows["train"])
        assert unanswerable == (30 if name == "squad_v2" else 0)  # a third of 90


def test_nli_rows_mean_what_their_labels_say(wordnet_root, by_gloss):
    rows = build_proxy("mnli", 90, 30, 0, wordnet_root)["train"]
    for row in rows:
        defined = by_gloss[row["text_a"]]
        sentence = row["text_b"].lower().rstrip(".")
        uses_sense = any(sentence in (e.lower().rstrip(".") for e in s.examples) for s in defined)
        assert uses_sense == (row["label"] == 0), (
            row
        )  # only entailment pairs a definition with its own example
        assert (row["_lemma"] in {lemma.lower() for s in defined for lemma in s.lemmas}) == (
            row["label"] != 2
        )


def test_splits_share_no_lemma_and_no_synset(wordnet_root):
    for name in ("mnli", "mrpc", "stsb", "squad_v2", "race"):
        rows = build_proxy(name, 300, 100, 3, wordnet_root)
        train, evals = rows.pop("train"), [r for split in rows.values() for r in split]
        assert {r["_lemma"] for r in train}.isdisjoint(r["_lemma"] for r in evals), name
        train_synsets = {s for r in train for s in r["_synsets"]}
        assert train_synsets.isdisjoint(s for r in evals for s in r["_synsets"]), name


def test_mnli_mismatched_holds_adjectives_and_adverbs(wordnet_root):
    rows = build_proxy("mnli", 60, 30, 0, wordnet_root)
    assert {s[0] for r in rows["train"] + rows["validation_matched"] for s in r["_synsets"]} <= {"n", "v"}
    assert {s[0] for r in rows["validation_mismatched"] for s in r["_synsets"]} <= {"a", "r"}


def test_race_levels_and_options(wordnet_root, by_gloss):
    for name, levels in (("race", {"middle", "high"}), ("race_middle", {"middle"}), ("race_high", {"high"})):
        rows = build_proxy(name, 200, 40, 0, wordnet_root)
        for row in rows["train"]:
            assert row["level"] in levels and len(set(row["options"])) == 4
            word = row["question"].split('"')[1]
            assert word in row["article"]
            right = {lemma.lower() for s in by_gloss[row["options"][row["label"]]] for lemma in s.lemmas}
            assert row["_lemma"] in right
        assert {r["level"] for r in rows["train"]} == levels
        positions = Counter(r["label"] for r in rows["train"])
        assert all(25 <= positions[i] <= 75 for i in range(4)), positions  # uniform: 50 each


def test_one_text_alone_does_not_tell_the_label_but_context_does(wordnet_root):
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.naive_bayes import MultinomialNB

    def bag_of_words_accuracy(name: str, column: str) -> float:
        """Validation accuracy of naive Bayes on uni- and bigrams of one column (a one-sided baseline)."""
        rows = build_proxy(name, 1000, 400, 0, wordnet_root)
        train, valid = rows["train"], rows[next(s for s in rows if s != "train")]
        words = CountVectorizer(ngram_range=(1, 2)).fit([r[column] for r in train])
        model = MultinomialNB().fit(words.transform([r[column] for r in train]), [r["label"] for r in train])
        return model.score(words.transform([r[column] for r in valid]), [r["label"] for r in valid])

    assert bag_of_words_accuracy("mnli", "text_b") < 0.42  # chance is 1/3: the sentence alone is no clue
    assert bag_of_words_accuracy("mnli", "text_a") < 0.42  # nor is the definition alone
    assert bag_of_words_accuracy("mrpc", "text_b") < 0.58  # chance is 1/2
    assert bag_of_words_accuracy("sst2", "text_a") > 0.62  # the words around [x] do show its part of speech


def test_same_seed_same_rows_other_seed_other_rows(wordnet_root):
    first, again = build_proxy("qnli", 40, 20, 0, wordnet_root), build_proxy("qnli", 40, 20, 0, wordnet_root)
    assert first == again
    assert build_proxy("qnli", 40, 20, 3, wordnet_root)["train"] != first["train"]


@pytest.mark.slow
def test_rows_do_not_depend_on_the_process(wordnet_root):
    # Python salts str hashes per process: a set iterated while drawing would change the rows between runs.
    def digest(rows) -> str:
        return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()

    script = (
        "import hashlib, json, sys; from pathlib import Path; from plmbench.data.tasks.proxy import build_proxy; "
        "rows = [build_proxy(n, 30, 15, 0, Path(sys.argv[1])) for n in ('stsb', 'squad_v2', 'race')]; "
        "print(hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest())"
    )
    salt = str(int(os.environ.get("PYTHONHASHSEED", "0") or 0) + 1)
    other = subprocess.run(
        [sys.executable, "-c", script, str(wordnet_root)],
        env=os.environ | {"PYTHONHASHSEED": salt}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    here = [build_proxy(name, 30, 15, 0, wordnet_root) for name in ("stsb", "squad_v2", "race")]
    assert other.stdout.strip() == digest(here)


def test_second_load_reads_the_cache(wordnet_root, tmp_path):
    before = BUILD_COUNT["cola"]
    first = load_proxy(cfg("cola"), wordnet_root=wordnet_root)
    second = load_proxy(cfg("cola"), wordnet_root=wordnet_root)
    assert BUILD_COUNT["cola"] == before + 1
    assert second["validation"].to_list() == first["validation"].to_list()
    assert all(
        Path(f["filename"]).is_relative_to(tmp_path / "cache" / "proxy") for f in second["train"].cache_files
    )
    load_proxy(cfg("cola", seed=3), wordnet_root=wordnet_root)  # other parameters, other cache entry
    assert BUILD_COUNT["cola"] == before + 2


def test_load_task_with_the_real_config(wordnet_root, monkeypatch):
    monkeypatch.setenv("PLMBENCH_WORDNET_DIR", str(wordnet_root))
    task = OmegaConf.load(REPO / "conf/task/glue/rte.yaml")
    task.source, task.proxy.train_size, task.proxy.eval_size = "proxy", 20, 10
    data = load_task(task, data_dir="/nonexistent")  # data_dir locates real files; a proxy ignores it
    assert data["train"].num_rows == 20 and set(data["validation"]["label"]) == {0, 1}


@pytest.mark.parametrize(
    "config", ["glue/rte", "glue/stsb", "glue/mnli", "glue/mrpc", "squad/v2", "race/all"]
)
def test_proxy_matches_the_real_task_loaded_from_its_files(config, shared_data, wordnet_root, monkeypatch):
    monkeypatch.setenv("PLMBENCH_WORDNET_DIR", str(wordnet_root))
    task = OmegaConf.load(REPO / f"conf/task/{config}.yaml")
    task.source = "local"
    real = load_task(task, data_dir=shared_data)
    task.source, task.proxy.train_size, task.proxy.eval_size = "proxy", 24, 12
    stand_in = load_task(task, data_dir=shared_data)
    assert list(stand_in) == list(real)
    for split in real:
        assert stand_in[split].features == real[split].features
    labels = (
        {label for split in stand_in.values() for label in split["label"]} if task.kind != "span" else set()
    )
    if task.kind == "regression":
        assert 0.0 <= min(labels) and max(labels) <= 5.0  # STS-B's scale
    elif labels:
        assert labels == set(range(task.num_labels))  # every class of the real label space, no other


@pytest.mark.parametrize(
    "task, message",
    [
        ({"name": "imdb", "kind": "classification"}, "task.name='imdb' has no proxy; allowed: sst2"),
        ({"name": "stsb", "kind": "classification"}, "task.kind='classification' for task.name='stsb'"),
        ({"name": "rte", "kind": "classification", "proxy": {"size": 5}}, "unknown key(s) size; allowed: train_size"),
        ({"name": "rte", "kind": "classification", "proxy": {"eval_size": 0}}, "task.proxy.eval_size=0"),
        ({"name": "sst2", "kind": "classification", "proxy": {"train_size": 10**6}}, "too few distinct rows"),
    ],
)  # fmt: skip
def test_bad_config_names_the_key(task, message, wordnet_root):
    with pytest.raises(ProxyTaskError) as error:
        load_proxy(task, wordnet_root=wordnet_root)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_folder_without_wordnet_is_refused(tmp_path):
    with pytest.raises(ProxyTaskError, match="not a WordNet dict directory"):
        load_proxy(cfg("rte"), wordnet_root=tmp_path)
