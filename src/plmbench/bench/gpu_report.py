"""The report of `plmbench gpu-check`: report.json as measured, report.md and the printed tables."""

from __future__ import annotations

import json
from pathlib import Path

PARTS = ("mfu", "equivalence", "table5")


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [f"# plmbench gpu-check ({meta['profile']} profile)", "",
             (f"- device: {meta['device']}; torch {meta['torch']}, transformers {meta.get('transformers')}, "
              f"python {meta['python']}; {meta['wall_seconds']:.0f} s in all"),
             f"- parts: {', '.join(meta['parts'])}; overall: {'PASS' if report['passed'] else 'FAIL'}"
             + "".join(f"; {part} skipped" for part in meta["parts"] if "skipped" in (report.get(part) or {}))]
    missing = [module for module, found in meta["preflight"].items() if found is None]
    if missing:
        lines.append(f"- modules not importable here: {', '.join(missing)}")
    render = {"mfu": _mfu_md, "equivalence": _equivalence_md, "table5": _table5_md}
    for part in PARTS:
        section = report.get(part)
        if section is None:
            continue
        lines += ["", f"## {part}", ""]
        if "skipped" in section:
            lines.append(f"skipped: {section['skipped']}")
        elif "error" in section:
            lines.append(f"error: {section['error']}")
        else:
            lines += render[part](section)
    if report.get("acceptance"):
        lines += ["", "## acceptance (issue 17)", ""] + [f"- {k}: {v}" for k, v in report["acceptance"].items()]
    return "\n".join(lines) + "\n"


