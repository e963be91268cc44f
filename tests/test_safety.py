"""Safety: checkpoints are data, never code; nothing runs code from a data file; secrets never reach run
directories, results or W&B files; directory names never come from a user's path."""

import ast
import re
from pathlib import Path

import pytest
import torch

from plmbench.cli import main as cli
from plmbench.configuration import compose
from plmbench.errors import UnsafeCheckpointError
from plmbench.lit.finetuning import load_init
from plmbench.lit.pretraining import run_pretraining
from plmbench.models.task_heads import TaskModel
from test_faults import PRETRAIN, Workspace, slice_corpus

SRC = Path(__file__).resolve().parents[1] / "src" / "plmbench"
SECRETS = {"WANDB_API_KEY": "wandb-secret-9f8e7d", "HF_TOKEN": "hf_secret_token_5c4b3a"}
CONFIG_SECRET = "config-secret-1a2b3c"
HASH_NAME = re.compile(r"[0-9a-f]{16}")


# ------------------------------------------------------------------------------------------ code, not data


def calls(tree: ast.AST):
    """(node, owner, name, keywords) per call: `torch.load(...)` -> owner 'torch', `eval(...)` -> owner None."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Name):
                owner, name = None, func.id
            elif isinstance(func, ast.Attribute):
                owner, name = ast.unparse(func.value), func.attr
            else:
                continue
            yield node, owner, name, {k.arg: k.value for k in node.keywords}


def is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def test_every_checkpoint_load_is_weights_only_and_no_data_file_runs_code():
    """torch.load(weights_only=True) (or safetensors) everywhere, Lightning resumes with weights_only=True, and no
    eval/exec, pickle, unsafe YAML, numpy pickles or remote code."""
    problems, loads = [], 0
    for path in sorted(SRC.rglob("*.py")):
        for node, owner, name, keywords in calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(SRC)}:{node.lineno}"
            if owner == "torch" and name == "load":
                loads += 1
                if not is_true(keywords.get("weights_only")):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if name == "fit" and "ckpt_path" in keywords and not is_true(keywords.get("weights_only")):
                problems.append(f"{where}: Trainer.fit(ckpt_path=...) without weights_only=True")
            runs_code = (owner is None and name in ("eval", "exec", "__import__")
                         or owner in ("pickle", "marshal", "dill", "cloudpickle") and name.startswith("load")
                         or owner == "yaml" and name in ("unsafe_load", "full_load"))
            if runs_code:
                problems.append(f"{where}: {owner + '.' if owner else ''}{name} runs code from data")
            if owner == "yaml" and name == "load" and "safe" not in ast.unparse(keywords.get("Loader", ast.Name(""))):
                problems.append(f"{where}: yaml.load without a safe loader")
            if is_true(keywords.get("trust_remote_code")) or is_true(keywords.get("allow_pickle")):
                problems.append(f"{where}: trust_remote_code / allow_pickle")
    assert not problems, problems
    assert loads >= 2  # the scan sees the loads that exist (fine-tuning init, export-hf)


class Payload:
    """Pickles to `exec(<touch a file>)`: a checkpoint that holds it runs code when unpickled unsafely."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory, shared_data):
    """A real two-step pre-training run whose last.ckpt then gets a pickled object beside its weights."""
    root = tmp_path_factory.mktemp("poisoned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLMBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "plmbench-cache"))
        overrides = [*PRETRAIN, f"corpus.paths={slice_corpus(shared_data, root)}", "trainer.max_steps=2",
                     "trainer.checkpoint_every_n_steps=1"]
        run_pretraining(compose("pretrain", overrides), root / "run")
        last, marker = root / "run" / "checkpoints" / "last.ckpt", root / "code-ran"
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        checkpoint["plmbench"]["note"] = Payload(marker)
        torch.save(checkpoint, last)
        torch.load(last, map_location="cpu", weights_only=False)  # the payload is real: an unsafe load runs it
        assert marker.exists()
        marker.unlink()
        yield {"run": root / "run", "last": last, "marker": marker, "overrides": overrides}
        assert not marker.exists()


def test_resuming_from_a_poisoned_checkpoint_is_refused(poisoned_run):
    cfg = compose("pretrain", [*poisoned_run["overrides"], "trainer.max_steps=4"])
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"{poisoned_run['last']}: refused")) as caught:
        run_pretraining(cfg, poisoned_run["run"])
    assert "\n" not in str(caught.value) and "the Python object exec" in str(caught.value)
    assert not poisoned_run["marker"].exists()


