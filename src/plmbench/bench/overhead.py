"""How much of a pre-training run's wall time is spent outside its training steps, per sweep cell.

RunMetrics (lit/run_metrics.py) writes `wall_seconds` (fit start to end, summed across resumptions) and
`train_step_seconds` (inside training batches only) to each cell's metrics.json; the rest is data loading,
validation, checkpointing and logging. A share near 0 means the steps dominate, so step speed is what matters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)


def _label(run_dir: Path) -> str:
    """model/objective/sharing of a cell from its config.yaml, when there is one."""
    config = run_dir / "config.yaml"
    if not config.is_file():
        return ""
    cfg = yaml.safe_load(config.read_text()) or {}
    model, objective = cfg.get("model") or {}, cfg.get("objective") or {}
    parts = [model.get("family"), objective.get("name"), model.get("sharing") and f"sharing={model['sharing']}",
             model.get("embedding_size") and f"E={model['embedding_size']}"]
    return " ".join(str(p) for p in parts if p)


def overhead_report(runs_dir: Path | str) -> dict:
    """{"runs": [{run, label, wall_seconds, train_step_seconds, outside_share}], "skipped": n, "median_share"}.

    Every metrics.json under `runs_dir` with both times counts (pre-training cells); others, such as fine-tuning
    units, which time their steps differently, are skipped and counted.
    """
    root = Path(runs_dir)
    rows, skipped = [], 0
    for path in sorted(root.rglob("metrics.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            log.warning("%s: unreadable (%s); skipped", path, error)
            skipped += 1
            continue
        wall, steps = metrics.get("wall_seconds"), metrics.get("train_step_seconds")
        if not isinstance(wall, (int, float)) or not isinstance(steps, (int, float)) or wall <= 0:
            skipped += 1
            continue
        rows.append({"run": str(path.parent.relative_to(root)), "label": _label(path.parent),
                     "wall_seconds": wall, "train_step_seconds": steps, "outside_share": (wall - steps) / wall})
    shares = sorted(row["outside_share"] for row in rows)
    median = (shares[len(shares) // 2] + shares[(len(shares) - 1) // 2]) / 2 if shares else None
    return {"runs_dir": str(root), "runs": rows, "skipped": skipped, "median_share": median}
