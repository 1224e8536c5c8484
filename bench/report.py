"""Turn the results JSON of :mod:`bench.run` into a Markdown report, a PNG and a compact text table."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterable, Optional

from bench import plot

OURS = "ours"


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    if isinstance(x, float):
        if x != x:
            return "nan"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}g}"
    return str(x)


def _ms(s: Optional[float]) -> str:
    return "–" if s is None else (f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s")


def impl_name(r: dict) -> str:
    """Display name of an implementation; our paired runs say which reference they were interleaved with."""
    if r.get("impl") == PAIRED:
        return f"ours (paired with {str(r.get('paired_with', '?')).split('/')[0]})"
    return r.get("impl", "?")


def _ms_or(s: Optional[float]) -> Optional[float]:
    return None if s is None else s * 1e3


def _table(header: list[str], rows: Iterable[list[Any]]) -> list[str]:
    rows = list(rows)
    if not rows:
        return ["(no data)", ""]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return out + [""]


def _recs(res: dict, part: str, impl: Optional[str] = None) -> list[dict]:
    return [r for r in res.get("records", []) if r.get("part") == part and (impl is None or r.get("impl") == impl)]


def best(records: list[dict], batch: int, key: str = "median_s") -> Optional[dict]:
    cands = [r for r in records if r.get("batch") == batch and r.get(key) is not None]
    return min(cands, key=lambda r: r[key]) if cands else None


# ----------------------------------------------------------------------------------------------- headline

def headline(res: dict) -> list[dict]:
    """One row per method/preset: seconds per image, peak memory, and the quality part's numbers."""
    rows: list[dict] = []
    quality = {(q["method"], q["preset"]): q for q in res.get("quality", {}).get("rows", [])}
    synth = _recs(res, "synthesis", OURS)
    for batch in (1, 8, 32):
        b = best(synth, batch)
        if b:
            rows.append({"method": f"synthesis {b.get('size', '')}, batch {batch}", "preset": b["variant"],
                         "seconds": b["per_image_s"], "img_per_s": b["img_per_s"], "peak_mem_mb": b.get("peak_mem_mb"),
                         "how": "measured"})
    for kind in ("e4e", "psp"):
        recs = _recs(res, f"{kind} encode+synthesize", OURS)
        q = quality.get((kind, "default"), {})
        b1 = best(recs, 1)
        if b1:
            rows.append({"method": f"{kind} (encode+synthesize)", "preset": f"batch 1, {b1['variant']}",
                         "seconds": b1["per_image_s"], "img_per_s": b1["img_per_s"],
                         "peak_mem_mb": b1.get("peak_mem_mb"), "how": "measured", **_q(q)})
        big = [r for r in recs if r.get("batch", 1) > 1]
        if big:
            b = max(big, key=lambda r: r["img_per_s"])
            rows.append({"method": f"{kind} (encode+synthesize)", "preset": f"batch {b['batch']}, {b['variant']}",
                         "seconds": b["per_image_s"], "img_per_s": b["img_per_s"], "peak_mem_mb": b.get("peak_mem_mb"),
                         "how": "measured"})
    runs = {(r["method"], r["preset"]): r for r in _recs(res, "app run", OURS)}
    ests = {(r["method"], r["preset"]): r for r in _recs(res, "app estimate", OURS)}
    names = {"w": "W optimization", "w+": "W+ optimization", "pti": "PTI"}
    order = {"fast": 0, "balanced": 1, "quality": 2}
    for key in sorted(set(runs) | set(ests), key=lambda k: (list(names).index(k[0]) if k[0] in names else 9,
                                                          order.get(k[1], 9))):
        if key[0] not in names:
            continue
        run, est = runs.get(key), ests.get(key)
        use_run = run is not None and not run.get("cut_at_budget")
        r = run if use_run else est
        if r is None:
            continue
        how = (f"app run, {run['variant']}, {run.get('steps_run')} steps"
               + (f", {run['start']} start" if run.get("start") else "")) if use_run else f"{est['variant']}, {est['how']}"
        rows.append({"method": names[key[0]], "preset": key[1], "seconds": r["median_s"],
                     "peak_mem_mb": r.get("peak_mem_mb"), "how": how, **_q(quality.get(key, {}))})
    return rows


def _q(q: dict) -> dict:
    return {k: q.get(k) for k in ("mse", "lpips", "identity", "code_spread")} if q else {}


