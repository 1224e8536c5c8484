"""W / W+ optimization of B photos at once, as B independent problems (issue 15, first bullet).

``optimize_batch(G, targets (B, 3, S, S), lpips=..., space="w+", preset=...)`` runs one recipe on every photo
in one batch: the per-photo losses are summed (each code's gradient is its own photo's), the learning-rate
schedule and Adam are element-wise, and each photo has its own early stop and best-state choice, so every
result equals running that photo alone (:func:`inversion.optimize.optimize_latent`) up to floating-point
reassociation, which Adam amplifies along the run (``tests/test_batch.py``, CPU: same stop step, per-step losses
within 6e-4 of the largest, final MSE/LPIPS within 2.5 %, codes within 7e-3; on CUDA the batched LPIPS and
grouped convolutions add their own reassociation). A photo whose stop fired keeps
its state (its code is held at the value it had when it stopped) while the others go on; the batch ends when all
have stopped. Latent noise (PTI's W pivot) is supported: every single run draws the same seeded stream, so one
draw per step serves the batch. Not supported in a batch (``ValueError``): noise-map optimization and the coarse
phase. Like the single run, the step is one
CUDA graph on CUDA (``compile``). :func:`batch_size_for` picks B from free GPU memory.
"""
from __future__ import annotations

import importlib.util
import math
import threading
import time
from typing import Any, Optional

import torch

from inversion.lpips import LPIPS, downsample_256
from inversion.optimize import (
    LR_RAMPUP, _start_code, latent_noise_schedule, lr_schedule, resolve_recipe, w_statistics,
)
from inversion.recipes import OptimizeRecipe
from inversion.result import Cancelled, Inversion, ProgressCallback, check_cancel
from inversion.stepper import CapturedStep, adam, graph_default, run_steps
from inversion.stylegan2 import Generator

__all__ = ["optimize_batch", "batch_size_for", "triton_available"]

PER_PHOTO_MIB_1024 = 1400
"""Peak GPU memory per photo of a batched W+ step at 1024 px, with margin: an H200 measured 2.1 GB at B=1 and 21.1 GB
at B=16 unfused (fused: 15.3 GB), ``bench/results/batch_variants_fold_*``."""


