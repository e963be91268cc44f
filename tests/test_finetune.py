"""Fine-tuning: input features, SQuAD windows and span decoding, task heads, init loading and end-to-end runs."""

import itertools
import json
import random
import re

import datasets
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.data.corpora import build_corpus
from plmbench.data.features import FeatureCollator, build_features, longest_first, window_starts
from plmbench.data.span_decoding import decode_spans, score_with_best_threshold
from plmbench.data.tasks import load_task
from plmbench.data.tokenizer import get_tokenizer, save_hf_tokenizer
from plmbench.lit.finetuning import FinetuneError, load_init, run_finetuning, validate_finetune
from plmbench.metrics import load as load_metric
from plmbench.models.config import ModelConfig
from plmbench.models.task_heads import TaskModel

SHAKESPEARE = "corpus/tinyshakespeare/input.txt"


@pytest.fixture(scope="module")
def env(tmp_path_factory, shared_data):
    """Caches and data builds go to a temporary folder; the tokenizer corpus is a small real text file."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("finetune")
        patch.setenv("PLMBENCH_CACHE", str(root / "cache"))
        patch.setenv("PLMBENCH_DATA", str(root / "data"))
        yield shared_data


@pytest.fixture(scope="module")
def wordpiece(env):
    corpus = build_corpus({"kind": "files", "name": "shakespeare", "paths": str(env / SHAKESPEARE)})
    return get_tokenizer(corpus, "wordpiece", 2000)


def task(name: str, **overrides) -> dict:
    cfg = compose("finetune", [f"task={name}"]).task
    return {**OmegaConf.to_container(cfg, resolve=True), "source": "local", **overrides}


# ------------------------------------------------------------------------------------------ features


def reference_truncation(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """BERT's _truncate_seq_pair, one token at a time."""
    while len_a + len_b > budget:
        if len_a > len_b:
            len_a -= 1
        else:
            len_b -= 1
    return len_a, len_b


def test_longest_first_matches_bert_truncation():
    rng = random.Random(0)
    cases = [(rng.randint(0, 80), rng.randint(0, 80), rng.randint(1, 100)) for _ in range(2000)]
    a, b, budgets = zip(*cases)
    for budget in set(budgets):
        idx = [i for i, c in enumerate(cases) if c[2] == budget]
        got_a, got_b = longest_first(np.array(a)[idx], np.array(b)[idx], budget)
        assert [(x, y) for x, y in zip(got_a, got_b)] == [reference_truncation(a[i], b[i], budget) for i in idx]


def test_pair_features_are_cls_a_sep_b_sep(wordpiece):
    tokenizer, special = wordpiece
    rows = datasets.Dataset.from_list([
        {"idx": 0, "text_a": "to be or not to be", "text_b": "that is the question", "label": 1},
        {"idx": 1, "text_a": "the king " * 40, "text_b": "my lord " * 40, "label": 0},
    ])
    out = build_features(rows, tokenizer, special, {"kind": "classification", "pair": True, "max_length": 32})
    a = tokenizer.encode("to be or not to be", add_special_tokens=False).ids
    b = tokenizer.encode("that is the question", add_special_tokens=False).ids
    assert out[0]["input_ids"] == [special.cls, *a, special.sep, *b, special.sep]
    assert out[0]["token_type_ids"] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    long_ids, long_types = out[1]["input_ids"], out[1]["token_type_ids"]
    assert len(long_ids) == 32 and long_types.count(0) == 2 + 15 and long_types.count(1) == 14 + 1
    assert out["labels"] == [1, 0]


def test_text_that_spells_a_special_token_stays_text(wordpiece):
    tokenizer, special = wordpiece
    rows = datasets.Dataset.from_list([{"idx": 0, "text_a": "a [SEP] b", "text_b": "", "label": 0}])
    out = build_features(rows, tokenizer, special, {"kind": "classification", "pair": False, "max_length": 16})
    assert out[0]["input_ids"].count(special.sep) == 1


