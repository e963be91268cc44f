"""The WordNet supersense probe: labels equal WordNet's index and lexicographer files, lemma-disjoint splits, every
row brackets its noun, and load_task builds it offline (any task.source) and then reads it from the cache."""

import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plmbench.data.corpora.embedded import EmbeddedCorpus
from plmbench.data.tasks import load_task
from plmbench.data.tasks.supersense import (
    NOUN_LEXFILES,
    SOURCES,
    ProbeTaskError,
    build_rows,
    noun_lexfiles,
    target_forms,
)
from plmbench.data.wordnet import default_root, load_sense_index

REPO = Path(__file__).resolve().parents[1]
BRACKETED = re.compile(r"\[([^\]]+)\]")


@pytest.fixture(scope="module")
def root() -> Path:
    return default_root().resolve()


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return [sentence for document in EmbeddedCorpus(SOURCES).documents() for sentence in document]


def test_targets_are_one_sense_nouns_labelled_by_their_lexicographer_file(root):
    forms, senses, lexfiles = target_forms(root), load_sense_index(root), noun_lexfiles(root)
    assert len({lemma for lemma, _ in forms.values()}) > 20_000
    for form, (lemma, label) in forms.items():  # against index.<pos>, a file target_forms never reads
        key = lemma.replace(" ", "_")
        assert len(senses[(key, "n")]) == 1, form
        assert form != lemma or all((key, pos) not in senses for pos in "var"), form  # 'animal' is also an adjective
        assert lexfiles[senses[(key, "n")][0]] - 3 == label, form  # lexnames(5WN): noun files are 3..28
    assert {w: NOUN_LEXFILES[forms[w][1]] for w in ("camel", "camels", "cubit", "sword")} == {
        "camel": "noun.animal", "camels": "noun.animal", "cubit": "noun.quantity", "sword": "noun.artifact"}
    # also a verb form (say+ing, sit's past), function words, proper nouns, acronyms: never targets
    assert not {"animal", "saying", "sat", "are", "was", "while", "Lydia", "lydia", "WA", "wa"} & set(forms)
    assert forms["animals"] == ("animal", NOUN_LEXFILES.index("noun.Tops"))  # a unique beginner, as in WordNet


def test_splits_share_no_lemma_and_every_row_brackets_its_noun(root, sentences):
    splits = build_rows(sentences, root, train_size=300, eval_size=100, seed=0)
    assert {split: len(rows) for split, rows in splits.items()} == {"train": 300, "validation": 100}
    lemmas = {split: {row["_lemma"] for row in rows} for split, rows in splits.items()}
    assert not lemmas["train"] & lemmas["validation"]
    forms = target_forms(root)
    for row in splits["train"] + splits["validation"]:
        (word,) = BRACKETED.findall(row["text_a"])
        assert forms[word] == (row["_lemma"], row["label"]) and row["text_b"] == ""
    other = build_rows(sentences, root, train_size=300, eval_size=100, seed=1)
    assert {row["_lemma"] for row in other["validation"]} != lemmas["validation"]  # the seed picks the lemmas


def test_load_task_builds_the_probe_offline_whatever_the_source_then_reads_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))
    task = OmegaConf.to_container(OmegaConf.load(REPO / "conf/task/wordnet/supersense.yaml"))
    task |= {"source": "proxy", "proxy": {"train_size": 200, "eval_size": 80, "seed": 0}}  # a smoke sweep's source
    first = load_task(task)
    assert first["train"].column_names == ["idx", "text_a", "text_b", "label"] and len(first["validation"]) == 80
    second = load_task(task | {"source": "hub"})
    assert second["validation"].to_list() == first["validation"].to_list()
    assert all(Path(f["filename"]).is_relative_to(tmp_path / "cache") for f in second["train"].cache_files)
    with pytest.raises(ProbeTaskError, match="num_labels=26"):
        load_task(task | {"num_labels": 5})
