"""One Trainer builder: cfg.callbacks built from `_target_`, so that a user adds a callback in YAML (issue 14)."""

from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ProgressBar, RichProgressBar
from pytorch_lightning.loggers import CSVLogger

from plmbench.configuration import compose
from plmbench.lit.pretraining import pretraining_trainer
from plmbench.lit.trainer import build_trainer

CPU = ["scale=smoke", "trainer.accelerator=cpu", "impl.precision=32-true"]
EARLY_STOP = ["+callbacks.early_stop._target_=pytorch_lightning.callbacks.EarlyStopping",
              "+callbacks.early_stop.monitor=val/loss"]


def kinds(trainer) -> set[type]:
    return {type(c) for c in trainer.callbacks}


def test_a_callback_added_in_yaml_reaches_the_trainer(tmp_path):
    cfg = compose("pretrain", CPU + EARLY_STOP + ["trainer.progress_bar=rich"])
    trainer = pretraining_trainer(cfg, tmp_path, [], CSVLogger(str(tmp_path)))
    assert {EarlyStopping, LearningRateMonitor, RichProgressBar} <= kinds(trainer)
    assert trainer.checkpoint_callback is not None and trainer.max_steps == cfg.trainer.max_steps


def test_no_logger_no_lr_monitor_and_progress_bar_none_means_none(tmp_path):
    cfg = compose("finetune", CPU + ["trainer.progress_bar=none"])
    trainer = build_trainer(cfg, tmp_path, False, max_epochs=1)
    assert not any(isinstance(c, (LearningRateMonitor, ProgressBar)) for c in trainer.callbacks)
    assert trainer.progress_bar_callback is None


def test_callbacks_none_drops_every_config_callback(tmp_path):
    cfg = compose("pretrain", CPU + ["callbacks=none"])
    trainer = build_trainer(cfg, tmp_path, CSVLogger(str(tmp_path)), max_steps=1)
    assert not any(isinstance(c, (LearningRateMonitor, ProgressBar)) for c in trainer.callbacks)
