"""ELMo: each direction of the biLM reads only its own side of the token it predicts (with padding too), the
scalar mix, a short biLM pre-training whose loss falls, frozen vs fine-tuned downstream models, and the sweep unit."""

import pytest
import torch
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.elmo.units import ElmoUnitError, run_elmo_unit
from plmbench.lit.pretraining import run_pretraining
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.models.elmo import BiLanguageModel, ScalarMix, bilm_counts, reverse_padded
from plmbench.models.elmo_task import ElmoTaskModel
from plmbench.objectives.bilm import BiLM


@pytest.fixture(scope="module")
def elmo_registered():
    """The registrations the lead adds for ELMo (models.config.FAMILIES, data.tokenizer.MODEL_TYPES,
    objectives.OBJECTIVES); a no-op once they are in place."""
    from plmbench.data import tokenizer
    from plmbench.models import config
    from plmbench.objectives import OBJECTIVES

    with pytest.MonkeyPatch.context() as patch:
        if "elmo" not in config.FAMILIES:
            patch.setattr(config, "FAMILIES", (*config.FAMILIES, "elmo"))
        if "elmo" not in tokenizer.MODEL_TYPES:
            patch.setattr(tokenizer, "MODEL_TYPES", (*tokenizer.MODEL_TYPES, "elmo"))
        patch.setitem(OBJECTIVES, "bilm", BiLM)
        yield


def tiny(**changes) -> ModelConfig:
    return ModelConfig(**{"vocab_size": 50, "max_positions": 64, "type_vocab_size": 0, "hidden_size": 16,
                          "num_layers": 2, "num_heads": 2, "ffn_size": 32, "embedding_size": 16, "dropout": 0.0,
                          "attention_dropout": 0.0, **changes})


@pytest.fixture
def batch():
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.long)
    mask[1, 7:] = 0  # the second row has 7 real tokens
    return ids, mask


# ------------------------------------------------------------------------------------------ direction


def states(model: BiLanguageModel, ids, mask):
    with torch.no_grad():
        out = model(ids, mask)
    halves = [(layer[..., :16], layer[..., 16:]) for layer in out.layers[1:]]
    return out, halves


@pytest.mark.parametrize("j", [2, 5])
def test_each_direction_reads_only_its_own_side(batch, j):
    torch.manual_seed(1)
    model = BiLM(tiny()).eval()
    ids, mask = batch
    perturbed = ids.clone()
    perturbed[:, j] = (ids[:, j] + 7) % 45 + 5  # another token at position j, in both rows
    (a, a_layers), (b, b_layers) = states(model.backbone, ids, mask), states(model.backbone, perturbed, mask)
    with torch.no_grad():
        fwd_a, fwd_b = model.softmax(a.forward), model.softmax(b.forward)  # what the forward LM predicts from
        bwd_a, bwd_b = model.softmax(a.backward), model.softmax(b.backward)
    # Forward predictions at t < j (of tokens t+1 <= j) cannot depend on token j; backward ones at t > j likewise.
    torch.testing.assert_close(fwd_a[:, :j], fwd_b[:, :j])
    torch.testing.assert_close(bwd_a[0, j + 1:], bwd_b[0, j + 1:])
    torch.testing.assert_close(bwd_a[1, j + 1:7], bwd_b[1, j + 1:7])
    for (f_a, b_a), (f_b, b_b) in zip(a_layers, b_layers):  # every layer, not just the top
        torch.testing.assert_close(f_a[:, :j], f_b[:, :j])
        torch.testing.assert_close(b_a[0, j + 1:], b_b[0, j + 1:])
    # ... and the positions that do read token j change: the check can fail.
    assert not torch.allclose(fwd_a[:, j], fwd_b[:, j]) and not torch.allclose(bwd_a[:, j], bwd_b[:, j])


def test_padding_changes_nothing_and_predicts_nothing(batch):
    torch.manual_seed(2)
    model = BiLM(tiny()).eval()
    ids, mask = batch
    padded, _ = states(model.backbone, ids, mask)
    alone, _ = states(model.backbone, ids[1:, :7], None)
    torch.testing.assert_close(padded.backward[1, :7], alone.backward[0])
    torch.testing.assert_close(padded.forward[1, :7], alone.forward[0])
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        out = model({"input_ids": ids, "attention_mask": mask, "labels": labels})
    assert int(out["lm_count"]) == 2 * (9 + 6)  # each direction predicts length - 1 tokens per row
    x = torch.arange(10.0).view(1, 10, 1).repeat(2, 1, 1)
    reversed_x = reverse_padded(x, torch.tensor([10, 7]))
    assert reversed_x[1, :, 0].tolist() == [6, 5, 4, 3, 2, 1, 0, 7, 8, 9]
    torch.testing.assert_close(reverse_padded(reversed_x, torch.tensor([10, 7])), x)


def test_scalar_mix_is_gamma_times_softmax_weighted_sum():
    mix = ScalarMix(3)
    with torch.no_grad():
        mix.weights.copy_(torch.tensor([0.0, 1.0, 2.0]))
        mix.gamma.fill_(0.5)
    layers = [torch.full((1, 2, 4), float(v)) for v in (1.0, 2.0, 4.0)]
    s = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    expected = 0.5 * (s[0] * 1 + s[1] * 2 + s[2] * 4)
    torch.testing.assert_close(mix(layers), torch.full((1, 2, 4), float(expected)))
    with pytest.raises(ValueError, match="ScalarMix over 3 layers was given 2"):
        mix(layers[:2])


