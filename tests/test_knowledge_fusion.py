"""ERNIE-style knowledge fusion and dEA (issue 16, item 3): the aggregator layer's shapes, its degenerate case (no
entities = the plain layer, exactly), ERNIE's parameter shapes, the shuffled-table control, dEA's corruption rates,
a dEA loss that falls where the entity is predictable, and cell ids that knowledge=none leaves alone."""

import dataclasses

import pytest
import torch

from plmbench.configuration import compose
from plmbench.data.masking import IGNORE_INDEX
from plmbench.lineage import cell_id
from plmbench.models.backbone import Backbone
from plmbench.models.config import ConfigError, ModelConfig
from plmbench.models.counting import count_knowledge
from plmbench.models.knowledge_fusion import AggregatorLayer, KnowledgeBackbone, KnowledgeConfig, entity_slots
from plmbench.models.layers import TransformerLayer
from plmbench.objectives import build_objective
from plmbench.objectives.counting import describe_config
from plmbench.objectives.dea import KnowledgeMaskedLM, corrupt_entities

SMALL = ModelConfig(vocab_size=50, max_positions=32, hidden_size=32, num_layers=4, num_heads=4, ffn_size=64,
                    embedding_size=32)
ERNIE = KnowledgeConfig(enabled=True, aggregator_layers=2)
CPU_SCALE = ["model=bert", "size=cpu", "objective=mlm_nsp", "data.max_seq_len=128"]


def entity_table(rows: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, 100, generator=torch.Generator().manual_seed(seed))


def inputs(batch: int = 3, length: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, a right-padded attention mask, and entity ids on about a third of the real tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, SMALL.vocab_size, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length - 4:] = 0
    entities = torch.where(torch.rand(batch, length, generator=g) < 0.35, torch.randint(0, 40, (batch, length),
                                                                                        generator=g), -1)
    return ids, mask, torch.where(mask.bool(), entities, -1)


def as_if_trained(model: KnowledgeBackbone) -> KnowledgeBackbone:
    """Random entity weights and biases: at initialisation the biases are zero, which would hide a bias (ERNIE's
    dense_ent b_e) leaking into positions without an entity."""
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for layer in model.layers[model.first_aggregator:]:
            for module in layer.entity_modules():
                for parameter in module.parameters():
                    parameter.copy_(0.1 * torch.randn(parameter.shape, generator=g))
    return model


def test_aggregator_layer_shapes_tokens_and_entities():
    model = KnowledgeBackbone(SMALL, ERNIE, entity_table()).eval()
    ids, mask, entity_ids = inputs()
    x = torch.randn(3, 12, SMALL.hidden_size)
    entities, has_entity = model.entity_vectors(entity_ids), entity_ids >= 0
    for layer in model.layers[model.first_aggregator:]:
        tokens, entities_out = layer(x, mask, entities, has_entity)
        assert tokens.shape == (3, 12, SMALL.hidden_size) and entities_out.shape == (3, 12, 100)
        assert torch.isfinite(tokens).all() and torch.isfinite(entities_out).all()
        assert (entities_out[~has_entity] == 0).all()  # no entity, no entity state
    assert model(ids, mask, entity_ids=entity_ids).shape == (3, 12, SMALL.hidden_size)


@pytest.mark.parametrize("sharing", ["none", "all"])
def test_no_entities_is_the_plain_backbone_exactly(sharing):
    config = SMALL.replace(sharing=sharing)
    torch.manual_seed(0)
    plain = Backbone(config).eval()
    torch.manual_seed(0)  # the fused backbone draws its plain weights first: the same weights
    fused = as_if_trained(KnowledgeBackbone(config, ERNIE, entity_table())).eval()
    ids, mask, entity_ids = inputs()
    none = torch.full_like(ids, -1)
    with torch.no_grad():
        expected = plain(ids, mask)
        assert torch.equal(fused(ids, mask, entity_ids=none), expected)
        assert torch.equal(fused(ids, mask), expected)  # no entity_ids at all
        assert not torch.allclose(fused(ids, mask, entity_ids=entity_ids), expected, atol=1e-3)  # entities count


def test_each_aggregator_layer_without_entities_equals_its_plain_layer():
    model = as_if_trained(KnowledgeBackbone(SMALL, ERNIE, entity_table())).eval()
    x, mask = torch.randn(2, 10, SMALL.hidden_size), torch.ones(2, 10, dtype=torch.long)
    none = torch.zeros(2, 10, dtype=torch.bool)
    with torch.no_grad():
        for layer in model.layers[model.first_aggregator:]:
            plain = TransformerLayer(layer.attention, layer.ffn)  # the same sublayer instances
            tokens, _ = layer(x, mask, torch.randn(2, 10, 100), none)  # entity vectors without alignment: ignored
            assert torch.equal(tokens, plain(x, mask))


