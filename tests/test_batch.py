"""Batched W / W+ optimization equals running each photo alone (tiny test generator, CPU, float32)."""
from __future__ import annotations

import pytest
import torch

from inversion.batch import batch_size_for, optimize_batch
from inversion.optimize import optimize_latent
from tests.test_optimize import filled_lpips, small_generator

# Batched vs alone differ from step 0 by float reassociation only (per-photo MSE reduced over dims 1-3 instead of
# the whole tensor: ~1e-9); Adam at lr 0.1 amplifies that along the run. Measured on this test: per-step losses
# within 5.8e-4 of the largest loss, codes within 6.4e-3 (|w| ~ 1), final MSE/LPIPS within 2.5 %, same stop step.
TOL = 2e-3
CODE_TOL = 2e-2


def test_batched_equals_one_at_a_time() -> None:
    torch.set_num_threads(1)
    G, lp = small_generator(), filled_lpips()
    g = torch.Generator().manual_seed(11)
    w = G.mapping(torch.randn(3, G.style_dim, generator=g))
    mean = G.mean_latent(10000, generator=torch.Generator().manual_seed(0))
    targets = G.synthesis((mean + 0.7 * (w - mean))[:, None].expand(3, G.n_latent, -1))
    # photo 0 starts next to its code (its stop fires early), the others from the mean w
    init = torch.cat([(mean + 0.7 * (w[:1] - mean)) + 0.05 * torch.randn(1, G.style_dim, generator=g),
                      mean, mean])
    kw = dict(lpips=lp, space="w", steps=120, lr=0.1)
    batch = optimize_batch(G, targets, init=init, **kw)
    alone = [optimize_latent(G, targets[b:b + 1], init=init[b:b + 1], **kw) for b in range(3)]
    assert batch[0].info["stopped_early"] and not batch[1].info["stopped_early"]
    for a, b in zip(alone, batch):
        assert a.info["steps_run"] == b.info["steps_run"] and a.info["returned_step"] == b.info["returned_step"]
        assert max(abs(x - y) for x, y in zip(a.losses, b.losses)) <= TOL * max(a.losses)
        torch.testing.assert_close(b.w_plus, a.w_plus, rtol=0, atol=CODE_TOL)
        assert b.info["mse"] == pytest.approx(a.info["mse"], rel=0.05)
        assert b.info["lpips"] == pytest.approx(a.info["lpips"], rel=0.05)
    assert batch_size_for(torch.device("cpu"), 1024) == 1


def test_batch_rejects_what_it_cannot_do_alike() -> None:
    G = small_generator()
    x = torch.zeros(2, 3, G.size, G.size)
    with pytest.raises(ValueError, match="noise"):
        optimize_batch(G, x, lpips=None, steps=2, optimize_noise=True)
    with pytest.raises(ValueError, match="targets"):
        optimize_batch(G, x[:, :, :8], lpips=None, steps=2)


def test_a_failing_compiler_falls_back_to_the_same_steps_unfused(monkeypatch) -> None:
    """``fuse`` asks torch.compile for the synthesis; when compiling fails the batch runs the plain step instead
    (same numbers as asking for no fusion) and says so in ``info["step"]``."""
    G = small_generator()
    g = torch.Generator().manual_seed(5)
    targets = G.synthesis(G.mapping(torch.randn(2, G.style_dim, generator=g))[:, None].expand(2, G.n_latent, -1))
    calls = []

    def broken_compile(fn, **kwargs):
        def compiled(*args, **kw):
            calls.append(1)
            raise RuntimeError("no working compiler (simulated)")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    kw = dict(lpips=None, space="w+", steps=4, lr=0.05)
    fell_back = optimize_batch(G, targets, fuse=True, **kw)
    plain = optimize_batch(G, targets, fuse=False, **kw)
    assert calls and [r.info["step"]["fused"] for r in fell_back] == [False, False]
    for a, b in zip(fell_back, plain):
        assert torch.equal(a.w_plus, b.w_plus) and a.losses == b.losses


def test_latent_noise_pivots_equal_one_at_a_time() -> None:
    """PTI's W pivot recipe (latent noise, LPIPS only, from the mean w) batched equals each photo alone: the
    seeded noise stream is the same for every photo, so one draw per step serves the batch."""
    from inversion.recipes import PTI_PIVOT

    torch.set_num_threads(1)
    G, lp = small_generator(), filled_lpips()
    g = torch.Generator().manual_seed(12)
    targets = G.synthesis(G.mapping(torch.randn(2, G.style_dim, generator=g))[:, None].expand(2, G.n_latent, -1))
    recipe = PTI_PIVOT.with_(steps=12, w_avg_samples=500)
    batch = optimize_batch(G, targets, lpips=lp, recipe=recipe, seed=3)
    alone = [optimize_latent(G, targets[b:b + 1], lpips=lp, recipe=recipe, seed=3) for b in range(2)]
    for a, b in zip(alone, batch):
        assert a.info["returned_step"] == b.info["returned_step"] and len(a.losses) == len(b.losses) == 12
        assert max(abs(x - y) for x, y in zip(a.losses, b.losses)) <= TOL * max(a.losses)
        torch.testing.assert_close(b.w_plus, a.w_plus, rtol=0, atol=CODE_TOL)
    other_seed = optimize_batch(G, targets, lpips=lp, recipe=recipe, seed=4)
    assert not torch.allclose(other_seed[0].w_plus, batch[0].w_plus)  # the noise is live, and seeded