def test_window_starts_cover_every_token_with_the_overlap():
    for n, window, overlap in [(10, 4, 1), (100, 30, 10), (5, 8, 2), (31, 30, 10)]:
        starts = window_starts(n, window, overlap)
        covered = set().union(*(range(s, min(s + window, n)) for s in starts))
        assert covered == set(range(n))
        assert all(b - a == window - overlap for a, b in itertools.pairwise(starts))


SMALL_SQUAD = {"max_length": 64, "max_query_length": 16, "doc_stride": 16}


@pytest.mark.parametrize("name", ["squad/v1", "squad/v2"])
def test_squad_windows_map_answers_back_through_offsets(env, wordpiece, name):
    tokenizer, special = wordpiece
    cfg = task(name, **SMALL_SQUAD)
    rows = load_task(cfg, env)["validation"]
    features = build_features(rows, tokenizer, special, cfg)
    by_id = {row["id"]: row for row in rows}
    found, exact = set(), 0
    for feature in features:
        row, start, end = by_id[feature["example_id"]], feature["start_positions"], feature["end_positions"]
        assert len(feature["input_ids"]) <= 64 and feature["input_ids"][0] == special.cls
        if start == 0:
            assert end == 0
            continue
        assert row["answers"]["text"], "an unanswerable question must point at [CLS] in every window"
        first, last = start - feature["context_start"], end - feature["context_start"]
        span = row["context"][feature["offsets"][first][0]: feature["offsets"][last][1]]
        answer = row["answers"]["text"][0]
        assert answer in span and len(span) <= len(answer) + 12  # a token may run past a partial-word answer
        exact += span == answer
        found.add(row["id"])
    # Windows overlap by doc_stride tokens, so every answer of at most doc_stride + 1 tokens lies wholly inside one.
    for row in rows.filter(lambda r: bool(r["answers"]["text"]) and r["id"] not in found):
        start = row["answers"]["answer_start"][0]
        end = start + len(row["answers"]["text"][0])
        offsets = tokenizer.encode(row["context"], add_special_tokens=False).offsets
        assert sum(a < end and b > start for a, b in offsets) > SMALL_SQUAD["doc_stride"] + 1
    assert len(found) > 0.9 * sum(bool(a["text"]) for a in rows["answers"])
    assert exact / len(features.filter(lambda f: f["start_positions"] > 0)) > 0.95
    assert any(len([f for f in features["example_id"] if f == i]) > 2 for i in by_id)  # long contexts split


# ------------------------------------------------------------------------------------------ span decoding


def window(context_start: int, offsets: list, example_id: str = "q") -> dict:
    return {"example_id": example_id, "context_start": context_start, "offsets": offsets}


CONTEXT = "alpha beta gamma delta epsilon"
OFFSETS = [[0, 5], [6, 10], [11, 16], [17, 22], [23, 30]]  # one token per word, context from index 2


def logits(peaks: dict, length: int = 7) -> np.ndarray:
    out = np.zeros(length)
    for position, value in peaks.items():
        out[position] = value
    return out


def test_decoding_picks_the_best_valid_span_and_exact_text():
    # The best start (6) lies after the best end (3): the best valid pair is start 4 (gamma) .. end 5 (delta).
    start, end = logits({6: 9.0, 4: 5.0}), logits({3: 8.0, 5: 6.0})
    [prediction] = decode_spans([{"id": "q", "context": CONTEXT}], [window(2, OFFSETS)], [start], [end])
    assert prediction == {"id": "q", "prediction_text": "gamma delta"}


