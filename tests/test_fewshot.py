"""Zero/one/few-shot evaluation: seeded prompts that never show the evaluated example, context fitting, option
scores equal to a token-by-token computation, greedy answers, and the sweep unit on a pre-training run."""

import datasets
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from plmbench.configuration import compose
from plmbench.data.corpora import build_corpus
from plmbench.data.tokenizer import get_tokenizer, save_hf_tokenizer
from plmbench.fewshot.evaluate import _Prompter, evaluate_shots, option_scores
from plmbench.fewshot.prompts import (
    STYLES,
    PromptError,
    draw_demonstrations,
    encode_prompt,
    format_for,
    render_input,
)
from plmbench.fewshot.scoring import choose, continuation_logprobs, greedy_generate
from plmbench.fewshot.units import ShotsError, run_shots_unit
from plmbench.models.config import ModelConfig
from plmbench.objectives.clm import CausalLM
from test_wandb_runs import offline_runs

RTE = {"name": "rte", "family": "glue", "kind": "classification", "num_labels": 2,
       "metric": {"name": "glue", "config": "rte"}, "eval_splits": ["validation"]}
RACE = {"name": "race", "family": "race", "kind": "multiple_choice", "num_labels": 4,
        "metric": {"name": "race", "config": None}, "eval_splits": ["validation"]}
SQUAD = {"name": "squad_v1", "family": "squad", "kind": "span", "num_labels": 2, "max_answer_length": 4,
         "metric": {"name": "squad", "config": None}, "eval_splits": ["validation"]}
GPT3 = STYLES["gpt3"]


@pytest.fixture(scope="module")
def bpe(tmp_path_factory, shared_data):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLMBENCH_CACHE", str(tmp_path_factory.mktemp("fewshot") / "cache"))
        corpus = build_corpus({"kind": "files", "name": "shakespeare",
                               "paths": str(shared_data / "corpus/tinyshakespeare/input.txt")})
        yield get_tokenizer(corpus, "bytebpe", 600)


def tiny_gpt(vocab_size: int, max_positions: int = 256) -> CausalLM:
    torch.manual_seed(0)
    config = ModelConfig(family="gpt2", vocab_size=vocab_size, max_positions=max_positions, type_vocab_size=0,
                         hidden_size=32, num_layers=2, num_heads=2, ffn_size=64, embedding_size=32, norm="pre",
                         causal=True, activation="gelu_new", dropout=0.0, attention_dropout=0.0,
                         layer_norm_eps=1e-5, embedding_norm=False, init_std=0.2)  # wide init: peaked outputs
    return CausalLM(config).eval()


@pytest.fixture(scope="module")
def lm(bpe):
    return tiny_gpt(bpe[0].get_vocab_size())


def pairs(n: int, offset: int = 0) -> list[dict]:
    return [{"idx": i, "text_a": f"The king number {i + offset} rode to York.", "text_b": f"A king rode {i % 3}.",
             "label": i % 2} for i in range(n)]


def rte_data(train: list[dict], validation: list[dict]) -> datasets.DatasetDict:
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(train),
                                 "validation": datasets.Dataset.from_list(validation)})


# ------------------------------------------------------------------------------------------ prompts


def prompts_for(bpe, data, k: int, seed: int, budget: int = 10_000) -> list[list[int]]:
    fmt, key = format_for(RTE), lambda row: render_input(format_for(RTE), GPT3, row)
    out = []
    for i, row in enumerate(data["validation"]):
        demos = draw_demonstrations(data["train"], k, seed, i, key(row), key)
        out.append(encode_prompt(fmt, GPT3, row, demos, *bpe, budget).ids)
    return out


def test_prompts_are_deterministic_for_a_seed(bpe):
    data = rte_data(pairs(40), pairs(6, offset=100))
    first = prompts_for(bpe, data, k=3, seed=0)
    assert first == prompts_for(bpe, data, k=3, seed=0)
    assert first != prompts_for(bpe, data, k=3, seed=1)
    text = bpe[0].decode(first[0]).lower()  # the tokenizer lowercases
    assert text.count("answer:") == 4 and text.rstrip().endswith("answer:")  # 3 solved + the question


