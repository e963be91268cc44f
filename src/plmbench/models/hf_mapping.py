"""plmbench's parameters <-> Hugging Face checkpoints, per family, as name maps.

Our names are the objective's state_dict keys (`backbone.layers.3.attention.inner.qkv.weight`); a map pairs one of
our module names with the HF module it becomes. Three small rules cover the layout differences: our fused `qkv`
splits into HF's query/key/value (a tuple in a map), GPT-2's Conv1D stores weights transposed, and RoBERTa counts
positions from padding_idx + 1 (its table gets that many unused rows in front). Sharing needs no rule: a shared
sublayer is simply written once per layer (ALBERT: one layer group per layer, `num_hidden_groups = L`), which
computes the same function; ALBERT's all-shared stack is written compactly as one group. Import reads the same
maps backwards and refuses a checkpoint whose layers differ where our model shares them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from plmbench.data.tokenizer import BYTEBPE_SPECIALS, WORDPIECE_SPECIALS
from plmbench.models.backbone import Backbone
from plmbench.models.config import ModelConfig

# --- name maps: our module (under the backbone) -> HF module (under the family's base model) ------------------

EMBEDDINGS = {
    "embeddings.word": "embeddings.word_embeddings",
    "embeddings.position": "embeddings.position_embeddings",
    "embeddings.segment": "embeddings.token_type_embeddings",
    "embeddings.norm": "embeddings.LayerNorm",
}
BERT_LAYER = {  # BERT, RoBERTa and ELECTRA share the encoder layout
    "attention.inner.qkv": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention.inner.out": "attention.output.dense",
    "attention.norm": "attention.output.LayerNorm",
    "ffn.inner.up": "intermediate.dense",
    "ffn.inner.down": "output.dense",
    "ffn.norm": "output.LayerNorm",
}
ALBERT_LAYER = {
    "attention.inner.qkv": ("attention.query", "attention.key", "attention.value"),
    "attention.inner.out": "attention.dense",
    "attention.norm": "attention.LayerNorm",
    "ffn.inner.up": "ffn",
    "ffn.inner.down": "ffn_output",
    "ffn.norm": "full_layer_layer_norm",
}
GPT2_LAYER = {
    "attention.norm": "ln_1",
    "attention.inner.qkv": "attn.c_attn",  # Conv1D, q|k|v along the output dim: our fused rows, transposed
    "attention.inner.out": "attn.c_proj",
    "ffn.norm": "ln_2",
    "ffn.inner.up": "mlp.c_fc",
    "ffn.inner.down": "mlp.c_proj",
}

ENCODER_CONFIG = {  # ModelConfig field -> HF config attribute
    "vocab_size": "vocab_size", "max_positions": "max_position_embeddings", "type_vocab_size": "type_vocab_size",
    "hidden_size": "hidden_size", "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
    "ffn_size": "intermediate_size", "activation": "hidden_act", "dropout": "hidden_dropout_prob",
    "attention_dropout": "attention_probs_dropout_prob", "layer_norm_eps": "layer_norm_eps",
    "init_std": "initializer_range",
}
GPT2_CONFIG = {
    "vocab_size": "vocab_size", "max_positions": "n_positions", "hidden_size": "n_embd", "num_layers": "n_layer",
    "num_heads": "n_head", "ffn_size": "n_inner", "activation": "activation_function", "dropout": "resid_pdrop",
    "attention_dropout": "attn_pdrop", "layer_norm_eps": "layer_norm_epsilon", "init_std": "initializer_range",
}
POST_LN_ENCODER = {"norm": "post", "causal": False, "embedding_norm": True}


@dataclass(frozen=True)
class Family:
    config_class: str
    base: str  # the base model's attribute in the HF checkpoint ("bert." ...)
    backbone: dict  # our module under the backbone -> HF module under `base`
    layer: dict  # our module under layers.{i}. -> HF module under `layer_prefix`
    layer_prefix: str  # formatted with {i} = the HF layer (or ALBERT group) index
    config_keys: dict
    required: dict  # ModelConfig values the HF architecture hard-codes
    tokenizer: str  # which of our tokenizers sets the special ids
    transposed: frozenset = frozenset()  # our module names under layers.{i}. whose weight HF stores transposed
    position_offset: bool = False  # RoBERTa: positions start at pad_token_id + 1
    identity_projection: str | None = None  # ALBERT always has an E -> H mapping, even when E == H
    extra_config: Callable[[ModelConfig], dict] = lambda config: {}  # HF config values beyond config_keys
    defaults: dict = field(default_factory=dict)  # ModelConfig values an import assumes (init choices)


ENCODER = {"layer": BERT_LAYER, "layer_prefix": "encoder.layer.{i}.", "config_keys": ENCODER_CONFIG,
           "required": POST_LN_ENCODER, "tokenizer": "wordpiece"}  # BERT, RoBERTa, ELECTRA
FAMILIES = {
    "albert": Family(
        config_class="AlbertConfig", base="albert.",
        backbone={**EMBEDDINGS, "projection": "encoder.embedding_hidden_mapping_in"},
        layer=ALBERT_LAYER, layer_prefix="encoder.albert_layer_groups.{i}.albert_layers.0.",
        config_keys={**ENCODER_CONFIG, "embedding_size": "embedding_size"}, required=POST_LN_ENCODER,
        tokenizer="wordpiece", identity_projection="encoder.embedding_hidden_mapping_in",
        extra_config=lambda c: {"inner_group_num": 1, "classifier_dropout_prob": c.dropout,
                                "num_hidden_groups": 1 if c.sharing == "all" else c.num_layers}),
    "bert": Family(**{**ENCODER, "required": {**POST_LN_ENCODER, "factorized": False}},
                   config_class="BertConfig", base="bert.", backbone=EMBEDDINGS),
    "roberta": Family(**{**ENCODER, "required": {**POST_LN_ENCODER, "factorized": False}, "tokenizer": "bytebpe"},
                      config_class="RobertaConfig", base="roberta.", backbone=EMBEDDINGS, position_offset=True),
    "electra": Family(**{**ENCODER, "config_keys": {**ENCODER_CONFIG, "embedding_size": "embedding_size"}},
                      config_class="ElectraConfig", base="electra.",
                      backbone={**EMBEDDINGS, "projection": "embeddings_project"}),
    "gpt2": Family(
        config_class="GPT2Config", base="transformer.",
        backbone={"embeddings.word": "wte", "embeddings.position": "wpe", "final_norm": "ln_f"},
        layer=GPT2_LAYER, layer_prefix="h.{i}.", config_keys=GPT2_CONFIG,
        required={"norm": "pre", "causal": True, "embedding_norm": False, "type_vocab_size": 0, "factorized": False},
        tokenizer="bytebpe", transposed=frozenset({"attention.inner.qkv", "attention.inner.out", "ffn.inner.up",
                                                   "ffn.inner.down"}),
        extra_config=lambda c: {"embd_pdrop": c.dropout}, defaults={"scale_residual_init": True}),
}


@dataclass(frozen=True)
class Heads:
    """What one exported part is: the HF class, where our backbone sits, and our head modules -> HF modules."""

    hf_class: str
    backbone: str  # our prefix of the backbone in the objective
    heads: dict = field(default_factory=dict)
    required: dict = field(default_factory=dict)  # ModelConfig values the HF head hard-codes


HEADS = {  # (family, objective class or part) -> Heads
    ("albert", "MaskedLM"): Heads("AlbertForPreTraining", "backbone.", {
        "mlm_head.dense": "predictions.dense", "mlm_head.norm": "predictions.LayerNorm",
        "mlm_head.bias": "predictions.bias", "sentence_head.pooler.dense": "albert.pooler",
        "sentence_head.classifier": "sop_classifier.classifier"}),
    ("bert", "MaskedLM"): Heads("BertForPreTraining", "backbone.", {
        "mlm_head.dense": "cls.predictions.transform.dense", "mlm_head.norm": "cls.predictions.transform.LayerNorm",
        "mlm_head.bias": "cls.predictions.bias", "sentence_head.pooler.dense": "bert.pooler.dense",
        "sentence_head.classifier": "cls.seq_relationship"}),
    ("roberta", "MaskedLM"): Heads("RobertaForMaskedLM", "backbone.", {  # no pooler: the sentence head stays out
        "mlm_head.dense": "lm_head.dense", "mlm_head.norm": "lm_head.layer_norm", "mlm_head.bias": "lm_head.bias"},
        required={"activation": "gelu"}),  # RobertaLMHead calls gelu() whatever hidden_act says
    ("electra", "MaskedLM"): Heads("ElectraForMaskedLM", "backbone.", {
        "mlm_head.dense": "generator_predictions.dense", "mlm_head.norm": "generator_predictions.LayerNorm",
        "mlm_head.bias": "generator_lm_head.bias"}, required={"activation": "gelu"}),
    ("electra", "ReplacedTokenDetection"): Heads("ElectraForPreTraining", "backbone.", {
        "discriminator_head.dense": "discriminator_predictions.dense",
        "discriminator_head.prediction": "discriminator_predictions.dense_prediction"}),
    ("electra", "generator"): Heads("ElectraForMaskedLM", "generator.", {
        "generator_head.dense": "generator_predictions.dense", "generator_head.norm": "generator_predictions.LayerNorm",
        "generator_head.bias": "generator_lm_head.bias"}, required={"activation": "gelu"}),
    ("gpt2", "CausalLM"): Heads("GPT2LMHeadModel", "backbone."),  # lm_head is tied to wte
}


# --- the layout rules -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One of our tensors and the HF tensor(s) it becomes."""

    ours: str
    hf: tuple[str, ...]
    rule: str = "copy"  # copy | split | transpose | shift
    rows: int = 0  # shift: unused rows in front (RoBERTa positions)


