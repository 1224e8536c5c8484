"""Pivotal Tuning Inversion (Roich et al., 2021): a pivot code, then a tuned copy of the generator.

Stage 1 (pivot): :func:`inversion.optimize.optimize_latent` in W, as PTI's projector does it: LPIPS only
(MSE only when no LPIPS module is given), peak lr 0.01 with the projector's warm-up / cosine ramp-down
(PTI's config says ``first_inv_lr = 5e-3`` but its projector overwrites the rate with its own default
0.01 every step), decaying latent noise ``0.05 * w_std`` (seeded), noise maps not optimized (PTI
optimizes them and then discards them: the tuned generator runs with its stored noise). Or the pivot
is given: an :class:`Inversion` (e.g. e4e's W+ codes; the fast path) or a code ``(1, D)`` /
``(1, n_latent, D)``; then stage 1 is skipped.

Stage 2 (tuning): a ``copy.deepcopy`` of ``G`` (the only extra copy; the shared ``G`` is never
modified) has its synthesis parameters fitted with Adam (lr 3e-4) so that ``synthesis(pivot)`` (stored
noise) reproduces the photo: ``l2_weight * MSE + lpips_weight * LPIPS`` (weights 1, 1). LPIPS runs on
the 256-px area downsample, as everywhere in this project (PTI measures it at full size). Before each
update the run stops once LPIPS <= ``lpips_threshold`` (0.06, PTI's final config). The mapping network
is not tuned (no gradient reaches it). Optional locality regularization (PTI's ``use_locality_regularization``,
off by default there too): each ``locality_every`` steps (PTI: 1), ``locality_samples`` w's (PTI: 1) are
drawn with truncation 0.5 from the original mapping, moved to distance ``locality_alpha`` (PTI: 30) from the
pivot along the pivot->w direction (norm over the whole W+ code), and ``0.1 * MSE + 0.1 * LPIPS`` between
the tuned and the original generator's images there is added (averaged over the samples).

Presets (PTI's paper settings are ``quality``; the others cut steps, keep the rates):

=========  ===========  ==========  =========  ========  ===============
preset     pivot_steps  pivot_lr    tune_steps tune_lr   lpips_threshold
=========  ===========  ==========  =========  ========  ===============
fast          100        0.01         100       3e-4      0.06
balanced      250        0.01         200       3e-4      0.06
quality       450        0.01         350       3e-4      0.06
=========  ===========  ==========  =========  ========  ===============

Cost at 1024 px on CPU (``python -m bench.optimize_cpu --threads 1``, shared 2-core machine): a pivot
step costs about a W+ step (~7.6 s of CPU), a tuning step ~9.4 s, so without early stops ``fast`` is
~28 min of one core, ``balanced`` ~63 min, ``quality`` ~1.9 h; the LPIPS threshold may end stage 2
sooner (not measured here: it needs the real VGG/AlexNet weights).

One ``lpips`` module serves both stages (PTI uses NVIDIA's VGG16 feature distance for the pivot and
AlexNet LPIPS for tuning).

Progress: ``callback(step, total, metrics)`` with ``total = pivot_steps + tune_steps`` (just
``tune_steps`` when a pivot is given) and ``step`` counted over both stages: stage 1 always runs all its
steps (no early stop, as in PTI), stage 2 continues the count and may end early at the LPIPS threshold.
``metrics["stage"]`` is 1.0 or 2.0 and ``metrics["stage_step"]`` the step within the stage.
"""
from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass
from typing import Optional, Union

import torch

from inversion.lpips import LPIPS, downsample_256
from inversion.optimize import ReconstructionLoss, check_target, optimize_latent, w_statistics
from inversion.result import Inversion, ProgressCallback, check_cancel
from inversion.stylegan2 import Generator

__all__ = ["PRESETS", "PTIPreset", "locality_codes", "pivotal_tuning"]


@dataclass(frozen=True)
class PTIPreset:
    """Steps and learning rates of both stages, and the LPIPS early-stop threshold of stage 2."""

    pivot_steps: int
    pivot_lr: float
    tune_steps: int
    tune_lr: float
    lpips_threshold: float


PRESETS: dict[str, PTIPreset] = {
    "fast": PTIPreset(pivot_steps=100, pivot_lr=0.01, tune_steps=100, tune_lr=3e-4, lpips_threshold=0.06),
    "balanced": PTIPreset(pivot_steps=250, pivot_lr=0.01, tune_steps=200, tune_lr=3e-4, lpips_threshold=0.06),
    "quality": PTIPreset(pivot_steps=450, pivot_lr=0.01, tune_steps=350, tune_lr=3e-4, lpips_threshold=0.06),
}
PIVOT_LATENT_NOISE = 0.05
LOCALITY_TRUNCATION = 0.5