def batch_size_for(device: torch.device, size: int, *, limit: int = 32, reserve_mib: int = 2048) -> int:
    """B from free GPU memory (``reserve_mib`` kept free), scaled by the pixel count from the 1024 px figure;
    1 on the CPU (the CPU path runs photos one after another inside a batch anyway)."""
    if device.type != "cuda":
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per = PER_PHOTO_MIB_1024 * (size / 1024) ** 2
    return max(1, min(limit, int((free / 2**20 - reserve_mib) // max(per, 1.0))))


def triton_available() -> bool:
    """Whether ``torch.compile`` can build GPU kernels here (Triton importable)."""
    return importlib.util.find_spec("triton") is not None


def _per_photo_losses(images: torch.Tensor, targets: torch.Tensor, feats, lpips: Optional[LPIPS],
                      r: OptimizeRecipe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mse = (images - targets).square().mean(dim=(1, 2, 3))
    total = r.mse_weight * mse
    lp = torch.zeros_like(mse)
    if lpips is not None and r.lpips_weight > 0:
        x = downsample_256(images).to(lpips.shift.dtype)
        if x.is_cuda:
            lp = lpips.distance_to_features(x, feats).to(mse.dtype)
        else:  # one photo at a time on the CPU, as synthesis there (and so the same numbers as alone)
            lp = torch.cat([lpips.distance_to_features(x[b:b + 1], [f[b:b + 1] for f in feats])
                            for b in range(x.shape[0])]).to(mse.dtype)
        total = total + r.lpips_weight * lp
    return total, mse, lp


def optimize_batch(G: Generator, targets: torch.Tensor, *, lpips: Optional[LPIPS], space: Optional[str] = None,
                   preset: str = "balanced", recipe: Optional[OptimizeRecipe] = None,
                   init: Optional[torch.Tensor] = None, seed: int = 0,
                   cancel: Optional[threading.Event] = None, autocast: bool = False,
                   compile: Optional[bool] = None, check_every: int = 10, synthesis_mode: Optional[str] = None,
                   fold_blur: Optional[bool] = None, fuse: bool = False,
                   callback: Optional[ProgressCallback] = None, **overrides: Any) -> list[Inversion]:
    """Invert ``targets`` ``(B, 3, S, S)`` in [-1, 1]; returns one :class:`Inversion` per photo, each as
    ``optimize_latent`` would return it alone (``init``: ``None`` = mean w for all, or ``(B, n_latent, D)`` /
    ``(B, D)`` start codes).

    How the step runs (all exact reformulations; defaults from ``bench/results/batch_variants_*``, H200, 1024 px,
    bf16, B=16: 10.3 ms per photo-step as the single run computes it, 4.5 ms with all three; the CLI asks for
    ``fuse`` in long jobs): ``synthesis_mode``
    (default ``"scaled"`` on CUDA: shared-weight convolutions; the generator's ``"auto"`` elsewhere),
    ``fold_blur`` (default on CUDA: upsampling as one stride-1 convolution over four phases, no depthwise blur) and
    ``fuse`` (``torch.compile`` of the synthesis, which fuses its elementwise passes; on CUDA it needs Triton,
    :func:`triton_available`; compiled once per process and shape, which takes about a minute (PTI's step: 58 s on
    an H200), so worth it for long jobs; falls back to the plain step if compiling fails).
    ``info["step"]`` records the choices that ran. ``callback(step, total, metrics)``: the mean ``loss`` / ``mse`` /
    ``lpips`` of the photos still running (``running``: how many) per step, up to ``check_every`` steps late."""
    started = time.perf_counter()
    r = resolve_recipe(space, preset, recipe, overrides)
    if r.optimize_noise or r.coarse_steps:
        raise ValueError("a batch supports neither noise maps nor a coarse phase")
    if targets.dim() != 4 or targets.shape[1] != 3 or tuple(targets.shape[2:]) != (G.size, G.size):
        raise ValueError(f"targets must be (B, 3, {G.size}, {G.size}), got {tuple(targets.shape)}")
    ref = G.input.input
    dev, dtype = ref.device, torch.promote_types(ref.dtype, torch.float32)
    B, steps = targets.shape[0], r.steps
    targets = targets.detach().to(dev, dtype)
    mean, w_std = None, 0.0
    if init is None or r.latent_noise > 0:  # the same draws as the single run's
        mean, w_std = w_statistics(G, r.w_avg_samples, generator=torch.Generator().manual_seed(seed))
    if init is None:
        starts = [_start_code(G, mean, r.space, dev, dtype) for _ in range(B)]
    else:
        starts = [_start_code(G, init[b:b + 1], r.space, dev, dtype) for b in range(B)]
    code = torch.cat(starts).requires_grad_(True)  # (B, 1 or n_latent, D)
    frozen = code.detach().clone()
    feats = None
    if lpips is not None and r.lpips_weight > 0:
        feats = lpips.target_features(downsample_256(targets).to(lpips.shift.dtype))
    f32 = dict(device=dev, dtype=torch.float32)
    lr_host = lr_schedule(r)
    lr_sched, lr, gate = torch.tensor(lr_host, **f32), torch.zeros((), **f32), torch.ones((), **f32)
    # latent noise: every photo alone draws the same stream (one device generator seeded with ``seed``), so one
    # draw per step, shared by the batch, gives each photo its single run's noise
    noise_host = latent_noise_schedule(r, w_std)
    noisy_steps = sum(1 for x in noise_host if x > 0)
    noise_sched = torch.tensor(noise_host, **f32).to(dtype)
    eps = torch.zeros((1, *code.shape[1:]), device=dev, dtype=dtype)
    dev_rng = torch.Generator(device=dev).manual_seed(seed)
    opt = adam([code], lr)
    i = torch.zeros(1, dtype=torch.long, device=dev)
    log = torch.zeros(steps, 3, B, **f32)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    stop_at = torch.full((B,), steps, dtype=torch.long, device=dev)
    best_loss = torch.full((B,), math.inf, device=dev, dtype=dtype)
    best_step = torch.full((B,), -1, dtype=torch.long, device=dev)
    best = code.detach().clone()
    run_best = torch.full((B,), math.inf, device=dev, dtype=dtype)
    hist = torch.zeros(steps, B, device=dev, dtype=dtype)
    window = r.stall_window if r.stall_window is not None else max(10, steps // 10)
    check_from = max(window, math.ceil(LR_RAMPUP * steps))
    start_state = code.detach().clone()

    on_gpu = dev.type == "cuda"
    mode = synthesis_mode or ("scaled" if on_gpu else "auto")
    fold = on_gpu if fold_blur is None else bool(fold_blur)
    fuse = bool(fuse)

    def synthesize(c: torch.Tensor) -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=False):
            return G.synthesis(c.expand(B, G.n_latent, G.style_dim), mode=mode, fold_blur=fold).to(dtype)

    forward = torch.compile(synthesize, dynamic=False) if fuse else synthesize

    def body() -> None:
        lr.copy_((lr_sched.index_select(0, i) * gate).reshape(()))
        scale = noise_sched.index_select(0, i)
        c = code + scale * eps if r.latent_noise > 0 else code
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=autocast, cache_enabled=False):
            total, mse, lp = _per_photo_losses(forward(c), targets, feats, lpips, r)
        log.index_copy_(0, i, torch.stack([total, mse, lp]).detach().float()[None])
        t = total.detach()
        live = ~done
        better = (t < best_loss) & live & (scale == 0)  # a noisy code's loss is not comparable (as alone)
        best.copy_(torch.where(better[:, None, None], code.detach(), best))
        best_step.copy_(torch.where(better, i, best_step))
        best_loss.copy_(torch.where(better, t, best_loss))
        fire = torch.zeros_like(done)
        if r.early_stop:
            rb = torch.minimum(run_best, t)
            hist.index_copy_(0, i, rb[None])
            run_best.copy_(rb)
            before = hist.index_select(0, (i - window).clamp_min(0))[0]
            fire = (i >= check_from) & (before - rb <= r.stall_eps * before.abs() + r.stall_abs) & live
        (g,) = torch.autograd.grad(total.sum(), [code])
        code.grad = g if g.stride() == code.stride() else g.contiguous()
        opt.step()
        with torch.no_grad():  # photos that stopped earlier keep their state; those stopping now keep this update
            code.copy_(torch.where(done[:, None, None], frozen, code))
            frozen.copy_(torch.where(fire[:, None, None], code, frozen))
        stop_at.copy_(torch.where(fire, i + 1, stop_at))
        done.copy_(done | fire)
        i.add_(1)

    def reset() -> None:
        with torch.no_grad():
            code.copy_(start_state)
            for v in opt.state[code].values():
                v.zero_()
            for x, val in ((i, 0), (log, 0), (done, False), (stop_at, steps), (best_loss, math.inf),
                           (best_step, -1), (run_best, math.inf), (hist, 0)):
                x.fill_(val)
            eps.zero_()
        dev_rng.manual_seed(seed)

    def drain(a: int, b: int) -> bool:
        if callback is not None:  # the batch's mean losses over the photos still running, one call per step
            rows = log[a:b].tolist()
            live = (~done).tolist()
            for j, (tot, ms, lp) in enumerate(rows):
                pick = [k for k in range(B) if live[k]] or list(range(B))
                mean = {name: sum(v[k] for k in pick) / len(pick) for name, v in
                        (("loss", tot), ("mse", ms), ("lpips", lp))}
                callback(a + j + 1, steps, {**mean, "lr": lr_host[a + j], "running": float(len(pick))})
        check_cancel(cancel)
        return bool(done.all())

    graph = graph_default(dev, compile)

    def before(j: int) -> None:
        if r.latent_noise > 0 and j < noisy_steps:
            eps.normal_(generator=dev_rng)

    def run() -> int:
        step = CapturedStep(body, graph=graph, gate=gate, reset=reset)
        try:
            return run_steps(step, steps, every=max(1, check_every), drain=drain, cancel=cancel, before=before)
        finally:
            step.release()
    try:
        ran = run()
    except Cancelled:
        raise
    except Exception:  # noqa: BLE001 - a compiler failure must not cost the run: the same steps, not fused
        if not fuse:
            raise
        fuse, forward = False, synthesize
        if on_gpu:
            torch.cuda.synchronize(dev)
        reset()
        ran = run()
    del opt
    code.grad = None
    runs = stop_at.clamp_max(ran).tolist()
    logs = log[:ran].cpu()
    results = []
    with torch.no_grad():
        finals = code.detach()
        images = synthesize(finals)
        final_total, _, _ = _per_photo_losses(images, targets, feats, lpips, r)
        use_best = (best_step >= 0) & (best_loss < final_total)
        chosen = torch.where(use_best[:, None, None], best, finals)
        images = synthesize(chosen)
        total, mse, lp = _per_photo_losses(images, targets, feats, lpips, r)
    share = (time.perf_counter() - started) / B
    for b in range(B):
        n = runs[b]
        info = {"space": r.space, "steps": steps, "steps_run": n, "lr": r.lr, "stopped_early": n < steps,
                "returned_step": int(best_step[b]) if bool(use_best[b]) else n, "optimize_noise": False,
                "seed": seed, "recipe": r.to_dict(), "batch": B, "preset": preset, "loss": float(total[b]), "mse": float(mse[b]),
                "compiled": graph, "step": {"synthesis": mode, "fold_blur": fold, "fused": fuse}}
        if lpips is not None:
            info["lpips"] = float(lp[b])
        else:
            info["note"] = "no LPIPS network given: MSE only"
        results.append(Inversion(method=r.space, w_plus=chosen[b:b + 1].expand(1, G.n_latent, G.style_dim).clone(),
                                 image=images[b:b + 1].clone(), seconds=share, losses=tuple(logs[:n, 0, b].tolist()), info=info))
    return results
