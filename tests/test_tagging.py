"""Token tagging: CoNLL-2003 files (IOB1 -> IOB2), labels on first word pieces, per-word decoding scored by seqeval,
and a small tagger that learns a hand-made corpus end to end."""

from pathlib import Path

import datasets
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from seqeval.metrics import f1_score
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from plmbench.data.corpora import build_corpus
from plmbench.data.features import TaggingCollator, build_features
from plmbench.data.tagging_decoding import decode_tags, score_tagging
from plmbench.data.tasks import FAMILIES, conll, load_task
from plmbench.data.tasks.errors import DataError
from plmbench.data.tokenizer import SpecialTokens, get_tokenizer
from plmbench.lit.finetune_module import EvalSplit
from plmbench.metrics import load as load_metric
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.tagging_head import TaggingHead

TASK = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/task/conll/ner.yaml"))
LABELS = TASK["labels"]

# Two documents in the original IOB1 layout: "I-" opens an entity unless it touches one of the same type.
CONLL = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O
. . O O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
B.V. NNP I-NP B-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O
"""


def write(tmp_path, text: str, name: str = "eng.testa"):
    path = tmp_path / "conll2003" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ CoNLL files


def test_iob1_becomes_iob2():
    iob1 = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-LOC", "I-ORG", "I-MISC", "O", "I-MISC"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "B-ORG", "B-MISC", "O", "B-MISC"]
    assert conll.iob1_to_iob2(iob1) == iob2
    assert conll.iob1_to_iob2(iob2) == iob2  # IOB2 (the hub's) passes unchanged


def test_conll_file_reads_sentences_documents_and_converts_tags(tmp_path):
    rows = conll.read_local(write(tmp_path, CONLL), TASK, "error")
    assert [r["id"] for r in rows] == ["0", "1", "2"] and [r["document"] for r in rows] == [0, 0, 1]
    assert rows[0]["tokens"] == ["EU", "rejects", "German", "call", "."]
    assert rows[0]["tags"] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert rows[1]["tags"] == ["B-PER", "I-PER", "B-PER"]  # B- in IOB1 already separated two touching persons
    assert rows[2]["tags"] == ["B-LOC", "O"]  # the last sentence needs no blank line after it


def test_malformed_sentence_is_skipped_or_named_by_line(tmp_path, caplog):
    broken = CONLL.replace("call NN I-NP O", "call NN O").replace("BRUSSELS NNP I-NP I-LOC", "BRUSSELS NNP I-NP I-XYZ")
    path = write(tmp_path, broken)
    with pytest.raises(DataError, match=rf"{path}:6: sentence 0: 3 columns, expected 4"):
        conll.read_local(path, TASK, "error")
    rows = conll.read_local(path, TASK, "skip")
    assert [r["id"] for r in rows] == ["1"]  # numbering keeps counting skipped sentences
    assert "skipped 2 malformed row(s)" in caplog.text


def test_conll_as_a_task_family_local_and_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(FAMILIES, "conll", conll)  # the registration the lead adds to plmbench.data.tasks
    write(tmp_path, CONLL * 3)
    ds = load_task({**TASK, "source": "local"}, tmp_path)  # no train file: carved from dev by document
    assert set(ds) == {"train", "validation"} and len(ds["train"]) + len(ds["validation"]) == 9
    assert not set(ds["train"]["document"]) & set(ds["validation"]["document"])

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    hub_features = datasets.Features({"id": datasets.Value("string"), "tokens": datasets.List(datasets.Value("string")),
                                      "ner_tags": datasets.List(datasets.ClassLabel(names=names))})
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_list(
        [{"id": "0", "tokens": ["EU", "rejects", "German"], "ner_tags": [3, 0, 7]}], features=hub_features)})
    row = conll.normalise_hub(raw, TASK)["train"][0]
    assert row == {"id": "0", "document": -1, "tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]}


# ------------------------------------------------------------------------------------------ features


@pytest.fixture(scope="module")
def wordpiece():
    """A WordPiece tokenizer with a hand-written vocabulary, so every piece is known in advance."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "lives", "in", "york", "##shire", ".", "eu",
             "rejects", "german", "call", "peter", "black", "##burn", "brussels"]
    tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer, SpecialTokens(pad=0, unk=1, cls=2, sep=3, mask=4)


def tagging_rows(rows: list[dict]) -> datasets.Dataset:
    return datasets.Dataset.from_list(rows, features=conll.features())


def test_labels_sit_on_first_word_pieces(wordpiece):
    tokenizer, special = wordpiece
    rows = tagging_rows([{"id": "0", "document": 0, "tokens": ["John", "lives", "in", "Yorkshire", "."],
                          "tags": ["B-PER", "O", "O", "B-LOC", "O"]}])
    row = build_features(rows, tokenizer, special, TASK)[0]
    assert tokenizer.decode(row["input_ids"], skip_special_tokens=False).split() == \
        ["[CLS]", "john", "lives", "in", "york", "##shire", ".", "[SEP]"]
    assert row["labels"] == [-100, 1, 0, 0, 5, -100, 0, -100]  # B-PER=1, O=0, B-LOC=5 on first pieces only
    assert row["word_ids"] == [-1, 0, 1, 2, 3, 3, 4, -1]
    short = build_features(rows, tokenizer, special, {**TASK, "max_length": 5})[0]
    assert short["word_ids"] == [-1, 0, 1, 2, -1]
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 0, 0, 0]), 9).float().numpy()
    assert decode_tags(logits, short["word_ids"], 5, LABELS) == ["B-PER", "O", "O", "O", "O"]  # cut words: O


