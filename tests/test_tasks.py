"""Downstream task loaders on the real GLUE/SQuAD/RACE files, on hub-layout rows, on broken files, and the task configs."""

import json
import logging
from pathlib import Path

import datasets
import pytest
from omegaconf import OmegaConf

from plmbench.data.tasks import SOURCES, glue, load_task, race, squad
from plmbench.data.tasks.errors import BadRows, DataError, HubUnavailableError, TaskConfigError

REPO = Path(__file__).resolve().parents[1]
TASK_CONF = REPO / "conf" / "task"
TASK_FILES = sorted(p.relative_to(TASK_CONF).with_suffix("").as_posix() for p in TASK_CONF.rglob("*.yaml"))


def task_cfg(name: str, **overrides) -> dict:
    """conf/task/<name>.yaml as a plain dict, with overrides (e.g. source='local')."""
    cfg = OmegaConf.to_container(OmegaConf.load(TASK_CONF / f"{name}.yaml"))
    return {**cfg, **overrides}


def local(name: str, data_dir: Path, **overrides) -> datasets.DatasetDict:
    return load_task(task_cfg(name, source="local", **overrides), data_dir)


# ------------------------------------------------------------------------------------------ real files


# Row counts of the files in shared/data (MANIFEST.md, REFERENCE.md); label counts counted with awk on the files.
GLUE_REAL = {
    "glue/cola": ({"train": 8551, "validation": 1043}, ("validation", 1, 721)),
    "glue/sst2": ({"train": 67349, "validation": 872}, None),
    "glue/mrpc": ({"train": 3668, "validation": 408}, ("validation", 1, 279)),
    "glue/stsb": ({"train": 5749, "validation": 1500}, None),
    "glue/rte": ({"train": 2490, "validation": 277}, ("validation", 0, 146)),  # entailment = 0, as on the hub
    "glue/mnli": (
        {"train": 3, "validation_matched": 2, "validation_mismatched": 2},
        ("validation_mismatched", 2, 2),
    ),
    "glue/qqp": ({"train": 3, "validation": 2}, ("validation", 0, 2)),
}


@pytest.mark.parametrize("name", GLUE_REAL)
def test_glue_real_files_load_with_their_row_and_label_counts(shared_data, name):
    counts, label_check = GLUE_REAL[name]
    ds = local(name, shared_data, on_bad_row="error")
    assert {split: len(rows) for split, rows in ds.items()} == counts
    if label_check:
        split, label, expected = label_check
        assert ds[split]["label"].count(label) == expected
    single = name in ("glue/cola", "glue/sst2")
    assert all((b == "") == single for b in ds["train"]["text_b"][:50])


def test_glue_real_files_keep_quotes_drop_bom_and_map_labels(shared_data):
    mrpc = local("glue/mrpc", shared_data)["validation"][0]
    assert mrpc["text_b"].startswith('"The foodservice pie business')  # unbalanced quote kept (QUOTE_NONE)
    assert mrpc["label"] == 1 and mrpc["idx"] == 0
    rte = local("glue/rte", shared_data)["validation"]
    assert rte["label"][:3] == [1, 0, 1]  # not_entailment, entailment, not_entailment in the file
    stsb = local("glue/stsb", shared_data)["validation"][0]
    assert stsb["label"] == 5.0 and stsb["text_b"] == "A man wearing a hard hat is dancing."
    mnli = local("glue/mnli", shared_data)["validation_matched"]
    assert mnli[0]["text_a"].startswith("The new rights are nice enough") and mnli["label"] == [1, 2]


