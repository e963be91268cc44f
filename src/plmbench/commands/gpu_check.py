"""`plmbench gpu-check <key=value ...>`: one run that shows the GPU paths work, how fast they are, and that bf16
learns what fp32 learns. Three parts, each recorded even when another fails:

  mfu          training-step tokens/s and MFU of BERT-base MLM+NSP and ALBERT-base MLM+SOP at sequence 128 and
               512, ours and Hugging Face's, bf16 (plmbench.bench.step, as `plmbench bench`; MFU as the README
               defines it, over the device's data-sheet dense bf16 peak, and over the measured matmul peak);
  equivalence  bf16, SDPA flash and torch.compile against the fp32 path on a fixed batch, and a short training
               curve (plmbench.bench.equivalence);
  table5       `plmbench sweep experiment=albert_table5` at scale=mini for a short budget, offline: the embedded
               corpus and task files under data_dir (`prepare` copies them), intrinsic columns and learning curves.

Writes <out>/report.json and report.md (default results/gpu_check/) and prints the tables. profile=auto picks
`gpu` on a CUDA machine and `cpu` elsewhere: the same parts at tiny sizes in a couple of minutes (a test runs it).

    plmbench gpu-check [profile=auto|gpu|cpu] [parts=mfu,equivalence,table5] [out=DIR] [budget_s=N] [key=value]
    plmbench gpu-check prepare [source=../shared/data] [dest=data/gpu_check/tasks] [tasks=glue/sst2,...]

Without an installed plmbench (a device with only torch, lightning and transformers):
    PYTHONPATH=src python -m plmbench.commands.gpu_check [key=value ...]
Any other key=value with a dot (trainer.batch_size=128) is passed to the sweep of the table5 part.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import platform
import shutil
import sys
import time
import traceback
from pathlib import Path

from plmbench import paths
from plmbench.bench.gpu_report import PARTS, write
from plmbench.bench.sweep_check import REPO, add_training_mfu, run_table5

SHARED_DATA = REPO.parent / "shared" / "data"
PREPARED_TASKS = Path("data/gpu_check/tasks")  # under the ignored data/: carried to the device with `carry`

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s; first substring match of
# torch.cuda.get_device_name wins ("NVIDIA H100 80GB HBM3" is the SXM part). Other devices: the measured peak.
BF16_PEAK_TFLOPS = (("GH200", 989.0), ("H200 NVL", 835.0), ("H200", 989.0), ("H100 NVL", 835.0),
                    ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("B200", 2250.0), ("L40S", 362.0),
                    ("L40", 181.0), ("L4", 121.0))

PROFILES = {
    # one H200-class GPU, about 10 minutes in all (budget_s bounds the table5 sweep; it resumes if rerun)
    "gpu": {"device": "cuda", "precision": "bf16", "size": "base", "seqs": "128,512", "tokens_per_step": "16384",
            "vocab": "30000", "repeats": "5", "steps": "5", "warmup": "3", "compiled": "bert:128", "peak_size": "8192",
            "eq_size": "base", "eq_seq": "128", "eq_batch": "32", "bf16": "true", "compile": "true",
            "curve_steps": "100", "scale": "mini", "sweep_steps": "2000", "corpus": "embedded",
            "tasks": "glue/sst2", "data_dir": str(PREPARED_TASKS), "budget_s": "540"},
    # any CPU: tiny sizes and a few steps, under 2 minutes; compile is left out (minutes on CPU)
    "cpu": {"device": "cpu", "precision": "fp32", "size": "tiny", "seqs": "32,64", "tokens_per_step": "128",
            "vocab": "1000", "repeats": "1", "steps": "1", "warmup": "1", "compiled": "", "peak_size": "1024",
            "eq_size": "tiny", "eq_seq": "32", "eq_batch": "4", "bf16": "true", "compile": "false",
            "curve_steps": "5", "scale": "smoke", "sweep_steps": "6", "corpus": "files", "tasks": "",
            "data_dir": str(SHARED_DATA), "budget_s": "110", "threads": "1"},  # 1: see README, Performance
}
OPTIONS = ("profile", "parts", "out", "models", "threads", "corpus_text", *PROFILES["gpu"])  # threads: CPU intra-op
MODELS = {"bert": "mlm_nsp", "albert": "mlm_sop"}  # the model option -> its pre-training objective here
# What each part imports beyond the standard library; the device image has torch, lightning, transformers,
# tokenizers and safetensors, the rest travels as wheels (README, "GPU check").
NEEDS = {"mfu": ("torch", "transformers", "omegaconf", "hydra", "numpy"),
         "equivalence": ("torch", "omegaconf", "hydra", "numpy"),
         # blingfire: imported by plmbench.data.corpora; scipy and matplotlib: the sweep's table (Kendall tau, PNG)
         "table5": ("torch", "pytorch_lightning", "tokenizers", "datasets", "omegaconf", "hydra", "numpy",
                    "blingfire", "matplotlib", "scipy", "yaml")}
NEEDS_FOR_TASKS = ("evaluate", "sklearn")
DEFAULT_CORPUS_TEXT = SHARED_DATA / "corpus" / "wikitext-2" / "raw" / "valid.txt"


def parse(overrides: list[str]) -> tuple[dict, list[str]]:
    given, extra = {}, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"gpu-check: {item!r} is not key=value")
        if key in OPTIONS:
            given[key] = value
        elif "." in key:
            extra.append(item)
        else:
            raise ValueError(f"gpu-check: unknown key {key!r}; allowed: {', '.join(OPTIONS)}, or a sweep override "
                             "with a dot (trainer.batch_size=128)")
    import torch

    profile = given.get("profile", "auto")
    if profile == "auto":
        profile = "gpu" if torch.cuda.is_available() else "cpu"
    if profile not in PROFILES:
        raise ValueError(f"gpu-check: profile={profile!r}: allowed values are auto, gpu, cpu")
    if profile == "gpu" and not torch.cuda.is_available():
        raise ValueError("gpu-check: profile=gpu but torch sees no CUDA device")
    options = {"threads": "", **PROFILES[profile], "profile": profile, "parts": ",".join(PARTS),
               "out": "results/gpu_check", "models": ",".join(MODELS), "corpus_text": str(DEFAULT_CORPUS_TEXT),
               **given}
    for part in options["parts"].split(","):
        if part not in PARTS:
            raise ValueError(f"gpu-check: parts: {part!r} is not one of {', '.join(PARTS)}")
    if "table5" in options["parts"] and options["corpus"] == "files" and not Path(options["corpus_text"]).is_file():
        raise ValueError(f"gpu-check: corpus_text={options['corpus_text']} is not a file: give a text file for the "
                         "table5 sweep, or corpus=embedded (after `make data`)")
    for model in options["models"].split(","):
        if model not in MODELS:
            raise ValueError(f"gpu-check: models: {model!r} is not one of {', '.join(MODELS)}")
    return options, extra


def datasheet_peak(name: str) -> float | None:
    """Dense bf16 FLOP/s of a known GPU, else None."""
    return next((tflops * 1e12 for key, tflops in BF16_PEAK_TFLOPS if key.lower() in name.lower()), None)


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
                  if line.startswith("model name")), None) if info.exists() else None
    return f"{model or platform.machine()}, {os.cpu_count()} logical cores"


def preflight() -> dict:
    """Which modules are importable (version when known), without importing the heavy ones."""
    found = {}
    for module in sorted({m for needs in NEEDS.values() for m in needs} | set(NEEDS_FOR_TASKS)):
        if importlib.util.find_spec(module) is None:
            found[module] = None
            continue
        try:
            from importlib.metadata import version

            dist = {"hydra": "hydra-core", "yaml": "pyyaml", "sklearn": "scikit-learn"}.get(module, module)
            found[module] = version(dist.replace("_", "-"))
        except Exception:  # noqa: BLE001 - importable but not an installed distribution (e.g. a src path)
            found[module] = "present"
    return found


def missing_for(part: str, options: dict, found: dict) -> list[str]:
    needs = NEEDS[part] + (NEEDS_FOR_TASKS if part == "table5" and options["tasks"] else ())
    return [m for m in needs if found.get(m) is None]


def blocker(part: str, options: dict, found: dict) -> str | None:
    """Why `part` cannot run here (a missing module or data folder), else None."""
    missing = missing_for(part, options, found)
    if missing:
        return f"modules not importable: {', '.join(missing)} (carry them as wheels: README, GPU check)"
    if part != "table5":
        return None
    corpus = paths.data_root() / "embedded" / "corpus.jsonl"
    if options["corpus"] == "embedded" and not corpus.is_file():
        return f"{corpus} is missing: run `make data` where there is network and carry data/embedded"
    if options["tasks"] and not Path(options["data_dir"]).is_dir():
        return (f"data_dir={options['data_dir']} is not a folder: run `plmbench gpu-check prepare` and carry it, "
                "or pass tasks= (empty: intrinsic columns only)")
    return None


# ------------------------------------------------------------------------------------------------ the parts

def run_mfu(options: dict, device_name: str) -> dict:
    import torch

    from plmbench.bench.peak import matmul_peak, mfu, train_flops_per_token
    from plmbench.bench.step import Case, throughput

    device, precision = options["device"], options["precision"]
    dtype = torch.bfloat16 if precision == "bf16" and device == "cuda" else torch.float32
    threads = int(options["threads"]) if options["threads"] else None
    compiled = set(filter(None, options["compiled"].split(",")))
    peak_size = int(options["peak_size"])
    peaks = [matmul_peak(device, dtype, size=peak_size)]
    rows = []
    for model in options["models"].split(","):
        for seq in map(int, options["seqs"].split(",")):
            for compile_ in (False, True) if f"{model}:{seq}" in compiled else (False,):
                batch = max(1, int(options["tokens_per_step"]) // seq)
                case = Case(model, options["size"], seq, int(options["vocab"]), batch, device, precision, threads,
                            (f"objective={MODELS[model]}", f"impl.compile={str(compile_).lower()}"))
                start = time.perf_counter()
                result = throughput(case, repeats=int(options["repeats"]), steps=int(options["steps"]),
                                    warmup=int(options["warmup"]))
                peaks.append(matmul_peak(device, dtype, size=peak_size))
                rows.append({"model": model, "objective": MODELS[model], "size": case.size, "seq": seq,
                             "batch": batch, "compiled": compile_, "optimizer": str(case.config().optim.name),
                             "train_flops_per_token": train_flops_per_token(case.config()),
                             "seconds": time.perf_counter() - start, **result})
                r = rows[-1]
                print(f"[gpu-check] mfu {model}/{case.size} seq {seq}{' compiled' if compile_ else ''}: ours "
                      f"{r['tokens_per_second']['ours']['median']:,.0f} tok/s, HF "
                      f"{r['tokens_per_second']['hf']['median']:,.0f} tok/s", flush=True)
    measured = max(peaks, key=lambda p: p["flops_per_second"]) | {"samples": [p["flops_per_second"] for p in peaks]}
    sheet = datasheet_peak(device_name) if device == "cuda" else None
    for row in rows:
        rates = {name: r["median"] for name, r in row["tokens_per_second"].items()}
        row["mfu_measured_peak"] = {n: mfu(row["train_flops_per_token"], v, measured["flops_per_second"])
                                    for n, v in rates.items()}
        row["mfu_datasheet"] = ({n: mfu(row["train_flops_per_token"], v, sheet) for n, v in rates.items()}
                                if sheet else None)
        row["mfu"] = row["mfu_datasheet"] or row["mfu_measured_peak"]
    return {"measured_peak": measured, "datasheet_peak_flops": sheet,
            "peak_used": "data sheet, dense bf16" if sheet else f"measured {measured['dtype']} matmul",
            "rows": rows}


def run_equivalence(options: dict) -> dict:
    from plmbench.bench.equivalence import check
    from plmbench.bench.step import Case

    case = Case("bert", options["eq_size"], int(options["eq_seq"]), int(options["vocab"]), int(options["eq_batch"]),
                options["device"], "fp32", int(options["threads"]) if options["threads"] else None,
                ("objective=mlm_nsp", "model.dropout=0", "model.attention_dropout=0"))
    return check(case, bf16=options["bf16"] == "true", compile=options["compile"] == "true",
                 curve_steps=int(options["curve_steps"]))


def main(overrides: list[str]) -> None:
    if overrides[:1] == ["prepare"]:
        return prepare(overrides[1:])
    options, extra = parse(overrides)
    import torch

    from plmbench.impl import apply_threads

    started = time.perf_counter()
    budget = float(options["budget_s"])
    out = Path(options["out"])
    out.mkdir(parents=True, exist_ok=True)
    apply_threads({"threads": int(options["threads"]) if options["threads"] else None})
    device = torch.cuda.get_device_name(0) if options["device"] == "cuda" else cpu_name()
    found = preflight()
    parts = options["parts"].split(",")
    report = {"meta": {"profile": options["profile"], "device": device, "torch": torch.__version__,
                       "transformers": found.get("transformers"), "python": platform.python_version(),
                       "cuda": torch.version.cuda, "fp32_matmul": torch.get_float32_matmul_precision(),
                       "options": options, "extra": extra, "parts": parts,
                       "preflight": found, "load_before": os.getloadavg(), "wall_seconds": 0.0}}
    for part in parts:
        part_start = time.perf_counter()
        reason = blocker(part, options, found)
        try:
            if reason:
                report[part] = {"skipped": reason}
            elif part == "mfu":
                report[part] = run_mfu(options, device)
            elif part == "equivalence":
                report[part] = run_equivalence(options)
            else:
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()  # the sweep runs in a child process: leave it the memory
                remaining = budget - (time.perf_counter() - started) - 10
                if remaining < 60:
                    report[part] = {"skipped": f"{remaining:.0f} s left of budget_s={budget:.0f}: too little"}
                else:
                    report[part] = run_table5(options, extra, out, remaining)
                    add_training_mfu(report)
        except Exception as error:  # noqa: BLE001 - recorded; the other parts still run
            report[part] = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:500]}",
                            "traceback": traceback.format_exc()[-3000:]}
        report[part]["seconds"] = report[part].get("seconds", time.perf_counter() - part_start)
        report["meta"]["wall_seconds"] = time.perf_counter() - started
        report["meta"]["load_after"] = os.getloadavg()
        text = write(report, out)  # after every part: a stop mid-run still leaves a report
    print(text)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    if not report["passed"]:
        raise SystemExit(1)


def prepare(overrides: list[str]) -> None:
    """Copy the task files the device run reads (task.local's candidates that exist under source) to dest."""
    import yaml

    from plmbench.configuration import CONF_DIR

    options = {"source": str(SHARED_DATA), "dest": str(PREPARED_TASKS), "tasks": PROFILES["gpu"]["tasks"]}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or key not in options:
            raise ValueError(f"gpu-check prepare: {item!r}: allowed keys are {', '.join(options)}")
        options[key] = value
    source, dest = Path(options["source"]), Path(options["dest"])
    copied = []
    for task in filter(None, options["tasks"].split(",")):
        local = yaml.safe_load((CONF_DIR / "task" / f"{task}.yaml").read_text())["local"]
        for candidates in local.values():
            found = next((c for c in candidates if (source / c).exists()), None)
            if found is None:
                continue
            target = dest / found
            target.parent.mkdir(parents=True, exist_ok=True)
            if (source / found).is_dir():
                shutil.copytree(source / found, target, dirs_exist_ok=True)
            else:
                shutil.copy2(source / found, target)
            copied.append(found)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20 if dest.exists() else 0.0
    print(f"copied {', '.join(copied) or 'nothing'} to {dest} ({size:.1f} MiB); carry: data/embedded, {dest}, "
          "and the wheels folder (README, GPU check)")


if __name__ == "__main__":
    from plmbench.cli import main as cli_main

    sys.exit(cli_main(["gpu-check", *sys.argv[1:]]))
