"""Per-image optimization inversion in W or W+ (Image2StyleGAN / the StyleGAN2 projector).

A code (``space="w"``: one 512-vector broadcast to every layer; ``space="w+"``: one per layer,
``(1, n_latent, 512)``) and optionally the per-layer noise maps are fitted with Adam so that
``G.synthesis(code, noise)`` reproduces an aligned photo ``(1, 3, S, S)`` in [-1, 1], ``S = G.size``.

Loss per step: ``mse_weight * MSE(x, y)`` on the full-size images (Image2StyleGAN, PTI) plus
``lpips_weight * LPIPS(x256, y256)`` after area-downsampling both to 256 px (the StyleGAN2 projector
and PTI practice), plus, with ``optimize_noise``, ``noise_weight * R(noise)``: the projector's
multi-scale autocorrelation penalty (for each map: squared mean of the map times itself shifted by
one pixel, horizontally and vertically, then 2x2-average-pooled and repeated down to 8x8), with every
map renormalised to zero mean / unit std after each step.

Schedule (StyleGAN2 projector): ``lr(t) = lr * ramp(t)`` with ``t = step / steps``,
``ramp = min(1, t / 0.05) * (0.5 - 0.5 cos(pi * min(1, (1 - t) / 0.25)))`` (linear warm-up over the
first 5 %, cosine ramp-down over the last 25 %; the very first step has lr 0). Adam, betas (0.9, 0.999).
Optional latent noise (the projector's ``0.05 * w_std * max(0, 1 - t / 0.75)^2`` Gaussian added to the
code in the forward pass) is off by default (Image2StyleGAN has none; PTI's pivot stage turns it on);
it is drawn from the seeded generator, so runs are deterministic either way.

Presets (the number of steps is the main knob; the cosine schedule adapts to it). The last column is
measured on the 64-px test generator of ``tests/test_optimize.py`` (W+ from the mean w toward a
generated W+ target, MSE + filled-AlexNet LPIPS), to show the trend only:

=========  =====  =====  ===========================================  =====================
preset     steps  lr     where the choice comes from                  test model, final MSE
=========  =====  =====  ===========================================  =====================
fast        150   0.1    a preview; or a refinement of an encoder's   0.0039
                         W+ (``init=``)
balanced    400   0.1    in between                                   0.0024
quality    1000   0.1    StyleGAN2 projector (1000 steps, lr 0.1;     0.0016 (early stop
                         rosinality's also for W+)                    after 989 steps)
=========  =====  =====  ===========================================  =====================

Image2StyleGAN used 5000 steps at lr 0.01; PTI's W pivot uses 450 steps with a peak lr of 0.01 (see
``inversion.pti``). Cost at 1024 px (FFHQ config-f architecture, VGG LPIPS at 256 px), measured with
``python -m bench.optimize_cpu --threads 1`` on a shared 2-core CPU: one W+ step is ~7.6 s of CPU
(~8.1 s with noise maps), so ``fast`` is ~19 min of one core, ``balanced`` ~51 min, ``quality`` ~2 h:
two threads on an idle machine would be faster (not measured here); at 1024 px, use a GPU.

The start is the mean w (``G.mean_latent`` recipe, ``w_avg_samples`` draws from a seeded
``torch.Generator``) or ``init``: a w ``(1, 512)``, a W+ code ``(1, n_latent, 512)`` or an
:class:`Inversion` (e.g. an encoder's output, a much faster start). A W+ start for ``space="w"`` is
averaged over layers. Early stop: after the warm-up, the run ends when the best loss so far improved
by at most ``stall_eps`` (relative, 1e-3) plus ``stall_abs`` (1e-5, an MSE of 1e-5 is ~56 dB PSNR) over
the last ``stall_window`` steps (default ``max(10, steps // 10)``). The returned code (and noise) is the
state after the last update, unless an earlier state had a lower loss (Adam at a high rate oscillates
near the optimum; ``info["returned_step"]`` counts the updates behind the returned state, ``steps_run``
for the last one). With latent noise on, the per-step losses are those of the perturbed codes.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

from inversion.lpips import LPIPS, downsample_256
from inversion.result import Inversion, ProgressCallback, check_cancel
from inversion.stylegan2 import Generator

__all__ = [
    "PRESETS",
    "OptimizePreset",
    "ReconstructionLoss",
    "StallDetector",
    "lr_ramp",
    "noise_regularization",
    "normalize_noise_",
    "optimize_latent",
    "w_statistics",
]

LR_RAMPUP = 0.05
LR_RAMPDOWN = 0.25
LATENT_NOISE_RAMP = 0.75
SPACES = ("w", "w+")


@dataclass(frozen=True)
class OptimizePreset:
    """Number of steps and peak learning rate of one preset."""

    steps: int
    lr: float


PRESETS: dict[str, OptimizePreset] = {
    "fast": OptimizePreset(steps=150, lr=0.1),
    "balanced": OptimizePreset(steps=400, lr=0.1),
    "quality": OptimizePreset(steps=1000, lr=0.1),
}


def lr_ramp(t: float, *, rampup: float = LR_RAMPUP, rampdown: float = LR_RAMPDOWN) -> float:
    """The projector's learning-rate multiplier at progress ``t`` in [0, 1)."""
    down = min(1.0, (1.0 - t) / rampdown)
    return (0.5 - 0.5 * math.cos(down * math.pi)) * min(1.0, t / rampup)


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Multi-scale autocorrelation penalty of noise maps ``(1, 1, R, R)`` (StyleGAN2 projector)."""
    total = noises[0].new_zeros(())
    for noise in noises:
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noise_(noises: list[torch.Tensor]) -> None:
    """In place: every map to zero mean and unit (population) std."""
    for noise in noises:
        noise.sub_(noise.mean())
        noise.mul_(noise.square().mean().rsqrt())


@torch.no_grad()
def w_statistics(G: Generator, n: int = 10000, *, generator: Optional[torch.Generator] = None
                 ) -> tuple[torch.Tensor, float]:
    """Mean w ``(1, D)`` (same draws as ``G.mean_latent(n, generator=...)``) and the projector's
    ``w_std = sqrt(sum ||w - mean||^2 / n)``."""
    ref = G.input.input
    device = generator.device if generator is not None else ref.device
    z = torch.randn(n, G.style_dim, generator=generator, device=device, dtype=ref.dtype).to(ref.device)
    w = G.mapping(z)
    mean = w.mean(dim=0, keepdim=True)
    return mean, float(((w - mean).square().sum() / n).sqrt())


class ReconstructionLoss:
    """``mse_weight * MSE`` (full size) + ``lpips_weight * LPIPS`` (both area-downsampled to 256 px)
    against one fixed target ``(1, 3, S, S)``; ``lpips=None`` means MSE only."""

    def __init__(self, target: torch.Tensor, *, lpips: Optional[LPIPS], mse_weight: float = 1.0,
                 lpips_weight: float = 1.0) -> None:
        self.target = target
        self.lpips = lpips if lpips_weight > 0 else None
        self.mse_weight = mse_weight
        self.lpips_weight = lpips_weight
        self.features = None
        if self.lpips is not None:
            if self.lpips.shift.device != target.device:
                raise ValueError(f"the LPIPS module is on {self.lpips.shift.device}, the target on {target.device}")
            self.features = self.lpips.target_features(self._for_lpips(target))

    def _for_lpips(self, x: torch.Tensor) -> torch.Tensor:
        return downsample_256(x).to(self.lpips.shift.dtype)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (scalar) and its unweighted terms ``{"mse", "lpips"}`` for ``image`` ``(1, 3, S, S)``."""
        terms = {"mse": (image.to(self.target.dtype) - self.target).square().mean()}
        total = self.mse_weight * terms["mse"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips.distance_to_features(self._for_lpips(image), self.features).mean()
            total = total + self.lpips_weight * terms["lpips"].to(total.dtype)
        return total, terms


class StallDetector:
    """True once the best loss so far improved by at most ``eps * before + abs_eps`` over the last
    ``window`` steps (``before`` = the best loss ``window`` steps ago), checked from step ``start`` on."""

    def __init__(self, *, window: int, eps: float, abs_eps: float = 0.0, start: int = 0) -> None:
        self.window, self.eps, self.abs_eps, self.start = window, eps, abs_eps, start
        self.best: list[float] = []

    def update(self, loss: float) -> bool:
        self.best.append(min(loss, self.best[-1]) if self.best else loss)
        if len(self.best) <= max(self.window, self.start):
            return False
        before, now = self.best[-1 - self.window], self.best[-1]
        return before - now <= self.eps * abs(before) + self.abs_eps


def check_target(G: Generator, target: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``target`` is ``(1, 3, G.size, G.size)``."""
    if target.dim() != 4 or tuple(target.shape[:2]) != (1, 3) or tuple(target.shape[2:]) != (G.size, G.size):
        raise ValueError(f"target must be one aligned image (1, 3, {G.size}, {G.size}) in [-1, 1], "
                         f"got {tuple(target.shape)}")


def _start_code(G: Generator, init: Union[torch.Tensor, Inversion], space: str,
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The starting code: ``(1, 1, D)`` for W, ``(1, n_latent, D)`` for W+."""
    code = init.w_plus if isinstance(init, Inversion) else init
    code = code.detach().to(device=device, dtype=dtype)
    if code.dim() == 2:
        code = code[:, None]
    if code.dim() != 3 or code.shape[0] != 1 or code.shape[2] != G.style_dim or code.shape[1] not in (1, G.n_latent):
        raise ValueError(f"init must be a w (1, {G.style_dim}) or a W+ code (1, {G.n_latent}, {G.style_dim}), "
                         f"got {tuple(code.shape)}")
    if space == "w":
        return code.mean(dim=1, keepdim=True).clone()
    return code.expand(1, G.n_latent, G.style_dim).clone()


def optimize_latent(
    G: Generator,
    target: torch.Tensor,
    *,
    lpips: Optional[LPIPS],
    space: str = "w+",
    preset: str = "balanced",
    steps: Optional[int] = None,
    lr: Optional[float] = None,
    init: Union[None, torch.Tensor, Inversion] = None,
    optimize_noise: bool = False,
    mse_weight: float = 1.0,
    lpips_weight: float = 1.0,
    noise_weight: float = 1e5,
    latent_noise: float = 0.0,
    w_avg_samples: int = 10000,
    seed: int = 0,
    callback: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    early_stop: bool = True,
    stall_window: Optional[int] = None,
    stall_eps: float = 1e-3,
    stall_abs: float = 1e-5,
    autocast: bool = False,
) -> Inversion:
    """Invert ``target`` ``(1, 3, S, S)`` in [-1, 1] into W (``space="w"``) or W+ (``space="w+"``).

    ``lpips`` is a loaded :class:`LPIPS` on the target's device, or ``None`` for MSE only (then
    ``info["note"]`` says so). ``steps``/``lr`` override the preset. ``callback(step, total, metrics)``
    runs after every step (``step`` from 1) with ``loss``, ``mse``, ``lpips``, ``noise_reg``, ``lr``.
    ``cancel`` (a ``threading.Event``) raises :class:`Cancelled` at the next step. ``autocast`` runs the
    generator and LPIPS forward in bfloat16; the codes, noise maps and Adam stay in float32 (or the
    generator's float64). ``early_stop``: see the module docstring.

    Returns an :class:`Inversion` with method ``"w"``/``"w+"``, the code as W+ ``(1, n_latent, D)``,
    the final reconstruction, the optimized noise maps (or ``None``), per-step total losses and
    ``info`` (``steps_run``, ``stopped_early``, ``preset``, final ``loss``/``mse``/``lpips``, ...).
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {tuple(PRESETS)}")
    check_target(G, target)
    steps = PRESETS[preset].steps if steps is None else int(steps)
    base_lr = PRESETS[preset].lr if lr is None else float(lr)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    started = time.perf_counter()
    ref = G.input.input
    dtype = torch.promote_types(ref.dtype, torch.float32)
    device = ref.device
    target = target.detach().to(device=device, dtype=dtype)
    rng = torch.Generator().manual_seed(seed)

    w_mean, w_std = None, 0.0
    if init is None or latent_noise > 0:
        w_mean, w_std = w_statistics(G, w_avg_samples, generator=rng)
    code = _start_code(G, init if init is not None else w_mean, space, device, dtype).requires_grad_(True)
    noises = [b.detach().to(dtype).clone().requires_grad_(True) for b in G.noises.as_list()] if optimize_noise else None
    params = [code] + (noises or [])
    optimizer = torch.optim.Adam(params, lr=base_lr, betas=(0.9, 0.999))
    criterion = ReconstructionLoss(target, lpips=lpips, mse_weight=mse_weight, lpips_weight=lpips_weight)
    window = stall_window if stall_window is not None else max(10, steps // 10)
    stall = StallDetector(window=window, eps=stall_eps, abs_eps=stall_abs, start=math.ceil(LR_RAMPUP * steps))

    def synthesize(c: torch.Tensor, maps: Optional[list[torch.Tensor]]) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return G.synthesis(c.expand(1, G.n_latent, G.style_dim), maps).to(dtype)

    losses: list[float] = []
    best_loss, best_step, best_code, best_noises = math.inf, -1, code.detach().clone(), None
    stopped_early = False
    for step in range(steps):
        check_cancel(cancel)
        t = step / steps
        step_lr = base_lr * lr_ramp(t)
        for group in optimizer.param_groups:
            group["lr"] = step_lr
        c = code
        if latent_noise > 0:
            scale = w_std * latent_noise * max(0.0, 1.0 - t / LATENT_NOISE_RAMP) ** 2
            c = code + scale * torch.randn(code.shape, generator=rng, dtype=dtype).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, terms = criterion(synthesize(c, noises))
        reg = noise_regularization(noises) if noises else loss.new_zeros(())
        total = loss + noise_weight * reg
        losses.append(float(total.detach()))
        if losses[-1] < best_loss:  # snapshot the state this loss belongs to (before the update)
            best_loss, best_step, best_code = losses[-1], step, code.detach().clone()
            best_noises = [n.detach().clone() for n in noises] if noises else None
        grads = torch.autograd.grad(total, params)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        if noises:
            normalize_noise_(noises)
        if callback is not None:
            metrics = {"loss": losses[-1], "noise_reg": float(reg.detach()), "lr": step_lr}
            metrics.update({k: float(v.detach()) for k, v in terms.items()})
            callback(step + 1, steps, metrics)
        if early_stop and stall.update(losses[-1]):
            stopped_early = True
            break
    del optimizer, grads, total, loss, terms, reg, c  # Adam state and the last step's graph

    with torch.no_grad():  # the state after the last update, unless an earlier one had a lower loss
        final_code, final_noises = code.detach(), [n.detach() for n in noises] if noises else None
        image = synthesize(final_code, final_noises)
        final, terms = criterion(image)
        reg = noise_regularization(final_noises) if final_noises else 0.0
        if best_loss < float(final + noise_weight * reg):
            final_code, final_noises = best_code, best_noises
            image = synthesize(final_code, final_noises)
            final, terms = criterion(image)
        else:
            best_step = len(losses)
    info = {"space": space, "preset": preset, "steps": steps, "steps_run": len(losses), "lr": base_lr,
            "stopped_early": stopped_early, "returned_step": best_step, "optimize_noise": optimize_noise, "seed": seed,
            "loss": float(final), **{k: float(v) for k, v in terms.items()}}
    if lpips is None:
        info["note"] = "no LPIPS network given: MSE only"
    return Inversion(
        method=space,
        w_plus=final_code.expand(1, G.n_latent, G.style_dim).clone(),
        image=image,
        noise=final_noises,
        seconds=time.perf_counter() - started,
        losses=tuple(losses),
        info=info,
    )
