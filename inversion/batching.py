"""Encoders over several aligned photos in one forward pass (a batch of photos, not of steps).

:func:`encode_batch` gives, for ``N`` aligned photos, what ``inversion.methods.invert(models, kind, photo_i)`` gives
for each (same codes and reconstructions within float tolerance: a batched convolution may sum in another order),
with one encoder forward and one synthesis for the lot.

:class:`EncodedModels` is a view of a :class:`~inversion.models.ModelSet` whose encoders answer from codes computed
beforehand (by :func:`encode_batch`) when asked for a photo they have seen, and run the encoder otherwise. The
batch CLI encodes a group of aligned photos at once and then runs the per-photo methods on this view: the e4e
result and the e4e starts of W/W+/PTI reuse the batched codes instead of encoding the photo again.
"""
from __future__ import annotations

from typing import Any, Sequence

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
    import time

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


class _Remembering:
    """An encoder bundle that returns remembered codes for inputs it has seen (exact match), else encodes."""

    def __init__(self, bundle: Any, seen: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self._bundle, self._seen = bundle, seen
        self.opts = bundle.opts
        self.kind = getattr(bundle, "kind", None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bundle, name)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] == 1:
            for inputs, codes in self._seen:
                if inputs.shape == images.shape and inputs.device == images.device and torch.equal(inputs, images):
                    return codes.clone()
        return self._bundle.encode(images)


class EncodedModels:
    """A view of ``models`` whose ``encoder(kind)`` answers remembered photos from :meth:`remember`'s batch.

    Every other attribute is the model set's own. ``remember(kind, photos)`` encodes ``(N, 3, S, S)`` aligned
    photos in one forward and keeps, per photo, the exact encoder input and its codes (``N`` small tensors).
    """

    def __init__(self, models: ModelSet) -> None:
        self._models = models
        self._seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)

    @torch.no_grad()
    def remember(self, kind: str, photos: Sequence[torch.Tensor]) -> None:
        """Encode ``photos`` (each ``(1, 3, S, S)``) in one forward; forget what an earlier batch remembered."""
        bundle = self._models.encoder(kind)
        size = encoder_size(bundle)
        inputs = [metrics.match_size(p.to(self._models.device, torch.float32), size) for p in photos]
        codes = bundle.encode(torch.cat(inputs)) if inputs else None
        self._seen[kind] = [(x, codes[i:i + 1]) for i, x in enumerate(inputs)]

    def forget(self) -> None:
        self._seen.clear()

    def encoder(self, kind: str) -> Any:
        bundle = self._models.encoder(kind)
        return _Remembering(bundle, self._seen[kind]) if kind in self._seen else bundle