def test_squad_v1_xquad_file_splits_by_article(shared_data, caplog):
    rows = squad.read_local(shared_data / "squad/v1.1/xquad.en.json", {}, "error")
    assert len(rows) == 1190 and all(len(r["answers"]["text"]) == 1 for r in rows)
    with caplog.at_level(logging.WARNING):
        ds = local("squad/v1", shared_data)
    assert "no train file found" in caplog.text and "NOT comparable" in caplog.text
    train, dev = ds["train"], ds["validation"]
    assert len(train) + len(dev) == 1190 and len(dev) > 0
    assert not set(train["id"]) & set(dev["id"]) and not set(train["title"]) & set(dev["title"])
    assert local("squad/v1", shared_data)["validation"]["id"] == dev["id"]  # deterministic
    other_seed = local("squad/v1", shared_data, dev_split={"train_fraction": 0.8, "seed": 1})["validation"]
    assert set(other_seed["title"]) != set(dev["title"])


def test_squad_v2_counts_unanswerable(shared_data):
    rows = squad.read_local(shared_data / "squad/v2.0/dev-v2.0_subset_haystack_small.json", {}, "error")
    assert len(rows) == 626
    assert sum(not r["answers"]["text"] for r in rows) == 333


def test_race_dev_counts_and_deterministic_disjoint_split(shared_data):
    rows = race.read_local(shared_data / "race/dev", {"levels": ["middle", "high"]}, "error")
    assert len(rows) == 4887
    assert (
        sum(r["level"] == "middle" for r in rows) == 1436 and sum(r["level"] == "high" for r in rows) == 3451
    )
    assert all(len(r["options"]) == 4 and 0 <= r["label"] <= 3 for r in rows)
    ds = local("race/all", shared_data)
    assert len(ds["train"]) + len(ds["validation"]) == 4887
    train_articles = {race.group_key(r) for r in ds["train"]}
    assert not train_articles & {race.group_key(r) for r in ds["validation"]}
    assert local("race/all", shared_data)["train"]["id"] == ds["train"]["id"]
    middle = local("race/middle", shared_data)
    assert len(middle["train"]) + len(middle["validation"]) == 1436 and set(middle["train"]["level"]) == {
        "middle"
    }


# ------------------------------------------------------------------------------------------ hub layout


def test_glue_hub_rows_normalise_to_the_schema():
    mnli = datasets.Dataset.from_list(
        [
            {"premise": "A man sleeps.", "hypothesis": "A man rests.", "label": 0, "idx": 0},
            {"premise": "A man sleeps.", "hypothesis": "A man runs.", "label": 2, "idx": 1},
        ],
        features=datasets.Features(
            {
                "premise": datasets.Value("string"),
                "hypothesis": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
                "idx": datasets.Value("int32"),
            }
        ),
    )
    out = glue.normalise_hub(datasets.DatasetDict({"validation_matched": mnli}), task_cfg("glue/mnli"))
    assert out["validation_matched"].to_list() == [
        {"idx": 0, "text_a": "A man sleeps.", "text_b": "A man rests.", "label": 0},
        {"idx": 1, "text_a": "A man sleeps.", "text_b": "A man runs.", "label": 2},
    ]
    cola = datasets.Dataset.from_list([{"sentence": "Birds fly.", "label": 1, "idx": 7}])
    assert glue.normalise_hub(datasets.DatasetDict({"train": cola}), task_cfg("glue/cola"))["train"][0] == {
        "idx": 7,
        "text_a": "Birds fly.",
        "text_b": "",
        "label": 1,
    }
    stsb = datasets.Dataset.from_list([{"sentence1": "a", "sentence2": "b", "label": 3.8, "idx": 0}])
    out = glue.normalise_hub(datasets.DatasetDict({"train": stsb}), task_cfg("glue/stsb"))["train"]
    assert out.features["label"].dtype == "float32" and out[0]["label"] == pytest.approx(3.8)


def test_squad_hub_rows_equal_the_local_rows(shared_data):
    path = shared_data / "squad/v2.0/dev-v2.0_subset_haystack_small.json"
    local_rows = squad.read_local(path, {}, "error")
    hub_rows = [  # what rajpurkar/squad_v2 holds: the same fields, plus nothing else
        {
            "id": r["id"],
            "title": r["title"],
            "context": r["context"],
            "question": r["question"],
            "answers": r["answers"],
        }
        for r in local_rows
    ]
    out = squad.normalise_hub(datasets.DatasetDict({"validation": datasets.Dataset.from_list(hub_rows)}), {})
    assert out["validation"].to_list() == local_rows


