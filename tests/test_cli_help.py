"""`plmbench <command> --help` and `--cfg job` answer for every command (they ended in a Hydra lexer or override
error): --help prints what the command does and, for a command with a Hydra config, each config group with its
options and the command's choice; --cfg job prints the config the command would run with; nothing runs."""

import os
import subprocess
import sys

import pytest
import yaml

from plmbench.cli import COMMANDS, main
from plmbench.configuration import config_options

# Arguments each command needs beside the flag (table reads an experiment's store; gpu-check's table5 part reads
# a corpus file that a checkout without ../shared/data lacks)
NEEDS = {"table": ["experiment=albert"], "gpu-check": ["parts=mfu"], "export-hf": ["out=/nowhere"]}
HYDRA_COMMANDS = ("describe", "pretrain", "finetune", "sweep", "distill", "export-hf")


def run_cli(args: list[str], capsys) -> str:
    assert main(args) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_says_what_the_command_does(command, capsys):
    out = run_cli([command, *NEEDS.get(command, []), "--help"], capsys)
    assert f"plmbench {command}" in out
    if command in HYDRA_COMMANDS:
        assert "config groups" in out
        lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
        for group in ("model", "size", "sharing", "embedding", "objective", "corpus", "logger", "scale",
                      "experiment", "task", "hydra/launcher"):
            assert group in lines, (group, out)
            for option in config_options(group):  # every option of the group, from its files
                assert option in lines[group], (group, option)


def test_help_marks_the_choice_of_the_overrides_and_lists_a_users_own_options(tmp_path, monkeypatch, capsys):
    (tmp_path / "embedding").mkdir()
    (tmp_path / "embedding" / "e256.yaml").write_text("# @package model\nembedding_size: 256\n")
    monkeypatch.setenv("PLMBENCH_CONFIG_PATH", str(tmp_path))
    out = run_cli(["pretrain", "model=bert", "sharing=all", "--help"], capsys)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert "bert*" in lines["model"] and "albert*" not in lines["model"]
    assert "all*" in lines["sharing"] and "none*" not in lines["sharing"]
    assert "e256" in lines["embedding"]  # a user's config folder (PLMBENCH_CONFIG_PATH) counts
    assert "basic* (Hydra's)" in lines["hydra/launcher"] and "slurm" in lines["hydra/launcher"]
    assert str(tmp_path) in out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cfg_job_prints_the_config_the_command_would_run_with(command, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: no run directory, no outputs/
    overrides = {"describe": ["model=bert", "size=tiny"], "pretrain": ["trainer.max_steps=7"],
                 "finetune": ["task=glue/sst2"], "sweep": ["experiment=albert_table4"],
                 "distill": ["+distill=distilbert"]}.get(command, [])
    out = run_cli([command, *NEEDS.get(command, []), *overrides, "--cfg", "job"], capsys)
    cfg = yaml.safe_load(out)
    assert isinstance(cfg, dict) and "hydra" not in cfg
    if command in HYDRA_COMMANDS:
        assert {"model", "trainer", "logger"} <= set(cfg)
    expected = {"describe": lambda: cfg["model"]["family"] == "bert",
                "pretrain": lambda: cfg["trainer"]["max_steps"] == 7,
                "finetune": lambda: cfg["task"]["name"] == "sst2",
                "sweep": lambda: cfg["experiment"]["name"] == "albert_table4",
                "distill": lambda: cfg["distill"]["kind"] == "distilbert",
                "export-hf": lambda: "out" not in cfg,  # its own keys are not config overrides
                "table": lambda: cfg["experiment"] == "albert" and cfg["wandb"] is False,
                "bench": lambda: cfg["device"] == "cpu" and cfg["overrides"] == [],
                "gpu-check": lambda: cfg["parts"] == "mfu",
                "data": lambda: cfg == {"force": False}}[command]
    assert expected(), out
    assert list(tmp_path.iterdir()) == []


def test_cfg_hydra_and_resolve(capsys):
    hydra_part = yaml.safe_load(run_cli(["pretrain", "--cfg", "hydra"], capsys))
    assert "run" in hydra_part and "runtime" in hydra_part
    resolved = yaml.safe_load(run_cli(["pretrain", "logger=wandb", "--cfg", "job", "--resolve"], capsys))
    assert "${" not in str(resolved["logger"]["dir"])


def test_a_bad_cfg_part_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["pretrain", "--cfg", "everything"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--cfg everything: allowed: job, hydra, all" in err[0]


def test_pretrain_help_through_the_installed_command(tmp_path):
    """As a user types it: a real process, no Hydra lexer error, exit 0."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    result = subprocess.run([sys.executable, "-m", "plmbench", "pretrain", "--help"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "config groups" in result.stdout and "sharing" in result.stdout and result.stderr.strip() == ""
    assert list(tmp_path.iterdir()) == []


def test_the_slurm_launcher_composes_for_the_distillation_sweep(capsys):
    # One harness: distillation cells go to SLURM like every other sweep's (hydra-submitit-launcher, a dev extra).
    out = run_cli(["sweep", "experiment=distillation", "scale=smoke", "hydra/launcher=slurm",
                   "hydra.launcher.partition=gpu", "--cfg", "hydra"], capsys)
    launcher = yaml.safe_load(out)["launcher"]  # --cfg hydra prints the hydra node itself
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher") and launcher["partition"] == "gpu"
