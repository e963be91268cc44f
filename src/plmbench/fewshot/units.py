"""The few-shot unit of a sweep: one pre-trained causal LM cell x task x k x seed -> metrics (experiment gpt_shots).

The sweep's cell directory is a `plmbench pretrain` run (config.yaml, tokenizer/, checkpoints/last.ckpt). Settings
come from the optional `sweep.shots` node (defaults below, set by the experiment file); the task's rows come from the
same source, data_dir and cap as the fine-tuning units, so k-shot and fine-tuned scores share their questions.

  sweep:
    shots:
      ks: [0, 1, 8]         # zero-, one- and few-shot; prompts keep as many demonstrations as the context allows
      max_examples: null    # evaluated rows per split (null = fine-tuning's max_eval_examples, else all)
      style: inline         # plmbench corpora have no line breaks; gpt3 = GPT-3's one-field-per-line layout
      batch_size: 32        # (prompt, candidate) sequences per forward pass
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from tokenizers import Tokenizer

from plmbench.data.tokenizer import SpecialTokens, special_tokens
from plmbench.errors import UserError
from plmbench.fewshot.evaluate import evaluate_shots
from plmbench.lineage import unit_id
from plmbench.lit.loggers import build_logger, finished, log_final
from plmbench.lit.run_metrics import write_json_atomic
from plmbench.models.config import ModelConfig
from plmbench.objectives.clm import CausalLM
from plmbench.units import Cell, Unit, UnitKind, sweep_seeds
from plmbench.units.finetune import FinetuneUnits

log = logging.getLogger(__name__)
SHOTS_DEFAULTS = {"ks": [0, 1, 8], "max_examples": None, "style": "inline", "batch_size": 32}
RUN_FILES = ("config.yaml", "tokenizer/tokenizer.json", "checkpoints/last.ckpt")


class ShotsError(UserError):
    """A cell or setting the few-shot unit cannot use; the message names the path or key."""


def shots_settings(cfg: DictConfig) -> dict:
    given = OmegaConf.to_container(cfg.sweep.shots, resolve=True) if OmegaConf.select(cfg, "sweep.shots") else {}
    unknown = set(given) - set(SHOTS_DEFAULTS)
    if unknown:
        raise ShotsError(f"sweep.shots.{min(unknown)}: unknown key; allowed: {', '.join(SHOTS_DEFAULTS)}")
    settings = {**SHOTS_DEFAULTS, **given}
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in settings["ks"]):
        raise ShotsError(f"sweep.shots.ks={settings['ks']}: each k must be an integer >= 0")
    return settings


def load_causal_lm(run_dir: Path) -> tuple[CausalLM, Tokenizer, SpecialTokens, int]:
    """The CausalLM, tokenizer, special ids and trained context (data.max_seq_len) of a pre-training run."""
    run_dir = Path(run_dir)
    missing = [name for name in RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise ShotsError(f"{run_dir}: not a pre-training run (missing {', '.join(missing)})")
    run_cfg = OmegaConf.load(run_dir / "config.yaml")
    config = ModelConfig.from_mapping(run_cfg.model)
    if not config.causal:
        raise ShotsError(f"{run_dir}: model.causal=false; few-shot evaluation needs a causal LM (model=gpt)")
    model = CausalLM(config)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json"))
    context = min(int(OmegaConf.select(run_cfg, "data.max_seq_len", default=config.max_positions)),
                  config.max_positions)
    return model, tokenizer, special_tokens(tokenizer), context


def run_shots_unit(ft_cfg: DictConfig, cell_dir: Path, k: int, seed: int, out_dir: Path | None = None,
                   logger_meta: dict | None = None) -> dict:
    """Evaluate the cell's causal LM on ft_cfg.task with k demonstrations drawn with `seed`.

    `ft_cfg` is the composed `finetune` config of the same unit's fine-tuning run (the sweep composes it with
    task=<task>, init=<cell dir> and the task source): its task node, data_dir and max_eval_examples are used, so
    the k-shot rows are the fine-tuned rows. Returns evaluate_shots' metrics ("best", "best_by_split", "primary",
    "prompts", ...); with out_dir, also writes them to out_dir/metrics.json and logs them to ft_cfg.logger (a W&B
    run of job type fewshot, finished whatever happens).
    """
    from plmbench.data.tasks import load_task

    settings = shots_settings(ft_cfg)
    task_cfg = OmegaConf.to_container(ft_cfg.task, resolve=True)
    model, tokenizer, special, context = load_causal_lm(Path(cell_dir))
    if torch.cuda.is_available():
        model = model.cuda()
    data = load_task(task_cfg, OmegaConf.select(ft_cfg, "data_dir"))
    cap = settings["max_examples"] if settings["max_examples"] is not None else \
        OmegaConf.select(ft_cfg, "max_eval_examples")
    meta, name = logger_meta or {}, f"k{int(k)}-seed{int(seed)}"
    logger = False if out_dir is None else build_logger(
        OmegaConf.to_container(ft_cfg.logger, resolve=True), Path(out_dir) / "runs" / name,
        f"{meta.get('name', Path(out_dir).name)}-{name}", OmegaConf.to_container(ft_cfg, resolve=True),
        group=meta.get("group"), job_type="fewshot", tags=meta.get("tags"))
    with finished(logger):
        metrics = evaluate_shots(model, tokenizer, special, task_cfg, data, k=int(k), seed=int(seed),
                                 max_examples=cap, style=settings["style"], batch_size=int(settings["batch_size"]),
                                 context=context)  # the pre-training length: longer positions were never trained
        log_final(logger, {"k": int(k), "best": metrics["best"]})
    metrics["init"] = {"kind": "pretrain_run", "path": str(cell_dir)}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(out_dir) / "metrics.json", json.loads(json.dumps(metrics, default=str)))
    return metrics


class ShotsUnits(UnitKind):
    """One unit per task x k x seed; its id extends the same task's fine-tuning unit id with k and the settings
    (style, caps), so changing them reruns it."""

    def units(self, cell: Cell) -> list[Unit]:
        settings = shots_settings(cell.cfg)
        spec = {key: value for key, value in settings.items() if key != "ks"}
        finetune = FinetuneUnits()
        return [Unit(self.name, unit_id(finetune.unit_id(cell, task, seed), {"shots": int(k)}, seed, spec), task,
                     seed, axes={"shots": str(k)}, fields={"shots": int(k)})
                for task in cell.cfg.sweep.tasks for seed in sweep_seeds(cell.cfg) for k in settings["ks"]]

    def run(self, unit: Unit, cell: Cell, unit_cfg: DictConfig, out_dir: Path, meta: dict) -> dict:
        return run_shots_unit(unit_cfg, cell.dir, unit.fields["shots"], unit.seed, out_dir=out_dir, logger_meta=meta)
