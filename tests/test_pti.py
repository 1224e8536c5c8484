"""Pivotal Tuning Inversion on the small test generator of ``tests/test_optimize.py``.

The target is a real photo the generator cannot produce (``examples/grace_hopper.jpg``, center crop,
box-resized to 64 px). LPIPS is AlexNet with the filled (non-perceptual) backbone; the numbers in the
comments were measured on CPU, float32, and the thresholds leave a margin.
"""
from __future__ import annotations

import gc
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inversion.lpips import LPIPS
from inversion.pti import PRESETS, locality_codes, pivotal_tuning
from inversion.result import Cancelled, Inversion
from inversion.stylegan2 import Generator
from tests.test_optimize import filled_lpips, small_generator

PHOTO = Path(__file__).resolve().parents[1] / "examples" / "grace_hopper.jpg"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread (see tests/test_optimize.py: two contend badly on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def photo(size: int) -> torch.Tensor:
    """The example photo, center-cropped to a square and box-resized: (1, 3, size, size) in [-1, 1]."""
    im = Image.open(PHOTO).convert("RGB")
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s)).resize((size, size), Image.BOX)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def G() -> Generator:
    return small_generator()


@pytest.fixture(scope="module")
def lp() -> LPIPS:
    return filled_lpips()


@pytest.fixture(scope="module")
def target() -> torch.Tensor:
    return photo(64)


@pytest.fixture(scope="module")
def run(G: Generator, lp: LPIPS, target: torch.Tensor):
    """A full two-stage run (60 + 60 steps), the shared G's state before it, and the callback log."""
    before = {k: v.clone() for k, v in G.state_dict().items()}
    calls: list[tuple[int, int, dict]] = []
    inv = pivotal_tuning(G, target, lpips=lp, pivot_steps=60, tune_steps=60, lpips_threshold=0.0,
                         callback=lambda s, t, m: calls.append((s, t, dict(m))))
    return inv, before, calls


def test_pti_lowers_distortion_below_the_pivot(G: Generator, target: torch.Tensor, run) -> None:
    inv, _, _ = run
    info = inv.info
    assert inv.method == "pti" and inv.w_plus.shape == (1, G.n_latent, G.style_dim)
    assert torch.equal(inv.w_plus, inv.w_plus[:, :1].expand_as(inv.w_plus))  # a W pivot
    assert info["pivot_steps_run"] == 60 and info["tune_steps_run"] == 60 and len(inv.losses) == 120
    # measured: pivot mse 0.333, lpips 0.099 -> tuned mse 0.179, lpips 0.056
    assert info["pivot_mse"] > 0.25 and info["pivot_lpips"] > 0.08
    assert info["mse"] < 0.65 * info["pivot_mse"] and info["lpips"] < 0.75 * info["pivot_lpips"]
    with torch.no_grad():
        torch.testing.assert_close(inv.image, inv.generator.synthesis(inv.w_plus), rtol=0, atol=1e-6)
        pivot_mse = float((G.synthesis(inv.w_plus) - target).square().mean())
    assert abs(pivot_mse - info["pivot_mse"]) < 1e-6


def test_tuned_copy_differs_and_shared_generator_is_untouched(G: Generator, run) -> None:
    inv, before, _ = run
    tuned = inv.generator
    assert tuned is not G and not tuned.training
    assert not any(p.requires_grad or p.grad is not None for p in tuned.parameters())
    after = G.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical, buffers included
    assert not any(p.requires_grad or p.grad is not None for p in G.parameters())
    tuned_sd = tuned.state_dict()
    changed = [k for k in before if not torch.equal(before[k], tuned_sd[k])]
    assert "convs.0.conv.weight" in changed and "to_rgbs.2.bias" in changed
    assert not any(k.startswith(("style.", "noises.")) for k in changed)  # mapping and noise maps not tuned


def test_progress_reports_both_stages(run) -> None:
    _, _, calls = run
    assert [c[0] for c in calls] == list(range(1, 121)) and {c[1] for c in calls} == {120}
    assert [c[2]["stage"] for c in calls] == [1.0] * 60 + [2.0] * 60
    assert calls[60][2]["stage_step"] == 1.0 and {"loss", "mse", "lpips"} <= set(calls[60][2])


def test_tuned_generator_is_freed_with_the_inversion(G: Generator, lp: LPIPS, target: torch.Tensor) -> None:
    pivot = G.mean_latent(100, generator=torch.Generator().manual_seed(0))
    inv = pivotal_tuning(G, target, lpips=lp, pivot=pivot, tune_steps=3, lpips_threshold=0.0)
    ref = weakref.ref(inv.generator)
    del inv
    gc.collect()
    assert ref() is None


