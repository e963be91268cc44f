"""A cell id covers numeric precision, which changes the weights, and not impl's pure speed knobs."""

import pytest

from plmbench.configuration import compose
from plmbench.lineage import cell_id

BASE = ["model=albert", "scale=smoke", "sharing=all", "objective=mlm_sop", "embedding=e128"]


def test_precision_enters_the_cell_id():
    fp32 = compose("pretrain", BASE + ["impl.precision=32-true"])
    bf16 = compose("pretrain", BASE + ["impl.precision=bf16-mixed"])
    assert cell_id(fp32) != cell_id(bf16)


@pytest.mark.parametrize("speed", ["impl.compile=true", "impl.threads=1", "impl.fused_adamw=false"])
def test_speed_knobs_keep_the_cell_id(speed):
    base = BASE + ["impl.precision=32-true"]
    assert cell_id(compose("pretrain", base)) == cell_id(compose("pretrain", base + [speed]))
