"""TransE, filtered link-prediction metrics, the triple reader and the embedding cache, on tiny real graphs."""

import dataclasses
import itertools

import pytest
import torch

from plmbench.data.tasks.errors import DataError
from plmbench.data.triples import read_splits, read_triples
from plmbench.metrics.link_prediction import link_prediction
from plmbench.models.transe import TransEConfig, bernoulli_head_probability, train_transe
from plmbench.models.transe_cache import cached_transe

# ------------------------------------------------------------------------------------------ a graph with an answer

SIDE = 5  # a SIDE x SIDE grid: entity x*SIDE + y, relation 0 steps right, relation 1 steps up


def grid_triples() -> torch.Tensor:
    triples = [(x * SIDE + y, 0, (x + 1) * SIDE + y) for x in range(SIDE - 1) for y in range(SIDE)]
    triples += [(x * SIDE + y, 1, x * SIDE + y + 1) for x in range(SIDE) for y in range(SIDE - 1)]
    return torch.tensor(triples)


GRID_CONFIG = TransEConfig(dim=20, norm=1, margin=1.0, negatives=8, epochs=100, batch_size=64, lr=0.02, seed=0)


def test_transe_learns_to_rank_the_true_tail_of_a_grid_first():
    # Ranked on the edges it was trained on: a step held out of a 25-entity grid is drawn as a random negative
    # about once an epoch, so training pushes it apart; on WN18RR's 40,943 entities that almost never happens.
    triples = grid_triples()
    untrained = train_transe(triples, SIDE * SIDE, 2, dataclasses.replace(GRID_CONFIG, epochs=0))
    assert link_prediction(untrained.score_all, triples, [triples])["mrr"] < 0.3
    model = train_transe(triples, SIDE * SIDE, 2, GRID_CONFIG)
    found = link_prediction(model.score_all, triples, [triples])
    assert found["tail_mrr"] > 0.95 and found["tail_hits@1"] > 0.9, found
    assert found["mrr"] > 0.95, found


def test_entities_have_unit_norm_and_a_seed_fixes_the_embeddings():
    train = grid_triples()
    config = TransEConfig(dim=8, epochs=3, batch_size=16, negatives=2, seed=4)
    first = train_transe(train, SIDE * SIDE, 2, config)
    again = train_transe(train, SIDE * SIDE, 2, config)
    other = train_transe(train, SIDE * SIDE, 2, TransEConfig(dim=8, epochs=3, batch_size=16, negatives=2, seed=5))
    torch.testing.assert_close(first.entity.weight.norm(dim=1), torch.ones(SIDE * SIDE))
    assert torch.equal(first.entity.weight, again.entity.weight)
    assert torch.equal(first.relation.weight, again.relation.weight)
    assert not torch.equal(first.entity.weight, other.entity.weight)


def test_bern_corrupts_the_head_of_a_one_to_many_relation_more_often():
    one_to_many = torch.tensor([(0, 0, t) for t in range(1, 5)])  # 4 tails per head, 1 head per tail
    many_to_one = torch.tensor([(h, 1, 9) for h in range(1, 5)])
    probability = bernoulli_head_probability(torch.cat([one_to_many, many_to_one]), 2)
    torch.testing.assert_close(probability, torch.tensor([0.8, 0.2]))


def test_a_bad_config_value_is_named():
    with pytest.raises(ValueError, match=r"transe corruption='bernoulli': must be one of uniform, bern"):
        train_transe(grid_triples(), SIDE * SIDE, 2, TransEConfig(corruption="bernoulli"))


# ------------------------------------------------------------------------------------------ filtered metrics


def brute_force(scores: dict[str, torch.Tensor], test: list, known: set) -> dict[str, float]:
    """Filtered realistic ranks by looping over every candidate: an independent statement of the definition."""
    ranks = []
    for direction in ("tail", "head"):
        for row, (h, r, t) in enumerate(test):
            true_score = scores[direction][row, t if direction == "tail" else h].item()
            better = tied = 0
            for e in range(scores[direction].shape[1]):
                candidate = (h, r, e) if direction == "tail" else (e, r, t)
                if candidate == (h, r, t) or candidate in known:
                    continue
                value = scores[direction][row, e].item()
                better += value > true_score
                tied += value == true_score
            ranks.append(1 + better + tied / 2)
    return {"mrr": sum(1 / rank for rank in ranks) / len(ranks), "mr": sum(ranks) / len(ranks),
            **{f"hits@{k}": sum(rank <= k for rank in ranks) / len(ranks) for k in (1, 3, 10)}}