@torch.no_grad()
def locality_codes(G: Generator, pivot: torch.Tensor, w_avg: torch.Tensor, *, n: int, alpha: float,
                   generator: torch.Generator) -> torch.Tensor:
    """``n`` W+ codes ``(n, n_latent, D)`` at distance ``alpha`` from ``pivot`` ``(1, n_latent, D)``
    toward truncated (psi 0.5) random w's of ``G``'s mapping (PTI's locality regularizer)."""
    z = torch.randn(n, G.style_dim, generator=generator, dtype=pivot.dtype).to(pivot.device)
    w = w_avg + LOCALITY_TRUNCATION * (G.mapping(z) - w_avg)
    direction = w[:, None, :].expand(n, G.n_latent, G.style_dim) - pivot
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    return pivot + alpha * direction / norm


def _pivot_code(G: Generator, pivot: Union[torch.Tensor, Inversion], device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    if isinstance(pivot, Inversion):
        if pivot.generator is not None:
            raise ValueError("the pivot comes from a tuned generator (PTI); give a pivot of the shared generator")
        pivot = pivot.w_plus
    code = pivot.detach().to(device=device, dtype=dtype)
    if code.dim() == 2:
        code = code[:, None]
    if code.dim() != 3 or code.shape[0] != 1 or code.shape[2] != G.style_dim or code.shape[1] not in (1, G.n_latent):
        raise ValueError(f"pivot must be a w (1, {G.style_dim}) or a W+ code (1, {G.n_latent}, {G.style_dim}), "
                         f"got {tuple(code.shape)}")
    return code.expand(1, G.n_latent, G.style_dim).clone()


def pivotal_tuning(
    G: Generator,
    target: torch.Tensor,
    *,
    lpips: Optional[LPIPS],
    pivot: Union[None, torch.Tensor, Inversion] = None,
    preset: str = "balanced",
    pivot_steps: Optional[int] = None,
    tune_steps: Optional[int] = None,
    pivot_lr: Optional[float] = None,
    tune_lr: Optional[float] = None,
    lpips_threshold: Optional[float] = None,
    l2_weight: float = 1.0,
    lpips_weight: float = 1.0,
    locality: bool = False,
    locality_every: int = 1,
    locality_samples: int = 1,
    locality_alpha: float = 30.0,
    locality_weight: float = 0.1,
    w_avg_samples: int = 10000,
    seed: int = 0,
    callback: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    autocast: bool = False,
) -> Inversion:
    """PTI of ``target`` ``(1, 3, S, S)`` in [-1, 1]; see the module docstring for the two stages.

    ``lpips`` is a loaded :class:`LPIPS` on the target's device, or ``None`` (MSE only; the LPIPS
    threshold then never triggers; ``info["note"]`` says so). Arguments left ``None`` come from the
    preset. ``lpips_threshold=0`` disables the early stop. ``cancel`` raises :class:`Cancelled` at the
    next step of either stage; nothing is kept then.

    Returns ``Inversion(method="pti")`` with ``generator`` the tuned copy (eval mode, no gradients),
    ``w_plus`` the pivot ``(1, n_latent, D)``, ``image`` the tuned reconstruction, ``losses`` the stage-1
    totals followed by the stage-2 totals (``info["pivot_steps_run"]`` splits them) and ``info`` with
    the pivot's distortion with the shared generator (``pivot_mse``, ``pivot_lpips``; its image is
    ``G.synthesis(w_plus)``) and the tuned one's (``mse``, ``lpips``); all ``info`` values are plain numbers.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {tuple(PRESETS)}")
    if locality_every < 1 or locality_samples < 1:
        raise ValueError(f"locality_every and locality_samples must be >= 1, got {locality_every}, {locality_samples}")
    check_target(G, target)
    p = PRESETS[preset]
    pivot_steps = p.pivot_steps if pivot_steps is None else int(pivot_steps)
    tune_steps = p.tune_steps if tune_steps is None else int(tune_steps)
    threshold = p.lpips_threshold if lpips_threshold is None else float(lpips_threshold)
    tune_lr = p.tune_lr if tune_lr is None else float(tune_lr)
    started = time.perf_counter()
    ref = G.input.input
    device, dtype = ref.device, torch.promote_types(ref.dtype, torch.float32)
    target = target.detach().to(device=device, dtype=dtype)
    total = (pivot_steps if pivot is None else 0) + tune_steps

    # ---- stage 1: the pivot
    pivot_losses: tuple[float, ...] = ()
    if pivot is None:
        def stage1(step: int, _total: int, metrics: dict[str, float]) -> None:
            if callback is not None:
                callback(step, total, {**metrics, "stage": 1.0, "stage_step": float(step)})

        first = optimize_latent(
            G, target, lpips=lpips, space="w", steps=pivot_steps,
            lr=p.pivot_lr if pivot_lr is None else float(pivot_lr),
            mse_weight=0.0 if lpips is not None else 1.0, lpips_weight=1.0,
            latent_noise=PIVOT_LATENT_NOISE, w_avg_samples=w_avg_samples, seed=seed,
            callback=stage1, cancel=cancel, early_stop=False, autocast=autocast)
        pivot_losses, code = first.losses, first.w_plus
    else:
        code = _pivot_code(G, pivot, device, dtype)
    offset = total - tune_steps

    # ---- stage 2: tune a copy of G around the pivot
    criterion = ReconstructionLoss(target, lpips=lpips, mse_weight=l2_weight, lpips_weight=lpips_weight)
    with torch.no_grad():
        pivot_image = G.synthesis(code).to(dtype)
        _, pivot_terms = criterion(pivot_image)
    tuned = copy.deepcopy(G).eval()
    tuned.requires_grad_(False)
    params = [q for name, q in tuned.named_parameters() if not name.startswith("style.")]
    for q in params:
        q.requires_grad_(True)
    optimizer = torch.optim.Adam(params, lr=tune_lr, betas=(0.9, 0.999))
    rng = torch.Generator().manual_seed(seed + 1)
    w_avg = w_statistics(G, w_avg_samples, generator=rng)[0] if locality else None

    losses: list[float] = []
    grads: tuple[torch.Tensor, ...] = ()
    loss = terms = None
    hit_threshold = False
    for step in range(tune_steps):
        check_cancel(cancel)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, terms = criterion(_synthesize(tuned, code, autocast=autocast))
        if "lpips" in terms and float(terms["lpips"].detach()) <= threshold:
            hit_threshold = True
            break
        metrics = {k: float(v.detach()) for k, v in terms.items()}
        if locality and step % locality_every == 0:
            ws = locality_codes(G, code, w_avg, n=locality_samples, alpha=locality_alpha, generator=rng)
            reg = _locality_loss(G, tuned, ws, lpips, autocast=autocast)
            loss = loss + locality_weight * reg
            metrics["locality"] = float(reg.detach())
        grads = torch.autograd.grad(loss, params)
        for q, g in zip(params, grads):
            q.grad = g
        optimizer.step()
        losses.append(float(loss.detach()))
        if callback is not None:
            callback(offset + step + 1, total, {"loss": losses[-1], **metrics, "stage": 2.0,
                                                 "stage_step": float(step + 1)})

    # ---- release the optimizer state, gradients and the last graph; freeze the copy
    del optimizer, grads, loss, terms
    tuned.zero_grad(set_to_none=True)
    tuned.requires_grad_(False)
    with torch.no_grad():
        image = _synthesize(tuned, code, autocast=autocast)
        _, terms = criterion(image)
    info = {
        "preset": preset, "seed": seed, "pivot_given": pivot is not None,
        "pivot_steps_run": len(pivot_losses), "tune_steps": tune_steps, "tune_steps_run": len(losses),
        "hit_lpips_threshold": hit_threshold, "lpips_threshold": threshold, "locality": locality,
        **{f"pivot_{k}": float(v) for k, v in pivot_terms.items()},
        **{k: float(v) for k, v in terms.items()},
    }
    if lpips is None:
        info["note"] = "no LPIPS network given: MSE only (the LPIPS threshold never stops the run)"
    return Inversion(method="pti", w_plus=code.detach(), image=image.detach(), generator=tuned,
                     seconds=time.perf_counter() - started, losses=pivot_losses + tuple(losses), info=info)


def _synthesize(gen: Generator, ws: torch.Tensor, *, autocast: bool) -> torch.Tensor:
    """``gen.synthesis(ws)`` with the stored noise, optionally under bf16 autocast; returns ``ws``'s dtype."""
    with torch.autocast(ws.device.type, dtype=torch.bfloat16, enabled=autocast):
        return gen.synthesis(ws).to(ws.dtype)


def _locality_loss(G: Generator, tuned: Generator, ws: torch.Tensor, lpips: Optional[LPIPS], *,
                   autocast: bool) -> torch.Tensor:
    """Mean over codes ``ws`` of ``MSE + LPIPS`` (256 px) between the tuned and the original generator
    (PTI weighs both terms 0.1; the caller scales)."""
    with torch.no_grad():
        old = _synthesize(G, ws, autocast=autocast)
    new = _synthesize(tuned, ws, autocast=autocast)
    loss = (new - old).square().mean()
    if lpips is not None:
        with torch.autocast(ws.device.type, dtype=torch.bfloat16, enabled=autocast):
            d = lpips(downsample_256(new).to(lpips.shift.dtype), downsample_256(old).to(lpips.shift.dtype))
        loss = loss + d.mean().to(loss.dtype)
    return loss
