"""A truncated or foreign checkpoint is one line naming its path, before any data is prepared (issue 15): torch's
own error names no file and comes after minutes of feature building."""

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from tokenizers import Tokenizer
from tokenizers.models import WordLevel

from plmbench.configuration import compose
from plmbench.errors import UserError, check_checkpoint_file, load_weights_only


def run_dir_with(tmp_path, checkpoint: bytes):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "tokenizer").mkdir()
    OmegaConf.save(compose("pretrain", ["scale=smoke"]), run / "config.yaml")
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "the": 5}
    Tokenizer(WordLevel(vocab, unk_token="[UNK]")).save(str(run / "tokenizer" / "tokenizer.json"))
    (run / "checkpoints" / "last.ckpt").write_bytes(checkpoint)
    return run


def finetune(run, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PLMBENCH_RUNS": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, "-m", "plmbench", "finetune", f"init={run}", "task=glue/sst2",
                           "task.source=proxy", "logger=none"], check=False, capture_output=True, text=True, env=env, timeout=300)


def test_finetuning_from_a_truncated_checkpoint_fails_before_data_with_its_path(tmp_path):
    run = run_dir_with(tmp_path, b"PK\x03\x04" + b"\0" * 500)  # the head of a zip whose end was never written
    done = finetune(run, tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2, done.stderr[-2000:]
    assert last.startswith(f"plmbench: error: {run / 'checkpoints' / 'last.ckpt'}: not a readable checkpoint"), last
    assert "Traceback" not in done.stderr and "features" not in done.stderr
    (run / "tokenizer" / "tokenizer.json").write_text("{}")  # a damaged tokenizer is named too
    done = finetune(run, tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("plmbench: error: ") and f"{run / 'tokenizer' / 'tokenizer.json'}: not a readable" in last


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_loading_names_the_file(tmp_path, content):
    path = tmp_path / "last.ckpt"
    path.write_bytes(content)
    with pytest.raises(UserError, match=f"^{path}: not a readable checkpoint"):
        check_checkpoint_file(path)
    with pytest.raises(UserError, match=f"^{path}: not a readable checkpoint"):
        load_weights_only(path)


def test_a_full_disk_anywhere_in_a_unit_is_recognised_and_stops_the_sweep():
    """The sweep runner re-raises these (exit 2, one line) instead of recording one failed unit after another;
    measured on a 3 MB tmpfs: exit 2 naming last.ckpt and ENOSPC, the step-50 checkpoint whole, and the relaunch
    with space recorded each of the 4 units once."""
    import errno

    from plmbench.errors import DiskFullError, disk_full
    from plmbench.lit.checkpoints import CheckpointWriteError

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as cause:
            raise RuntimeError("writing metrics.json failed") from cause
    except RuntimeError as wrapped:
        found = disk_full(wrapped)
    assert isinstance(found, DiskFullError) and "relaunch the same command" in str(found)
    assert disk_full(CheckpointWriteError("last.ckpt: cannot write the checkpoint of step 3: (ENOSPC)")) is not None
    assert disk_full(ValueError("a NaN loss")) is None
