"""The WordNet reader against facts WordNet 3.0 publishes about itself (wnstats(7WN), its index files)."""

import re

import pytest

from plmbench.data.wordnet import (
    POS_FILES,
    WordNetFormatError,
    find_lemma,
    lemma_forms,
    load_exceptions,
    load_wordnet,
    parse_data_line,
    sense_counts,
    split_gloss,
    usages,
)


@pytest.fixture(scope="session")
def synsets(wordnet_root):
    return load_wordnet(wordnet_root)


def test_counts_match_wordnet_3_0_statistics(synsets):
    # wnstats(7WN) for WordNet 3.0: synsets per part of speech (adjectives include satellites).
    counts = {pos: sum(s.pos == pos for s in synsets) for pos in POS_FILES}
    assert counts == {"n": 82115, "v": 13767, "a": 18156, "r": 3621}
    assert len(synsets) == 117659


def test_dog_first_noun_sense(synsets):
    dog = next(s for s in synsets if s.pos == "n" and "dog" in s.lemmas)
    assert dog.offset == 2084071
    assert dog.lemmas == ("dog", "domestic dog", "Canis familiaris")  # underscores -> spaces, file order
    assert "domesticated" in dog.gloss and '"' not in dog.gloss
    assert dog.examples == ("the dog barked all night",)


def test_satellites_are_adjectives_and_markers_are_stripped():
    line = (
        "00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance; "
        '"abounding confidence"; "food galore"  \n'
    )
    synset = parse_data_line(line)
    assert synset.pos == "a"
    assert synset.lemmas == ("abounding", "galore")
    assert synset.gloss == "existing in abundance"
    assert synset.examples == ("abounding confidence", "food galore")


def test_no_lemma_keeps_a_syntactic_marker_and_no_example_a_quote(synsets):
    assert not [lemma for s in synsets for lemma in s.lemmas if re.search(r"\((a|p|ip)\)$", lemma)]
    assert not [e for s in synsets for e in s.examples if '"' in e or not e.strip()]
    assert sum(len(s.examples) for s in synsets) > 47000  # WordNet 3.0 has ~48k example sentences


@pytest.mark.parametrize(
    "gloss, definition, examples",
    [
        ('a hint; "drop a hint"; "a broad hint"', "a hint", ("drop a hint", "a broad hint")),
        ('of the theatre; "all the world\'s a stage" - Shakespeare', "of the theatre", ("all the world's a stage",)),
        ('progress (especially in the phrase "make strides"); "big strides"', 'progress (especially in the phrase "make strides")', ("big strides",)),
        ('fold into pleats: "Pleat the cloth"', "fold into pleats", ("Pleat the cloth",)),
        ('in a row; "the Vietnamese countryside"; the Vietnamese tones"', "in a row", ("the Vietnamese countryside", "the Vietnamese tones")),
        ("a separate and self-contained entity", "a separate and self-contained entity", ()),
    ],
)  # fmt: skip
def test_split_gloss_handles_wordnet_quirks(gloss, definition, examples):
    assert split_gloss(gloss) == (definition, examples)


def test_sense_counts_equal_wordnet_index_files(synsets, wordnet_root):
    counts = sense_counts(synsets)
    index = {}
    for name in POS_FILES.values():
        for line in (wordnet_root / f"index.{name}").read_text(encoding="utf-8").splitlines():
            if not line.startswith("  "):
                fields = line.split()
                index[(fields[0].replace("_", " "), fields[1])] = int(fields[2])  # synset_cnt
    assert counts == index
    assert counts[("dog", "n")] == 7 and counts[("run", "v")] == 41 and counts[("good", "a")] == 21


def test_find_lemma_regular_irregular_and_multiword(wordnet_root):
    exceptions = load_exceptions(wordnet_root)
    assert find_lemma("Two dogs barked", "dog", "n") == (4, 8)
    assert find_lemma("the hotdog stand", "dog", "n") is None  # whole words only
    assert find_lemma("she stopped and stared", "stop", "v") == (4, 11)  # consonant doubling
    assert find_lemma("he carried it", "carry", "v") == (3, 10)
    assert find_lemma("He ran home", "run", "v", exceptions) == (3, 6)  # verb.exc
    assert find_lemma("He ran home", "run", "v") is None
    assert find_lemma("she took a breath", "take a breath", "v", exceptions) == (4, 17)  # inflected head word
    assert find_lemma("Several mice", "mouse", "n", exceptions) == (8, 12)
    assert "happier" in lemma_forms("happy", "a")


def test_usages_locate_the_lemma_in_its_example(synsets, wordnet_root):
    exceptions = load_exceptions(wordnet_root)
    found = usages(synsets[::40], exceptions)  # every part of speech, ~3k synsets
    assert len(found) > 500 and {u.synset.pos for u in found} == set(POS_FILES)
    for usage in found:
        surface = usage.example[usage.span[0] : usage.span[1]].lower()
        assert surface in lemma_forms(usage.lemma, usage.synset.pos, exceptions)
        assert not usage.sentence[0].islower() and usage.sentence[-1] in ".!?"
        assert (
            usage.sentence[usage.span[0] + 1 : usage.span[1]]
            == usage.example[usage.span[0] + 1 : usage.span[1]]
        )


def test_a_malformed_file_is_named_with_its_line(tmp_path):
    for name in POS_FILES.values():
        (tmp_path / f"data.{name}").write_text("  licence header\n", encoding="utf-8")
    (tmp_path / "data.verb").write_text("  licence header\n00001740 29 x 01 breathe 0 000 | draw air\n")
    with pytest.raises(WordNetFormatError, match=r"data\.verb:2: not a wndb\(5WN\) synset line") as error:
        load_wordnet(tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "data.verb").unlink()
    with pytest.raises(WordNetFormatError, match=r"data\.verb: missing"):
        load_wordnet(tmp_path)