TO_HF = {
    "copy": lambda t, e: [t],
    "split": lambda t, e: list(t.chunk(len(e.hf))),  # fused [q; k; v] rows -> query, key, value
    "transpose": lambda t, e: [t.t()],  # nn.Linear (out, in) -> Conv1D (in, out)
    "shift": lambda t, e: [torch.cat([t.new_zeros(e.rows, *t.shape[1:]), t])],
}
FROM_HF = {
    "copy": lambda ts, e: ts[0],
    "split": lambda ts, e: torch.cat(ts),
    "transpose": lambda ts, e: ts[0].t(),
    "shift": lambda ts, e: ts[0][e.rows:],
}


def _as_tuple(names) -> tuple[str, ...]:
    return names if isinstance(names, tuple) else (names,)


def _expand(our_module: str, hf_module, our_keys: list[str], rule: str = "copy", rows: int = 0) -> list[Entry]:
    """Entries for every tensor of `our_module` (a module name, or a parameter's full name like mlm_head.bias)."""
    entries = []
    for key in our_keys:
        if key == our_module or key.startswith(our_module + "."):
            suffix = key[len(our_module):]
            if isinstance(hf_module, tuple):
                entries.append(Entry(key, tuple(h + suffix for h in hf_module), "split"))
            else:
                entries.append(Entry(key, (hf_module + suffix,), rule if suffix != ".bias" else "copy", rows))
    return entries


