"""plmbench's models compute what the Hugging Face models compute, weight for weight (litgpt's test_against_hf).

Each case builds our objective at size=tiny, perturbs every parameter (so that a swapped bias or a q/k order slip
shows), exports it with hf_mapping, loads the result into the HF class with eager attention and compares last
hidden states and every head's logits on padded, two-segment inputs, at the real (non-padded) positions.
"""

import functools
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from plmbench.commands import export_hf
from plmbench.configuration import compose
from plmbench.data.tokenizer import get_tokenizer, save_hf_tokenizer
from plmbench.models import hf_folder, hf_mapping
from plmbench.models.config import ModelConfig
from plmbench.objectives import build_objective
from plmbench.objectives.hf import objective_from_hf
from test_tokenizer import WikiText

transformers = pytest.importorskip("transformers")

TOL = 1e-5
TINY = ["size=tiny", "model.vocab_size=1000", "model.max_positions=64"]
CASES = {  # name -> overrides
    "albert_all": ["model=albert"],
    "albert_attention": ["model=albert", "sharing=attention"],
    "albert_ffn": ["model=albert", "sharing=ffn"],
    "albert_none": ["model=albert", "sharing=none"],
    "albert_e_eq_h": ["model=albert", "embedding=full"],  # identity embedding_hidden_mapping_in
    "bert": ["model=bert"],
    "bert_shared": ["model=bert", "sharing=all"],  # written unrolled: every layer its own copy
    "roberta": ["model=roberta"],
    "electra": ["model=electra"],
    "gpt2": ["model=gpt"],
}


@functools.cache
def composed(overrides: tuple[str, ...]) -> tuple[ModelConfig, dict]:
    cfg = compose("pretrain", [*overrides, *TINY])
    return ModelConfig.from_mapping(cfg.model), OmegaConf.to_container(cfg.objective, resolve=True)


def build(overrides: list[str], seed: int = 0) -> torch.nn.Module:
    config, objective = composed(tuple(overrides))
    torch.manual_seed(seed)
    model = build_objective(config, objective)
    with torch.no_grad():  # biases start at 0 and norms at 1: perturb so that every mapping error shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def hf_model(model: torch.nn.Module, part: str = ""):
    hf_config, state_dict = hf_mapping.to_hf_state_dict(model, part=part)
    cls = getattr(transformers, hf_config.architectures[0])
    hf = cls._from_config(hf_config, attn_implementation="eager")
    hf.load_state_dict(state_dict, strict=True)
    return hf.eval()