# ----------------------------------------------------------------------------------------------- comparisons

PAIRED = "ours (paired)"


def comparisons(res: dict) -> list[dict]:
    """Speed ratios ours vs the references, same machine, same run (ratio > 1: ours is faster).

    ``ours fp32`` is our code timed in the reference's own process, interleaved call by call with it (so a load
    change on a shared machine hits both alike); ``ours best`` is the fastest variant of our main measurements."""
    out: list[dict] = []
    recs = res.get("records", [])
    for r in recs:
        part = r.get("part", "")
        if r.get("impl") in (OURS, PAIRED) or not (part == "synthesis" or part.endswith("encode+synthesize")):
            continue
        paired = next((o for o in recs if o.get("impl") == PAIRED and o.get("part") == part
                       and o.get("batch") == r["batch"] and o.get("size") == r.get("size")
                       and o.get("paired_with") == r["impl"]), None)
        ours = [o for o in recs if o.get("impl") == OURS and o.get("part") == part and o.get("size", r.get("size"))
                == r.get("size")]
        ob = best(ours + ([paired] if paired else []), r["batch"])
        out.append({"what": f"{part} {r.get('size', '')} b{r['batch']}".replace("  ", " "), "reference": r["impl"],
                    "ref_s": r["median_s"], "ours_fp32_s": paired and paired["median_s"],
                    "ours_best_s": ob and ob["median_s"], "ours_best_variant": ob and ob["variant"],
                    "ref_peak_mem_mb": r.get("peak_mem_mb"), "ours_peak_mem_mb": paired and paired.get("peak_mem_mb")})
    for m in res.get("matched", []):
        out.append(dict(m))
    for c in out:
        for k in ("fp32", "best"):
            o = c.get(f"ours_{k}_s")
            c[f"speedup_{k}"] = (c["ref_s"] / o) if (o and c.get("ref_s")) else None
    return out


# ----------------------------------------------------------------------------------------------- markdown