def test_race_hub_rows_equal_the_local_rows(shared_data):
    files = [shared_data / "race/dev/middle/1011.txt", shared_data / "race/dev/high/10024.txt"]
    hub_rows = []  # ehovy/race's layout: one row per question, the file's id as example_id, the answer as a letter
    for f in files:
        doc = json.loads(f.read_text())
        for q, opts, a in zip(doc["questions"], doc["options"], doc["answers"]):
            hub_rows.append(
                {
                    "example_id": doc["id"],
                    "article": doc["article"],
                    "answer": a,
                    "question": q,
                    "options": opts,
                }
            )
    out = race.normalise_hub(datasets.DatasetDict({"validation": datasets.Dataset.from_list(hub_rows)}), {})
    expected = []
    for f in files:
        expected += race._read_file(f, f.parent.name, BadRows(f, "error"))
    assert out["validation"].to_list() == expected and expected[0]["id"].endswith(".txt-0")


# ------------------------------------------------------------------------------------------ bad input


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"


def rte_dir(tmp_path: Path, dev_rows: str) -> Path:
    write(tmp_path / "glue/RTE/train.tsv", RTE_HEADER + "0\tA dog barks.\tAn animal barks.\tentailment\n")
    write(tmp_path / "glue/RTE/dev.tsv", RTE_HEADER + dev_rows)
    return tmp_path


def test_tsv_row_with_wrong_column_count_errors_with_file_and_line(tmp_path):
    root = rte_dir(tmp_path, "0\ta\tb\tentailment\n1\tonly two\tcolumns\n2\tc\td\tnot_entailment\n")
    with pytest.raises(DataError, match=r"glue/RTE/dev\.tsv:3: 3 tab-separated columns, expected 4"):
        local("glue/rte", root, on_bad_row="error")


def test_tsv_bad_rows_are_skipped_and_counted(tmp_path, caplog):
    root = rte_dir(
        tmp_path, "0\ta\tb\tentailment\n1\tonly two\tcolumns\n2\tc\td\tmaybe\n3\te\tf\tnot_entailment\n"
    )
    with caplog.at_level(logging.WARNING):
        dev = local("glue/rte", root)["validation"]
    assert dev["idx"] == [0, 3] and dev["label"] == [0, 1]  # idx keeps the file's row numbers
    assert "skipped 2 malformed row(s)" in caplog.text and "dev.tsv:3" in caplog.text


def test_tsv_missing_column_always_errors(tmp_path):
    root = rte_dir(tmp_path, "")
    write(root / "glue/RTE/dev.tsv", "index\tsentence1\tsentence2\tgold\n0\ta\tb\tentailment\n")
    with pytest.raises(DataError, match=r"dev\.tsv:1: header lacks column\(s\) label"):
        local("glue/rte", root)  # even under on_bad_row=skip


def test_tsv_that_is_not_utf8_names_the_line(tmp_path):
    root = rte_dir(tmp_path, "")
    (root / "glue/RTE/dev.tsv").write_bytes(
        RTE_HEADER.encode() + b"0\ta\tb\tentailment\n1\tcaf\xe9\tb\tentailment\n"
    )
    with pytest.raises(DataError, match=r"dev\.tsv:3: not UTF-8 text"):
        local("glue/rte", root)