def batch(config: ModelConfig) -> dict:
    """Right-padded rows of lengths 16, 11 and 7; segment B from the middle; no special ids among the tokens."""
    torch.manual_seed(1)
    pad = hf_mapping.default_special_ids(config.family)["pad_token_id"]
    lengths = torch.tensor([16, 11, 7])
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, config.vocab_size, (3, 16)).masked_fill(mask == 0, pad)
    types = (torch.arange(16)[None, :] >= lengths[:, None] // 2).long() * mask
    types = types.clamp(max=max(config.type_vocab_size - 1, 0))
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def ours_and_theirs(model, hf, inputs, backbone="backbone"):
    kwargs = dict(inputs)
    if getattr(model, backbone).config.type_vocab_size == 0:
        kwargs.pop("token_type_ids")
    with torch.no_grad():
        hidden = getattr(model, backbone)(**kwargs)
        out = hf(**kwargs, output_hidden_states=True)
        theirs = hf.base_model(**kwargs).last_hidden_state
    return hidden, out, theirs


def assert_close(ours, theirs, mask=None, what=""):
    if mask is not None:
        ours, theirs = ours[mask.bool()], theirs[mask.bool()]
    diff = (ours - theirs).abs().max().item()
    assert diff < TOL, f"{what}: max abs difference {diff:.2e}"


@pytest.mark.parametrize("case", CASES)
def test_outputs_equal_hugging_face(case):
    model = build(CASES[case])
    inputs = batch(model.config)
    mask = inputs["attention_mask"]
    hf = hf_model(model)
    hidden, out, theirs = ours_and_theirs(model, hf, inputs)
    assert_close(hidden, theirs, mask, "last hidden state")
    with torch.no_grad():
        if hasattr(model, "mlm_head"):
            logits = out.prediction_logits if hasattr(out, "prediction_logits") else out.logits
            assert_close(model.mlm_head(hidden), logits, mask, "MLM logits")
        if hasattr(out, "seq_relationship_logits") or hasattr(out, "sop_logits"):
            sentence = getattr(out, "seq_relationship_logits", None)
            sentence = sentence if sentence is not None else out.sop_logits
            assert_close(model.sentence_head(hidden), sentence, what="NSP/SOP logits")
        if hasattr(model, "lm_head"):
            assert_close(model.lm_head(hidden), out.logits, mask, "LM logits")
        if hasattr(model, "discriminator_head"):
            assert_close(model.discriminator_head(hidden), out.logits, mask, "discriminator logits")
            generator = hf_model(model, part="generator")
            gen_hidden, gen_out, gen_theirs = ours_and_theirs(model, generator, inputs, backbone="generator")
            assert_close(gen_hidden, gen_theirs, mask, "generator hidden state")
            assert_close(model.generator_head(gen_hidden), gen_out.logits, mask, "generator MLM logits")


def test_parity_check_can_fail():
    """Swapping two HF key/value weights must break the comparison: the tolerance is not vacuous."""
    model = build(CASES["bert"])
    hf = hf_model(model)
    attention = hf.bert.encoder.layer[0].attention.self
    with torch.no_grad():
        attention.key.weight, attention.value.weight = attention.value.weight, attention.key.weight
    inputs = batch(model.config)
    hidden, _, theirs = ours_and_theirs(model, hf, inputs)
    with pytest.raises(AssertionError):
        assert_close(hidden, theirs, inputs["attention_mask"])


AUTO_CLASSES = {"AlbertForPreTraining": "AutoModelForPreTraining", "BertForPreTraining": "AutoModelForPreTraining",
                "ElectraForPreTraining": "AutoModelForPreTraining", "RobertaForMaskedLM": "AutoModelForMaskedLM",
                "ElectraForMaskedLM": "AutoModelForMaskedLM", "GPT2LMHeadModel": "AutoModelForCausalLM"}


@pytest.mark.parametrize("case", ["albert_attention", "albert_e_eq_h", "bert", "roberta", "electra", "gpt2"])
def test_export_loads_with_auto_classes_and_round_trips(case, tmp_path):
    model = build(CASES[case])
    written = export_hf.export(model, tmp_path)
    for name in written:
        part, _, cls_name = name.rpartition("/")
        folder = tmp_path / part
        auto = getattr(transformers, AUTO_CLASSES[cls_name])
        loaded, info = auto.from_pretrained(folder, output_loading_info=True)
        assert type(loaded).__name__ == cls_name
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
        _, base_info = transformers.AutoModel.from_pretrained(folder, output_loading_info=True)
        # RobertaModel adds a pooler that RobertaForMaskedLM checkpoints (HF's own too) never hold
        pooler = {"pooler.dense.weight", "pooler.dense.bias"} if case == "roberta" else set()
        assert set(base_info["missing_keys"]) == pooler, base_info
    fresh = objective_from_hf(tmp_path)  # export -> import into a newly built model
    assert fresh.config == model.config
    mine, theirs = model.state_dict(), fresh.state_dict()
    left_out = set(hf_mapping.not_exported(model))
    assert left_out == ({k for k in mine if k.startswith("sentence_head.")} if case == "roberta" else set())
    for key in mine:
        if key not in left_out:
            assert torch.equal(mine[key], theirs[key]), key


def test_import_reads_sharing_and_refuses_what_it_cannot_represent():
    model = build(CASES["albert_attention"])
    hf_config, state_dict = hf_mapping.to_hf_state_dict(model)
    assert hf_config.num_hidden_groups == model.config.num_layers  # written unrolled
    assert hf_mapping.config_from_hf(hf_config, state_dict).sharing == "attention"
    unshared = build(CASES["albert_none"], seed=1)  # same function, more parameters: allowed
    hf_mapping.from_hf_state_dict(unshared, state_dict, hf_config)
    assert torch.equal(unshared.backbone.layers[3].attention.inner.qkv.weight,
                       model.backbone.layers[0].attention.inner.qkv.weight)
    all_shared = build(CASES["albert_all"], seed=1)
    with pytest.raises(ValueError, match="differs from .* shares them"):
        hf_mapping.from_hf_state_dict(all_shared, state_dict, hf_config)
    bert = build(CASES["bert"])
    with pytest.raises(ValueError, match="model.family=bert"):
        hf_mapping.from_hf_state_dict(bert, state_dict, hf_config)


def test_identity_projection_is_checked_on_import():
    model = build(CASES["albert_e_eq_h"])
    hf_config, state_dict = hf_mapping.to_hf_state_dict(model)
    name = "albert.encoder.embedding_hidden_mapping_in.weight"
    assert torch.equal(state_dict[name], torch.eye(model.config.hidden_size))
    state_dict[name] = state_dict[name] * 2
    with pytest.raises(ValueError, match="not the identity"):
        hf_mapping.from_hf_state_dict(build(CASES["albert_e_eq_h"], seed=1), state_dict, hf_config)


def test_backbone_import_for_fine_tuning(tmp_path):
    model = build(CASES["electra"])
    export_hf.export(model, tmp_path)
    backbone = hf_folder.backbone_from_hf(tmp_path).eval()
    inputs = batch(model.config)
    with torch.no_grad():
        assert torch.equal(backbone(**inputs), model.backbone(**inputs))
    hf_config, state_dict = hf_folder.read_hf_folder(tmp_path)
    assert hf_folder.pooler_state(state_dict, hf_config) == {}  # ELECTRA has no pooler
    bert = build(CASES["bert"])
    hf_config, state_dict = hf_mapping.to_hf_state_dict(bert)
    pooler = hf_folder.pooler_state(state_dict, hf_config)
    assert torch.equal(pooler["weight"], bert.sentence_head.pooler.dense.weight.detach())


def test_unexportable_configs_are_one_line_errors():
    with pytest.raises(ValueError, match="model.embedding_size=128 != model.hidden_size=64"):
        hf_mapping.to_hf_state_dict(build(["model=bert", "embedding=e128"]))
    with pytest.raises(ValueError, match="model.activation='gelu_new'.*requires 'gelu'"):
        hf_mapping.to_hf_state_dict(build(["model=roberta", "model.activation=gelu_new"]))


def test_lightning_checkpoint_and_bad_path(tmp_path):
    model = build(CASES["bert"])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 0}, ckpt)
    export_hf.main(CASES["bert"] + TINY + [f"ckpt={ckpt}", f"out={tmp_path / 'hf'}"])
    _, state_dict = hf_folder.read_hf_folder(tmp_path / "hf")
    assert torch.equal(state_dict["cls.predictions.bias"], model.mlm_head.bias.detach())
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        export_hf.main(CASES["bert"] + TINY + [f"ckpt={tmp_path / 'missing.ckpt'}", f"out={tmp_path / 'x'}"])
    with pytest.raises(ValueError, match="does not match the configured model"):
        export_hf.main(CASES["gpt2"] + TINY + [f"ckpt={ckpt}", f"out={tmp_path / 'x'}"])


