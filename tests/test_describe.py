"""`plmbench describe` reproduces ALBERT Table 4's parameter column with the paper's counting rule."""

import json
import subprocess
import sys

import pytest

from plmbench.configuration import compose
from plmbench.objectives.counting import describe_config

# ALBERT Table 4, "Parameters" column (millions).
TABLE4_PARAMS = {
    ("e768", "all"): 31, ("e768", "attention"): 83, ("e768", "ffn"): 57, ("e768", "none"): 108,
    ("e128", "all"): 12, ("e128", "attention"): 64, ("e128", "ffn"): 38, ("e128", "none"): 89,
}


@pytest.mark.parametrize("embedding,sharing", sorted(TABLE4_PARAMS))
def test_table4_parameter_counts(embedding, sharing):
    cfg = compose("pretrain", ["experiment=albert_table4", "scale=paper", f"embedding={embedding}",
                               f"sharing={sharing}"])
    params = describe_config(cfg)["backbone_params"] / 1e6
    assert abs(params - TABLE4_PARAMS[(embedding, sharing)]) <= 1.0, params


def test_describe_cli_prints_one_line_per_cell():
    out = subprocess.run([sys.executable, "-m", "plmbench.cli", "describe", "experiment=albert_table4", "scale=paper"],
                         capture_output=True, text=True, check=True).stdout
    cells = [json.loads(line) for line in out.splitlines()]
    assert len(cells) == 8
    assert {c["cell"] for c in cells} == {f"embedding={e} sharing={s}" for e, s in TABLE4_PARAMS}


def test_shared_weights_count_once_but_execute_per_layer():
    shared = describe_config(compose("pretrain", ["model=albert", "size=base", "sharing=all"]))
    unshared = describe_config(compose("pretrain", ["model=albert", "size=base", "sharing=none"]))
    assert shared["executed_params"] == unshared["executed_params"]
    assert shared["train_flops_per_token"] == unshared["train_flops_per_token"]
    assert shared["backbone_params"] < unshared["backbone_params"] / 7


def test_bert_base_is_110m_with_pooler_free_count():
    out = describe_config(compose("pretrain", ["model=bert", "size=base", "model.vocab_size=30522"]))
    # BERT-base is "110M" including its pooler (0.6M); the backbone alone is 108.9M.
    assert abs(out["backbone_params"] / 1e6 - 108.9) < 0.2


@pytest.mark.parametrize("override,needle", [
    ("sharing=alll", "sharing"),
    ("model.sharing=alll", "model.sharing='alll': allowed values are none, attention, ffn, all"),
    ("model.hidden_size=100", "model.hidden_size=100 is not divisible by model.num_heads=12"),
    ("model=gpt objective=mlm_sop", "causal"),
    ("modle.sharing=all", "modle"),
])
def test_bad_config_fails_fast_with_one_line_naming_the_key(override, needle):
    result = subprocess.run([sys.executable, "-m", "plmbench.cli", "describe", *override.split()],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