def test_decoding_respects_max_answer_length_and_n_best():
    start, end = logits({2: 9.0, 5: 1.0}), logits({6: 9.0, 5: 0.5})
    context = [{"id": "q", "context": CONTEXT}]
    assert decode_spans(context, [window(2, OFFSETS)], [start], [end])[0]["prediction_text"] == CONTEXT
    short = decode_spans(context, [window(2, OFFSETS)], [start], [end], max_answer_length=2)
    assert short[0]["prediction_text"] == "delta epsilon"  # start 5 .. end 6
    # With one candidate per side only the single top start/end pair is looked at.
    assert decode_spans(context, [window(2, OFFSETS)], [start], [end], n_best=1, max_answer_length=2) == \
        [{"id": "q", "prediction_text": ""}]


def test_decoding_takes_the_best_window_of_a_question():
    first = window(2, OFFSETS[:3])  # alpha beta gamma
    second = window(2, OFFSETS[2:])  # gamma delta epsilon
    starts = [logits({2: 1.0}, 5), logits({4: 3.0}, 5)]
    ends = [logits({2: 1.0}, 5), logits({4: 3.0}, 5)]
    [prediction] = decode_spans([{"id": "q", "context": CONTEXT}], [first, second], starts, ends)
    assert prediction["prediction_text"] == "epsilon"


def test_null_score_gives_no_answer_probability_and_threshold_maximises_f1():
    examples = [{"id": f"q{i}", "context": CONTEXT} for i in range(4)]
    answers = [["gamma"], [], ["beta"], []]
    # q0: a clear answer, q1: clearly none; q2 (answerable) and q3 (not) sit close to the middle.
    null_scores, span_scores = [0.0, 8.0, 1.0, 2.0], [6.0, 1.0, 1.5, 1.5]
    spans = {"q0": 4, "q1": 4, "q2": 3, "q3": 5}
    starts, ends, windows = [], [], []
    for i, example in enumerate(examples):
        position = spans[example["id"]]
        starts.append(logits({0: null_scores[i] / 2, position: span_scores[i] / 2}))
        ends.append(logits({0: null_scores[i] / 2, position: span_scores[i] / 2}))
        windows.append(window(2, OFFSETS, example["id"]))
    predictions = decode_spans(examples, windows, starts, ends, with_null=True)
    probabilities = [p["no_answer_probability"] for p in predictions]
    assert probabilities[1] > probabilities[3] > 0.5 > probabilities[2] > probabilities[0]
    references = [{"id": e["id"], "answers": {"text": a, "answer_start": [0] * len(a)}}
                  for e, a in zip(examples, answers)]
    scores = score_with_best_threshold(load_metric("squad_v2"), predictions, references)
    # Answering up to q2's probability and abstaining above it gets all four right; answering all gets half.
    assert scores["no_answer_threshold"] == pytest.approx(probabilities[2])
    assert scores["f1"] == pytest.approx(scores["best_f1"]) == pytest.approx(100.0)
    assert scores["HasAns_f1"] == scores["NoAns_f1"] == pytest.approx(100.0)
    assert scores["f1_no_threshold"] == pytest.approx(50.0)


# ------------------------------------------------------------------------------------------ heads


TINY = ModelConfig(vocab_size=200, max_positions=64, hidden_size=32, num_layers=2, num_heads=4, ffn_size=64,
                   embedding_size=32)


def test_multiple_choice_head_scores_each_option_on_its_own():
    torch.manual_seed(0)
    model = TaskModel(TINY, "multiple_choice", 4).eval()
    ids = torch.randint(5, 200, (2, 4, 12))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "labels": torch.tensor([1, 3])}
    with torch.no_grad():
        out = model(batch)
        assert out["logits"].shape == (2, 4) and out["loss"].ndim == 0
        order = torch.tensor([2, 0, 3, 1])
        permuted = model({k: (v[:, order] if v.ndim == 3 else v) for k, v in batch.items()})["logits"]
        torch.testing.assert_close(permuted, out["logits"][:, order])
        changed = ids.clone()
        changed[:, 2, 5:] = 7
        other = model({**batch, "input_ids": changed})["logits"]
    assert not torch.allclose(other[:, 2], out["logits"][:, 2])
    torch.testing.assert_close(other[:, [0, 1, 3]], out["logits"][:, [0, 1, 3]])


