"""What a model or recipe brings with it whatever the scale: its masking, and at paper scale its paper's optimiser.
Scales change sizes, steps and data sources only (conf/scale/)."""

import pytest

from plmbench.configuration import compose

SCALES = ("smoke", "mini", "paper")


@pytest.mark.parametrize("scale", SCALES)
def test_albert_masks_ngrams_at_every_scale(scale):
    for overrides in (["model=albert"], ["experiment=albert"]):
        masking = compose("pretrain", [*overrides, f"scale={scale}"]).data.masking
        assert (masking.mode, masking.max_ngram) == ("ngram", 3), overrides


@pytest.mark.parametrize("choice", ["model=bert", "model=roberta", "model=electra", "+recipe=bert",
                                    "+recipe=roberta", "+recipe=bert_mlm", "+recipe=electra_g25"])
def test_bert_roberta_electra_mask_single_tokens_at_paper_scale(choice):
    assert compose("pretrain", [choice, "scale=paper"]).data.masking.mode == "token"


def optimiser(overrides: list[str]) -> dict:
    optim = compose("pretrain", overrides).optim
    return {"name": optim.name, "lr": optim.lr, "betas": tuple(optim.betas), "eps": optim.eps,
            "weight_decay": optim.weight_decay, "warmup_ratio": optim.warmup_ratio}


def warmup_steps(overrides: list[str]) -> int:
    cfg = compose("pretrain", overrides)
    return round(cfg.optim.warmup_ratio * cfg.trainer.max_steps) if cfg.optim.warmup_steps is None \
        else int(cfg.optim.warmup_steps)


def test_paper_scale_optimiser_is_the_recipes_own():
    albert = optimiser(["experiment=albert", "scale=paper"])
    assert (albert["name"], albert["lr"]) == ("lamb", 0.00176)
    assert warmup_steps(["experiment=albert", "scale=paper"]) == 3125  # of 125k at batch 4096
    bert_cell = ["experiment=bert_vs_roberta", "+recipe=bert", "scale=paper"]
    assert optimiser(bert_cell) == {"name": "adamw", "lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-6,
                                    "weight_decay": 0.01, "warmup_ratio": 0.01}
    assert warmup_steps(bert_cell) == 10_000  # of 1M steps at batch 256
    roberta = optimiser(["experiment=bert_vs_roberta", "+recipe=roberta", "scale=paper"])
    assert roberta == {"name": "adamw", "lr": 6e-4, "betas": (0.9, 0.98), "eps": 1e-6, "weight_decay": 0.01,
                       "warmup_ratio": 0.048}  # RoBERTa-base: 24k of 500k warm-up steps
    assert optimiser(["model=bert", "scale=paper"])["name"] == "adamw"


@pytest.mark.parametrize("scale", ["smoke", "mini"])
def test_below_paper_scale_every_model_trains_with_the_scales_adamw(scale):
    optimisers = {model: optimiser([f"model={model}", f"scale={scale}"]) for model in ("albert", "bert", "roberta")}
    assert optimisers["albert"] == optimisers["bert"] == optimisers["roberta"]
    assert optimisers["albert"]["name"] == "adamw" and optimisers["albert"]["betas"] == (0.9, 0.999)


def test_command_line_optimiser_still_wins():
    assert optimiser(["model=albert", "scale=smoke", "optim=lamb"])["name"] == "lamb"
    assert optimiser(["model=albert", "scale=paper", "optim=adamw"])["name"] == "adamw"
