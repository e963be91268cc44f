"""Trainer settings this machine cannot run are one line before any data (issue 15 WEAK): `accelerator=gpu`
without a GPU was a Lightning traceback after data preparation; fp16 on a CPU silently ran bf16 under an fp16 id."""

import os
import subprocess
import sys

import pytest
import torch

from plmbench.lit.machine import check_machine
from plmbench.models.config import ConfigError

needs_cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what a machine without a GPU refuses")


@needs_cpu_only
def test_a_gpu_run_on_a_cpu_machine_is_refused_before_data(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PLMBENCH_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, "-m", "plmbench", "pretrain", "scale=smoke", "logger=none",
                           "trainer.accelerator=gpu", f"hydra.run.dir={tmp_path / 'run'}"],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "plmbench: error: trainer.accelerator=gpu: this machine has no CUDA GPU")
    assert "pre-training data" not in done.stderr and "Traceback" not in done.stderr


@needs_cpu_only
def test_fp16_on_cpu_is_refused_and_what_cpus_run_passes():
    with pytest.raises(ConfigError, match=r"^impl.precision=16-mixed: fp16 needs a GPU"):
        check_machine("auto", 1, "16-mixed")
    check_machine("cpu", 2, "32-true")  # DDP over CPU processes is a legitimate (test) setting
    check_machine("auto", 1, "bf16-mixed")
