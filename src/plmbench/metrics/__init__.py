"""Exact task metrics as local `evaluate` modules, loaded by path so that no metric ever comes from the hub.

Each module lives in metrics/<name>/<name>.py and stands alone (evaluate copies the script into its modules cache and
imports it there), so the modules repeat a few lines rather than import from plmbench.
"""

from pathlib import Path

import evaluate

from plmbench.errors import UserError

_HERE = Path(__file__).resolve().parent

GLUE_TASKS = (
    "cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "mnli_matched", "mnli_mismatched", "qnli", "rte", "wnli", "ax",
)  # fmt: skip

# Metric name -> the configs it accepts; (None,) means it takes no config.
CONFIGS: dict[str, tuple[str | None, ...]] = {
    "glue": GLUE_TASKS,
    "squad": (None,),
    "squad_v2": (None,),
    "race": (None,),
    "seqeval": (None,),
    "accuracy": (None,),
}

# Headline key per task, as the GLUE leaderboard orders each task's metrics: for the tasks it scores twice it lists
# F1 before accuracy (MRPC, QQP) and Pearson before Spearman (STS-B), and it scores the AX diagnostic by Matthews
# correlation (R3). The papers differ (BERT quotes STS-B Spearman, ELECTRA MRPC/QQP accuracy); tables that follow a
# paper read the other key, since every module returns both. SQuAD headlines F1 (EM is the second column); NER
# the micro-averaged entity F1.
PRIMARY: dict[str, str] = {
    "cola": "matthews_correlation",
    "sst2": "accuracy",
    "mrpc": "f1",
    "stsb": "pearson",
    "qqp": "f1",
    "mnli": "accuracy",
    "mnli_matched": "accuracy",
    "mnli_mismatched": "accuracy",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "ax": "matthews_correlation",
    "squad": "f1",
    "squad_v2": "f1",
    "race": "accuracy",
    "seqeval": "overall_f1",
    "accuracy": "accuracy",
}


def load(name: str, config: str | None = None) -> evaluate.EvaluationModule:
    """The local metric `name` (for glue, `config` is the task), held in memory: nothing is read from the network."""
    if name not in CONFIGS:
        raise UserError(f"unknown metric {name!r}; allowed: {', '.join(CONFIGS)}")
    if config not in CONFIGS[name]:
        allowed = ", ".join(c for c in CONFIGS[name] if c) or "no config"
        raise UserError(f"metric {name!r} does not take config {config!r}; allowed: {allowed}")
    script = _HERE / name / f"{name}.py"
    return evaluate.load(str(script), config_name=config, keep_in_memory=True)
