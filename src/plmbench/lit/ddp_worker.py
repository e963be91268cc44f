"""Entry point of a multi-device pre-training run, free of Hydra.

Lightning's DDP launcher starts the other ranks by re-running the current command line. Under a Hydra app that
re-enters Hydra in every rank (new run directories; under multirun, the whole sweep again): the known clash of
Hydra multirun with DDP. plmbench avoids it by running multi-device pre-training through this module, whose
command line is just the resolved config file and the run directory, so every rank re-runs exactly this job.

    python -m plmbench.lit.ddp_worker <run_dir>/config.yaml <run_dir>
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def world_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.devices
    per_node = int(devices) if str(devices).isdigit() else 1  # "auto"/-1 on one device count as 1 here
    return per_node * int(cfg.trainer.num_nodes)


def launched_by_cluster() -> bool:
    """SLURM (srun) and torchrun start every rank themselves: then the current process is already a rank."""
    import os

    return "LOCAL_RANK" in os.environ or ("SLURM_NTASKS" in os.environ and int(os.environ["SLURM_NTASKS"]) > 1)


def run_in_worker(cfg: DictConfig, run_dir: Path) -> dict:
    """Runs the pre-training in a fresh Hydra-free process that Lightning can relaunch per rank."""
    import json

    from plmbench.lit.loggers import save_config

    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "launch_config.yaml"
    save_config(cfg, config_path)  # secrets dropped: nothing in a run reads them
    subprocess.run([sys.executable, "-m", "plmbench.lit.ddp_worker", str(config_path), str(run_dir)], check=True)
    return json.loads((run_dir / "metrics.json").read_text())


def main() -> None:
    from plmbench.lit.pretraining import run_pretraining

    config_path, run_dir = sys.argv[1], Path(sys.argv[2])
    run_pretraining(OmegaConf.load(config_path), run_dir, in_worker=True)


if __name__ == "__main__":
    main()
