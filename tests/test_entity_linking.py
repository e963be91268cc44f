"""The WordNet entity linker: multi-word and inflected mentions, first sense against Lesk, the confidence cut-off,
ERNIE's first-sub-word alignment with a real trained tokenizer, and the throughput/coverage report."""


import os
import subprocess
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from plmbench.data.entity_linking import NO_ENTITY, EntityLinker, Mention, align_to_subwords, linking_report


@pytest.fixture(scope="session")
def first(wordnet_root):
    return EntityLinker.from_wordnet(wordnet_root, method="first")


@pytest.fixture(scope="session")
def lesk(first):
    return EntityLinker(first.graph, first.exceptions, method="lesk")


def lemmas(linker, mention: Mention) -> tuple[str, ...]:
    return linker.graph.synsets[mention.entity].lemmas


def test_multiword_and_inflected_mentions(first):
    text = "Two dogs barked while we ate hot dogs; she took a breath and stopped."
    found = {m.surface: m for m in first.link(text)}
    assert found["dogs"].synset == "n.02084071" and text[found["dogs"].start : found["dogs"].end] == "dogs"
    assert "hot dogs" in found and "hot dog" in lemmas(first, found["hot dogs"])  # longest match, head inflected
    assert "take a breath" in lemmas(first, found["took a breath"])  # verb.exc took -> take, on the first word
    assert "stop" in lemmas(first, found["stopped"])  # consonant doubling
    assert "eat" in lemmas(first, found["ate"])
    for stopword in ("we", "she", "a", "and", "while"):
        assert stopword not in found  # 'a' and 'she' are WordNet nouns, but function words here
    assert all(0 < m.score <= 1 for m in found.values())
    assert [m.start for m in first.link(text)] == sorted(m.start for m in first.link(text))


LINK_IN_FRESH_PROCESS = """
import sys
from plmbench.data.entity_linking import EntityLinker
linker = EntityLinker.from_wordnet(sys.argv[1], method="first")
print([mention.entity for mention in linker.link("The woods were dark.")])
"""


def test_the_same_links_whatever_the_process_hash_seed(wordnet_root):
    # 'woods' is a lemma (the forest) and an inflection of 'wood' (the material), senses tied on every sort key:
    # which one won followed the iteration order of a set of strings, which Python seeds per process.
    links = {subprocess.run([sys.executable, "-c", LINK_IN_FRESH_PROCESS, str(wordnet_root)], check=True, text=True,
                            capture_output=True, env=os.environ | {"PYTHONHASHSEED": str(seed)}).stdout
             for seed in (1, 2, 3)}
    assert len(links) == 1


def test_punctuation_breaks_a_multiword_match(first):
    surfaces = [m.surface for m in first.link("The hot, dog-tired runner")]
    assert "hot" in surfaces and "hot, dog" not in surfaces


def test_first_sense_and_lesk_differ_where_the_context_says_so(first, lesk):
    text = "We ate hot dogs, a frankfurter served on a bun with mustard."
    by_first = next(m for m in first.link(text) if m.surface == "hot dogs")
    by_lesk = next(m for m in lesk.link(text) if m.surface == "hot dogs")
    assert "dangerous stunts" in first.graph.synsets[by_first.entity].gloss  # hot dog sense 1: a show-off
    assert "frankfurter served hot on a bun" in first.graph.synsets[by_lesk.entity].gloss  # bun, frankfurter overlap
    bank = "She went to the bank to deposit money and cash a check."
    assert "sloping land" in first.graph.synsets[next(m for m in first.link(bank) if m.surface == "bank").entity].gloss
    assert "financial" in lesk.graph.synsets[next(m for m in lesk.link(bank) if m.surface == "bank").entity].gloss


def test_confidence_cut_off_drops_weak_mentions(first):
    text = "The dog ran across the game field at night."
    scores = {m.surface: m.score for m in first.link(text)}
    assert scores["dog"] > 0.7 > scores["field"]  # dog's sense 1 has most of its SemCor tags; field's are spread
    strict = EntityLinker(first.graph, first.exceptions, min_score=0.7)
    assert {m.surface for m in strict.link(text)} == {s for s, score in scores.items() if score >= 0.7}
    with pytest.raises(ValueError, match="method 'tagme' is not one of first, lesk"):
        EntityLinker(first.graph, first.exceptions, method="tagme")


def test_align_puts_each_entity_on_the_first_subword(first):
    text = "hot dogs and mustard"
    mentions = first.link(text)
    hot, mustard = mentions[0], mentions[-1]
    assert (hot.surface, mustard.surface) == ("hot dogs", "mustard")
    # Hand-written HF-style offsets: [CLS] hot dog ##s and must ##ard [SEP]
    offsets = [(0, 0), (0, 3), (4, 7), (7, 8), (9, 12), (13, 17), (17, 20), (0, 0)]
    assert align_to_subwords(mentions, offsets) == [NO_ENTITY, hot.entity, NO_ENTITY, NO_ENTITY, NO_ENTITY,
                                                    mustard.entity, NO_ENTITY, NO_ENTITY]


def test_align_with_a_trained_wordpiece_tokenizer(first):
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    corpus = ["the dog ate a hot meal", "mustard on a bun", "the cat sat"] * 20
    tokenizer.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]", "[CLS]",
                                                                                                 "[SEP]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    text = "The mustard dogs ate."
    encoding = tokenizer.encode(text)
    mentions = first.link(text)
    entities = align_to_subwords(mentions, encoding.offsets)
    assert len(entities) == len(encoding.tokens) and entities[0] == entities[-1] == NO_ENTITY
    for mention in mentions:
        positions = [i for i, e in enumerate(entities) if e == mention.entity]
        covering = [i for i, (s, e) in enumerate(encoding.offsets) if s < e and s < mention.end and e > mention.start]
        assert positions == [covering[0]]  # the first sub-word only
    assert len(encoding.tokens) > len(text.split()) + 2  # the words really were split into sub-words
    assert sum(e != NO_ENTITY for e in entities) == len(mentions)


def test_report_counts_words_and_throughput(first):
    texts = ["Two dogs barked.", "It is what it is.", "Hot dogs and mustard."]
    report = linking_report(texts, first)
    assert (report.sentences, report.words) == (3, 12)
    assert report.linked_words == 3 + 0 + 3  # two, dogs, barked | function words only | hot dogs, mustard
    assert report.mentions == 3 + 0 + 2
    assert report.coverage == pytest.approx(6 / 12) and report.sentences_per_second > 0
    assert "3 sentences, 12 words" in str(report)