@pytest.mark.parametrize("causal", [False, True])
def test_classification_ignores_right_padding(causal):
    config = TINY.replace(causal=causal, norm="pre" if causal else "post", type_vocab_size=0 if causal else 2)
    torch.manual_seed(0)
    model = TaskModel(config, "classification", 3).eval()
    ids = torch.randint(5, 200, (2, 10))
    padded = torch.cat([ids, torch.zeros(2, 6, dtype=torch.long)], dim=1)
    mask = (padded != 0).long()
    with torch.no_grad():
        plain = model({"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": ids * 0})
        pad = model({"input_ids": padded, "attention_mask": mask, "token_type_ids": padded * 0})
    torch.testing.assert_close(plain["logits"], pad["logits"])
    if causal:  # GPT reads the last real token, the only one that has seen the whole input
        changed = padded.clone()
        changed[:, 9] = 11
        with torch.no_grad():
            after = model({"input_ids": changed, "attention_mask": mask, "token_type_ids": padded * 0})
        assert not torch.allclose(after["logits"], pad["logits"])


def test_collator_pads_choices_to_b_c_t(wordpiece):
    _, special = wordpiece
    rows = [{"input_ids": [[2, 5, 3], [2, 6, 7, 3]], "token_type_ids": [[0, 0, 0], [0, 0, 0, 1]], "labels": 1}]
    batch = FeatureCollator(special)(rows)
    assert batch["input_ids"].shape == (1, 2, 4) and batch["attention_mask"][0, 0].tolist() == [1, 1, 1, 0]
    assert batch["input_ids"][0, 0, 3] == special.pad


# ------------------------------------------------------------------------------------------ init and checks


def finetune_cfg(tmp, *extra):
    return compose("finetune", [
        "task=glue/rte", "task.source=local", f"data_dir={tmp}", "init=random", "size=tiny", "model=bert",
        "corpus=files", f"corpus.paths={tmp / SHAKESPEARE}", "model.vocab_size=2000", "logger=none",
        "trainer.progress_bar=null", "max_train_examples=64", "max_eval_examples=64", "epochs=1", *extra])


def write_pretrain_run(directory, cfg, model) -> None:
    """A pre-training run directory as run_pretraining leaves it, with `model` as the Lightning module's `model`."""
    (directory / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, directory / "config.yaml", resolve=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               directory / "checkpoints" / "last.ckpt")


def test_init_from_a_pretraining_run_loads_backbone_and_pooler(env, wordpiece, tmp_path):
    from plmbench.objectives import build_objective

    tokenizer, special = wordpiece
    cfg = finetune_cfg(env, f"init={tmp_path / 'run'}")
    pretrain_cfg = compose("pretrain", ["model=bert", "size=tiny", "model.vocab_size=2000"])
    objective = build_objective(ModelConfig.from_mapping(pretrain_cfg.model), {"name": "mlm_nsp",
                                                                               "sentence_task": "nsp"})
    write_pretrain_run(tmp_path / "run", pretrain_cfg, objective)
    save_hf_tokenizer(tokenizer, special, tmp_path / "run" / "tokenizer", "bert")
    validate_finetune(cfg)
    init = load_init(cfg)
    model = TaskModel(init.config, "classification", 2)
    init.load_weights(model)
    for key, value in objective.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)
    torch.testing.assert_close(model.head.pooler.dense.weight, objective.sentence_head.pooler.dense.weight)
    assert init.describe()["lineage_id"]  # the sweep's cell id of that config

    other = compose("pretrain", ["model=bert", "size=tiny", "model.vocab_size=2000", "model.num_layers=2"])
    (tmp_path / "run" / "config.yaml").write_text(OmegaConf.to_yaml(other, resolve=True))
    with pytest.raises(FinetuneError, match=re.escape(f"init={tmp_path / 'run'}: the checkpoint does not fit")):
        load_init(cfg).load_weights(TaskModel(ModelConfig.from_mapping(other.model), "classification", 2))


