"""The frozen mention probe (task.readout=mention, task.frozen): which tokens it reads, what it trains, its config."""

import pytest
import torch
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.data.features import FeatureCollator, mention_mask
from plmbench.data.tokenizer import SpecialTokens
from plmbench.lit.finetune_module import FinetuneModule
from plmbench.lit.finetuning import FinetuneError, check_readout, learning_rates
from plmbench.models.config import ModelConfig
from plmbench.models.task_heads import MentionClassificationHead, TaskModel

TINY = ModelConfig(vocab_size=200, hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, max_positions=64)
TEXT = "The old [horseman] rode on."
#       0123456789012345678901234567
OFFSETS = [(0, 3), (4, 7), (8, 9), (9, 14), (14, 17), (17, 18), (19, 23), (24, 26), (26, 27)]  # 'horse' '##man'


def test_the_mask_covers_the_tokens_between_the_markers_only():
    mask = mention_mask(TEXT, OFFSETS, len(OFFSETS) + 2, ("[", "]"))
    assert mask == [0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]  # [CLS] The old [ horse ##man ] rode on . [SEP]


def test_a_mention_lost_to_truncation_or_never_marked_reads_cls():
    kept = 4  # [CLS] The old [ [SEP]: the mention's tokens were cut
    assert mention_mask(TEXT, OFFSETS[:kept - 2 + 1], kept, ("[", "]")) == [1, 0, 0, 0]
    assert mention_mask("No marker here.", [(0, 2), (3, 9)], 4, ("[", "]")) == [1, 0, 0, 0]


def test_the_collator_pads_the_mask_with_zeros():
    special = SpecialTokens(pad=0, unk=1, cls=2, sep=3, mask=4)
    rows = [{"input_ids": [2, 9, 3], "token_type_ids": [0, 0, 0], "mention_mask": [0, 1, 0], "labels": 1},
            {"input_ids": [2, 9, 8, 7, 3], "token_type_ids": [0] * 5, "mention_mask": [0, 0, 1, 1, 0], "labels": 0}]
    batch = FeatureCollator(special)(rows)
    assert batch["mention_mask"].tolist() == [[0, 1, 0, 0, 0], [0, 0, 1, 1, 0]]


def test_the_head_averages_the_mention_and_ignores_every_other_position():
    torch.manual_seed(0)
    head = MentionClassificationHead(TINY, 5).eval()
    hidden, mask = torch.randn(2, 6, 32), torch.tensor([[0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0]])
    logits = head(hidden, torch.ones(2, 6), mask)
    expected = head.classifier(torch.stack([hidden[0, 1:3].mean(0), hidden[1, 3]]))
    torch.testing.assert_close(logits, expected)
    other = hidden.clone()
    other[:, 0] += 5.0  # [CLS] and the rest of the sentence are not read
    other[:, 4:] -= 3.0
    torch.testing.assert_close(head(other, torch.ones(2, 6), mask), logits)


def frozen_module(frozen: bool) -> FinetuneModule:
    task = {"kind": "classification", "num_labels": 3, "readout": "mention", "frozen": frozen,
            "weight_decay": 0.0, "warmup_ratio": 0.0}
    return FinetuneModule(TINY, task, lr=1e-2, total_steps=10, eval_splits=[], metric=None, primary="accuracy")


@pytest.mark.parametrize("frozen", [True, False])
def test_a_frozen_probe_trains_the_head_and_nothing_else(frozen):
    torch.manual_seed(0)
    module = frozen_module(frozen)
    optimizer = module.configure_optimizers()["optimizer"]
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    ids = torch.randint(5, 200, (4, 8))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids),
             "mention_mask": torch.zeros_like(ids).index_fill(1, torch.tensor([2, 3]), 1),
             "labels": torch.tensor([0, 1, 2, 1])}
    module.model.train()
    module.on_train_epoch_start()
    assert module.model.backbone.training is not frozen  # a fixed encoder runs without dropout
    module.model(batch)["loss"].backward()
    optimizer.step()
    after = module.model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert {k for k in moved if k.startswith("head.")} == {"head.classifier.weight", "head.classifier.bias"}
    assert bool({k for k in moved if k.startswith("backbone.")}) is not frozen


def test_the_probe_task_keeps_its_own_rate_whatever_the_scale_sets():
    cfg = compose("finetune", ["task=wordnet/supersense_probe", "task.lr=3e-4"])  # conf/scale/cpu.yaml's override
    assert learning_rates(cfg.task) == [1e-3]
    assert (cfg.task.readout, list(cfg.task.mention_markers), cfg.task.frozen) == ("mention", ["[", "]"], True)
    check_readout(cfg.task)


@pytest.mark.parametrize("key, value, message", [
    ("readout", "pooled", "task.readout='pooled': allowed values are summary, mention"),
    ("mention_markers", ["["], "task.mention_markers=['[']: give the two strings around a mention"),
    ("frozen", "yes", "task.frozen='yes': must be true or false"),
])
def test_bad_probe_settings_fail_in_one_line_naming_the_key(key, value, message):
    task = OmegaConf.merge(compose("finetune", ["task=wordnet/supersense_probe"]).task, {key: value})
    with pytest.raises(FinetuneError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        check_readout(task)


def test_a_mention_readout_needs_a_classification_task():
    with pytest.raises(ValueError, match="task.readout='mention'"):
        TaskModel(TINY, "regression", 1, readout="mention")


@pytest.mark.parametrize("task, extra, epochs", [
    ("wordnet/supersense_probe", [], 30),  # the cpu width's budget (3 epochs) is for fine-tuning, not a probe
    ("wordnet/supersense", [], 3),
    ("wordnet/supersense_probe", ["epochs=7"], 7),  # an explicit value still wins
])
def test_a_frozen_probe_runs_its_own_epochs_unless_told_otherwise(task, extra, epochs):
    from plmbench.lit.finetuning import run_epochs

    assert run_epochs(compose("finetune", [f"task={task}", "size=cpu", *extra])) == epochs
