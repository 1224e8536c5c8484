"""Render a time-to-quality JSON (``bench.ttq``) as Markdown, and write the app's ``runtimes.json``.

    python -m bench.ttq_report bench/results/h200_ttq.json [--cpu bench/results/cpu_fast.json]
        [--e4e-cuda-s 0.036] [--runtimes bench/results/runtimes.json]

``runtimes.json`` schema (read by ``inversion.session.runtimes``): ``{"cpu"|"cuda": {method: {preset: seconds}}}``,
``"default"`` as the preset of methods without presets (e4e, psp). CUDA rows: the largest measured size of the
TTQ file's runtimes part (1024, FFHQ architecture); CPU rows from ``bench.cpu_fast``. Nothing is typed by hand.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

TOL = 0.02  # "matched" = within 2 % of the original's final LPIPS and MSE (bf16 vs fp32 and GPU run-to-run noise)


def reached(run: dict, orig: dict, tol: float) -> bool:
    return run["lpips"] <= orig["lpips"] * (1 + tol) and run["mse"] <= orig["mse"] * (1 + tol)


def ttq(entry: dict, tol: float) -> Optional[dict]:
    orig = next((r for r in entry["runs"] if r.get("original")), None)
    if orig is None:
        return None
    ok = [r for r in entry["runs"] if not r.get("original") and reached(r, orig, tol)]
    return min(ok, key=lambda r: r["seconds"]) if ok else None


def markdown(data: dict) -> str:
    m = data["machine"]
    lines = [f"# Time to quality ({m.get('gpu') or m.get('cpu_model')}, torch {m.get('torch')})", "",
             f"LPIPS: {data.get('lpips')}. PTI LPIPS-threshold stop: {data.get('lpips_threshold')}. "
             f"First call in a fresh process (CUDA context, handles): {data.get('process_warmup_s', 0):.1f} s, "
             "not included below.", "",
             "Original = the original recipe as the original loops run it (eager, fp32, a host read per step); "
             "ours = CUDA-graphed step, bf16. Time to quality = fastest of our runs whose final LPIPS and MSE are "
             f"<= the original's (strict) or within {TOL:.0%} of them (matched).", ""]
    for e in data["targets"]:
        orig = next((r for r in e["runs"] if r.get("original")), None)
        lines += [f"## {e['method']} on {e['target']}", ""]
        if orig is None:
            lines += ["original not run (budget): " + ", ".join(e.get("skipped", [])), ""]
            continue
        strict, matched = ttq(e, 0.0), ttq(e, TOL)
        for name, best in (("strict", strict), (f"within {TOL:.0%}", matched)):
            lines.append(f"- time to quality ({name}): " + (
                f"**{best['seconds']:.2f} s** ({best['run']}; original {orig['seconds']:.1f} s, "
                f"{orig['seconds'] / best['seconds']:.1f}x)" if best else "not reached by any of our runs"))
        lines += ["", "| run | seconds | final LPIPS | final MSE | peak MiB |", "|---|---|---|---|---|"]
        for r in e["runs"]:
            peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "–"
            lines.append(f"| {r['run']} | {r['seconds']:.2f} | {r['lpips']:.5f} | {r['mse']:.5f} | {peak} |")
        if e.get("skipped"):
            lines.append(f"\nskipped (budget): {', '.join(e['skipped'])}")
        lines.append("")
    if data.get("runtimes"):
        lines += ["## The app's presets (one whole call each; e4e start where the recipe says)", "",
                  "| method | preset | size | seconds | peak MiB | final LPIPS | final MSE |", "|---|---|---|---|---|---|---|"]
        for r in data["runtimes"]:
            peak = f"{r['peak_mib']:.0f}" if r.get("peak_mib") else "–"
            lines.append(f"| {r['method']} | {r['preset']} | {r['size']} | {r['seconds']:.2f} | {peak} | "
                         f"{r['lpips']:.4f} | {r['mse']:.4f} |")
    if data.get("errors"):
        lines += ["", "Errors: " + "; ".join(data["errors"])]
    return "\n".join(lines) + "\n"


def runtimes(gpu: dict, cpu: Optional[dict], e4e_cuda_s: Optional[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rows = gpu.get("runtimes", [])
    big = [r for r in rows if r["size"].startswith("1024")] or rows
    for r in big:
        out.setdefault("cuda", {}).setdefault(r["method"], {})[r["preset"]] = round(r["seconds"], 2)
    if e4e_cuda_s is not None:
        out.setdefault("cuda", {})["e4e"] = {"default": round(e4e_cuda_s, 3)}
    for r in (cpu or {}).get("rows", []):
        out.setdefault("cpu", {}).setdefault(r["method"], {})[r["preset"]] = round(r["seconds"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json", type=Path)
    ap.add_argument("--cpu", type=Path)
    ap.add_argument("--e4e-cuda-s", type=float, help="e4e encode + 1024 synthesis, batch 1, as the app runs it")
    ap.add_argument("--runtimes", type=Path)
    args = ap.parse_args()
    data = json.loads(args.json.read_text())
    args.json.with_suffix(".md").write_text(markdown(data))
    if args.runtimes:
        cpu = json.loads(args.cpu.read_text()) if args.cpu and args.cpu.exists() else None
        args.runtimes.write_text(json.dumps(runtimes(data, cpu, args.e4e_cuda_s), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