def _entries(family: str, heads: Heads | None, our_keys: list[str], hf_config, config: ModelConfig) -> list[Entry]:
    """All entries of one part: embeddings, each of our L layers (-> the HF layer or group that runs it), heads."""
    spec = FAMILIES[family]
    prefix = heads.backbone if heads else ""
    offset = position_offset(family, hf_config)
    groups = getattr(hf_config, "num_hidden_groups", config.num_layers)  # ALBERT; else one HF layer per layer
    entries = []
    for ours, theirs in spec.backbone.items():
        shifted = ours == "embeddings.position" and offset
        entries += _expand(prefix + ours, spec.base + theirs, our_keys, "shift" if shifted else "copy", offset)
    for i in range(config.num_layers):
        group = int(i / (config.num_layers / groups))  # the group that runs layer i, by HF's own formula
        hf_layer = spec.base + spec.layer_prefix.format(i=group)
        for ours, theirs in spec.layer.items():
            hf = tuple(hf_layer + n for n in theirs) if isinstance(theirs, tuple) else hf_layer + theirs
            entries += _expand(f"{prefix}layers.{i}.{ours}", hf, our_keys,
                               "transpose" if ours in spec.transposed else "copy")
    for ours, theirs in (heads.heads.items() if heads else ()):
        entries += _expand(ours, theirs, our_keys)
    return entries


