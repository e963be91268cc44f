"""How much of the supersense probe's answer the fusion table holds: a linear classifier on the TransE vector alone.

    nice -n 19 python -m plmbench.bench.entity_table_lexnames [--exclude supersense]

The supersense probe (data/tasks/supersense.py) asks for a noun's lexicographer file; an ERNIE-style model can only
gain on it what its entity table knows. This reads the table that `knowledge=ernie` fuses (built or found in the
cache, models/entity_table.py) and fits a multinomial logistic regression from an entity's vector to its label,
twice, always with the probe's lemma split (the validation lemmas never trained on):
- over every one-word, one-sense noun lemma of WordNet (what the table knows in general);
- over the probe's own rows, train on its train split and score its validation split (the ceiling of what fusion
  could add on the probe, beside the fine-tuned models' accuracies in the knowledge table).
Each against the majority class of its train split. Writes results/bench/entity_table_lexnames.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from plmbench import paths
from plmbench.data.knowledge_graph import load_graph
from plmbench.data.wordnet import default_root
from plmbench.models.entity_table import build_entity_table

L2 = 1e-3  # weight decay on the classifier: 100 standardised features, thousands of rows


def linear_probe(vectors: torch.Tensor, train: Sequence[tuple[int, int]], test: Sequence[tuple[int, int]],
                 num_labels: int) -> dict:
    """Accuracy on `test` of a logistic regression fitted on `train`, both (row of `vectors`, label) pairs, and the
    accuracy of always answering the train split's most frequent label."""
    def split(pairs):
        return vectors[[row for row, _ in pairs]].double(), torch.tensor([label for _, label in pairs])

    x, y = split(train)
    x_test, y_test = split(test)
    mean, std = x.mean(0), x.std(0) + 1e-8  # standardised with the train split's statistics
    x, x_test = (x - mean) / std, (x_test - mean) / std
    weight = torch.zeros(x.shape[1], num_labels, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ weight + bias, y) + L2 * weight.pow(2).sum()
        value.backward()
        return value

    optimizer.step(loss)
    with torch.no_grad():
        accuracy = ((x_test @ weight + bias).argmax(1) == y_test).double().mean().item()
    majority = torch.bincount(y, minlength=num_labels).argmax()
    return {"accuracy": round(accuracy, 4), "majority": round((y_test == majority).double().mean().item(), 4),
            "train": len(train), "test": len(test)}


def main(argv: Sequence[str] | None = None) -> dict:
    from plmbench.data.tasks.supersense import NOUN_LEXFILES, is_held_out, load_supersense, target_forms

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exclude", nargs="*", default=[], help="knowledge.table.exclude (e.g. supersense)")
    parser.add_argument("--probe-seed", type=int, default=0, help="the probe's task.proxy.seed (its lemma split)")
    args = parser.parse_args(argv)
    root = default_root().resolve()
    table_path = build_entity_table(root, exclude=args.exclude, probe_seed=args.probe_seed)
    vectors, graph, forms = torch.load(table_path, weights_only=True), load_graph(root), target_forms(root)

    def entity(lemma: str) -> int:  # target forms are one-sense nouns: exactly one noun synset
        (sense,) = [s for s in graph.senses[lemma.replace(" ", "_")] if s.pos == "n"]
        return sense.entity

    lemmas = sorted(set(forms.values()))
    held_out = {lemma for lemma, _ in lemmas if is_held_out(lemma, args.probe_seed)}
    every_noun = linear_probe(vectors, [(entity(w), y) for w, y in lemmas if w not in held_out],
                              [(entity(w), y) for w, y in lemmas if w in held_out], len(NOUN_LEXFILES))
    task = {"name": "supersense", "kind": "classification", "num_labels": len(NOUN_LEXFILES),
            "proxy": {"train_size": 2000, "eval_size": 500, "seed": args.probe_seed}}
    probe = load_supersense(task)

    def rows(split: str) -> list[tuple[int, int]]:
        out = []
        for row in probe[split]:
            text = row["text_a"]
            out.append((entity(forms[text[text.index("[") + 1:text.index("]")]][0]), row["label"]))
        return out

    probe_rows = linear_probe(vectors, rows("train"), rows("validation"), len(NOUN_LEXFILES))
    report = {"table": str(table_path), "exclude": args.exclude, "probe_seed": args.probe_seed,
              "every_one_sense_noun": every_noun, "probe_rows": probe_rows}
    out = paths.results_root() / "bench" / "entity_table_lexnames.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
