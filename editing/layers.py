"""Small shared pieces: W+ layer ranges, per-sample strengths, the editing error type.

Layer ranges are half-open ``(start, end)`` W+ indices, as in e4e/GANSpace (``codes[:, start:end]``);
``None`` means every layer. Codes are ``(N, n_latent, dim)``.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

LayerRange = tuple[int, int]
Strength = Union[float, torch.Tensor]


class EditError(ValueError):
    """An edit request that cannot be applied (unknown name, wrong generator, bad range, shape mismatch)."""


def check_codes(codes: torch.Tensor) -> None:
    """Raise :class:`EditError` unless ``codes`` is a floating (N, n_latent, dim) tensor."""
    if codes.dim() != 3 or not codes.is_floating_point():
        raise EditError(f"codes must be a float tensor (N, n_latent, dim), got {tuple(codes.shape)} {codes.dtype}")


def resolve_layers(layers: Optional[LayerRange], n_latent: int) -> LayerRange:
    """``None`` -> ``(0, n_latent)``; otherwise check ``0 <= start < end <= n_latent``."""
    if layers is None:
        return 0, n_latent
    start, end = int(layers[0]), int(layers[1])
    if not 0 <= start < end <= n_latent:
        raise EditError(f"layer range must satisfy 0 <= start < end <= {n_latent} (end exclusive), got {layers}")
    return start, end


def layer_mask(layers: Optional[LayerRange], n_latent: int, *, like: torch.Tensor) -> torch.Tensor:
    """(1, n_latent, 1) tensor of ones on the chosen layers, zeros elsewhere (dtype/device of ``like``)."""
    start, end = resolve_layers(layers, n_latent)
    mask = torch.zeros(1, n_latent, 1, dtype=like.dtype, device=like.device)
    mask[:, start:end] = 1
    return mask


def strength_column(strength: Strength, codes: torch.Tensor) -> torch.Tensor:
    """A scalar or per-sample strength as an (S, 1, 1) tensor matching ``codes``' dtype and device.

    ``S`` is 1 for a number; a 1-D tensor must have length N (one per code) or any length when N == 1
    (one code rendered at several strengths: the result broadcasts to (S, n_latent, dim)).
    """
    s = torch.as_tensor(strength, dtype=codes.dtype, device=codes.device)
    if s.dim() == 0:
        return s.reshape(1, 1, 1)
    if s.dim() != 1 or (codes.shape[0] != 1 and s.shape[0] not in (1, codes.shape[0])):
        raise EditError(f"strength must be a number or a ({codes.shape[0]},) tensor, got shape {tuple(s.shape)}")
    return s.reshape(-1, 1, 1)
