"""knowledge=ernie end to end on a tiny WordNet: entity ids on the first sub-words of linked mentions in the
pre-training instances, knowledge=none leaving the instances and their cache keys as they were, the TransE entity
table leaving out the supersense probe's held-out synsets, a short pre-training run that scores dEA, and fine-tuning
that run with the task's entities."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.data.entity_features import layout
from plmbench.data.entity_ids import LinkingSpec
from plmbench.data.instances import INSTANCES_VERSION, build_instances
from plmbench.data.knowledge_graph import load_graph
from plmbench.data.tokenizer import get_tokenizer, tokenizer_fingerprint
from plmbench.lit.finetuning import load_init, prepare_data, run_finetuning
from plmbench.lit.pretraining import run_pretraining
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig
from plmbench.models.entity_table import build_entity_table, fusion_triples, supersense_held_out
from plmbench.models.knowledge_fusion import KnowledgeBackbone, plain_backbone_state
from plmbench.models.transe import TransEConfig

# A WordNet in wndb(5WN) format: (offset, lex_filenum, lemmas, hypernym offset, gloss). 3 = noun.Tops,
# 5 = noun.animal, 6 = noun.artifact, 13 = noun.food.
SYNSETS = [
    (1, 3, ["entity"], None, "that which exists"),
    (2, 5, ["animal"], 1, "a living organism that moves"),
    (3, 5, ["dog"], 2, "a domesticated canid that barks"),
    (4, 5, ["cat"], 2, "a small feline kept as a pet"),
    (5, 5, ["horse"], 2, "a hoofed animal ridden by people"),
    (6, 13, ["food"], 1, "what is eaten"),
    (7, 13, ["mustard"], 6, "a pungent yellow sauce"),
    (8, 13, ["bun"], 6, "a small bread roll"),
    (9, 13, ["hot_dog"], 6, "a sausage served in a bun"),
    (10, 13, ["bread"], 6, "food baked from flour"),
    (11, 6, ["artifact"], 1, "a thing made by people"),
    (12, 6, ["kennel"], 11, "a shelter for a dog"),
    (13, 6, ["hammer"], 11, "a tool for driving nails"),
    (14, 6, ["saddle"], 11, "a seat for a rider on a horse"),
]
SENTENCES = [
    "The dog ate a hot dog with mustard on a bun.", "A cat slept in the kennel beside the horse.",
    "She put a saddle on the horse and took the hammer.", "Bread and mustard are food for every animal.",
    "The dogs and cats ran past the kennels.", "He bought buns, bread and mustard for the horses.",
]


@pytest.fixture(scope="module")
def wordnet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wordnet")
    data, index = [], []
    for offset, lexfile, lemmas, hypernym, gloss in SYNSETS:
        pointers = [("@", hypernym)] if hypernym else []
        pointers += [("~", o) for o, _, _, h, _ in SYNSETS if h == offset]
        words = " ".join(f"{lemma} 0" for lemma in lemmas)
        links = " ".join(f"{symbol} {target:08d} n 0000" for symbol, target in pointers)
        data.append(f"{offset:08d} {lexfile:02d} n {len(lemmas):02x} {words} {len(pointers):03d} {links} | {gloss}")
        index += [f"{lemma} n 1 0 1 0 {offset:08d}" for lemma in lemmas]
    (root / "data.noun").write_text("\n".join(data) + "\n")
    (root / "index.noun").write_text("\n".join(sorted(index)) + "\n")
    for name in ("verb", "adj", "adv"):
        (root / f"data.{name}").write_text("")
        (root / f"index.{name}").write_text("")
    return root


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory) -> Path:
    """Documents of one sentence per line, separated by blank lines."""
    documents = ["\n".join(SENTENCES[i:] + SENTENCES[:i]) for i in range(len(SENTENCES))] * 6
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text("\n\n".join(documents) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def corpus_and_tokenizer(corpus_path):
    from plmbench.data.corpora import build_corpus

    corpus = build_corpus({"kind": "files", "name": "tiny", "paths": str(corpus_path), "format": "plain",
                           "doc_separator": "blank_line"})
    tokenizer, special = get_tokenizer(corpus, "wordpiece", 120, lowercase=True)
    return corpus, tokenizer, special


def test_entity_ids_sit_on_the_first_subword_of_each_mention(wordnet_root, corpus_path, cache):
    corpus, tokenizer, special = corpus_and_tokenizer(corpus_path)
    linking = LinkingSpec("first", 0.0, str(wordnet_root))
    rows, _ = build_instances(corpus, tokenizer, special, sentence_task="nsp", max_seq_len=48, seed=0,
                              entity_linking=linking)
    graph = load_graph(wordnet_root)
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    linked = 0
    for row in rows:
        assert len(row["entity_ids"]) == len(row["input_ids"])
        for position, (token, start, entity) in enumerate(zip(row["input_ids"], row["word_start"],
                                                             row["entity_ids"])):
            if entity < 0:
                continue
            linked += 1
            piece = vocab[token]
            assert start and not piece.startswith("##") and token not in (special.cls, special.sep)
            # The piece opens the mention: a lemma of the linked synset starts as it does ("hot" of "hot dog",
            # "dogs" of "dog").
            assert any(lemma.lower().startswith(piece[:3]) for lemma in graph.synsets[entity].lemmas), (piece, entity)
            follow = row["input_ids"][position + 1]
            if vocab[follow].startswith("##"):  # the mention's other sub-words carry no entity
                assert row["entity_ids"][position + 1] == -1
    assert linked > len(rows)  # several mentions per instance on this text
    split = [vocab[t] for row in rows for t in row["input_ids"]]
    assert any(p.startswith("##") for p in split)  # the tiny vocabulary really cut words into sub-words


def test_knowledge_off_leaves_instances_and_cache_keys_as_before(wordnet_root, corpus_path, cache):
    corpus, tokenizer, special = corpus_and_tokenizer(corpus_path)
    plain, stats = build_instances(corpus, tokenizer, special, sentence_task="nsp", max_seq_len=48, seed=0)
    # The key as it was computed before entity linking existed: the eight InstanceSpec fields, nothing more.
    spec = {"sentence_task": "nsp", "packing": "segment_pair", "max_seq_len": 48, "short_seq_prob": 0.1, "seed": 0,
            "dupe_factor": 1, "static_masking": None, "debug": False}
    blob = json.dumps([corpus.fingerprint, tokenizer_fingerprint(tokenizer), spec, INSTANCES_VERSION], sort_keys=True)
    assert stats["key"] == hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert set(plain.column_names) == {"input_ids", "token_type_ids", "sentence_label", "word_start"}
    linked, linked_stats = build_instances(corpus, tokenizer, special, sentence_task="nsp", max_seq_len=48, seed=0,
                                           entity_linking=LinkingSpec("first", 0.0, str(wordnet_root)))
    assert linked_stats["key"] != stats["key"]
    for column in plain.column_names:  # entity ids are added beside the tokens, never change them
        assert linked[column] == plain[column]
    none = compose("pretrain", ["knowledge=none"])
    assert LinkingSpec.from_knowledge(none.knowledge) is None


def test_entity_table_leaves_out_the_probes_held_out_synsets(wordnet_root, cache):
    graph = load_graph(wordnet_root)
    seed = next(s for s in range(50) if supersense_held_out(graph, wordnet_root, s))
    held_out = supersense_held_out(graph, wordnet_root, seed)
    kept = fusion_triples(graph.triples, held_out)
    touching = [t for t in graph.triples.tolist() if t[0] in held_out or t[2] in held_out]
    assert touching and len(kept) == len(graph.triples) - len(touching)
    assert not set(kept[:, [0, 2]].flatten().tolist()) & held_out
    path = build_entity_table(wordnet_root, exclude=["supersense"], probe_seed=seed,
                              transe=TransEConfig(epochs=2, batch_size=8))
    table = torch.load(path, weights_only=True)
    assert table.shape == (len(graph.entities), 100)
    assert (path.parent / "entities.txt").read_text().split() == list(graph.entities)
    assert json.loads((path.parent / "meta.json").read_text())["triples"] == len(kept)
    everything = build_entity_table(wordnet_root, exclude=[], transe=TransEConfig(epochs=2, batch_size=8))
    assert json.loads((everything.parent / "meta.json").read_text())["triples"] == len(graph.triples)


def test_short_ernie_pretraining_scores_entities(wordnet_root, corpus_path, cache):
    cfg = compose("pretrain", [
        "model=bert", "objective=mlm_nsp", "knowledge=ernie", f"knowledge.wordnet_dir={wordnet_root}", "size=tiny",
        "model.vocab_size=120", "model.max_positions=64", "data.max_seq_len=48", "corpus=files",
        f"corpus.paths={corpus_path}", "corpus.doc_separator=blank_line", "trainer.max_steps=4",
        "trainer.batch_size=8", "trainer.val_check_interval=4", "trainer.limit_val_batches=2",
        "trainer.progress_bar=none", "logger=none", "data.val_fraction=0.25"])
    metrics = run_pretraining(cfg, cache / "run")
    assert metrics["status"] == "finished"
    assert 0.0 <= metrics["validation"]["dea_acc"] <= 1.0  # present only when dea_count > 0
    # Fine-tuning reads the plain part of the fused backbone, strictly (lit/finetune_init.py's _load_pretrain_run).
    state = torch.load(cache / "run/checkpoints/last.ckpt", weights_only=True, map_location="cpu")["state_dict"]
    fused = {k.removeprefix("model.backbone."): v for k, v in state.items() if k.startswith("model.backbone.")}
    plain = Backbone(ModelConfig.from_mapping(OmegaConf.load(cache / "run/config.yaml").model))
    plain.load_state_dict(plain_backbone_state(fused), strict=True)
    assert len(plain_backbone_state(fused)) < len(fused)  # the entity parts were there, and were left out

    # Fine-tuning the fused run: the fused backbone with the run's own table, the task's text linked as in
    # pre-training (data/entity_features.py), so entities reach the aggregator layers on tasks too.
    glue = cache / "data" / "glue" / "SST-2"
    glue.mkdir(parents=True)
    lines = ["sentence\tlabel"] + [f"{s}\t{i % 2}" for i, s in enumerate(SENTENCES * 4)]
    for name in ("train.tsv", "dev.tsv"):
        (glue / name).write_text("\n".join(lines) + "\n")
    tune = compose("finetune", ["task=glue/sst2", "task.source=local", f"data_dir={cache / 'data'}",
                                f"init={cache / 'run'}", "logger=none", "trainer.progress_bar=null", "epochs=1",
                                "task.batch_size=8"])
    init = load_init(tune)
    train, _, _ = prepare_data(tune, init)
    assert isinstance(init.backbone(), KnowledgeBackbone)
    assert torch.equal(init.entity_table, state["model.backbone.entity_table"])
    vocab, graph = {i: t for t, i in init.tokenizer.get_vocab().items()}, load_graph(wordnet_root)
    linked = 0
    for row in train:
        assert len(row["entity_ids"]) == len(row["input_ids"])
        for token, entity in zip(row["input_ids"], row["entity_ids"]):
            if entity >= 0:  # the first piece of a lemma of the linked synset ("hot" of "hot dog")
                linked += 1
                assert any(lemma.lower().startswith(vocab[token][:3]) for lemma in graph.synsets[entity].lemmas)
    assert linked > len(train)  # several mentions per sentence: dog, hot dog, mustard, bun, ...
    metrics = run_finetuning(tune, cache / "tuned")
    assert metrics["status"] == "finished"


def test_entity_layout_follows_the_inputs_truncation():
    # [CLS] a a a [SEP] b b [SEP]: A kept 3 of 4, B kept its tail of 2 of 3 (multiple choice) or its head.
    types = [0, 0, 0, 0, 0, 1, 1, 1]
    assert layout([7, -1, 8, 9], [1, 2, 3], types) == [-1, 7, -1, 8, -1, 1, 2, -1]
    assert layout([7, -1, 8, 9], [1, 2, 3], types, b_from_end=True) == [-1, 7, -1, 8, -1, 2, 3, -1]
    assert layout([5], None, [0, 0, 0]) == [-1, 5, -1]
    with pytest.raises(ValueError, match="do not match"):
        layout([5], None, [0, 0, 0, 0, 1])