def test_given_pivot_skips_stage_one_and_threshold_stops(G: Generator, lp: LPIPS, target: torch.Tensor) -> None:
    code = G.mean_latent(100, generator=torch.Generator().manual_seed(1))[:, None].expand(1, G.n_latent, -1)
    given = Inversion(method="e4e", w_plus=code.clone(), image=torch.zeros(1, 3, 64, 64))
    calls = []
    inv = pivotal_tuning(G, target, lpips=lp, pivot=given, tune_steps=4, lpips_threshold=0.0,
                         callback=lambda s, t, m: calls.append((s, t, m["stage"])))
    assert torch.equal(inv.w_plus, code) and inv.info["pivot_steps_run"] == 0 and inv.info["pivot_given"]
    assert calls == [(s, 4, 2.0) for s in range(1, 5)]
    # PTI's early stop: LPIPS at or below the threshold before an update ends the tuning
    stop = pivotal_tuning(G, target, lpips=lp, pivot=code, tune_steps=4, lpips_threshold=1.0)
    assert stop.info["hit_lpips_threshold"] and stop.info["tune_steps_run"] == 0
    assert all(torch.equal(a, b) for a, b in zip(stop.generator.parameters(), G.parameters()))
    with pytest.raises(ValueError, match="tuned generator"):
        pivotal_tuning(G, target, lpips=lp, pivot=Inversion("pti", code, given.image, generator=G), tune_steps=1)
    with pytest.raises(ValueError, match="pivot must be"):
        pivotal_tuning(G, target, lpips=lp, pivot=torch.zeros(1, 3, G.style_dim), tune_steps=1)
    with pytest.raises(ValueError, match="preset"):
        pivotal_tuning(G, target, lpips=lp, preset="best")
    with pytest.raises(ValueError, match="target must be"):
        pivotal_tuning(G, target[:, :, :32, :32], lpips=lp)


def test_cancel_in_stage_two_and_mse_only(G: Generator, target: torch.Tensor) -> None:
    event = threading.Event()
    seen = []

    def cb(step: int, total: int, metrics: dict) -> None:
        seen.append((step, metrics["stage"]))
        if metrics["stage"] == 2.0 and metrics["stage_step"] == 2.0:
            event.set()

    with pytest.raises(Cancelled):
        pivotal_tuning(G, target, lpips=None, pivot_steps=3, tune_steps=50, callback=cb, cancel=event)
    assert seen == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0), (5, 2.0)]
    inv = pivotal_tuning(G, target, lpips=None, pivot_steps=2, tune_steps=2)
    assert "MSE only" in inv.info["note"] and inv.info["tune_steps_run"] == 2 and "lpips" not in inv.info


def test_locality_codes_geometry(G: Generator) -> None:
    pivot = G.mean_latent(100, generator=torch.Generator().manual_seed(0))[:, None].expand(1, G.n_latent, -1)
    w_avg = G.mean_latent(100, generator=torch.Generator().manual_seed(1))
    ws = locality_codes(G, pivot, w_avg, n=3, alpha=30.0, generator=torch.Generator().manual_seed(0))
    assert ws.shape == (3, G.n_latent, G.style_dim)
    torch.testing.assert_close((ws - pivot).flatten(1).norm(dim=1), torch.full((3,), 30.0))
    assert torch.equal(ws, ws[:, :1].expand_as(ws))  # a W pivot moved toward w's stays in W


def test_locality_keeps_the_tuned_generator_closer_away_from_the_pivot(
        G: Generator, lp: LPIPS, target: torch.Tensor, run) -> None:
    pivot = run[0].w_plus
    g = torch.Generator().manual_seed(7)
    probes = G.mapping(torch.randn(8, G.style_dim, generator=g))[:, None].expand(-1, G.n_latent, -1)
    with torch.no_grad():
        base = G.synthesis(probes)
    drift = {}
    for locality in (False, True):
        inv = pivotal_tuning(G, target, lpips=lp, pivot=pivot, tune_steps=40, lpips_threshold=0.0, locality=locality)
        with torch.no_grad():
            drift[locality] = float((inv.generator.synthesis(probes) - base).square().mean())
    # measured (PTI's settings: alpha 30, weights 0.1, every step, one sample; probes 18-24 away from the
    # pivot): mean squared drift 0.0133 without, 0.0116 with locality regularization
    assert drift[True] < 0.95 * drift[False]
    assert drift[False] > 0.005


def test_presets_follow_the_paper() -> None:
    q = PRESETS["quality"]
    p = q.pivot_recipe
    assert q.pivot == "w" and (p.steps, p.lr, p.latent_noise, p.space) == (450, 0.01, 0.05, "w")
    assert (q.tune_steps, q.tune_lr, q.lpips_threshold) == (350, 3e-4, 0.06)
    assert PRESETS["fast"].tune_steps < PRESETS["balanced"].tune_steps < q.tune_steps
    assert PRESETS["fast"].pivot == "e4e"  # the app's fast path: e4e codes as the pivot
