"""Entry point of a multi-device pre-training run, free of Hydra.

Lightning's DDP launcher starts the other ranks by re-running the current command line. Under a Hydra app that
re-enters Hydra in every rank (new run directories; under multirun, the whole sweep again): the known clash of
Hydra multirun with DDP. plmbench avoids it by running multi-device pre-training through this module, whose
command line is just the resolved config file and the run directory, so every rank re-runs exactly this job.

    python -m plmbench.lit.ddp_worker <run_dir>/config.yaml <run_dir>

plmbench.lit.pretraining.run_in_worker starts it; this module only reads the command line and runs the job.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf


def main() -> None:
    from plmbench.lit.pretraining import run_pretraining

    config_path, run_dir = sys.argv[1], Path(sys.argv[2])
    run_pretraining(OmegaConf.load(config_path), run_dir, in_worker=True)


if __name__ == "__main__":
    main()
