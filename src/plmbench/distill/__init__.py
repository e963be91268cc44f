"""Knowledge distillation of any plmbench teacher into smaller students (DistilBERT, TinyBERT).

    students.py          student shapes, layer maps, DistilBERT's initialisation from teacher layers
    attention_scores.py  a backbone forward that also returns every layer's hidden states and attention scores
    losses.py            DistilBERT's and TinyBERT's loss terms
    lit.py               LightningModules: general distillation (pre-training corpus), task-specific distillation
    run.py               run_distillation(cfg, run_dir): a teacher directory in, a student run directory out;
                         train_student: a sweep cell's training when the cell is a student
    task_units.py        the unit kind that distils a student on each task from the fine-tuned teacher (TinyBERT)
    throughput.py        the unit kind that times a backbone's inference beside its teacher's
"""

from plmbench.errors import UserError


class DistillError(UserError):
    """A distillation setting, teacher or student shape that cannot work; the message names the key or path."""