def test_demonstrations_never_show_the_evaluated_example_or_its_duplicates():
    train = pairs(12)
    train += [dict(row, idx=100 + row["idx"]) for row in train[:4]]  # exact duplicates (another idx)
    train = datasets.Dataset.from_list(train)
    key = lambda row: render_input(format_for(RTE), GPT3, row)
    for i in range(4):  # evaluate train rows that exist twice
        row = train[i]
        for seed in range(5):
            demos = draw_demonstrations(train, 11, seed, i, key(row), key)
            assert len(demos) == 11  # every other distinct row, the example and its duplicate excluded
            assert all(key(d) != key(row) for d in demos)
    with pytest.raises(PromptError, match="k=-1"):
        draw_demonstrations(train, -1, 0, 0, "", key)


def test_prompt_fits_the_context_dropping_demonstrations_before_tokens(bpe):
    tokenizer, special = bpe
    fmt, key = format_for(RTE), lambda row: render_input(format_for(RTE), GPT3, row)
    rows = pairs(8)
    row = rows[0]
    demos = draw_demonstrations(datasets.Dataset.from_list(rows[1:]), 5, 0, 0, key(row), key)
    length = lambda shots: len(encode_prompt(fmt, GPT3, row, demos[5 - shots:], *bpe, 10_000).ids)
    budget = length(2) + 1  # room for the last two demonstrations only
    prompt = encode_prompt(fmt, GPT3, row, demos, tokenizer, special, budget=budget)
    assert len(prompt.ids) <= budget and prompt.shots == 2 and not prompt.truncated
    assert prompt.ids == encode_prompt(fmt, GPT3, row, demos[3:], *bpe, 10_000).ids  # the last ones are kept
    tiny = encode_prompt(fmt, GPT3, row, demos, tokenizer, special, budget=20)
    full = encode_prompt(fmt, GPT3, row, [], tokenizer, special, budget=10_000)
    assert tiny.shots == 0 and tiny.truncated and tiny.ids == full.ids[-20:]  # then cut from the left
    assert tokenizer.decode(tiny.ids).endswith("answer:")


# ------------------------------------------------------------------------------------------ scoring


def hand_logprob(model, context: list[int], continuation: list[int]) -> float:
    """Sum over continuation tokens of log_softmax(logits of the unpadded prefix)[token], one token at a time."""
    total = 0.0
    for j, token in enumerate(continuation):
        prefix = torch.tensor([context + continuation[:j]])
        logits = model.lm_head(model.backbone(prefix))[0, -1]
        total += float(F.log_softmax(logits.double(), -1)[token])
    return total


def test_option_scores_equal_a_token_by_token_computation(lm, bpe):
    tokenizer, special = bpe
    contexts = [tokenizer.encode(t, add_special_tokens=False).ids for t in
                ("The king rode to York. Answer:", "Answer:", "Thou art a villain, and the duke knows it. Answer:")]
    options = [tokenizer.encode(t, add_special_tokens=False).ids for t in (" yes", " no", " maybe not today")]
    batch_contexts = [c for c in contexts for _ in options]
    batch_options = [o for _ in contexts for o in options]
    with torch.no_grad():
        scores = continuation_logprobs(lm, batch_contexts, batch_options, special.pad)
        expected = [hand_logprob(lm, c, o) for c, o in zip(batch_contexts, batch_options)]
    assert [n for _, n in scores] == [len(o) for o in batch_options]
    assert [s for s, _ in scores] == pytest.approx(expected, abs=1e-4)
    assert len({round(s, 3) for s in expected}) > 1  # the model is not uniform: the check has teeth
    assert choose([(-3.0, 1), (-4.0, 4)], "sum") == 0 and choose([(-3.0, 1), (-4.0, 4)], "mean") == 1
    # (log P(option | prompt), tokens, log P(option | "Answer:")): per token the second option is likelier, but
    # the first is 4 nats likelier after the prompt than after the cue alone, the second 1 nat less likely
    assert choose([(-2.0, 1, -6.0), (-4.0, 4, -3.0)], "mean") == 1
    assert choose([(-2.0, 1, -6.0), (-4.0, 4, -3.0)], "calibrated") == 0


