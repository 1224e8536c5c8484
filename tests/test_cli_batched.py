"""The command line with ``--batch``: photos grouped through the batched methods give the one-at-a-time results.

Tiny in-memory family on the CPU, real face detection on the example photos, presets shortened to a few steps.
"""
from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inversion import cli
from inversion import methods as M
from inversion.cli.batched import FUSE_FROM, choose_batch, choose_fuse
from tiny_models import tiny_model_set

ROOT = Path(__file__).resolve().parents[1]
CODE_TOL = 1e-3  # batched vs alone: float reassociation only, a few Adam steps (measured ~1e-6)
ADAM_CODE_TOL = 2e-2


def tiny_sets(device, locate):
    return {"tiny": tiny_model_set()}


def run(argv, **kw):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main([str(a) for a in argv], model_sets=tiny_sets, stdout=out, stderr=err, **kw)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(ROOT / "examples" / "grace_hopper.jpg", folder / "grace_hopper.jpg")
    shutil.copy(ROOT / "examples" / "astronaut.png", folder / "astronaut.png")
    Image.new("RGB", (200, 160), (128, 128, 128)).save(folder / "gray.png")  # no face: skipped inside the group
    (folder / "notes.jpg").write_text("not a photo\n")
    return folder


@pytest.fixture(scope="module")
def runs(photos, tmp_path_factory):
    """The same folder one photo at a time and in one group of 4."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(M.APP_PRESETS, ("w+", "fast"), {"steps": 4, "start": "e4e"})
        mp.setitem(M.APP_PRESETS, ("pti", "fast"), {"pivot": "e4e", "tune_steps": 2})
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        out = {}
        for batch in (1, 4):
            folder = tmp_path_factory.mktemp(f"out{batch}")
            rc, stdout, stderr = run([photos, "--out", folder, "--methods", "e4e,w+,pti", "--preset", "fast",
                                      "--batch", batch])
            out[batch] = {"rc": rc, "out": folder, "stdout": stdout, "stderr": stderr}
    return out


def test_grouped_photos_equal_one_at_a_time(runs):
    one, grouped = runs[1], runs[4]
    assert one["rc"] == 0 and grouped["rc"] == 0, grouped["stderr"]
    assert "up to 4 photos at a time through e4e encoder, W+ optimization" in grouped["stderr"]
    for name in ("astronaut", "grace_hopper"):
        a = json.loads((one["out"] / name / "metrics.json").read_text())
        b = json.loads((grouped["out"] / name / "metrics.json").read_text())
        assert a["settings"] == b["settings"]  # so either run resumes the other
        assert {m: e["batch"] for m, e in b["methods"].items()} == {"e4e": 2, "w+": 2, "pti": 2}
        assert {m: e["batch"] for m, e in a["methods"].items()} == {"e4e": 1, "w+": 1, "pti": 1}
        assert b["methods"]["w+"]["recipe"]["function"] == "inversion.batch.optimize_batch"
        for method, key in (("e4e", "e4e"), ("w+", "wplus"), ("pti", "pti")):
            codes_a = np.load(one["out"] / name / f"{key}_wplus.npy")
            codes_b = np.load(grouped["out"] / name / f"{key}_wplus.npy")
            assert np.abs(codes_a - codes_b).max() <= CODE_TOL, (name, method)
            assert b["methods"][method]["metrics"]["mse"] == pytest.approx(a["methods"][method]["metrics"]["mse"],
                                                                           rel=1e-3)
    counts = [json.loads((r["out"] / "summary.json").read_text())["counts"] for r in (one, grouped)]
    assert counts[0] == counts[1] and counts[1]["done"] == 2 and counts[1]["skipped"] == 2


def test_pti_w_pivots_optimized_together_equal_one_at_a_time(photos, tmp_path):
    """PTI's quality preset optimizes its pivot in W (latent noise on): the group's pivots run as one batch."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(M.APP_PRESETS, ("pti", "quality"), {"pivot": "w", "pivot_steps": 5, "tune_steps": 2})
        outs = {}
        for batch in (1, 3):
            outs[batch] = tmp_path / str(batch)
            rc, _, stderr = run([photos, "--out", outs[batch], "--methods", "pti", "--preset", "quality",
                                 "--batch", batch])
            assert rc == 0, stderr
    for name in ("astronaut", "grace_hopper"):
        a, b = (json.loads((outs[k] / name / "metrics.json").read_text())["methods"]["pti"] for k in (1, 3))
        assert (a["batch"], b["batch"], b["recipe"]["pivot"]) == (1, 2, "w")
        # Adam moves codes whose gradient is ~0 by ~lr per step either way on float noise: a few 1e-3 (measured
        # 3.4e-3 at lr 0.01, 5 steps), the tolerance of tests/test_batch.py
        assert np.abs(np.load(outs[1] / name / "pti_wplus.npy") - np.load(outs[3] / name / "pti_wplus.npy")).max() \
            <= ADAM_CODE_TOL
        assert b["metrics"]["mse"] == pytest.approx(a["metrics"]["mse"], rel=1e-2)


def test_a_failing_batched_run_falls_back_to_one_photo_at_a_time(photos, tmp_path):
    def broken(requests):
        raise RuntimeError("CUDA out of memory (simulated)")

    registry = M.METHODS.copy()
    registry.register(dataclasses.replace(registry["e4e"], key="e4e2", label="e4e again", run_batch=broken, order=11))
    rc, _, stderr = run([photos, "--out", tmp_path, "--methods", "e4e2,e4e", "--batch", "3"], methods=registry)
    assert rc == 0, stderr
    assert "e4e again: the batched run failed (RuntimeError: CUDA out of memory (simulated)); " \
           "running photo by photo" in stderr
    record = json.loads((tmp_path / "astronaut" / "metrics.json").read_text())
    assert record["methods"]["e4e2"]["batch"] == 1 and record["methods"]["e4e"]["batch"] == 2
    a, b = (np.load(tmp_path / "astronaut" / f"{m}_wplus.npy") for m in ("e4e", "e4e2"))
    assert np.abs(a - b).max() <= CODE_TOL


def test_batch_size_choice_and_bad_values(tmp_path):
    import torch

    assert choose_batch(0, torch.device("cpu"), 1024, all_faces=False) == 1
    assert choose_batch(5, torch.device("cpu"), 1024, all_faces=False) == 5
    assert choose_batch(5, torch.device("cpu"), 1024, all_faces=True) == 1
    assert not choose_fuse(torch.device("cpu"), 10 * FUSE_FROM)  # compiling is for long CUDA jobs only
    rc, _, stderr = run([ROOT / "examples", "--out", tmp_path, "--batch", "-2"])
    assert rc == 2 and "--batch must be 0 (automatic) or more" in stderr