def test_init_from_a_hugging_face_folder(env, wordpiece, tmp_path):
    pytest.importorskip("transformers")  # the optional `hf` extra
    from safetensors.torch import save_file

    from plmbench.models import hf_mapping
    from plmbench.objectives import build_objective

    tokenizer, special = wordpiece
    pretrain_cfg = compose("pretrain", ["model=bert", "size=tiny", "model.vocab_size=2000"])
    objective = build_objective(ModelConfig.from_mapping(pretrain_cfg.model), {"name": "mlm_nsp",
                                                                               "sentence_task": "nsp"})
    hf_config, state = hf_mapping.to_hf_state_dict(objective)
    hf_config.save_pretrained(tmp_path)
    save_file({k: v.clone().contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    save_hf_tokenizer(tokenizer, special, tmp_path, "bert")
    init = load_init(finetune_cfg(env, f"init={tmp_path}"))
    model = TaskModel(init.config, "span", 2)
    init.load_weights(model)
    for key, value in objective.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], value)


def test_bad_settings_fail_fast_naming_the_key(env, tmp_path):
    with pytest.raises(FinetuneError, match=re.escape(f"init={tmp_path / 'nope'}: no such directory")):
        validate_finetune(finetune_cfg(env, f"init={tmp_path / 'nope'}"))
    with pytest.raises(FinetuneError, match=re.escape(f"init={tmp_path}: holds neither")):
        validate_finetune(finetune_cfg(env, f"init={tmp_path}"))
    with pytest.raises(FinetuneError, match="task.kind='ranking'"):
        validate_finetune(finetune_cfg(env, "task.kind=ranking"))
    with pytest.raises(FinetuneError, match="task.doc_stride=128"):
        validate_finetune(finetune_cfg(env, "task=squad/v1", "task.max_length=128"))
    with pytest.raises(FinetuneError, match="task.pair=false but task rte's data has second sentences"):
        run_finetuning(finetune_cfg(env, "task.pair=false"), tmp_path / "run")


# ------------------------------------------------------------------------------------------ end to end


END_TO_END = {
    "glue/rte": ({"accuracy"}, []),
    "glue/stsb": ({"pearson", "spearmanr"}, []),
    "squad/v2": ({"f1", "exact", "best_f1", "no_answer_threshold", "HasAns_f1", "NoAns_f1"},
                 ["task.max_length=96", "task.max_query_length=24", "task.doc_stride=32", "max_train_examples=24",
                  "max_eval_examples=24"]),
    "race/all": ({"accuracy", "accuracy_middle", "accuracy_high"},
                 ["task.max_length=96", "task.max_qa_length=32", "max_train_examples=32", "max_eval_examples=40"]),
}


@pytest.mark.parametrize("name", sorted(END_TO_END))
def test_finetune_end_to_end_writes_metrics(env, tmp_path, name):
    keys, extra = END_TO_END[name]
    metrics = run_finetuning(finetune_cfg(env, f"task={name}", *extra), tmp_path)
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    assert keys <= set(metrics["best"]) and metrics["best_epoch"] == 1 and len(metrics["history"]) == 1
    assert metrics["primary"]["name"] in keys and metrics["primary"]["split"] == "validation"
    assert metrics["init"] == {"kind": "random", "path": None, "lineage_id": None}
    assert metrics["params"]["backbone"] > 0 and metrics["wall_seconds"] > 0
    assert metrics["history"][0]["train_loss"] > 0