def test_a_run_checkpoint_exports_with_its_own_shape_and_never_over_files(tmp_path):
    """Issue 15: export-hf of a run's checkpoint needs no overrides (the run's config.yaml has the shape), and an
    out folder holding files is refused before anything is written."""
    model = build(CASES["gpt2"])
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    OmegaConf.save(compose("pretrain", [*CASES["gpt2"], *TINY]), tmp_path / "run" / "config.yaml")
    export_hf.main([f"ckpt={ckpt}", f"out={tmp_path / 'hf'}"])  # the default config would be ALBERT-base
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert loaded.config.n_embd == model.config.hidden_size
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"out=.*mine: exists and is not an empty folder"):
        export_hf.main([f"ckpt={ckpt}", f"out={tmp_path / 'mine'}"])
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_cli_writes_a_folder_hugging_face_loads(tmp_path):
    out = tmp_path / "albert_ffn"
    result = subprocess.run(
        [sys.executable, "-m", "plmbench.cli", "export-hf", "model=albert", "size=tiny", "sharing=ffn",
         "model.vocab_size=1000", f"out={out}"], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "AlbertForPreTraining" in result.stdout
    loaded, info = transformers.AutoModelForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.config.num_hidden_groups == 4 and loaded.config.hidden_act == "gelu_new"
    assert hf_mapping.config_from_hf(*hf_folder.read_hf_folder(out)).sharing == "ffn"


def test_tokenizer_travels_with_the_export(shared_data, tmp_path, monkeypatch):
    """Real text through the exported tokenizer: HF RoBERTa's pad-derived positions meet our shifted table."""
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))
    corpus = WikiText(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt", max_docs=20)
    tokenizer, special = get_tokenizer(corpus, "bytebpe", 1000)
    save_hf_tokenizer(tokenizer, special, tmp_path / "tokenizer", "roberta")
    export_hf.main(CASES["roberta"] + TINY + [f"tokenizer={tmp_path / 'tokenizer'}", f"out={tmp_path / 'hf'}"])
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    hf = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    assert (hf.config.pad_token_id, hf.config.bos_token_id, hf.config.eos_token_id) == \
        (special.pad, special.cls, special.sep)
    inputs = hf_tokenizer(["The European lobster, Homarus gammarus, is blue.", "It is a lobster."],
                          padding=True, return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any() and (inputs["input_ids"] == special.pad).any()
    ours = objective_from_hf(tmp_path / "hf").eval()
    with torch.no_grad():
        hidden = ours.backbone(inputs["input_ids"], inputs["attention_mask"])
        logits = hf(**inputs).logits
    assert_close(ours.mlm_head(hidden), logits, inputs["attention_mask"], "MLM logits on real text")