def test_greedy_generation_equals_step_by_step_argmax(lm, bpe):
    tokenizer, special = bpe
    prompts = [tokenizer.encode(t, add_special_tokens=False).ids for t in ("Question: who rode? Answer:", "Answer:")]
    generated = greedy_generate(lm, prompts, 5, special.pad, set(), tokenizer.decode, ())
    for prompt, tokens in zip(prompts, generated):
        sequence = list(prompt)
        with torch.no_grad():
            for _ in range(5):
                sequence.append(int(lm.lm_head(lm.backbone(torch.tensor([sequence])))[0, -1].argmax()))
        assert tokens == sequence[len(prompt):]


# ------------------------------------------------------------------------------------------ evaluate_shots


def test_classification_accuracy_equals_hand_scored_predictions(lm, bpe):
    tokenizer, special = bpe
    data = rte_data(pairs(30), pairs(8, offset=50))
    result = evaluate_shots(lm, tokenizer, special, RTE, data, k=2, seed=3, style="gpt3")
    fmt, key = format_for(RTE), lambda row: render_input(format_for(RTE), GPT3, row)
    yes_no = [tokenizer.encode(f" {word}", add_special_tokens=False).ids for word in ("yes", "no")]
    correct = 0
    for i, row in enumerate(data["validation"]):
        demos = draw_demonstrations(data["train"], 2, 3, i, key(row), key)
        prompt = encode_prompt(fmt, GPT3, row, demos, tokenizer, special, 256 - max(map(len, yes_no))).ids
        with torch.no_grad():
            scores = [hand_logprob(lm, prompt, option) for option in yes_no]
        correct += int(scores.index(max(scores)) == row["label"])
    assert result["best"]["accuracy"] == pytest.approx(correct / 8)
    assert result["primary"] == {"name": "accuracy", "split": "validation", "value": result["best"]["accuracy"],
                                 "choice_score": "sum"}
    assert result["prompts"]["validation"]["shots_mean"] == 2 and result["k"] == 2


def test_race_and_squad_prompts_fit_and_score(lm, bpe):
    tokenizer, special = bpe
    article = "The old king rode to York with his men. " * 6
    race_rows = [{"id": f"m{i}.txt-0", "article": article, "question": f"Where did king {i} ride?",
                  "options": ["to York", "home", "to the sea and far away", "nowhere"], "label": i % 4,
                  "level": "middle" if i % 2 else "high"} for i in range(6)]
    race = datasets.DatasetDict({"train": datasets.Dataset.from_list(race_rows[:4]),
                                 "validation": datasets.Dataset.from_list(race_rows[4:])})
    result = evaluate_shots(lm, tokenizer, special, RACE, race, k=3, seed=0)
    assert {"accuracy", "accuracy_middle", "accuracy_high"} <= set(result["best"])
    assert result["prompts"]["validation"]["shots_mean"] < 3  # long articles: demonstrations were dropped

    squad_rows = [{"id": f"q{i}", "title": "t", "context": "The king rode to York.", "question": "Where?",
                   "answers": {"text": ["York"], "answer_start": [17]}} for i in range(4)]
    squad = datasets.DatasetDict({"train": datasets.Dataset.from_list(squad_rows[:2]),
                                  "validation": datasets.Dataset.from_list(squad_rows[2:])})
    result = evaluate_shots(lm, tokenizer, special, SQUAD, squad, k=1, seed=0, style="inline")
    assert set(result["best"]) == {"exact_match", "f1"} and result["primary"]["name"] == "f1"
    with pytest.raises(ValueError, match="squad_v2"):
        evaluate_shots(lm, tokenizer, special, {**SQUAD, "metric": {"name": "squad_v2", "config": None}}, squad,
                       k=0, seed=0)
    with pytest.raises(PromptError, match="task.name='cola'"):
        evaluate_shots(lm, tokenizer, special, {**RTE, "name": "cola"}, squad, k=0, seed=0)


