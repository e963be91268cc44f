"""Knowledge distillation of any plmbench teacher into smaller students (DistilBERT, TinyBERT).

    students.py          student shapes, layer maps, DistilBERT's initialisation from teacher layers
    attention_scores.py  a backbone forward that also returns every layer's hidden states and attention scores
    losses.py            DistilBERT's and TinyBERT's loss terms
    lit.py               LightningModules: general distillation (pre-training corpus), task-specific distillation
    run.py               run_distillation(cfg, run_dir): a teacher directory in, a student run directory out
    sweep.py             `plmbench sweep experiment=distillation`: teacher vs students, end to end
    table.py             results/distillation/table.{md,csv,png}
"""

from plmbench.errors import UserError


class DistillError(UserError):
    """A distillation setting, teacher or student shape that cannot work; the message names the key or path."""
