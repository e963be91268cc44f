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


# Ids of existing configs, computed before optim and logger configs named their `_target_` (issue 14): a change
# to how configs are written must not move a trained cell or a recorded unit to a new id. Update a value only
# with a LINEAGE_VERSION bump or a change that really changes the weights (then old cells must not be reused).
PINNED_CELLS = {
    ("model=albert",): "53a359739ffa83d0",
    ("model=bert",): "579a9508f6694791",
    ("model=roberta",): "10804e4fb3de71ae",
    ("model=albert", "optim=lamb", "scale=smoke"): "6bc136e9685a66e2",
    ("model=bert", "optim=adamw_roberta", "scale=smoke"): "e13572c7b1ea177d",
    ("model=electra", "optim=adamw", "scale=smoke"): "dad67af0034d6040",
}


@pytest.mark.parametrize(("overrides", "expected"), PINNED_CELLS.items(), ids=[" ".join(o) for o in PINNED_CELLS])
def test_existing_cell_ids_are_unchanged(overrides, expected):
    assert cell_id(compose("pretrain", list(overrides))) == expected


def test_existing_unit_and_student_ids_are_unchanged():
    from plmbench.commands import sweep

    _, _, micro, _ = sweep.plan(["experiment=micro", "scale=smoke"])
    assert micro == {"0cc3dce8d2f430d9": {"4fe29346605a45ca", "9bd58b9dae25ca09"},
                     "184b54814d1f7341": {"51ac34a750bd6a1f", "cd23c9b4959f5964"}}
    _, _, distillation, _ = sweep.plan(["experiment=distillation", "scale=smoke"])
    assert set(distillation) == {"47f71efcb5651a5d", "7af0745c54cc145c", "f489480f6533811c"}  # a teacher, students


@pytest.mark.parametrize("own", ["optim._target_=torch.optim.Adam",
                                 "+optim.scheduler.num_cycles=0.5",
                                 "optim.scheduler._target_=transformers.get_cosine_schedule_with_warmup"])
def test_a_users_own_optimiser_or_schedule_is_a_new_cell(own):
    """Naming conf/optim's implementations by `_target_` kept the ids; naming another changes the weights."""
    assert cell_id(compose("pretrain", BASE)) != cell_id(compose("pretrain", [*BASE, own]))