RACE_OPTIONS = [("Where did he ride?", ["to York", "home", "to the sea and far away", "nowhere"]),
                ("Who rode?", ["the king", "his men", "a horse", "York"]),
                ("Did he ride?", ["yes", "no", "the old king rode home", "men"]),
                ("Where?", ["to the sea", "York", "the", "far away from here"])]


def race_rows(labels: list[int] | None = None) -> list[dict]:
    article = "The old king rode to York with his men. " * 2
    return [{"id": f"m{i}.txt-0", "article": article, "question": question, "options": options,
             "label": labels[i] if labels else 0, "level": "middle" if i % 2 else "high"}
            for i, (question, options) in enumerate(RACE_OPTIONS)]


def hand_race_scores(lm, bpe, rows, train, k: int) -> list[list[tuple[float, float]]]:
    """Per example, per option: (mean log-likelihood per token, log P(option | prompt) - log P(option | cue)), each
    log-likelihood summed token by token; the cue context is the prompt's opening separator and "Answer:"."""
    tokenizer, special = bpe
    fmt, key = format_for(RACE), lambda row: render_input(format_for(RACE), GPT3, row)
    cue = [special.sep, *tokenizer.encode("Answer:", add_special_tokens=False).ids]
    out = []
    for i, row in enumerate(rows):
        options = [tokenizer.encode(f" {o}", add_special_tokens=False).ids for o in row["options"]]
        demos = draw_demonstrations(train, k, 0, i, key(row), key)
        prompt = encode_prompt(fmt, GPT3, row, demos, tokenizer, special, 256 - max(map(len, options))).ids
        with torch.no_grad():
            conditional = [hand_logprob(lm, prompt, o) for o in options]
            alone = [hand_logprob(lm, cue, o) for o in options]
        out.append([(c / len(o), c - a) for c, a, o in zip(conditional, alone, options)])
    return out


def test_calibrated_option_scores_equal_a_token_by_token_computation(lm, bpe):
    tokenizer, special = bpe
    rows = race_rows()
    train = datasets.Dataset.from_list(rows)
    prompter = _Prompter(format_for(RACE), GPT3, train, 1, 0, tokenizer, special)
    with torch.no_grad():
        scores = option_scores(lm, rows, prompter, 256, 5, calibrate=True)  # batches split the examples
    expected = hand_race_scores(lm, bpe, rows, train, k=1)
    got = [[(total / count, total - alone) for total, count, alone in example] for example in scores]
    assert [v for example in got for pair in example for v in pair] == pytest.approx(
        [v for example in expected for pair in example for v in pair], abs=1e-4)


def test_race_records_both_scores_and_shows_the_calibrated_one(lm, bpe):
    tokenizer, special = bpe
    hand = hand_race_scores(lm, bpe, race_rows(), None, k=0)
    by_mean = [max(range(4), key=lambda j: example[j][0]) for example in hand]
    calibrated = [max(range(4), key=lambda j: example[j][1]) for example in hand]
    assert by_mean != calibrated  # the two scores pick different options here
    rows = race_rows(labels=calibrated)
    data = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                                 "validation": datasets.Dataset.from_list(rows)})
    result = evaluate_shots(lm, tokenizer, special, RACE, data, k=0, seed=0, style="gpt3")
    best = result["best"]
    assert best["accuracy"] == best["accuracy_calibrated"] == 1.0
    assert best["accuracy_mean_ll"] == pytest.approx(sum(m == c for m, c in zip(by_mean, calibrated)) / 4)
    assert best["accuracy_mean_ll"] < 1.0
    assert {"accuracy_middle_mean_ll", "accuracy_high_calibrated"} <= set(best)
    assert result["primary"]["choice_score"] == "calibrated"


