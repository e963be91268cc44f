"""The linear probe behind bench/entity_table_lexnames.py: it finds a label the vectors hold and none they do not."""

import torch

from plmbench.bench.entity_table_lexnames import linear_probe


def clusters(seed: int, n: int = 300, labels: int = 4, dim: int = 10) -> tuple[torch.Tensor, list[int]]:
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(labels, (n,), generator=generator)
    centres = torch.randn(labels, dim, generator=generator) * 3
    return centres[y] + torch.randn(n, dim, generator=generator), y.tolist()


def test_vectors_that_hold_the_label_are_read_back():
    vectors, y = clusters(0)
    pairs = list(enumerate(y))
    result = linear_probe(vectors, pairs[:200], pairs[200:], num_labels=4)
    assert result["accuracy"] > 0.95 and result["majority"] < 0.5
    assert (result["train"], result["test"]) == (200, 100)


def test_vectors_unrelated_to_the_label_stay_near_chance():
    vectors, _ = clusters(0)
    y = torch.randint(4, (300,), generator=torch.Generator().manual_seed(1)).tolist()  # labels the vectors never saw
    pairs = list(enumerate(y))
    assert linear_probe(vectors, pairs[:200], pairs[200:], num_labels=4)["accuracy"] < 0.4