def test_byte_level_bpe_marks_every_word_start(tmp_path, shared_data, monkeypatch):
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))
    corpus = build_corpus({"kind": "files", "name": "shakespeare",
                           "paths": str(shared_data / "corpus/tinyshakespeare/input.txt")})
    tokenizer, special = get_tokenizer(corpus, "bytebpe", 400)
    words = ["Peter", "Blackburn", "rejects", "B.V.", "1996-08-22", "."]
    rows = tagging_rows([{"id": "0", "document": 0, "tokens": words, "tags": ["B-PER", "I-PER", "O", "B-ORG",
                                                                                "O", "O"]}])
    row = build_features(rows, tokenizer, special, TASK)[0]
    pieces = [tokenizer.id_to_token(i) for i in row["input_ids"]]
    firsts = [i for i, label in enumerate(row["labels"]) if label != -100]
    assert len(firsts) == len(words) and all(pieces[i].startswith("Ġ") for i in firsts)  # " word" as in text
    assert [row["labels"][i] for i in firsts] == [1, 2, 0, 3, 0, 0]


# ------------------------------------------------------------------------------------------ decoding and F1


def test_entity_f1_from_logits_equals_seqeval():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O", "B-MISC"]]
    word_ids = [[-1, 0, 1, 1, 2, 3, -1], [-1, 0, 1, 2, -1]]  # word 1 of sentence 0 has two pieces
    # Per piece, the label the logits favour: the PER, ORG and MISC are found, the LOC is missed (O); the second
    # piece of "I-PER"'s word says I-MISC (8), which decoding must ignore.
    per_piece = [[0, 1, 2, 8, 0, 0, 0], [0, 3, 0, 7, 0]]
    logits = [F.one_hot(torch.tensor(ids), 9).float() for ids in per_piece]
    predictions = [decode_tags(x.numpy(), w, len(g), LABELS) for x, w, g in zip(logits, word_ids, gold)]
    assert predictions == [["B-PER", "I-PER", "O", "O"], ["B-ORG", "O", "B-MISC"]]
    metric = load_metric("seqeval")
    scores = metric.compute(predictions=predictions, references=gold)
    # By hand: 4 gold entities, 3 predicted, 3 correct -> P = 1, R = 3/4, F1 = 6/7.
    assert scores["overall_f1"] == pytest.approx(6 / 7) == pytest.approx(f1_score(gold, predictions))

    examples = tagging_rows([{"id": str(i), "document": 0, "tokens": ["w"] * len(g), "tags": g}
                             for i, g in enumerate(gold)])
    features = datasets.Dataset.from_dict({"word_ids": word_ids})
    padded = [torch.stack([logits[0], F.pad(logits[1], (0, 0, 0, 2))])]  # one batch, padded to 7 pieces
    result = score_tagging(EvalSplit("validation", examples, features), padded, TASK, metric)
    assert result["overall_f1"] == pytest.approx(6 / 7)


# ------------------------------------------------------------------------------------------ end to end


def test_a_tagger_learns_a_small_corpus(wordpiece, tmp_path):
    tokenizer, special = wordpiece
    text = CONLL + "\nJohn NNP I-NP I-PER\nlives VBZ I-VP O\nin IN I-PP O\n" \
        "Yorkshire NNP I-NP I-LOC\n. . O O\n"
    rows = tagging_rows(conll.read_local(write(tmp_path, text), TASK, "error"))
    features = build_features(rows, tokenizer, special, TASK)
    collate = TaggingCollator(special)
    batch = collate(features.select_columns(["input_ids", "token_type_ids", "labels"]).to_list())
    assert batch["labels"].shape == batch["input_ids"].shape and int((batch["labels"] != -100).sum()) == 15

    torch.manual_seed(0)
    config = ModelConfig(vocab_size=19, max_positions=32, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64,
                         embedding_size=32, dropout=0.0, attention_dropout=0.0)
    backbone, head = Backbone(config), TaggingHead(config, 9)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(60):
        logits = head(backbone(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
        loss = head.loss(logits, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    split = EvalSplit("validation", rows, features)
    with torch.no_grad():
        logits = head(backbone(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))
    assert score_tagging(split, [logits], TASK, load_metric("seqeval"))["overall_f1"] == 1.0
    labelled = batch["labels"] != -100
    by_hand = F.cross_entropy(logits[labelled], batch["labels"][labelled])
    torch.testing.assert_close(head.loss(logits, batch), by_hand)
