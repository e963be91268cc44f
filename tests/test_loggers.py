"""Loggers built from the logger config's `_target_` (issue 14): each conf/logger option, a Lightning logger class
named in YAML, and a logger that cannot start (CSV instead, never a failed run)."""

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pytorch_lightning.loggers import CSVLogger

from plmbench.configuration import compose
from plmbench.lit import loggers


def logger_config(option: str, tmp_path) -> dict:
    cfg = compose("pretrain", [f"logger={option}", *([f"logger.dir={tmp_path / 'wb'}"] if option == "wandb" else [])])
    return OmegaConf.to_container(cfg.logger, resolve=True)


@pytest.mark.parametrize(("option", "kind"), [("wandb", "WandbLogger"), ("csv", "CSVLogger"), ("none", "bool")])
def test_each_logger_option_builds_its_logger(option, kind, tmp_path):
    logger = loggers.build_logger(logger_config(option, tmp_path), tmp_path / "run", "unit", {"a": 1})
    try:
        assert type(logger).__name__ == kind
        if option == "wandb":
            assert logger.experiment.settings.mode == "offline"  # offline unless the user asks and can
            assert logger._log_model is False  # checkpoints as artifacts: opt-in (logger.log_model)
        if option == "csv":
            assert Path(logger.log_dir) == tmp_path / "run" / "csv"
    finally:
        loggers.finish_run(logger)


def test_a_lightning_logger_class_is_given_the_run_directory_and_name(tmp_path):
    logger = loggers.build_logger({"_target_": "pytorch_lightning.loggers.CSVLogger", "version": 3},
                                  tmp_path / "run", "unit", {})
    assert isinstance(logger, CSVLogger) and Path(logger.log_dir) == tmp_path / "run" / "unit" / "version_3"


def test_a_logger_that_cannot_start_logs_to_csv_and_says_why(tmp_path, caplog):
    # save_dir is the run's fact and the node's key at once: the class refuses the call
    logger = loggers.build_logger({"_target_": "pytorch_lightning.loggers.CSVLogger", "save_dir": "elsewhere"},
                                  tmp_path / "run", "unit", {})
    assert isinstance(logger, CSVLogger) and Path(logger.log_dir) == tmp_path / "run" / "csv"
    assert "falling back to CSV" in caplog.text and "save_dir" in caplog.text


def test_a_key_the_logger_does_not_take_is_ignored_and_named_a_credential_silently(tmp_path, caplog):
    # +logger.api_key=... (W&B reads its key from the environment) must not cost the run its W&B logger
    node = {"_target_": "plmbench.lit.loggers.csv_logger", "no_such_option": 1, "api_key": "secret-value"}
    logger = loggers.build_logger(node, tmp_path / "run", "unit", {})
    assert isinstance(logger, CSVLogger) and "falling back" not in caplog.text
    assert "takes no no_such_option; ignored" in caplog.text and "api_key" not in caplog.text


def test_a_target_that_does_not_import_is_one_line():
    with pytest.raises(ValueError, match=r"logger._target_='no.such.Logger': cannot be imported") as error:
        loggers.build_logger({"_target_": "no.such.Logger"}, "run", "unit", {})
    assert "\n" not in str(error.value)


def test_log_model_reaches_lightnings_wandb_logger(tmp_path):
    cfg = compose("pretrain", ["logger=wandb", f"logger.dir={tmp_path / 'wb'}", "logger.log_model=all"])
    logger = loggers.build_logger(OmegaConf.to_container(cfg.logger, resolve=True), tmp_path / "run", "unit", {})
    try:
        assert logger._log_model == "all"  # every saved checkpoint becomes a W&B artifact
    finally:
        loggers.finish_run(logger)