def test_gpt_shots_table_says_which_score_picked_the_k_shot_answers(tmp_path):
    from plmbench.tables.render import render_tables

    def record(task: str, shots, choice_score: str | None) -> dict:
        primary = {"name": "accuracy", "split": "validation", "value": 0.5}
        if choice_score:
            primary["choice_score"] = choice_score
        return {"unit_id": f"{task}-{shots}", "cell_id": "c", "scale": "smoke", "task_source": "local",
                "task": task, "seed": 0, "status": "ok", "shots": shots, "axes": {"shots": str(shots)},
                "metrics": {"accuracy": 0.5, "accuracy_mean_ll": 0.25}, "finetune": {"primary": primary}}

    records = [record("race", 0, "calibrated"), record("sst2", 0, "sum"), record("race", "finetuned", None)]
    md = render_tables("gpt_shots", records, tmp_path)["md"].read_text()
    note = next(line for line in md.splitlines() if line.startswith("k-shot rows:"))
    assert "RACE: GPT-3's calibrated score log P(option | prompt) − log P(option | \"Answer:\")" in note
    assert "SST-2: the summed log-likelihood of the option" in note and "MNLI" not in note  # MNLI: no results
    assert "k-shot rows" not in render_tables("gpt_shots", records[2:], tmp_path)["md"].read_text()


# ------------------------------------------------------------------------------------------ sweep unit


def write_run(directory, bpe, causal: bool = True) -> None:
    tokenizer, special = bpe
    model = "gpt" if causal else "bert"
    cfg = compose("pretrain", [f"model={model}", "size=tiny", f"model.vocab_size={tokenizer.get_vocab_size()}",
                               "model.max_positions=256", "data.max_seq_len=64"])
    (directory / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, directory / "config.yaml", resolve=True)
    from plmbench.objectives import build_objective

    objective = build_objective(ModelConfig.from_mapping(cfg.model), OmegaConf.to_container(cfg.objective))
    torch.save({"state_dict": {f"model.{k}": v for k, v in objective.state_dict().items()}},
               directory / "checkpoints" / "last.ckpt")
    save_hf_tokenizer(tokenizer, special, directory / "tokenizer", "gpt2" if causal else "bert")


def test_shots_unit_evaluates_a_pretraining_run_on_the_fine_tuned_rows(bpe, shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # the unit logs to W&B (offline), as every unit kind does
    write_run(tmp_path / "cell", bpe)
    ft = compose("finetune", ["task=glue/rte", "task.source=local", f"data_dir={shared_data}",
                              f"init={tmp_path / 'cell'}", "max_eval_examples=5", "+sweep.shots.style=gpt3"])
    metrics = run_shots_unit(ft, tmp_path / "cell", k=1, seed=0, out_dir=tmp_path / "unit")
    assert metrics["eval_examples"] == {"validation": 5} and (tmp_path / "unit" / "metrics.json").is_file()
    assert 0.0 <= metrics["best"]["accuracy"] <= 1.0 and metrics["style"] == "gpt3"
    assert metrics["context"] == 64  # the pre-training length, not max_positions: later positions are untrained
    (run,) = offline_runs(tmp_path, finished=1)  # its W&B run holds its result and is finished
    assert run["job_type"] == "fewshot" and run["exit_code"] == 0
    assert run["summary"]["final/best/accuracy"] == pytest.approx(metrics["best"]["accuracy"])

    write_run(tmp_path / "encoder", bpe, causal=False)
    with pytest.raises(ShotsError, match="model.causal=false"):
        run_shots_unit(ft, tmp_path / "encoder", k=0, seed=0)
    bad = compose("finetune", ["task=glue/rte", "+sweep.shots.shots=3"])
    with pytest.raises(ShotsError, match="sweep.shots.shots: unknown key"):
        run_shots_unit(bad, tmp_path / "cell", k=0, seed=0)