def test_lr_grid_and_seeds_pick_the_median_run(env, tmp_path):
    metrics = run_finetuning(finetune_cfg(env, "seeds=[0,1,2]", "task.lr_grid=[1.0e-4,1.0e-5]",
                                          "max_train_examples=32", "max_eval_examples=32"), tmp_path)
    assert [(run["lr"], run["seed"]) for run in metrics["runs"]] == \
        [(lr, seed) for lr in (1e-4, 1e-5) for seed in (0, 1, 2)]
    chosen = [run for run in metrics["runs"] if run["lr"] == metrics["lr"]]
    scores = sorted(run["score"] for run in chosen)
    assert metrics["primary"]["value"] == scores[1]
    assert sorted(metrics["primary"]["per_seed"].values()) == scores


def test_finetuning_fits_a_small_sample(env, tmp_path):
    """The whole pipeline (features, collation, head, optimiser, schedule) can memorise 64 CoLA sentences."""
    metrics = run_finetuning(finetune_cfg(env, "task=glue/cola", "epochs=20", "task.lr=2e-3", "task.warmup_ratio=0",
                                          "task.batch_size=16", "max_eval_examples=16", "model.dropout=0",
                                          "model.attention_dropout=0"), tmp_path)
    losses = [epoch["train_loss"] for epoch in metrics["history"]]
    assert losses[0] > 0.5 and losses[-1] < 0.2


def test_cli_reports_a_bad_init_on_one_line(env, tmp_path, capsys):
    from plmbench.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", f"init={tmp_path / 'missing'}", "size=tiny", "logger=none"])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and error.count("\n") == 0
    assert error.startswith(f"plmbench: error: init={tmp_path / 'missing'}: no such directory")


@pytest.mark.parametrize("name", ["squad/v1", "glue/rte"])
def test_inputs_are_capped_at_the_pretraining_length(env, wordpiece, tmp_path, name):
    """Positions beyond the pre-training length were never trained: fine-tuning from a run stops there."""
    from plmbench.lit.finetuning import cap_to_pretraining_length
    from plmbench.objectives import build_objective

    pretrain_cfg = compose("pretrain", ["model=bert", "size=tiny", "model.vocab_size=2000", "data.max_seq_len=64"])
    objective = build_objective(ModelConfig.from_mapping(pretrain_cfg.model), {"name": "mlm"})
    write_pretrain_run(tmp_path / "run", pretrain_cfg, objective)
    save_hf_tokenizer(*wordpiece, tmp_path / "run" / "tokenizer", "bert")
    cfg = finetune_cfg(env, f"init={tmp_path / 'run'}", f"task={name}")
    original = int(cfg.task.max_length)
    assert cap_to_pretraining_length(cfg) == original > 64
    assert cfg.task.max_length == 64
    validate_finetune(cfg)  # SQuAD's question length and stride shrink with the window
    kept = finetune_cfg(env, f"init={tmp_path / 'run'}", f"task={name}", "cap_to_pretraining_length=false")
    assert cap_to_pretraining_length(kept) is None and kept.task.max_length == original


def test_a_run_whose_tokenizer_is_smaller_than_its_configured_vocabulary_loads(env, wordpiece, tmp_path):
    """Pre-training sizes the model to the trained tokenizer (a small corpus may not fill model.vocab_size)."""
    from plmbench.objectives import build_objective

    tokenizer, special = wordpiece
    size = tokenizer.get_vocab_size()
    pretrain_cfg = compose("pretrain", ["model=bert", "size=tiny", f"model.vocab_size={size}"])
    write_pretrain_run(tmp_path / "run", pretrain_cfg, build_objective(ModelConfig.from_mapping(pretrain_cfg.model),
                                                                       {"name": "mlm"}))
    save_hf_tokenizer(tokenizer, special, tmp_path / "run" / "tokenizer", "bert")
    asked = compose("pretrain", ["model=bert", "size=tiny", f"model.vocab_size={size + 500}"])
    (tmp_path / "run" / "config.yaml").write_text(OmegaConf.to_yaml(asked, resolve=True))
    init = load_init(finetune_cfg(env, f"init={tmp_path / 'run'}"))
    assert init.config.vocab_size == size
    init.load_weights(TaskModel(init.config, "classification", 2))