def test_filtered_metrics_equal_a_brute_force_count():
    generator = torch.Generator().manual_seed(0)
    entities, relations = 30, 3
    every = list(itertools.product(range(entities), range(relations), range(entities)))
    chosen = torch.randperm(len(every), generator=generator)[:400]
    triples = torch.tensor([every[i] for i in chosen])
    train, valid, test = triples[:300], triples[300:340], triples[340:]
    # Scores in a few integer levels, so that ties are common and their convention is tested too.
    scores = {direction: torch.randint(0, 4, (len(test), entities), generator=generator).float()
              for direction in ("tail", "head")}
    row_of = {tuple(triple): row for row, triple in enumerate(test.tolist())}

    def score(queries: torch.Tensor, direction: str) -> torch.Tensor:
        return scores[direction][[row_of[tuple(q)] for q in queries.tolist()]]

    found = link_prediction(score, test, [train, valid, test], batch_size=7)
    expected = brute_force(scores, test.tolist(), {tuple(t) for t in triples.tolist()})
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, abs=1e-12), name
    assert found["triples"] == len(test)


def test_ties_take_the_mean_rank_and_other_true_answers_are_filtered():
    # entities 0..3; the query (0, r0, ?) has true tails 1 (tested) and 2 (another true triple, filtered out)
    test = torch.tensor([(0, 0, 1)])
    known = [torch.tensor([(0, 0, 2)]), test]
    tail_scores = torch.tensor([[5.0, 1.0, 9.0, 1.0]])  # entity 0 beats the answer, entity 3 ties with it

    def score(queries, direction):
        return tail_scores if direction == "tail" else torch.tensor([[0.0, 3.0, 3.0, 3.0]])  # head 0 is last

    found = link_prediction(score, test, known)
    assert found["tail_mr"] == 1 + 1 + 0.5  # 2 is filtered; 0 is better; 3 ties: counts as half
    assert found["head_mr"] == 4  # 1, 2, 3 all score higher than the true head 0
    assert found["mr"] == (2.5 + 4) / 2


# ------------------------------------------------------------------------------------------ the triple reader


def write(folder, name: str, text: str):
    path = folder / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(("line", "problem"), [
    ("a\t_hypernym", "2 tab-separated column(s) in 'a\\t_hypernym', expected 3: head, relation, tail"),
    ("a\t_hypernym\tb\tc", "4 tab-separated column(s)"),
    ("a\t\tb", "an empty column in 'a\\t\\tb', expected 3: head, relation, tail"),
])
def test_a_malformed_line_names_file_line_and_the_columns_expected(tmp_path, line, problem):
    path = write(tmp_path, "train.txt", f"x\t_hypernym\ty\n\n{line}\n")
    with pytest.raises(DataError) as error:
        read_triples(path)
    assert str(error.value).startswith(f"{path}:3: {problem}")
    assert "\n" not in str(error.value)


def test_a_relation_training_never_saw_is_named_with_the_known_ones(tmp_path):
    write(tmp_path, "train.txt", "x\t_hypernym\ty\ny\t_also_see\tz\n")
    write(tmp_path, "valid.txt", "x\t_hypernym\tz\n")
    write(tmp_path, "test.txt", "x\t_hypernym\ty\nx\t_hypernyn\tz\n")
    with pytest.raises(DataError, match=r"test\.txt:2: unknown relation '_hypernyn'; known: _also_see, _hypernym$"):
        read_splits(tmp_path)
    with pytest.raises(DataError, match=r"no such file; expected one head<TAB>relation<TAB>tail triple per line"):
        read_triples(tmp_path / "missing.txt")


def test_ids_cover_every_split_in_sorted_order(tmp_path):
    write(tmp_path, "train.txt", "b\tr\tc\n")
    write(tmp_path, "valid.txt", "c\tr\ta\n")
    write(tmp_path, "test.txt", "d\tr\tb\r\n")  # a CRLF file reads the same
    graph = read_splits(tmp_path)
    assert graph.entities == ("a", "b", "c", "d") and graph.relations == ("r",)
    assert graph.splits["test"].tolist() == [[3, 0, 1]]


def test_wn18rr_has_the_published_counts(shared_data):
    graph = read_splits(shared_data / "wn18rr")
    assert {split: len(t) for split, t in graph.splits.items()} == {"train": 86835, "valid": 3034, "test": 3134}
    assert (graph.num_entities, graph.num_relations) == (40943, 11)
    listed = (shared_data / "wn18rr" / "relations.dict").read_text().split()[1::2]
    assert sorted(listed) == list(graph.relations)


# ------------------------------------------------------------------------------------------ the cache


def test_a_second_call_loads_the_embeddings_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PLMBENCH_CACHE", str(tmp_path / "cache"))
    train = grid_triples()
    config = TransEConfig(dim=8, epochs=2, batch_size=16, negatives=2)
    trained, cached = cached_transe(train, SIDE * SIDE, 2, config)
    loaded, hit = cached_transe(train, SIDE * SIDE, 2, config)
    assert (cached, hit) == (False, True)
    assert torch.equal(trained.entity.weight, loaded.entity.weight)
    assert torch.equal(trained.relation.weight, loaded.relation.weight)
    # other settings, or other triples, train afresh
    assert cached_transe(train, SIDE * SIDE, 2, TransEConfig(dim=8, epochs=2, batch_size=16, seed=1))[1] is False
    assert cached_transe(train[1:], SIDE * SIDE, 2, config)[1] is False
    assert len(list((tmp_path / "cache" / "transe").iterdir())) == 3
