"""The benchmark's own plumbing (bench/): timing helpers, per-preset extrapolation, report and plot writers.

No models are run here (the benchmark itself is run by ``python -m bench.run``); the inputs are small
hand-made result records whose expected outputs are computed by hand below.
"""
from __future__ import annotations

import json
import time

import pytest
import torch
from PIL import Image

from bench import appruns, common, plot, report


def test_time_call_reports_the_median_of_the_timed_calls():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.01)
    t = common.time_call(fn, device=torch.device("cpu"), warmup=2, repeats=3, budget_s=10)
    assert len(calls) == 5 and t["n"] == 3
    assert 0.009 <= t["median_s"] <= t["max_s"] < 0.5
    assert t["min_s"] <= t["median_s"]


def test_time_pair_interleaves_and_times_both():
    order = []
    a, b = common.time_pair(lambda: order.append("a"), lambda: (order.append("b"), time.sleep(0.01)),
                            device=torch.device("cpu"), warmup=1, repeats=4, budget_s=10)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert a["n"] == b["n"] == 4 and b["median_s"] > a["median_s"]


def test_peak_memory_on_cpu_sees_a_large_allocation():
    with common.peak_memory(torch.device("cpu")) as mem:
        x = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB
        x += 1
    assert mem["peak_mem_mb"] >= 64 and "RSS" in mem["peak_mem_kind"]


def test_estimates_follow_the_app_presets():
    from inversion.methods import APP_PRESETS, use_bf16
    from inversion.optimize import PRESETS as OPT
    from inversion.pti import PRESETS as PTI

    dev = torch.device("cpu")
    variant = "bf16 autocast" if use_bf16(dev) else "fp32"
    recs = [{"part": "e4e encode+synthesize", "impl": "ours", "batch": 1, "variant": "fp32", "median_s": 2.0},
            {"part": "opt step", "impl": "ours", "method": "w+", "variant": variant, "per_step_s": 0.5, "setup_s": 1.0},
            {"part": "opt step", "impl": "ours", "method": "w", "variant": variant, "per_step_s": 0.25, "setup_s": 1.0},
            {"part": "pti step", "impl": "ours", "variant": variant, "pivot_per_step_s": 0.3, "tune_per_step_s": 0.7,
             "setup1_s": 3.0, "setup2_s": 0.5}]
    est = {(r["method"], r["preset"]): r["median_s"] for r in appruns.estimates(recs, dev)}
    assert set(est) == set(APP_PRESETS)
    for (method, preset), opts in APP_PRESETS.items():
        if method in ("w", "w+"):
            steps = opts.get("steps", OPT[preset].steps)
            want = 1.0 + steps * (0.5 if method == "w+" else 0.25) + (2.0 if opts.get("start") == "e4e" else 0.0)
        elif opts.get("pivot") == "e4e":
            want = 2.0 + 0.5 + opts.get("tune_steps", PTI[preset].tune_steps) * 0.7
        else:
            want = 3.5 + opts.get("pivot_steps", PTI[preset].pivot_steps) * 0.3 + \
                opts.get("tune_steps", PTI[preset].tune_steps) * 0.7
        assert est[(method, preset)] == pytest.approx(want)


def _results() -> dict:
    syn = [{"part": "synthesis", "impl": "ours", "variant": v, "batch": b, "size": 1024, "median_s": t,
            "per_image_s": t / b, "img_per_s": b / t, "peak_mem_mb": 100.0}
           for v, b, t in (("fp32", 1, 0.02), ("bf16", 1, 0.01), ("fp32", 8, 0.08), ("bf16", 8, 0.04))]
    ref = {"part": "synthesis", "impl": "rosinality/stylegan2-pytorch", "variant": "fp32", "batch": 8, "size": 1024,
           "median_s": 0.2, "per_image_s": 0.025, "img_per_s": 40.0}
    paired = dict(ref, impl="ours (paired)", median_s=0.1, paired_with=ref["impl"], img_per_s=80.0)
    return {"meta": {"device": "cpu", "size": 1024, "machine": {"cpu_model": "test"}},
            "records": syn + [ref, paired], "matched": [], "notes": [], "errors": [], "quality": {}}


def test_comparisons_pair_each_reference_with_our_interleaved_run():
    (c,) = report.comparisons(_results())
    assert c["ref_s"] == 0.2 and c["ours_fp32_s"] == 0.1 and c["speedup_fp32"] == pytest.approx(2.0)
    assert c["ours_best_s"] == 0.04 and c["ours_best_variant"] == "bf16" and c["speedup_best"] == pytest.approx(5.0)


def test_report_files(tmp_path):
    res = _results()
    info = report.write(res, tmp_path, "x")
    assert json.loads((tmp_path / "x.json").read_text())["records"][0]["variant"] == "fp32"
    md = (tmp_path / "x.md").read_text()
    assert "| synthesis 1024, batch 8 | bf16 | 5.0 ms | 200 |" in md
    assert "rosinality/stylegan2-pytorch" in md and info["plot"] in ("matplotlib", "PIL")
    with Image.open(tmp_path / "x.png") as im:
        assert im.size[0] >= 600 and im.size[1] >= 300
    assert "synthesis 1024, batch 8" in report.compact(res)


def test_pil_plot_draws_every_series(tmp_path):
    panel = {"title": "t", "xlabel": "x", "ylabel": "y", "logx": True, "logy": True,
             "series": [{"label": "a", "xs": [1, 8, 32], "ys": [10.0, 50.0, 60.0]},
                        {"label": "b", "xs": [1, 8], "ys": [5.0, 20.0]}]}
    plot._save_pil([panel], tmp_path / "p.png", "title")
    with Image.open(tmp_path / "p.png") as im:
        colors = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    for hex_color in plot.COLORS[:2]:
        rgb = tuple(int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
        assert rgb in colors
