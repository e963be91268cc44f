"""`plmbench bench <key=value ...>`: pre-training step throughput of our models against Hugging Face's.

    models=albert,bert,electra,gpt sizes=tiny,mini seq=128 vocab=30000 batch=<per size: tiny 32, mini 16, else 8>
    repeats=5 steps=3 warmup=2 device=cpu|cuda precision=fp32|bf16 threads=<torch default> memory=true
    data=true text=<file for the data-pipeline timing> name=<device>-<precision>

Any other key with a dot or naming a config group (sharing=none, model.dropout=0) is passed to the composed
pre-training config. Writes results/bench/<name>.json and .md and prints the table.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch

from plmbench import paths
from plmbench.bench.data_throughput import DEFAULT_TEXT, data_throughput
from plmbench.bench.overhead import overhead_report
from plmbench.bench.peak import matmul_peak, mfu, train_flops_per_token
from plmbench.bench.step import CPU_MEMORY_METHOD, Case, cpu_peak_memory, throughput
from plmbench.impl import apply_threads

DEFAULT_BATCH = {"tiny": 32, "mini": 16}  # what fits a quick CPU step; other sizes use 8
DEFAULTS = {"models": "albert,bert,electra,gpt", "sizes": "tiny,mini", "seq": "128", "vocab": "30000",
            "batch": None, "repeats": "5", "steps": "3", "warmup": "2", "device": "cpu", "precision": "fp32",
            "threads": None, "memory": "true", "data": "true", "text": str(DEFAULT_TEXT), "name": None}
CONFIG_GROUPS = ("sharing", "embedding", "objective", "impl", "scale", "optim", "corpus", "data")
BOOLEANS = {"true": True, "false": False}


def parse(overrides: list[str]) -> tuple[dict, list[str]]:
    """(bench options, Hydra overrides for the composed config); one-line errors name the key."""
    options, extra = dict(DEFAULTS), []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"bench: {item!r} is not key=value")
        if key in DEFAULTS:
            options[key] = value
        elif "." in key or key.lstrip("+~") in CONFIG_GROUPS:
            extra.append(item)
        else:
            raise ValueError(f"bench: unknown key {key!r}; allowed: {', '.join(DEFAULTS)}, or a config override "
                             f"with a dot (model.dropout=0) or a group ({', '.join(CONFIG_GROUPS)})")
    for key in ("seq", "vocab", "repeats", "steps", "warmup", "batch", "threads"):
        if options[key] is not None and (not str(options[key]).isdigit() or int(options[key]) < 1):
            raise ValueError(f"bench: {key}={options[key]!r} must be a positive integer")
    for key in ("memory", "data"):
        if options[key] not in BOOLEANS:
            raise ValueError(f"bench: {key}={options[key]!r}: allowed values are true, false")
        options[key] = BOOLEANS[options[key]]
    if options["device"] not in ("cpu", "cuda") and not options["device"].startswith("cuda:"):
        raise ValueError(f"bench: device={options['device']!r}: allowed values are cpu, cuda")
    if options["device"].startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("bench: device=cuda but torch sees no CUDA device")
    options["name"] = options["name"] or f"{options['device'].split(':')[0]}-{options['precision']}"
    return options, extra


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    return f"{model}, {os.cpu_count()} logical cores ({torch.backends.cpu.get_cpu_capability()})"


def run_case(case: Case, options: dict) -> dict:
    result = throughput(case, repeats=int(options["repeats"]), steps=int(options["steps"]),
                        warmup=int(options["warmup"]))
    result["train_flops_per_token"] = train_flops_per_token(case.config())
    if options["memory"] and not case.device.startswith("cuda"):
        result["peak_memory_mb"] = {name: cpu_peak_memory(case, name)["peak_mb"] for name in ("ours", "hf")}
        result["memory_method"] = CPU_MEMORY_METHOD
    return {"model": case.model, "size": case.size, "batch": case.batch, "seq": case.seq, "vocab": case.vocab,
            "overrides": case.overrides(), **result}


def markdown(report: dict) -> str:
    header = "| model | size | batch | ours tok/s | HF tok/s | ours/HF min / median / max | peak MB ours / HF | MFU ours / HF |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in report["cases"]:
        rates, ratio, memory = row["tokens_per_second"], row["ratio"], row.get("peak_memory_mb") or {}
        mem = f"{memory['ours']:.0f} / {memory['hf']:.0f}" if memory else "n/a"
        lines.append(f"| {row['model']} | {row['size']} | {row['batch']} | {rates['ours']['median']:,.0f} | "
                     f"{rates['hf']['median']:,.0f} | {ratio['min']:.2f} / {ratio['median']:.2f} / "
                     f"{ratio['max']:.2f} | {mem} | {row['mfu']['ours']:.0%} / {row['mfu']['hf']:.0%} |")
    meta, peak = report["meta"], report["peak"]
    lines += ["", (f"- device: {meta['device']}; torch {meta['torch']}, transformers {meta['transformers']}; "
                   f"{meta['threads']} intra-op threads; precision {meta['precision']}"),
              f"- load average (1 min) before / after: {meta['load_before'][0]:.2f} / {meta['load_after'][0]:.2f}",
              (f"- measured matmul peak: {peak['flops_per_second'] / 1e9:.1f} GFLOP/s ({peak['dtype']} "
               f"{peak['size']}^3 torch.mm, best of {peak['repeats']} x {len(peak['samples'])} measurements "
               "spread over the run); MFU = model FLOPs/token x median tok/s / peak"),
              f"- {meta['method']}",
              f"- peak memory: {report['cases'][0].get('memory_method') if report['cases'] else 'n/a'}"]
    data = report.get("data")
    if data and "cold" in data:
        lines.append(f"- data pipeline ({Path(data['text']).name}, {data['mb']:.2f} MB, WordPiece "
                     f"{data['vocab_size']}): tokenize + instances {data['cold']['mb_per_second']:.2f} MB/s cold, "
                     f"{data['cached']['mb_per_second']:.1f} MB/s cached; tokenizer training "
                     f"{data['tokenizer_train_seconds']:.1f} s")
    overhead = report.get("overhead")
    if overhead and overhead["runs"]:
        lines.append(f"- time outside training steps, median over {len(overhead['runs'])} runs in "
                     f"{overhead['runs_dir']}: {overhead['median_share']:.0%}")
        lines += [f"  - {r['run']} {r['label']}: {r['outside_share']:.0%} of {r['wall_seconds']:.0f} s"
                  for r in overhead["runs"]]
    return "\n".join(lines) + "\n"


def main(overrides: list[str]) -> None:
    options, extra = parse(overrides)
    import datasets
    import transformers

    datasets.disable_progress_bars()
    apply_threads({"threads": int(options["threads"]) if options["threads"] else None})
    load_before = os.getloadavg()
    device = options["device"]
    dtype = torch.bfloat16 if options["precision"] == "bf16" and device.startswith("cuda") else torch.float32
    peaks = [matmul_peak(device, dtype)]  # measured again after every case: the best is the machine's peak
    cases = []
    for model in options["models"].split(","):
        for size in options["sizes"].split(","):
            batch = int(options["batch"] or DEFAULT_BATCH.get(size, 8))
            case = Case(model, size, int(options["seq"]), int(options["vocab"]), batch, device,
                        options["precision"], int(options["threads"]) if options["threads"] else None, tuple(extra))
            start = time.perf_counter()
            cases.append(run_case(case, options))
            peaks.append(matmul_peak(device, dtype))
            row = cases[-1]
            print(f"{model}/{size}: ours {row['tokens_per_second']['ours']['median']:,.0f} tok/s, HF "
                  f"{row['tokens_per_second']['hf']['median']:,.0f} tok/s, ratio {row['ratio']['median']:.2f} "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    peak = max(peaks, key=lambda p: p["flops_per_second"]) | {"samples": [p["flops_per_second"] for p in peaks]}
    for row in cases:
        row["mfu"] = {name: mfu(row["train_flops_per_token"], rates["median"], peak["flops_per_second"])
                      for name, rates in row["tokens_per_second"].items()}
    report = {
        "meta": {"device": device_name(device), "torch": torch.__version__, "transformers": transformers.__version__,
                 "threads": torch.get_num_threads(), "precision": options["precision"],
                 "load_before": load_before, "load_after": os.getloadavg(), "options": options, "extra": extra,
                 "method": ("full training step (forward, backward, clip 1.0, AdamW) on one fixed full-length batch "
                            f"on the device; {options['warmup']} warm-up steps, then {options['repeats']} rounds of "
                            f"{options['steps']} steps per model, order alternating; HF with attn_implementation="
                            "sdpa and the same weights; ratio = per-round ours/HF")},
        "peak": peak, "cases": cases,
    }
    if options["data"]:
        report["data"] = _data_or_skip(options)
    runs = paths.runs_root()
    if runs.is_dir():
        report["overhead"] = overhead_report(runs)
    out = paths.results_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{options['name']}.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (out / f"{options['name']}.md").write_text(f"# plmbench bench: {options['name']}\n\n{table}")
    print(table)
    print(f"wrote {out / options['name']}.json and .md")


def _data_or_skip(options: dict) -> dict:
    if not Path(options["text"]).is_file():
        print(f"bench: data pipeline timing skipped: text={options['text']} is not a file")
        return {"skipped": f"text={options['text']} is not a file"}
    return data_throughput(options["text"], vocab_size=int(options["vocab"]), max_seq_len=int(options["seq"]))