def test_tsv_bom_quotes_crlf_and_headerless_cola(tmp_path):
    write(
        tmp_path / "MRPC/train.tsv",
        '\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\tHe said "yes.\tShe said "no".\r\n',
    )
    write(tmp_path / "MRPC/dev.tsv", "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t3\t4\tx\ty")
    ds = local("glue/mrpc", tmp_path, on_bad_row="error")  # the flat <data_dir>/<TASK>/ layout
    assert ds["train"][0] == {"idx": 0, "text_a": 'He said "yes.', "text_b": 'She said "no".', "label": 1}
    write(tmp_path / "glue_data/CoLA/train.tsv", "gj04\t1\t\tBirds fly.\ngj04\t0\t*\tFly birds the.\n")
    write(tmp_path / "glue_data/CoLA/dev.tsv", "gj04\t1\t\tCats sleep.")
    ds = local("glue/cola", tmp_path, on_bad_row="error")
    assert ds["train"]["label"] == [1, 0] and ds["validation"][0]["text_a"] == "Cats sleep."


def test_missing_file_and_empty_split_error(tmp_path):
    with pytest.raises(DataError, match=r"no validation file found; tried glue/QNLI/dev\.tsv, QNLI/dev\.tsv"):
        local("glue/qnli", tmp_path)
    root = rte_dir(tmp_path, "")
    with pytest.raises(DataError, match=r"dev\.tsv: split 'validation' has no usable rows"):
        local("glue/rte", root)


def squad_file(tmp_path: Path, answer_start: int) -> Path:
    doc = {
        "version": "1.1",
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": "Rollo was a Norse leader.",
                        "qas": [
                            {
                                "id": "q-good",
                                "question": "Who?",
                                "answers": [{"text": "Rollo", "answer_start": 0}],
                            },
                            {
                                "id": "q-bad",
                                "question": "What?",
                                "answers": [{"text": "Norse", "answer_start": answer_start}],
                            },
                        ],
                    }
                ],
            }
        ],
    }
    return write(tmp_path / "squad/v1.1/dev-v1.1.json", json.dumps(doc, indent=1))


def test_squad_misaligned_answer_errors_naming_the_question(tmp_path, caplog):
    path = squad_file(tmp_path, answer_start=3)
    with pytest.raises(
        DataError, match=r"dev-v1\.1\.json \(question q-bad\): answer 'Norse' is not at answer_start 3"
    ):
        squad.read_local(path, {}, "error")
    with caplog.at_level(logging.WARNING):
        assert [r["id"] for r in squad.read_local(path, {}, "skip")] == ["q-good"]
    assert "skipped 1 malformed row(s)" in caplog.text
    assert [
        r["answers"]["answer_start"] for r in squad.read_local(squad_file(tmp_path, 12), {}, "error")
    ] == [[0], [12]]


def test_squad_invalid_json_names_the_line(tmp_path):
    path = write(tmp_path / "dev-v1.1.json", '{"data": [\n  {"title": "T",\n  "paragraphs": [}\n]}')
    with pytest.raises(DataError, match=r"dev-v1\.1\.json:3: not valid JSON"):
        squad.read_local(path, {}, "error")


def test_race_answer_outside_options_errors_naming_the_file(tmp_path):
    doc = {
        "id": "middle1.txt",
        "article": "A cat sat.",
        "questions": ["Who sat?", "Where?"],
        "options": [["a cat", "a dog", "a cow", "nobody"], ["mat", "hat", "bat", "cat"]],
        "answers": ["A", "E"],
    }
    write(tmp_path / "RACE/dev/middle/1.txt", json.dumps(doc))
    with pytest.raises(DataError, match=r"RACE/dev/middle/1\.txt \(question 1\): answer 'E' is not one of"):
        race.read_local(tmp_path / "RACE/dev", {"levels": ["middle"]}, "error")
    rows = race.read_local(tmp_path / "RACE/dev", {"levels": ["middle"]}, "skip")
    assert [(r["id"], r["label"]) for r in rows] == [("middle1.txt-0", 0)]
    with pytest.raises(DataError, match=r"RACE/dev/high: no RACE \.txt files"):
        race.read_local(tmp_path / "RACE/dev", {"levels": ["middle", "high"]}, "skip")


# ------------------------------------------------------------------------------------------ sources


