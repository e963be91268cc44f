"""The `plmbench` command: a table of contents of what the harness does.

    plmbench describe   <overrides>   parameter counts and FLOPs (one line per cell with experiment=...)
    plmbench pretrain   <overrides>   one pre-training run
    plmbench finetune   <overrides>   one fine-tuning run (task=..., init=...)
    plmbench sweep      <overrides>   an experiment's grid: pre-train, fine-tune, evaluate, tabulate
    plmbench table      <overrides>   render results/<experiment>/table.{md,csv,png}
    plmbench bench      <overrides>   training-step throughput against Hugging Face
    plmbench gpu-check  <key=value>   MFU, bf16/flash/compile equivalence and a short Table 5 sweep in one report
    plmbench export-hf  <overrides> [ckpt=PATH] out=DIR
    plmbench distill    +distill=<distilbert|tinybert> distill.teacher=<run dir | HF folder>
    plmbench data                     build the embedded offline corpus and proxy tasks

Configuration errors are reported on one line naming the key, before any compute is spent.
`plmbench <command> --help` prints what a command does and its config groups with their options;
`plmbench <command> --cfg job` prints the config it would run with (--cfg hydra|all, --resolve), running nothing.
"""

from __future__ import annotations

import importlib
import sys
import warnings

COMMANDS = {
    "describe": "plmbench.commands.describe:main",
    "pretrain": "plmbench.commands.pretrain:main",
    "finetune": "plmbench.commands.finetune:main",
    "sweep": "plmbench.commands.sweep:main",
    "table": "plmbench.commands.table:main",
    "bench": "plmbench.commands.bench:main",
    "gpu-check": "plmbench.commands.gpu_check:main",
    "export-hf": "plmbench.commands.export_hf:main",
    "data": "plmbench.commands.data:main",
    "distill": "plmbench.distill.run:main",
}


def _load(target: str):
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command, overrides = argv[0], argv[1:]
    # Keep error output to one line: Lightning 2.6 warns about a torch pytree deprecation on every run.
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
    if command not in COMMANDS:
        print(f"plmbench: unknown command {command!r}; allowed: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from plmbench.commands.usage import answer_flags
    from plmbench.errors import report_user_errors
    from plmbench.termination import stop_on_sigterm

    with stop_on_sigterm(command), report_user_errors():  # SIGTERM: exit 143 and one line, never a silent 0
        module = COMMANDS[command].split(":")[0]
        if answer_flags(command, module, overrides):  # --help, --cfg job: printed, nothing run
            return 0
        _load(COMMANDS[command])(overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