def test_the_cls_slot_gathers_the_sentences_entities():
    """ERNIE marks [CLS] as an entity slot with the zero vector (run_pretrain.py mask[:, 0] = 1, ent_mask[0] = 1 in
    fine-tuning): in an aggregator layer with entity attention [CLS] then reads the mention's entity; without the
    slot that layer cannot. knowledge=ernie sets it."""
    model = as_if_trained(KnowledgeBackbone(SMALL, dataclasses.replace(ERNIE, cls_slot=True), entity_table())).eval()
    layer = model.layers[-1]
    assert layer.entity_attention is not None
    x, mask = torch.randn(1, 6, SMALL.hidden_size), torch.ones(1, 6, dtype=torch.long)

    def cls_state(entity: int, slot: bool) -> torch.Tensor:
        ids = torch.tensor([[-1, -1, -1, entity, -1, -1]])
        with torch.no_grad():
            return layer(x, mask, model.entity_vectors(ids), entity_slots(ids, slot))[0][0, 0]

    assert torch.equal(cls_state(3, slot=False), cls_state(4, slot=False))
    assert (cls_state(3, slot=True) - cls_state(4, slot=True)).abs().max() > 1e-3
    ids, mask, entity_ids = inputs()
    with torch.no_grad():  # the whole backbone: only [CLS]'s row is a new slot
        assert entity_slots(entity_ids, True)[:, 0].all() and torch.equal(entity_slots(entity_ids, True)[:, 1:],
                                                                           entity_ids[:, 1:] >= 0)
        assert torch.isfinite(model(ids, mask, entity_ids=entity_ids)).all()
    assert compose("pretrain", ["knowledge=ernie"]).knowledge.cls_slot is True
    assert compose("pretrain", ["knowledge=ernie_shuffled"]).knowledge.cls_slot is True


def test_first_aggregator_has_no_entity_attention_and_the_rest_do():
    model = KnowledgeBackbone(SMALL.replace(num_layers=6), KnowledgeConfig(enabled=True), entity_table())
    aggregators = model.layers[model.first_aggregator:]
    assert len(aggregators) == 3 and all(isinstance(layer, AggregatorLayer) for layer in aggregators)  # top half
    assert not any(isinstance(layer, AggregatorLayer) for layer in model.layers[:model.first_aggregator])
    names = [{name for name, _ in layer.named_parameters()} for layer in aggregators]
    assert not any(name.startswith("entity_attention") for name in names[0])
    assert all(any(name.startswith("entity_attention") for name in n) for n in names[1:])


def test_added_parameters_have_ernies_shapes():
    """Per aggregator layer (thunlp/ERNIE BertIntermediate / BertOutput): dense_ent d_e x F + F, dense_ent
    F x d_e + d_e, LayerNorm_ent 2 d_e; per entity attention (BertAttention's self_ent + output_ent):
    Q, K, V and output dense d_e x d_e + d_e each, LayerNorm 2 d_e."""
    model, d, f = SMALL.replace(hidden_size=128, num_heads=4, ffn_size=512), 100, 512
    fusion = (d * f + f) + (f * d + d) + 2 * d
    attention = 4 * (d * d + d) + 2 * d
    counts = count_knowledge(model, ERNIE, seq_len=128)
    assert counts["knowledge_params"] == 2 * fusion + attention == 247_024
    assert counts["knowledge_executed_matmul_weights"] == 2 * (2 * d * f) + 4 * d * d
    assert counts["knowledge_train_flops_per_token"] == 6 * (4 * d * f + 4 * d * d) + 12 * d * 128


def test_shuffle_keeps_the_parameters_and_permutes_the_table():
    table = entity_table()
    torch.manual_seed(0)
    real = KnowledgeBackbone(SMALL, ERNIE, table)
    torch.manual_seed(0)
    control = KnowledgeBackbone(SMALL, dataclasses.replace(ERNIE, shuffle=True), table)
    assert [(n, p.shape) for n, p in real.named_parameters()] == [(n, p.shape) for n, p in control.named_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(real.parameters(), control.parameters()))
    assert not torch.equal(real.entity_table, control.entity_table)
    assert torch.equal(real.entity_table.sort(dim=0).values, control.entity_table.sort(dim=0).values)  # same rows
    assert not any(p is real.entity_table for p in real.parameters())  # frozen: a buffer, not a parameter


