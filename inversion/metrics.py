"""Reconstruction and editability measures, pure functions over tensors.

Images are (N, 3, H, W) in [-1, 1]; W+ codes (N, n_latent, dim).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # pragma: no cover
    from inversion.lpips import LPIPS


def match_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """Area-resize (down) or bilinear-resize (up) a batch to ``size`` x ``size``."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    if x.shape[-1] > size:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, on the [-1, 1] scale; (N,)."""
    b = match_size(b, a.shape[-1])
    return (a.float() - b.float()).square().flatten(1).mean(dim=1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image, for images in [-1, 1] (peak-to-peak 2); (N,)."""
    return 10 * torch.log10(4.0 / mse(a.clamp(-1, 1), b.clamp(-1, 1)).clamp_min(1e-12))


@torch.no_grad()
def lpips_distance(lpips: "LPIPS", a: torch.Tensor, b: torch.Tensor, *, size: int = 256) -> torch.Tensor:
    """LPIPS per image at ``size`` px (the inversion papers' practice: 256); (N,)."""
    a = match_size(a.float().clamp(-1, 1), size)
    b = match_size(b.float().clamp(-1, 1), size)
    return lpips(a, b).flatten()


def code_spread(w_plus: torch.Tensor) -> torch.Tensor:
    """Editability proxy: mean L2 distance of the n_latent codes from their own mean, per sample.

    0 for a code in W (all layers equal); grows as the layers drift apart, which is where
    edits start to behave badly (e4e's observation). (N,).
    """
    centre = w_plus.mean(dim=1, keepdim=True)
    return (w_plus - centre).norm(dim=2).mean(dim=1)


def distance_from_average(w_plus: torch.Tensor, latent_avg: torch.Tensor) -> torch.Tensor:
    """Mean L2 distance of the codes from the average latent (how far from the training mass); (N,)."""
    return (w_plus - latent_avg.reshape(1, 1, -1).to(w_plus)).norm(dim=2).mean(dim=1)


def summarize(values: dict[str, Optional[float]]) -> dict[str, Optional[float]]:
    """Round metrics for display; NaN/inf become None."""
    out: dict[str, Optional[float]] = {}
    for key, value in values.items():
        if value is None or not math.isfinite(value):
            out[key] = None
        else:
            out[key] = float(f"{value:.4g}")
    return out