def markdown(res: dict) -> str:
    meta = res.get("meta", {})
    m = meta.get("machine", {})
    lines = [f"# Benchmark: {meta.get('device', '?')} — {m.get('gpu') or m.get('cpu_model', '')}", ""]
    lines += [f"- command: `{meta.get('command', '')}`", f"- started: {meta.get('started', '')}, "
              f"wall time {_f(meta.get('wall_s'))} s{' (QUICK mode)' if meta.get('quick') else ''}",
              f"- machine: {m.get('cpu_model', '?')}, {m.get('cpu_count')} CPUs, torch {m.get('torch')}"
              + (f", {m.get('gpu')} ({m.get('gpu_mem_gb')} GB), CUDA {m.get('cuda')}, cuDNN {m.get('cudnn')}"
                 if m.get("gpu") else ""),
              f"- load average at start {m.get('loadavg')}, at end {meta.get('loadavg_end')} "
              "(the CPU machine is shared: other processes may slow the numbers)",
              ]
    if m.get("gpu"):
        lines.append(f"- math modes: cuDNN benchmark {m.get('cudnn_benchmark')}, cuDNN TF32 {m.get('cudnn_allow_tf32')}, "
                     f"matmul TF32 {m.get('matmul_allow_tf32')} (\"fp32\" below means these defaults)")
    lines += [f"- weights: seeded random, FFHQ config-f architecture (speed does not depend on the values); "
              f"LPIPS: {meta.get('lpips_label', '?')}", ""]
    for note in res.get("notes", []):
        lines.append(f"- note: {note}")
    lines.append("")

    lines += [f"## Per method (seconds per image, {meta.get('size', 1024)} px)", ""]
    lines += ["Quality columns come from the quality part (built-in model set, see below), not from the random "
              "1024 weights.", ""]
    lines += _table(["method", "preset / variant", "s per image", "img/s", "peak MiB", "how", "MSE", "LPIPS",
                     "identity", "code spread"],
                    [[r["method"], r["preset"], _ms(r["seconds"]), r.get("img_per_s"), r.get("peak_mem_mb"), r["how"],
                      r.get("mse"), r.get("lpips"), r.get("identity"), r.get("code_spread")] for r in headline(res)])

    comps = comparisons(res)
    if comps:
        lines += ["## Ours vs the original code (same machine, same run, same weights)", "",
                  "speed-up = reference time / our time (> 1: ours is faster). \"ours fp32\" for synthesis and "
                  "encoders was timed in the reference's process, interleaved call by call with it; \"ours best\" is "
                  "our fastest variant (main measurements). For the matched runs, \"ours best\" is the time ours "
                  "needed to reach the reference's final LPIPS.", ""]
        lines += _table(["what", "reference", "reference", "ours fp32", "speed-up fp32", "ours best", "variant",
                         "speed-up best", "LPIPS ours / ref", "MSE ours / ref"],
                        [[c["what"], c["reference"], _ms(c.get("ref_s")), _ms(c.get("ours_fp32_s")),
                          c.get("speedup_fp32"), _ms(c.get("ours_best_s")), c.get("ours_best_variant") or "–",
                          c.get("speedup_best"),
                          f"{_f(c.get('ours_lpips'), 4)} / {_f(c.get('ref_lpips'), 4)}" if "ref_lpips" in c else "–",
                          f"{_f(c.get('ours_mse'), 4)} / {_f(c.get('ref_mse'), 4)}" if "ref_mse" in c else "–"]
                         for c in comps])
        for c in comps:
            if c.get("note"):
                lines.append(f"- {c['what']}: {c['note']}")
        lines.append("")

    lines += ["## Synthesis (no grad)", ""]
    lines += _table(["impl", "size", "variant", "batch", "ms per call", "min ms", "img/s", "peak MiB",
                     "rel. error vs fp32 / vs ours", "n"],
                    [[impl_name(r), r.get("size"), r["variant"], r["batch"], r["median_s"] * 1e3, _ms_or(r.get("min_s")), r["img_per_s"], r.get("peak_mem_mb"),
                      r.get("rel_err_vs_fp32", r.get("rel_err_vs_ours")), r.get("n")]
                     for r in sorted(_recs(res, "synthesis"), key=lambda r: (r["impl"] != OURS, r["batch"], r["median_s"]))])

    enc = [r for r in res.get("records", []) if "encode" in r.get("part", "")]
    if enc:
        lines += [f"## Encoders (256 px input; end to end = encode + average latent + {meta.get('size', 1024)} px "
                  "synthesis)", ""]
        lines += _table(["part", "impl", "variant", "batch", "ms per call", "min ms", "img/s", "peak MiB"],
                        [[r["part"], impl_name(r), r["variant"], r["batch"], r["median_s"] * 1e3, _ms_or(r.get("min_s")),
                          r["img_per_s"],
                          r.get("peak_mem_mb")] for r in sorted(enc, key=lambda r: (r["part"], r["impl"] != OURS,
                                                                                   r["batch"], r["median_s"]))])

    opt = _recs(res, "opt step", OURS)
    if opt:
        lines += ["## Optimization steps (W / W+, started from a given code as the app does)", ""]
        lines += _table(["space", "variant", "ms/step", "set-up s", "steps timed", "first 3 steps, cold (s)", "peak MiB"],
                        [[r["method"], r["variant"], r["per_step_s"] * 1e3, r["setup_s"], r["timed_steps"],
                          r.get("cold_3_steps_s"), r.get("peak_mem_mb")] for r in opt])
    pti = _recs(res, "pti step", OURS)
    if pti:
        lines += ["## PTI steps (stage 1: W pivot; stage 2: tuning a generator copy)", ""]
        lines += _table(["variant", "ms/pivot step", "ms/tuning step", "set-up 1 s", "set-up 2 s",
                         "first 2+2 steps, cold (s)", "peak MiB"],
                        [[r["variant"], r["pivot_per_step_s"] * 1e3, r["tune_per_step_s"] * 1e3, r["setup1_s"],
                          r["setup2_s"], r.get("cold_2_plus_2_steps_s"), r.get("peak_mem_mb")] for r in pti])
    if opt or pti:
        lines += ["\"cold\" = the first short run on a fresh process (cuDNN autotuning of the backward passes when "
                  "cuDNN benchmark is on); the per-step numbers are warm.", ""]
    est = _recs(res, "app estimate", OURS)
    if est:
        lines += ["## Per preset, extrapolated from the steps (inversion.methods.APP_PRESETS; no early stop, so an "
                  "upper bound)", ""]
        lines += _table(["method", "preset", "variant", "seconds", "how"],
                        [[r["method"], r["preset"], r["variant"], r["median_s"], r["how"]] for r in est])
    runs = _recs(res, "app run", OURS)
    if runs:
        lines += ["## Whole runs of the app's code (inversion.methods.invert, early stop on, random weights)", ""]
        lines += _table(["method", "preset", "variant", "seconds", "steps", "start", "stopped early", "cut at budget",
                         "LPIPS", "MSE", "peak MiB"],
                        [[r["method"], r["preset"], r["variant"], r["median_s"], r.get("steps_run"), r.get("start"),
                          r.get("stopped_early"), r.get("cut_at_budget"), r.get("lpips"), r.get("mse"),
                          r.get("peak_mem_mb")] for r in runs])
        lines += ["Early stops here are on random weights and, for PTI, on the stand-in LPIPS's scale (PTI stops at "
                  "LPIPS <= 0.06): a run that stopped after a few steps says little about real photos; the "
                  "extrapolated table above gives the full-length cost.", ""]
    size = _recs(res, "size scaling")
    if size:
        lines += ["## Scaling with image size (synthesis, config-f at each size)", ""]
        lines += _table(["impl", "size", "variant", "batch", "ms per call", "ms per image"],
                        [[impl_name(r), r["size"], r["variant"], r["batch"], r["median_s"] * 1e3, r["per_image_s"] * 1e3]
                         for r in sorted(size, key=lambda r: (impl_name(r), r["variant"], r["batch"], r["size"]))])
    steps = _recs(res, "steps scaling")
    if steps:
        lines += ["## Scaling with steps (whole W+ optimization, no early stop)", ""]
        lines += _table(["steps", "seconds", "ms/step"], [[r["steps"], r["median_s"], r["per_step_s"] * 1e3]
                                                         for r in steps])
    lines += ["Batch scaling: see the synthesis and encoder tables (batch 1 latency vs batch 8/32 throughput).", ""]

    q = res.get("quality", {})
    lines += ["## Quality (known W+ codes, fresh noise maps)", ""]
    if q.get("rows"):
        lines += [f"Model: {q.get('model_set')}; LPIPS: {q.get('lpips_label')}; identity similarity needs the "
                  "FFHQ IR-SE50 weights (n/a on the built-in set). w+ error = mean L2 distance per layer between "
                  "the found and the true code.", ""]
        lines += _table(["method", "preset", "samples", "MSE", "PSNR", "LPIPS", "identity", "code spread",
                         "w+ error", "seconds"],
                        [[r["method"], r["preset"], r["samples"], r["mse"], r["psnr"], r["lpips"], r["identity"],
                          r["code_spread"], r["w_plus_error"], r["seconds"]] for r in q["rows"]])
    else:
        lines += [f"Skipped: {q.get('skipped_reason', 'no rows')}", ""]
    for s in q.get("skipped", []):
        lines.append(f"- skipped {s}")
    for n in q.get("notes", []):
        lines.append(f"- {n}")
    builds = res.get("builds", {})
    if builds or res.get("reference_status"):
        lines += ["", "## Reference set-up", ""]
        for name, b in builds.items():
            lines.append(f"- build {name}: {b}")
        for name, b in res.get("reference_status", {}).items():
            lines.append(f"- {name}: {b}")
    if res.get("errors"):
        lines += ["", "## Errors (the rest of the run went on)", ""] + [f"- {e}" for e in res["errors"]]
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- plot