def test_shape_options_projection_tying_and_counts():
    projected = BiLM(tiny(ffn_size=32))
    assert projected.backbone.forward_lstm.layers[0].proj_size == 16
    assert BiLM(tiny(ffn_size=16)).backbone.forward_lstm.layers[0].proj_size == 0
    assert projected.softmax.word is projected.backbone.word  # E = H: tied to the token embeddings
    factorised = BiLM(tiny(embedding_size=8))
    assert factorised.softmax.word is None and factorised.softmax.decoder.weight.shape == (50, 16)
    with pytest.raises(ConfigError, match="model.ffn_size=8"):
        BiLM(tiny(ffn_size=8))
    counts = bilm_counts(tiny(), seq_len=64)
    assert counts["backbone_params"] == sum(p.numel() for p in projected.backbone.parameters())
    assert counts["params_with_pretraining_heads"] == counts["backbone_params"] + 50  # + the softmax bias


# ------------------------------------------------------------------------------------------ pre-training


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, shared_data, elmo_registered):
    """A biLM pre-trained for 40 steps on 200 KB of WikiText-2 by the real pre-training pipeline. Its cell is as wide
    as its output (no projection): on CPU an LSTM with proj_size misses oneDNN's kernel and runs 4x slower."""
    root = tmp_path_factory.mktemp("elmo")
    corpus = root / "wiki.txt"
    corpus.write_text((shared_data / "corpus/wikitext-2/raw/valid.txt").read_text(encoding="utf-8")[:200_000])
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLMBENCH_CACHE", str(root / "cache"))
        cfg = compose("pretrain", [
            "model=elmo", "size=tiny", "model.ffn_size=64", "model.vocab_size=400", "data.max_seq_len=64",
            "corpus=files", f"corpus.paths={corpus}", "trainer.max_steps=40", "trainer.batch_size=16",
            "trainer.val_check_interval=20", "trainer.limit_val_batches=2", "trainer.checkpoint_every_n_steps=20",
            "trainer.progress_bar=none", "optim.lr=5e-3", "optim.warmup_ratio=0.1", "logger=none",
            "data.val_fraction=0.25"])
        metrics = run_pretraining(cfg, root / "run")
        yield root / "run", metrics


def test_bilm_pretraining_loss_falls(pretrained):
    run, metrics = pretrained
    assert OmegaConf.load(run / "config.yaml").objective.name == "bilm"
    assert metrics["status"] == "finished" and metrics["step"] == 40
    assert metrics["last_train_loss"] < 0.9 * metrics["first_train_loss"], metrics
    assert 0 < metrics["validation"]["lm_acc"] < 1


# ------------------------------------------------------------------------------------------ downstream


def test_frozen_biLM_keeps_its_weights_and_fine_tuned_one_learns(pretrained, elmo_registered):
    run, _ = pretrained
    config = ModelConfig.from_mapping(OmegaConf.load(run / "config.yaml").model)
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(5, 400, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": torch.tensor([0, 1, 0, 1])}
    for freeze in (True, False):
        model = ElmoTaskModel(config, "classification", 2, freeze=freeze, pool="max")
        model.load_pretrained(run / "checkpoints" / "last.ckpt")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        assert model.backbone.training is not freeze  # frozen: the biLM's dropout stays off
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model(batch)["loss"].backward()
        optimizer.step()
        after = model.state_dict()
        moved = {k for k in after if not torch.equal(after[k], before[k])}
        assert {"mix.weights", "mix.gamma", "head.classifier.weight"} <= moved
        assert any(k.startswith("backbone.") for k in moved) is not freeze
    choice = ElmoTaskModel(config, "multiple_choice", 4)
    out = choice({"input_ids": torch.randint(5, 400, (2, 4, 9)), "attention_mask": torch.ones(2, 4, 9),
                  "labels": torch.tensor([1, 3])})
    assert out["logits"].shape == (2, 4) and out["loss"].ndim == 0
    tags = ElmoTaskModel(config, "tagging", 9)({"input_ids": torch.randint(5, 400, (2, 7)),
                                                "attention_mask": torch.ones(2, 7)})
    assert tags["logits"].shape == (2, 7, 9)


def test_elmo_unit_trains_and_scores_a_glue_task(pretrained, shared_data, tmp_path, elmo_registered):
    run, _ = pretrained
    ft = compose("finetune", ["task=glue/rte", "task.source=local", f"data_dir={shared_data}", f"init={run}",
                              "max_train_examples=32", "max_eval_examples=16", "epochs=1", "logger=none",
                              "trainer.progress_bar=null", "task.batch_size=16", "+sweep.elmo.pool=mean"])
    metrics = run_elmo_unit(ft, run, seed=0, out_dir=tmp_path / "unit")
    assert metrics["elmo"] == {"freeze": True, "pool": "mean"} and metrics["lr"] == 1e-3
    assert 0 <= metrics["primary"]["value"] <= 1 and metrics["eval_examples"] == {"validation": 16}
    assert metrics["params"]["trainable"] < metrics["params"]["backbone"]
    assert (tmp_path / "unit" / "metrics.json").is_file()
    with pytest.raises(ElmoUnitError, match="sweep.elmo.pool='sum'"):
        run_elmo_unit(compose("finetune", ["task=glue/rte", "+sweep.elmo.pool=sum"]), run, 0, tmp_path / "bad")
