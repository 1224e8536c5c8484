"""The result every inversion method returns, and the progress-callback type.

Conventions used across the project (stated once here):
- images are float tensors ``(N, 3, H, W)`` in ``[-1, 1]``;
- latent codes in W+ are ``(N, n_latent, style_dim)`` (18 x 512 at 1024 px).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional

import torch

if TYPE_CHECKING:  # pragma: no cover
    from inversion.stylegan2 import Generator

ProgressCallback = Callable[[int, int, dict[str, float]], None]
"""``callback(step, total, metrics)``: called by long-running loops after each step."""


class Cancelled(RuntimeError):
    """Raised inside a method when its ``cancel`` event was set."""


def check_cancel(cancel: Optional[threading.Event]) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("the inversion was cancelled")


@dataclass(frozen=True)
class Inversion:
    """One inverted photo.

    ``w_plus`` is ``(1, n_latent, 512)``; ``image`` the reconstruction ``(1, 3, H, W)`` in [-1, 1];
    ``generator`` is set only when the method tuned its own copy (PTI), otherwise ``None`` means
    "the shared, frozen generator"; ``noise`` holds optimized noise maps when a method made some.
    """

    method: str
    w_plus: torch.Tensor
    image: torch.Tensor
    generator: Optional["Generator"] = None
    noise: Optional[list[torch.Tensor]] = None
    seconds: float = 0.0
    losses: tuple[float, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.w_plus.dim() != 3:
            raise ValueError(f"w_plus must be (1, n_latent, dim), got {tuple(self.w_plus.shape)}")
        if self.image.dim() != 4 or self.image.shape[1] != 3:
            raise ValueError(f"image must be (1, 3, H, W), got {tuple(self.image.shape)}")