def position_offset(family: str, hf_config) -> int:
    return hf_config.pad_token_id + 1 if FAMILIES[family].position_offset else 0


def _constants(family: str, config: ModelConfig) -> dict[str, torch.Tensor]:
    """HF tensors with no counterpart in our model: ALBERT's E -> H mapping when E == H is the identity."""
    name = FAMILIES[family].identity_projection
    if name is None or config.factorized:
        return {}
    prefix = FAMILIES[family].base + name
    return {prefix + ".weight": torch.eye(config.hidden_size), prefix + ".bias": torch.zeros(config.hidden_size)}


# --- configs ------------------------------------------------------------------------------------------------------

def default_special_ids(family: str) -> dict[str, int]:
    """pad/bos/eos as our tokenizers number them (ids follow the order of their special-token tables)."""
    names = list(WORDPIECE_SPECIALS if FAMILIES[family].tokenizer == "wordpiece" else BYTEBPE_SPECIALS)
    return {"pad_token_id": names.index("pad"), "bos_token_id": names.index("cls"), "eos_token_id": names.index("sep")}


def check_exportable(config: ModelConfig, family: str, heads: Heads | None = None) -> None:
    """One-line error naming the first model.* value the HF architecture cannot express."""
    if family != "gpt2" and config.type_vocab_size == 0:
        raise ValueError(f"model.type_vocab_size=0: Hugging Face {family} always adds segment embeddings "
                         "(use 1 or 2)")
    for key, value in {**FAMILIES[family].required, **(heads.required if heads else {})}.items():
        if getattr(config, key) == value:
            continue
        if key == "factorized":
            raise ValueError(f"model.embedding_size={config.embedding_size} != model.hidden_size="
                             f"{config.hidden_size}: Hugging Face {family} has no E -> H projection; factorised "
                             "embeddings export as albert or electra")
        raise ValueError(f"model.{key}={getattr(config, key)!r}: the Hugging Face {family} architecture "
                         f"requires {value!r}")


def hf_config_for(config: ModelConfig, family: str, hf_class: str, special_ids: dict | None = None):
    import transformers

    spec = FAMILIES[family]
    values = {theirs: getattr(config, ours) for ours, theirs in spec.config_keys.items()}
    values |= spec.extra_config(config) | (special_ids or default_special_ids(family))
    hf_config = getattr(transformers, spec.config_class)(**values, architectures=[hf_class])
    if spec.position_offset:
        hf_config.max_position_embeddings = config.max_positions + position_offset(family, hf_config)
    return hf_config


def config_from_hf(hf_config, state_dict: dict | None = None) -> ModelConfig:
    """Our ModelConfig for an HF config; sharing is read off the weights when a state dict is given."""
    family = hf_config.model_type
    if family not in FAMILIES:
        raise ValueError(f"model_type={family!r}: plmbench imports {', '.join(FAMILIES)}")
    if getattr(hf_config, "inner_group_num", 1) != 1:
        raise ValueError(f"inner_group_num={hf_config.inner_group_num}: plmbench imports ALBERT with one layer "
                         "per group only")
    spec = FAMILIES[family]
    values = {ours: getattr(hf_config, theirs) for ours, theirs in spec.config_keys.items()}
    values["max_positions"] -= position_offset(family, hf_config)
    values.setdefault("embedding_size", values["hidden_size"])
    if values["ffn_size"] is None:  # GPT-2: n_inner=None means 4H
        values["ffn_size"] = 4 * values["hidden_size"]
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    fixed = {k: v for k, v in spec.required.items() if k in fields}
    config = ModelConfig.from_mapping({**spec.defaults, **values, **fixed, "family": family})
    if state_dict is not None and config.num_layers > 1:
        config = config.replace(sharing=_detect_sharing(spec, hf_config, state_dict, config.num_layers))
    return config


