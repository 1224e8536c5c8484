"""InterFaceGAN-style linear edits: ``w' = w + strength * n`` on a range of W+ layers."""
from __future__ import annotations

from typing import Optional

import torch

from editing.layers import EditError, LayerRange, Strength, check_codes, layer_mask, strength_column


def direction_delta(codes: torch.Tensor, direction: torch.Tensor, strength: Strength, *,
                    layers: Optional[LayerRange] = None) -> torch.Tensor:
    """The change ``strength * n`` on ``layers`` (zeros elsewhere), shaped like ``codes``.

    ``codes``: (N, n_latent, dim). ``direction``: (dim,), (1, dim) — the same vector for every layer —
    or (1, n_latent, dim) — one row per layer (e4e's ``pose.pt``). ``strength``: a number, or (N,) for one
    strength per sample (a strip). ``layers``: half-open (start, end), None = all layers.
    """
    check_codes(codes)
    n, n_latent, dim = codes.shape
    d = direction.to(dtype=codes.dtype, device=codes.device)
    if d.dim() == 1:
        d = d.reshape(1, 1, -1)
    elif d.dim() == 2 and d.shape[0] == 1:
        d = d.unsqueeze(1)
    elif not (d.dim() == 3 and d.shape[0] == 1 and d.shape[1] == n_latent):
        raise EditError(f"direction must be (dim,), (1, dim) or (1, {n_latent}, dim), got {tuple(direction.shape)}")
    if d.shape[-1] != dim:
        raise EditError(f"direction has {d.shape[-1]} values per layer but the codes have {dim}")
    return (strength_column(strength, codes) * d) * layer_mask(layers, n_latent, like=codes)


def apply_direction(codes: torch.Tensor, direction: torch.Tensor, strength: Strength, *,
                    layers: Optional[LayerRange] = None) -> torch.Tensor:
    """``codes + strength * direction`` on ``layers`` only; returns a new (N, n_latent, dim) tensor."""
    return codes + direction_delta(codes, direction, strength, layers=layers)
