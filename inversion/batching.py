"""Encoders over several aligned photos in one forward pass (a batch of photos, not of steps).

:func:`encode_batch` gives, for ``N`` aligned photos, what ``inversion.methods.invert(models, kind, photo_i)`` gives
for each (same codes and reconstructions within float tolerance: a batched convolution may sum in another order),
with one encoder forward and one synthesis for the lot. ``bench/throughput.py`` measures it against batch 1.
"""
from __future__ import annotations

import time
from typing import Any

import torch

from inversion import metrics
from inversion.models import ModelSet
from inversion.result import Inversion


def encoder_size(bundle: Any) -> int:
    """The input size an encoder bundle reads (pSp/e4e: 256)."""
    return int(bundle.opts.get("input_size", 256))


@torch.no_grad()
def encode_batch(models: ModelSet, kind: str, images: torch.Tensor) -> list[Inversion]:
    """``kind`` ("e4e"/"psp") on aligned photos ``(N, 3, S, S)`` in [-1, 1]: one encoder forward and one synthesis.

    Returns one :class:`Inversion` per photo (``w_plus`` ``(1, n_latent, D)``, ``image`` ``(1, 3, S, S)``) on the
    models' device; ``seconds`` is the batch's time shared equally.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected aligned photos (N, 3, S, S), got {tuple(images.shape)}")
    start = time.perf_counter()
    bundle = models.encoder(kind)
    g = models.generator()
    images = images.to(models.device, torch.float32)
    w_plus = bundle.encode(metrics.match_size(images, encoder_size(bundle)))
    recon = g.synthesis(w_plus)
    share = (time.perf_counter() - start) / images.shape[0]
    return [Inversion(method=kind, w_plus=w_plus[i:i + 1], image=recon[i:i + 1], seconds=share)
            for i in range(images.shape[0])]