def _mfu_md(section: dict) -> list[str]:
    lines = [("| model | objective | size | seq | batch | compiled | ours tok/s | HF tok/s | ours/HF median | "
              "MFU ours / HF | MFU ours / HF (measured peak) | peak MB ours / HF |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in section["rows"]:
        rates = r["tokens_per_second"]
        sheet, measured = r.get("mfu_datasheet") or {}, r["mfu_measured_peak"]
        lines.append(f"| {r['model']} | {r['objective']} | {r['size']} | {r['seq']} | {r['batch']} | "
                     f"{'yes' if r['compiled'] else 'no'} | {rates['ours']['median']:,.0f} | "
                     f"{rates['hf']['median']:,.0f} | {r['ratio']['median']:.2f} | "
                     f"{_pct(sheet.get('ours'))} / {_pct(sheet.get('hf'))} | "
                     f"{_pct(measured['ours'])} / {_pct(measured['hf'])} | "
                     f"{_memory(r.get('peak_memory_mb'))} |")
    peak, sheet = section["measured_peak"], section["datasheet_peak_flops"]
    formula = "- MFU = model FLOPs per token (README's rule) x median tok/s / peak; "
    lines += ["", formula + (f"data-sheet dense bf16 peak {sheet / 1e12:.0f} TFLOP/s" if sheet else
                             "no data-sheet peak for this device: the measured one only"),
              (f"- measured peak: {peak['flops_per_second'] / 1e12:.3f} TFLOP/s ({peak['dtype']} {peak['size']}^3 "
               f"torch.mm, best of {len(peak['samples'])} measurements spread over the part)")]
    return lines


def _memory(memory: dict | None) -> str:
    return f"{memory['ours']:.0f} / {memory['hf']:.0f}" if memory else "n/a"


def _equivalence_md(section: dict) -> list[str]:
    lines = [(f"{section['model']}, batch {section['batch']} x {section['seq']} on {section['device']}; the first "
              "row is the reference"), "", "| variant | loss | loss rel. diff | grad cosine | result |",
             "|---|---|---|---|---|"]
    for r in section["variants"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | | | | skipped: {r['skipped']} |")
        elif "error" in r:
            lines.append(f"| {r['name']} | | | | FAIL: {r['error']} |")
        else:
            lines.append(f"| {r['name']} | {r['loss']:.5f} | {r['loss_rel']:.2e} | {r['grad_cos']:.6f} | "
                         f"{'pass' if r['passed'] else 'FAIL'} |")
    curve = section.get("curve")
    if curve:
        ref, fast = curve["losses"]["reference"], curve["losses"]["fast"]
        lines += ["", (f"- training curve, {curve['steps']} AdamW steps cycling {curve['batches']} batches: "
                       f"{curve['fast']} against {curve['reference']}: mean relative loss difference "
                       f"{curve['mean_rel_diff']:.2e} (max {curve['max_rel_diff']:.2e}, tolerance "
                       f"{curve['tolerance']:.0e}): {'pass' if curve['passed'] else 'FAIL'}; loss {ref[0]:.3f} -> "
                       f"{ref[-1]:.3f} (reference) and {fast[0]:.3f} -> {fast[-1]:.3f}")]
    return lines


def _table5_md(section: dict) -> list[str]:
    stopped = " (stopped at the time budget)" if section["timed_out"] else ""
    lines = [f"`{section['command']}`: exit {section['returncode']}{stopped}, {section['seconds']:.0f} s", "",
             "| objective | status | steps | MLM acc | NSP acc | SOP acc | val loss | train tok/s | MFU | wall s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in section["intrinsic"]:
        m = r["metrics"] or {}
        lines.append(f"| {r['objective']} | {r['status']} | {r['steps']} | {_pct(m.get('mlm_acc'))} | "
                     f"{_pct(m.get('nsp_acc'))} | {_pct(m.get('sop_acc'))} | {m.get('loss', float('nan')):.3f} | "
                     f"{r.get('tokens_per_second') or 0:,.0f} | {_pct(r.get('mfu'))} | {r.get('wall_seconds') or 0:.0f} |")
    for r in section["finetune"]:
        lines.append(f"- fine-tuning {r['objective']} {r['task']} seed {r['seed']}: {r['status']} "
                     f"{r['error'] or json.dumps(r['metrics'])}")
    if section["curves"]:
        lines += ["", "Learning curves (each validation, step: MLM acc / loss):", ""]
        lines += [f"- {objective}: " + ", ".join(f"{p['step']}: {_pct(p.get('mlm_acc'))} / "
                                                f"{p.get('loss', float('nan')):.2f}" for p in points)
                  for objective, points in section["curves"].items()]
    if section.get("table_md"):
        lines += ["", "The sweep's table:", "", section["table_md"].strip()]
    if section["returncode"] != 0 and not section["intrinsic"]:
        lines += ["", "```", section["log_tail"][-1500:], "```"]
    return lines


def passed(report: dict) -> bool:
    ok = True
    for part in report["meta"]["parts"]:
        section = report.get(part) or {}
        if "error" in section:
            ok = False
        elif part == "equivalence" and "skipped" not in section:
            ok = ok and section.get("passed", False)
        elif part == "table5" and "skipped" not in section:
            ok = ok and section.get("returncode") == 0 and bool(section.get("intrinsic")) and all(
                r["status"] == "ok" for r in section["intrinsic"])
    return ok


def acceptance(report: dict) -> dict:
    """Issue 17's GPU targets, where this run measured them."""
    rows = (report.get("mfu") or {}).get("rows") or []
    out = {}
    for r in rows:
        if r["model"] == "bert" and r["seq"] == 128 and report["meta"]["profile"] == "gpu" and r.get("mfu_datasheet"):
            key = f"bert-base seq 128 {'compiled' if r['compiled'] else 'eager'} MFU >= 45%"
            out[key] = f"{'yes' if r['mfu_datasheet']['ours'] >= 0.45 else 'no'} ({r['mfu_datasheet']['ours']:.1%}; " \
                       f"ours/HF {r['ratio']['median']:.2f})"
    return out


def write(report: dict, out: Path) -> str:
    report["passed"] = passed(report)
    report["acceptance"] = acceptance(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    text = markdown(report)
    (out / "report.md").write_text(text)
    return text