def _detect_sharing(spec: Family, hf_config, state_dict: dict, num_layers: int) -> str:
    """A sublayer is shared when every HF layer (or group) holds the same tensors for it as the first one."""
    groups = getattr(hf_config, "num_hidden_groups", num_layers)

    def tensors(group: int, sublayer: str) -> list:
        prefix = spec.base + spec.layer_prefix.format(i=group)
        names = [n for ours, theirs in spec.layer.items() if ours.startswith(sublayer + ".") for n in _as_tuple(theirs)]
        return [state_dict.get(prefix + n + suffix) for n in names for suffix in (".weight", ".bias")]

    def same(a, b) -> bool:
        return a is not None and b is not None and a.shape == b.shape and torch.equal(a, b)

    shared = [all(same(a, b) for g in range(1, groups) for a, b in zip(tensors(g, sub), tensors(0, sub)))
              for sub in ("attention", "ffn")]
    return {(False, False): "none", (True, False): "attention", (False, True): "ffn", (True, True): "all"}[
        tuple(shared)]


# --- export and import ------------------------------------------------------------------------------------------

def parts(model: nn.Module, family: str | None = None) -> dict[str, Heads]:
    """The HF checkpoints an objective exports to: {"": main}, plus {"generator": ...} for ELECTRA's RTD."""
    family = family or model.config.family
    kind = type(model).__name__
    if (family, kind) not in HEADS:
        allowed = sorted(f for f, k in HEADS if k == kind)
        raise ValueError(f"model.family={family} with objective {kind}: exports to Hugging Face as "
                         f"{', '.join(allowed) or 'no family'}")
    return {"": HEADS[(family, kind)], **({"generator": HEADS[(family, "generator")]}
                                          if kind == "ReplacedTokenDetection" else {})}


def _hf_class(name: str):
    import transformers

    return getattr(transformers, name, None)


def fill_tied(state_dict: dict, hf_class_name: str) -> set[str]:
    """Add the tied HF keys (decoder weight and bias) from their sources, as the HF model's state_dict has them."""
    tied = getattr(_hf_class(hf_class_name), "_tied_weights_keys", None) or {}
    for target, source in tied.items():
        if target not in state_dict and source in state_dict:
            state_dict[target] = state_dict[source]
    return set(tied)


def _plan(model: nn.Module, family: str, part: str, hf_config=None, special_ids=None):
    """(heads or None for a bare Backbone, our config, HF config, entries) of one part."""
    heads = None if isinstance(model, Backbone) else parts(model, family)[part]
    config = model.config if heads is None else getattr(model, heads.backbone.rstrip(".")).config
    if hf_config is None:
        check_exportable(config, family, heads)
        hf_config = hf_config_for(config, family, heads.hf_class, special_ids)
    return heads, config, hf_config, _entries(family, heads, list(model.state_dict()), hf_config, config)


def to_hf_state_dict(model: nn.Module, family: str | None = None, part: str = "", special_ids: dict | None = None):
    """(HF config, HF state dict incl. tied keys) of one part of an objective: see `parts`."""
    family = family or model.config.family
    heads, config, hf_config, entries = _plan(model, family, part, special_ids=special_ids)
    ours = model.state_dict()
    exported = {ours[e.ours].data_ptr() for e in entries}
    prefixes = (heads.backbone, *(name.split(".")[0] + "." for name in heads.heads))
    for key, tensor in ours.items():  # a new parameter without a map entry fails here, not in a user's HF load
        if key.startswith(prefixes) and tensor.data_ptr() not in exported:
            raise ValueError(f"{key}: no Hugging Face name for this parameter (add it to hf_mapping's maps)")
    out = dict(_constants(family, config))
    for entry in entries:  # a shared sublayer is written once per layer (or group) that runs it
        for name, tensor in zip(entry.hf, TO_HF[entry.rule](ours[entry.ours], entry)):
            out[name] = tensor.detach().clone().contiguous()
    fill_tied(out, heads.hf_class)
    return hf_config, out