def test_finetuning_from_a_poisoned_checkpoint_is_refused(poisoned_run):
    init = load_init(compose("finetune", ["task=glue/rte", f"init={poisoned_run['run']}"]))
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        init.load_weights(TaskModel(init.config, "classification", 2))
    assert not poisoned_run["marker"].exists()


def test_exporting_a_poisoned_checkpoint_is_refused(poisoned_run):
    from plmbench.commands.export_hf import load_checkpoint

    init = load_init(compose("finetune", ["task=glue/rte", f"init={poisoned_run['run']}"]))
    with pytest.raises(ValueError, match="not readable as a weights-only torch checkpoint"):
        load_checkpoint(TaskModel(init.config, "classification", 2), poisoned_run["last"])
    assert not poisoned_run["marker"].exists()


# ------------------------------------------------------------------------------------------ secrets and names


@pytest.fixture(scope="module")
def secret_sweep(tmp_path_factory, shared_data):
    """A one-cell sweep logged to W&B (offline) with keys in the environment and one passed as a config key."""
    root = tmp_path_factory.mktemp("secrets")
    space = Workspace(root / "space", slice_corpus(shared_data, root), tmp_path_factory.getbasetemp() /
                      "plmbench-cache", "secrets", steps=10, grid=False, logger="wandb")
    result = space.run(f"+logger.api_key={CONFIG_SECRET}", **SECRETS)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = re.search(r"W&B summary run: (\S+)", result.stdout)
    return space, Path(summary.group(1)).parent if summary else None


def holding_secrets(folder: Path, skip: Path | None = None) -> list[str]:
    needles = [value.encode() for value in (*SECRETS.values(), CONFIG_SECRET)]
    return [str(path) for path in folder.rglob("*") if path.is_file() and (skip is None or skip not in path.parents)
            and any(needle in path.read_bytes() for needle in needles)]


def test_secrets_never_reach_runs_results_or_wandb_runs(secret_sweep):
    space, summary = secret_sweep
    for folder in ("runs", "results", "wandb"):
        assert (space.root / folder).is_dir()
        assert holding_secrets(space.root / folder, skip=summary) == [], folder
    records = space.store.records()
    assert len(records) == 2 and all("api_key" not in r["config"]["logger"] for r in records)
    runs = list((space.root / "wandb").glob("offline-run-*"))
    assert len(runs) >= 3  # pre-training, fine-tuning and the summary: W&B really wrote


def test_secrets_never_reach_the_wandb_summary_run(secret_sweep):
    """The summary run is made by the table command, apart from the units' loggers: it too must not record the
    command line, where the secret is an override (plmbench.safety.wandb_settings: x_disable_meta)."""
    _, summary = secret_sweep
    assert summary is not None and summary.is_dir()
    assert list(summary.glob("*.wandb")) and list(summary.rglob("*.table.json"))  # W&B really wrote the run
    assert holding_secrets(summary) == []


def test_run_and_cell_directories_are_lineage_hashes(secret_sweep):
    space, _ = secret_sweep
    names = [path.name for kind in ("cells", "units") for path in (space.root / "runs" / kind).iterdir()]
    assert len(names) == 2 and all(HASH_NAME.fullmatch(name) for name in names), names
    assert sorted(p.name for p in (space.root / "runs").iterdir()) == ["cells", "units"]


@pytest.mark.parametrize("args,key", [
    (["sweep", "experiment=micro", "scale=smoke", "experiment.results=../../etc"], "experiment.results='../../etc'"),
    (["sweep", "experiment=micro", "scale=smoke", "experiment.results=/tmp/elsewhere"],
     "experiment.results='/tmp/elsewhere'"),
    (["table", "experiment=../../etc"], "experiment='../../etc'"),
])
def test_results_outside_the_results_directory_are_refused(args, key, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PLMBENCH_RESULTS", str(tmp_path / "a" / "b" / "results"))
    monkeypatch.setenv("PLMBENCH_RUNS", str(tmp_path / "runs"))
    with pytest.raises(SystemExit) as exit_info:
        cli(args)
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in error, error
    assert error.startswith(f"plmbench: error: {key}: must be a plain name"), error
    assert list(tmp_path.rglob("*")) == []  # nothing written anywhere