def panels(res: dict) -> list[dict]:
    out = []
    series = []
    syn = _recs(res, "synthesis")
    for impl in [OURS] + sorted({impl_name(r) for r in syn} - {OURS}):
        recs = [r for r in syn if impl_name(r) == impl]
        for variant in sorted({r["variant"] for r in recs}):
            pts = sorted((r["batch"], r["img_per_s"]) for r in recs if r["variant"] == variant)
            label = f"ours {variant}" if impl == OURS else f"{impl.split(' (')[0] if not impl.startswith('ours') else impl} {variant}"
            series.append({"label": label, "xs": [p[0] for p in pts], "ys": [p[1] for p in pts]})
    out.append({"title": "Synthesis: throughput vs batch", "xlabel": "batch", "ylabel": "images / s",
                "logx": True, "logy": True, "series": series})
    series = []
    size = _recs(res, "size scaling")
    for key in sorted({(impl_name(r), r["variant"], r["batch"]) for r in size}):
        pts = sorted((r["size"], r["per_image_s"] * 1e3) for r in size if (impl_name(r), r["variant"], r["batch"]) == key)
        series.append({"label": f"{'ours' if key[0] == OURS else key[0].split('/')[0]} {key[1]} b{key[2]}",
                       "xs": [p[0] for p in pts], "ys": [p[1] for p in pts]})
    out.append({"title": "Synthesis time vs image size", "xlabel": "size (px)", "ylabel": "ms per image",
                "logx": True, "logy": True, "series": series})
    series = []
    steps = _recs(res, "steps scaling")
    if steps:
        series.append({"label": "ours W+ (measured)", "xs": [r["steps"] for r in steps], "ys": [r["median_s"] for r in steps]})
    for r in _recs(res, "opt step", OURS):
        if r["method"] == "w+":
            xs = [50, 150, 400, 1000]
            series.append({"label": f"ours W+ {r['variant']} (per-step x steps)", "xs": xs,
                           "ys": [r["setup_s"] + s * r["per_step_s"] for s in xs]})
    for m in res.get("matched", []):
        if m.get("kind") == "projector" and m.get("ref_per_step_s"):
            xs = [50, 150, 400, 1000]
            series.append({"label": "rosinality projector (per-step)", "xs": xs,
                           "ys": [(m.get("ref_setup_s") or 0) + s * m["ref_per_step_s"] for s in xs]})
    out.append({"title": "W+ optimization time vs steps", "xlabel": "steps", "ylabel": "seconds",
                "logx": True, "logy": True, "series": series})
    q = res.get("quality", {}).get("rows", [])
    qs = [r for r in q if r.get("lpips") is not None and r.get("code_spread") is not None]
    if qs:
        out.append({"title": "Distortion vs editability proxy (quality part)", "xlabel": "LPIPS (lower = closer)",
                    "ylabel": "code spread (lower = more editable)",
                    "series": [{"label": "method/preset", "style": "points", "xs": [r["lpips"] for r in qs],
                                "ys": [r["code_spread"] for r in qs],
                                "texts": [f"{r['method']}/{r['preset']}" for r in qs]}]})
    return out


