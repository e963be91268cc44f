"""Numeric settings are checked by key before any data is read (issue 15's WEAK list): a real `plmbench pretrain`
or `describe` process exits 2 with one line naming the key, the value and what is allowed."""

import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from plmbench.numbers import FINETUNING, PRETRAINING, SettingError, check_numbers


@pytest.mark.parametrize(("override", "key"), [("optim.lr=fast", "optim.lr='fast'"), ("optim.lr=-1", "optim.lr=-1"),
                                               ("trainer.max_steps=abc", "trainer.max_steps='abc'"),
                                               ("trainer.max_steps=1.5", "trainer.max_steps=1.5"),
                                               ("optim.warmup_ratio=2", "optim.warmup_ratio=2")])
def test_a_bad_number_is_one_line_naming_its_key_before_any_data(override, key, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PLMBENCH_RUNS": str(tmp_path / "runs")}
    for command in (["pretrain", f"hydra.run.dir={tmp_path / 'run'}"], ["describe"]):
        done = subprocess.run([sys.executable, "-m", "plmbench", *command, "scale=smoke", "logger=none", override],
                              check=False, capture_output=True, text=True, env=env, timeout=300)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr[-2000:]
        assert lines[-1].startswith(f"plmbench: error: {key}: must be"), lines[-1]
        assert "Traceback" not in done.stderr and "pre-training data" not in done.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_good_values_and_grids_pass_and_each_grid_value_is_checked():
    check_numbers(OmegaConf.create({"optim": {"lr": 2e-3, "warmup_ratio": 0.06}, "trainer": {"max_steps": 0},
                                    "seed": 3}), PRETRAINING)
    check_numbers(OmegaConf.create({"task": {"lr": [1e-4, 3e-4], "batch_size": 32}}), FINETUNING)
    with pytest.raises(SettingError, match=r"^task.lr\[1\]=0.0: must be a number > 0$"):
        check_numbers(OmegaConf.create({"task": {"lr": [1e-4, 0.0]}}), FINETUNING)
    with pytest.raises(SettingError, match=r"^trainer.batch_size=True: must be an integer >= 1$"):
        check_numbers(OmegaConf.create({"trainer": {"batch_size": True}}), PRETRAINING)