def test_dea_corruption_rates_match_ernies():
    g = torch.Generator().manual_seed(0)
    entity_ids = torch.where(torch.rand(512, 256, generator=g) < 0.3, torch.randint(0, 5000, (512, 256), generator=g),
                             -1)
    corrupted = corrupt_entities(entity_ids, replace_rate=0.05, mask_rate=0.15, generator=g)
    aligned = entity_ids >= 0
    n = int(aligned.sum())  # about 39,000: one standard error of a 15% rate is 0.0018
    assert torch.equal(corrupted[~aligned], entity_ids[~aligned])  # only aligned tokens change
    masked = float((corrupted[aligned] == -1).sum()) / n
    replaced = float(((corrupted != entity_ids) & (corrupted >= 0))[aligned].sum()) / n
    candidates = torch.unique(entity_ids[aligned])
    assert abs(masked - 0.15) < 0.008, masked
    assert abs(replaced - 0.05 * (1 - 1 / len(candidates))) < 0.005, replaced  # a replacement may draw itself
    assert torch.isin(corrupted[corrupted >= 0], candidates).all()  # replacements come from the batch
    assert torch.equal(corrupt_entities(torch.full((4, 5), -1), 0.05, 0.15), torch.full((4, 5), -1))


def test_dea_loss_falls_where_the_entity_follows_from_the_token():
    """Each token id names one entity (id % 40), so the token state alone can predict it, also for the 15% removed
    from the input; a few dozen steps must take dEA well below its starting loss."""
    torch.manual_seed(0)
    model = KnowledgeMaskedLM(SMALL.replace(dropout=0.0, attention_dropout=0.0), ERNIE, entity_table(),
                              sentence_task="nsp")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(40):
        ids = torch.randint(5, SMALL.vocab_size, (8, 12), generator=g)
        entity_ids = torch.where(torch.rand(8, 12, generator=g) < 0.5, ids % 40, -1)
        labels = torch.where(torch.rand(8, 12, generator=g) < 0.15, ids, IGNORE_INDEX)
        labels[:, 0] = ids[:, 0]  # at least one MLM target per row
        out = model({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
                     "entity_ids": entity_ids, "sentence_label": torch.randint(0, 2, (8,), generator=g)})
        assert {"loss", "mlm_loss", "sentence_loss", "dea_loss", "dea_correct", "dea_count"} <= set(out)
        assert torch.allclose(out["loss"], out["mlm_loss"] + out["sentence_loss"] + out["dea_loss"])
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["dea_loss"].detach()))
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert int(out["dea_count"]) == int((entity_ids >= 0).sum())
    assert model.backbone.entity_table.grad is None  # the table stays frozen


def test_knowledge_none_keeps_cell_ids_and_ernie_changes_them():
    default = compose("pretrain", CPU_SCALE)
    assert default.knowledge.enabled is False
    without_group = compose("pretrain", CPU_SCALE + ["~knowledge"])  # as configs were before the group existed
    assert "knowledge" not in without_group
    assert cell_id(default) == cell_id(without_group) == cell_id(compose("pretrain", CPU_SCALE + ["knowledge=none"]))
    ernie = compose("pretrain", CPU_SCALE + ["knowledge=ernie"])
    shuffled = compose("pretrain", CPU_SCALE + ["knowledge=ernie", "knowledge.shuffle=true"])
    assert len({cell_id(default), cell_id(ernie), cell_id(shuffled)}) == 3


def test_describe_counts_what_fusion_adds_at_cpu_scale():
    plain = describe_config(compose("pretrain", CPU_SCALE))
    fused = describe_config(compose("pretrain", CPU_SCALE + ["knowledge=ernie", "knowledge.aggregator_layers=2"]))
    assert "knowledge_params" not in plain
    assert fused["backbone_params"] == plain["backbone_params"]  # the backbone's own count, by the paper's rule
    assert fused["knowledge_params"] == 247_024
    dea_head = 128 * 100 + 100 + 2 * 100
    assert fused["params_with_pretraining_heads"] == plain["params_with_pretraining_heads"] + 247_024 + dea_head
    assert fused["train_flops_per_token"] > plain["train_flops_per_token"] + fused["knowledge_train_flops_per_token"]


def test_bad_knowledge_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="knowledge.aggregator_layers=5"):
        KnowledgeBackbone(SMALL, dataclasses.replace(ERNIE, aggregator_layers=5), entity_table())
    with pytest.raises(ConfigError, match="knowledge.entity_table: shape"):
        KnowledgeBackbone(SMALL, ERNIE, torch.zeros(10, 64))
    with pytest.raises(ConfigError, match="objective=rtd"):
        build_objective(SMALL, {"name": "rtd"}, knowledge=dataclasses.asdict(ERNIE), entity_table=entity_table())
    with pytest.raises(ConfigError, match="knowledge.entity_table=null"):
        build_objective(SMALL, {"name": "mlm"}, knowledge=dataclasses.asdict(ERNIE))