def compact(res: dict) -> str:
    """A short fixed-width table for the end of a log."""
    rows = [f"{'method':30s} {'preset':24s} {'s/img':>10s} {'img/s':>8s} {'MiB':>8s}  how"]
    for r in headline(res):
        rows.append(f"{r['method'][:30]:30s} {str(r['preset'])[:24]:24s} {_ms(r['seconds']):>10s} "
                    f"{_f(r.get('img_per_s')):>8s} {_f(r.get('peak_mem_mb')):>8s}  {r['how']}")
    comps = comparisons(res)
    if comps:
        rows.append("")
        rows.append(f"{'vs reference':40s} {'ref':>10s} {'ours':>10s} {'speed-up':>9s}  quality (LPIPS ours/ref)")
        for c in comps:
            q = f"{_f(c.get('ours_lpips'), 4)}/{_f(c.get('ref_lpips'), 4)}" if "ref_lpips" in c else ""
            rows.append(f"{c['what'][:40]:40s} {_ms(c.get('ref_s')):>10s} {_ms(c.get('ours_best_s')):>10s} "
                        f"{_f(c.get('speedup_best')):>9s}  {q}")
    if res.get("errors"):
        rows.append(f"\n{len(res['errors'])} error(s): " + " | ".join(e[:120] for e in res["errors"][:6]))
    return "\n".join(rows)


def write(res: dict, out_dir: Path, name: str) -> dict[str, str]:
    """Write ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(res, indent=1, default=str))
    (out_dir / f"{name}.md").write_text(markdown(res))
    try:
        backend = plot.save(panels(res), out_dir / f"{name}.png",
                            title=f"{res.get('meta', {}).get('device', '')} benchmark")
    except Exception as err:  # noqa: BLE001 - a plot failure must not lose the numbers
        backend = f"plot failed: {err}"
    return {"plot": backend}


if __name__ == "__main__":  # re-render from a JSON: python -m bench.report results/cpu.json
    path = Path(sys.argv[1])
    data = json.loads(path.read_text())
    print(write(data, path.parent, path.stem))
    print(compact(data))
