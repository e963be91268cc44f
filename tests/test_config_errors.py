"""Bad configuration fails before compute: through the real `plmbench` command, exit status 2 and ONE line on stderr
naming the key (or file) at fault, the bad value and what is allowed, within seconds.

Each case is a subprocess, as a user would type it; nothing here trains. {tmp} in a case is the test's folder.
"""

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
TINY = "model=bert objective=mlm size=tiny model.vocab_size=1000 logger=none"


def plmbench(args: list[str], cwd: Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Runs `plmbench <args>`; returns the result and the CPU seconds it used (on a shared machine wall time
    measures the neighbours as much as plmbench)."""
    env = {**os.environ, **ENV, "PLMBENCH_CACHE": str(cwd / "cache"), "PLMBENCH_RUNS": str(cwd / "runs"),
           "PLMBENCH_RESULTS": str(cwd / "results")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run([sys.executable, "-m", "plmbench.cli", *args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """A folder of bad inputs: a pair task's files with one sentence column, a model of another architecture."""
    root = tmp_path_factory.mktemp("config_errors")
    rte = root / "glue" / "RTE"
    rte.mkdir(parents=True)
    for split in ("train", "dev"):  # RTE is a pair task: these files lack its sentence2 column
        (rte / f"{split}.tsv").write_text("index\tsentence1\tlabel\n0\tA dog barks.\tentailment\n", encoding="utf-8")
    t5 = root / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text('{"model_type": "t5", "d_model": 64}', encoding="utf-8")
    (t5 / "tokenizer.json").write_text("{}", encoding="utf-8")
    return root


# (command line, what the one line must contain): each names the key or file, the value and the allowed values.
CASES = {
    "misspelled override": (
        f"pretrain {TINY} trainer.max_step=5",
        ["trainer.max_step", "did you mean trainer.max_steps?", "allowed keys under trainer: max_steps"]),
    "rtd with a causal model": (
        "pretrain model=gpt objective=rtd size=tiny logger=none",
        ["objective=rtd with a causal model", "allowed: clm"]),
    "sharing on a one-layer model": (
        f"pretrain {TINY} model.num_layers=1 sharing=all",
        ["model.sharing=all with model.num_layers=1", "use sharing=none"]),
    "negative max_steps": (
        f"pretrain {TINY} trainer.max_steps=-5",
        ["trainer.max_steps=-5", "must be 0 (no pre-training"]),
    "corpus glob matching nothing": (
        f"pretrain {TINY} corpus=files corpus.paths={{tmp}}/nowhere/*.txt",
        ["nowhere/*.txt", "matches no file"]),
    "hub unreachable (HF_HUB_OFFLINE=1)": (
        f"pretrain {TINY} corpus=hub",
        ["corpus.sources.wikitext: cannot load wikitext", "offline alternatives: corpus=embedded", "corpus=files"]),
    "fine-tuning init of another architecture": (
        "finetune task=glue/rte init={tmp}/t5",
        ["init={tmp}/t5", "model_type='t5'", "plmbench imports", "bert"]),
    "pair task with single-sentence data": (
        "finetune task=glue/rte task.source=local data_dir={tmp}",
        ["{tmp}/glue/RTE/train.tsv:1", "header lacks column(s) sentence2"]),
    # Unknown options of optional groups, which Hydra drops silently (scale=smokee trained ALBERT-base).
    "unknown scale (optional group)": (
        f"pretrain {TINY} scale=smokee",
        ["scale=smokee: no such option", "did you mean scale=smoke?", "; allowed: ", "mini, paper, smoke"]),
    "unknown scale in a sweep": (
        "sweep experiment=micro scale=smokee",
        ["scale=smokee: no such option", "; allowed: ", "mini, paper, smoke"]),
    "unknown experiment": (
        "describe experiment=albertt",
        ["experiment=albertt: no such option", "did you mean experiment=albert?", "micro"]),
    "unknown recipe": (
        "describe +recipe=bertt",
        ["recipe=bertt: no such option", "allowed: bert, bert_mlm"]),
    "unknown nested task": (
        "finetune task=glue/nonexistent",
        ["task=glue/nonexistent: no such option", "glue/rte", "squad/v1"]),
    # No fine-tuning seed: the sweep pre-trained every cell and fine-tuned nothing; finetune refused it already.
    "sweep without seeds": (
        "sweep experiment=micro scale=smoke sweep.seeds=[]",
        ["sweep.seeds=[]", "give at least one fine-tuning seed"]),
    "finetune without seeds": (
        "finetune task=glue/rte seeds=[]",
        ["seeds=[]", "give at least one fine-tuning seed"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_within_seconds(name, inputs):
    command, needles = CASES[name]
    result, seconds = plmbench(command.format(tmp=inputs).split(), cwd=inputs)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("plmbench: error: "), result.stderr[-3000:]
    for needle in needles:
        assert needle.format(tmp=inputs) in lines[0], lines[0]
    assert seconds < 10, f"{seconds:.1f} CPU seconds"
    assert not (inputs / "runs").exists() and not (inputs / "results").exists()  # nothing was computed


def test_experiment_must_be_a_plain_name_not_a_path(inputs):
    """experiment=../../x loaded a YAML from outside conf/: refused before it is read."""
    from plmbench.configuration import CONF_DIR

    evil = inputs / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "evil.yaml").write_text("# @package _global_\nexperiment:\n  name: evil\n", encoding="utf-8")
    relative = os.path.relpath(evil / "evil", CONF_DIR / "experiment")
    for value in (relative, str(evil / "evil")):
        result, _ = plmbench(["describe", f"experiment={value}"], cwd=inputs)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
        assert f"experiment={value}: options are plain names" in lines[0] and "allowed: albert," in lines[0]
        assert result.stdout == ""


# ------------------------------------------------------------------------------------------ data files
# GLUE TSVs (encodings, malformed rows, missing files, empty splits) and corpora are covered in test_tasks.py and
# test_corpora.py; SQuAD JSON and RACE files in another encoding were not.


def test_squad_and_race_files_in_another_encoding_name_the_file(tmp_path):
    from plmbench.data.tasks import race, squad
    from plmbench.data.tasks.errors import DataError

    qa = {"id": "q", "question": "Who?", "answers": [{"text": "Rollo", "answer_start": 0}]}
    doc = {"version": "1.1", "data": [{"title": "T", "paragraphs": [{"context": "Rollo was a Norse leader.",
                                                                      "qas": [qa]}]}]}
    squad_file = tmp_path / "dev-v1.1.json"
    squad_file.write_bytes(json.dumps(doc).encode().replace(b"Norse", "Nörse".encode("latin-1")))
    with pytest.raises(DataError, match=re.escape(f"{squad_file}: not UTF-8 text")):
        squad.read_local(squad_file, {}, "skip")  # even under skip: a whole file in another encoding stops
    article = {"id": "middle1.txt", "article": "A cat sat.", "questions": ["Who sat?"],
               "options": [["a cat", "a dog", "a cow", "nobody"]], "answers": ["A"]}
    race_file = tmp_path / "RACE" / "dev" / "middle" / "1.txt"
    race_file.parent.mkdir(parents=True)
    race_file.write_bytes(json.dumps(article).encode().replace(b"cat sat", "cät sat".encode("latin-1")))
    with pytest.raises(DataError, match=re.escape(f"{race_file}: not UTF-8 text")):
        race.read_local(tmp_path / "RACE" / "dev", {"levels": ["middle"]}, "skip")


def test_sweep_checks_its_published_table_before_compute(tmp_path, monkeypatch):
    """experiments/<name>.yaml is read at the end to render the table: a mistake there fails the sweep at once."""
    published = tmp_path / "experiments"
    published.mkdir()
    source = Path(__file__).resolve().parents[1] / "experiments" / "micro.yaml"
    (published / "micro.yaml").write_text(source.read_text().replace("columns: [params, sst2]",
                                                                     "columns: [params, sst2, avg]"))
    monkeypatch.setenv("PLMBENCH_EXPERIMENTS", str(published))
    result, seconds = plmbench(["sweep", "experiment=micro", "scale=smoke"], cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert f"{published / 'micro.yaml'}: column avg needs all of" in lines[0]
    assert seconds < 10 and not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()