def test_unknown_source_and_bad_policy_name_the_allowed_values(tmp_path):
    with pytest.raises(TaskConfigError, match=r"task\.source='disk' is not one of hub, local, proxy, wordnet"):
        load_task(task_cfg("glue/rte", source="disk"))
    with pytest.raises(TaskConfigError, match=r"task\.on_bad_row='drop' is not one of skip, error"):
        local("glue/rte", rte_dir(tmp_path, "0\ta\tb\tentailment\n"), on_bad_row="drop")
    assert set(SOURCES) == {"hub", "local", "proxy", "wordnet"}


def test_hub_unavailable_fails_at_once_naming_the_offline_alternatives(monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1: datasets looks only in its cache, where nyu-mll/glue is not.
    with pytest.raises(HubUnavailableError, match=r"task\.source=local data_dir=.*task\.source=proxy"):
        load_task(task_cfg("glue/sst2"))
    # Online but nothing listening: the connect probe answers before datasets starts its retries.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(HubUnavailableError, match=r"cannot connect to 127\.0\.0\.1:9 .*HF_HUB_OFFLINE=1"):
        load_task(task_cfg("race/all"))


# ------------------------------------------------------------------------------------------ configs


REQUIRED = {
    "name",
    "family",
    "kind",
    "num_labels",
    "metric",
    "source",
    "hub",
    "local",
    "eval_splits",
    "pair",
    "lr",
    "epochs",
    "batch_size",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "lr_grid",
    "proxy",
    "on_bad_row",
}
KINDS = {"glue": {"classification", "regression"}, "squad": {"span"}, "race": {"multiple_choice"},
         "conll": {"tagging"}, "csqa": {"multiple_choice"}, "wordnet": {"classification"}}
BUILT_FROM_WORDNET = {"wordnet"}  # probes with no hub or local copy: source wordnet, no hub path, no local files


@pytest.fixture(scope="module")
def hydra_dir(tmp_path_factory) -> Path:
    """A minimal config dir whose only group is the repo's conf/task (linked, so the real files are composed)."""
    root = tmp_path_factory.mktemp("conf")
    (root / "config.yaml").write_text("defaults:\n  - task: glue/sst2\n  - _self_\ndata_dir: null\n")
    (root / "task").symlink_to(TASK_CONF, target_is_directory=True)
    return root


def test_every_task_config_composes_with_the_required_keys(hydra_dir):
    from hydra import compose, initialize_config_dir

    assert len(TASK_FILES) == 18
    names = set()
    with initialize_config_dir(config_dir=str(hydra_dir), version_base="1.3"):
        for name in TASK_FILES:
            assert (TASK_CONF / f"{name}.yaml").read_text().startswith("# @package task\n"), name
            task = compose("config", overrides=[f"task={name}"]).task
            assert REQUIRED <= set(task), f"{name} lacks {REQUIRED - set(task)}"
            assert task.kind in KINDS[task.family]
            assert task.lr_grid is None or task.get("frozen"), name  # a frozen probe's one-point grid: its own rate
            if task.family in BUILT_FROM_WORDNET:
                assert task.source == "wordnet" and not task.hub.path and not task.local, name
            else:
                assert task.source == "hub" and task.hub.path, name
                assert {"train", *task.eval_splits} <= set(task.local), name
            assert {"train_size", "eval_size", "seed"} <= set(task.proxy)
            assert task.max_length == {"glue": 128, "squad": 384, "race": 512, "conll": 128,
                                       "csqa": 128, "wordnet": 128}[task.family]
            names.add(task.name)
        assert compose("config", overrides=["task=squad/v1"]).task.doc_stride == 128
    assert len(names) == 18


def test_acceptance_override_finds_the_shared_files(hydra_dir, shared_data):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(hydra_dir), version_base="1.3"):
        cfg = compose("config", overrides=["task=squad/v1", "task.source=local", f"data_dir={shared_data}"])
    ds = load_task(cfg.task, cfg.data_dir)
    assert set(ds) == {"train", "validation"} and len(ds["train"]) + len(ds["validation"]) == 1190