def not_exported(model: nn.Module, family: str | None = None) -> list[str]:
    """Our tensors that no exported part holds (RoBERTa's sentence head: RobertaForMaskedLM has no pooler)."""
    ours = model.state_dict()
    covered = {ours[e.ours].data_ptr() for part in parts(model, family)
               for e in _plan(model, family or model.config.family, part)[3]}
    return [k for k, t in ours.items() if t.data_ptr() not in covered]


def from_hf_state_dict(model: nn.Module, state_dict: dict, hf_config, part: str = "") -> list[str]:
    """Load an HF state dict into `model` (an objective, or a bare Backbone) in place.

    Returns our keys left as they were (heads the HF class lacks). Raises a one-line ValueError on a shape that
    differs from the model's, a missing or unused HF tensor, or layers that differ where the model shares them.
    """
    family = hf_config.model_type
    heads, config, _, entries = _plan(model, family, part, hf_config=hf_config)
    _check_same_shape(config, config_from_hf(hf_config), family)
    state_dict = dict(state_dict)
    used = fill_tied(state_dict, heads.hf_class) if heads else set()
    ours = model.state_dict()  # tensors that alias the parameters
    loaded, first_source = {}, {}
    for entry in entries:
        missing = [h for h in entry.hf if h not in state_dict]
        if missing:
            raise ValueError(f"Hugging Face checkpoint lacks {missing[0]} (needed for {entry.ours})")
        tensor = FROM_HF[entry.rule]([state_dict[h] for h in entry.hf], entry)
        if tensor.shape != ours[entry.ours].shape:
            raise ValueError(f"{entry.hf[0]} has shape {tuple(tensor.shape)}; {entry.ours} needs "
                             f"{tuple(ours[entry.ours].shape)}")
        ptr = ours[entry.ours].data_ptr()  # shared sublayers: several of our names, one tensor
        if ptr in first_source and not torch.equal(first_source[ptr][1], tensor):
            raise ValueError(f"{entry.hf[0]} differs from {first_source[ptr][0]}, but model.sharing="
                             f"{config.sharing} shares them: import with the sharing the checkpoint has")
        first_source.setdefault(ptr, (entry.hf[0], tensor))
        loaded[entry.ours] = tensor
        used.update(entry.hf)
    for name, expected in _constants(family, config).items():
        if name not in state_dict or not torch.equal(state_dict[name], expected):
            raise ValueError(f"{name} is not the identity: plmbench's backbone has no E -> H projection when "
                             f"embedding_size == hidden_size ({config.hidden_size})")
        used.add(name)
    _check_all_used(set(state_dict) - used, family, whole=heads is not None, hf_config=hf_config)
    with torch.no_grad():
        for key, tensor in loaded.items():
            ours[key].copy_(tensor)
    return [k for k, t in ours.items() if t.data_ptr() not in first_source]


def _check_same_shape(config: ModelConfig, theirs: ModelConfig, family: str) -> None:
    if config.family != family:
        raise ValueError(f"model.family={config.family} but the Hugging Face checkpoint is {family}")
    for key in ("vocab_size", "max_positions", "type_vocab_size", "hidden_size", "num_layers", "num_heads",
                "ffn_size", "embedding_size", "norm", "causal", "activation"):
        if getattr(config, key) != getattr(theirs, key):
            raise ValueError(f"model.{key}={getattr(config, key)!r} but the Hugging Face {family} checkpoint "
                             f"has {getattr(theirs, key)!r}")


def _check_all_used(unused: set[str], family: str, whole: bool, hf_config) -> None:
    """An HF tensor nobody reads means a half-loaded model; a bare backbone ignores HF's heads and pooler."""
    architecture = _hf_class((getattr(hf_config, "architectures", None) or [""])[0])
    ignored = getattr(architecture, "_keys_to_ignore_on_load_unexpected", None) or []  # GPT-2's old attn.bias
    base = FAMILIES[family].base
    for key in sorted(unused):
        if any(re.search(pattern, key) for pattern in ignored):
            continue
        if whole or (key.startswith(base) and not key.startswith(base + "pooler")):
            raise ValueError(f"Hugging Face checkpoint tensor {key} has no place in the plmbench model")
