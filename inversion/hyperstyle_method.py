"""HyperStyle as an inversion method: load its networks for a model family, invert one aligned photo.

``invert_hyperstyle(models, image)`` returns an :class:`~inversion.result.Inversion` like PTI's: ``w_plus`` is the
starting code (unchanged by HyperStyle), ``generator`` the adjusted copy (tuned conv weights ``W * (1 + delta)``,
every other tensor shared with the family's generator, see :func:`inversion.hyperstyle.adjusted_generator`), so
edits of ``w_plus`` run on it. Built-in family: ``builtin_hyperstyle<size>`` started from the built-in e4e; FFHQ:
the official ``hyperstyle_ffhq.pt`` + ``faces_w_encoder.pt`` (registry names ``hyperstyle_ffhq`` and
``hyperstyle_w_encoder``), decoding with the family's shared FFHQ generator (the same StyleGAN2 weights).
"""
from __future__ import annotations

import threading
import time
from typing import Optional

import torch

from inversion import metrics
from inversion.hyperstyle import adjusted_generator, refine
from inversion.hyperstyle_io import HyperStyleBundle, load_bundled_hyperstyle, load_hyperstyle_checkpoint
from inversion.models import ModelSet, read_bundled
from inversion.result import Inversion, ProgressCallback, check_cancel

__all__ = ["FFHQ_FILES", "hyperstyle_bundle", "invert_hyperstyle"]

FFHQ_FILES = ("hyperstyle_ffhq", "hyperstyle_w_encoder")
"""Registry names of the official files (hypernetwork + decoder, W-encoder)."""


def _load(models: ModelSet) -> HyperStyleBundle:
    family = models.family
    if family.name == "builtin":
        bundle = load_bundled_hyperstyle(*read_bundled(f"builtin_hyperstyle{family.size}"), models.encoder("e4e"))
    else:
        from inversion import checkpoints

        hyper, w_enc = (checkpoints.load_torch_file(models._locate(name)) for name in FFHQ_FILES)
        bundle = load_hyperstyle_checkpoint(hyper, w_enc)
        bundle.decoder_state_dict.clear()  # the family's generator is the same StyleGAN2: keep one copy
        del hyper, w_enc
    for module in (bundle.hypernet, bundle.encoder):
        module.to(models.device).eval().requires_grad_(False)
    return HyperStyleBundle(hypernet=bundle.hypernet, encoder=bundle.encoder,
                            latent_avg=bundle.latent_avg.to(models.device), opts=bundle.opts, n_iters=bundle.n_iters)


def hyperstyle_bundle(models: ModelSet) -> HyperStyleBundle:
    """The family's HyperStyle networks on the models' device (loaded once, cached in ``models``)."""
    return models._cached("hyperstyle", lambda: _load(models))


@torch.no_grad()
def invert_hyperstyle(models: ModelSet, image: torch.Tensor, *, n_iters: Optional[int] = None,
                      callback: Optional[ProgressCallback] = None,
                      cancel: Optional[threading.Event] = None) -> Inversion:
    """HyperStyle on an aligned image ``(1, 3, S, S)`` in [-1, 1] (S = the family's generator size)."""
    g = models.generator()
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[-1] != g.size:
        raise ValueError(f"expected an aligned image (1, 3, {g.size}, {g.size}), got {tuple(image.shape)}")
    start = time.perf_counter()
    bundle = hyperstyle_bundle(models)
    image = image.to(models.device, torch.float32)
    x = metrics.match_size(image, bundle.input_size)
    codes = bundle.initial_codes(x)
    total = bundle.n_iters if n_iters is None else n_iters
    check_cancel(cancel)

    def on_pass(i: int, deltas, out: torch.Tensor) -> None:
        check_cancel(cancel)
        if callback is not None:
            callback(i, total, {"mse": float(metrics.mse(out, image)[0])})

    deltas, out = refine(bundle.hypernet, g, x, codes, n_iters=total, on_pass=on_pass)
    adjusted = adjusted_generator(g, deltas)
    tuned = sum(d.numel() for d in deltas if d is not None)
    return Inversion(method="hyperstyle", w_plus=codes, image=out, generator=adjusted,
                     seconds=time.perf_counter() - start,
                     info={"n_iters": total, "tuned_layers": sum(d is not None for d in deltas),
                           "mse": float(metrics.mse(out, image)[0]), "delta_values": tuned})
