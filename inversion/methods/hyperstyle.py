"""HyperStyle (Alaluf et al., CVPR 2022) as a method: a starting code from an encoder, then a hypernetwork predicts
offsets of the generator's conv weights in 5 refinement passes (:mod:`inversion.hyperstyle`).

The result travels like PTI's: ``w_plus`` is the starting code (HyperStyle never moves it) and ``generator`` the
adjusted copy (tuned conv weights ``W * (1 + delta)``; every other tensor is *shared* with the family's generator,
see :func:`~inversion.hyperstyle.adjusted_generator`), so edits of ``w_plus`` run on it and the session's tuned-
generator cache bounds how many stay alive. Extra memory per result: the tuned weights only (FFHQ 1024: 23.6 M
values = 94 MB float32; built-in 128: 4.7 M = 19 MB).

Model pieces: ``hyperstyle`` (FFHQ: the official ``hyperstyle_ffhq.pt``, whose decoder copy is dropped: it is the
family's FFHQ StyleGAN2; built-in: ``builtin_hyperstyle128``) and ``hyperstyle:start``, the encoder of the starting
code (FFHQ: the official W-encoder ``faces_w_encoder.pt``; built-in: the built-in e4e, shared with the e4e method's
pass of the run).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from inversion import metrics
from inversion.hyperstyle import adjusted_generator, generator_layers, refine
from inversion.hyperstyle_io import (HyperStyleBundle, load_bundled_hyperstyle, load_hypernet_checkpoint,
                                     load_w_encoder_checkpoint)
from inversion.methods.base import Method, RunRequest
from inversion.pieces import Piece
from inversion.result import Inversion, check_cancel

__all__ = ["HYPERSTYLE", "HYPERNET_PIECE", "START_PIECE", "invert_hyperstyle"]

FFHQ_FILES = {"hyperstyle": "hyperstyle_ffhq", "hyperstyle:start": "hyperstyle_w_encoder"}


def _hypernet_files(family) -> tuple[str, ...]:
    return (f"builtin_hyperstyle{family.size}",) if family.name == "builtin" else (FFHQ_FILES["hyperstyle"],)


def _start_files(family) -> tuple[str, ...]:
    if family.name == "builtin":
        return (family.encoder_files["e4e"],)
    return (FFHQ_FILES["hyperstyle:start"],)


def _load_hypernet(models) -> HyperStyleBundle:
    """The hypernetwork and the ``latent_avg`` added to the start code, on the models' device. (The bundle's
    ``encoder`` is not used by the method: the ``hyperstyle:start`` piece gives the start.)"""
    from inversion.checkpoints import load_torch_file
    from inversion.models import read_bundled

    if models.family.name == "builtin":
        bundle = load_bundled_hyperstyle(*read_bundled(_hypernet_files(models.family)[0]), models.encoder("e4e"))
    else:
        hn = load_hypernet_checkpoint(load_torch_file(models._locate(FFHQ_FILES["hyperstyle"])))
        bundle = HyperStyleBundle(hypernet=hn.hypernet, encoder=torch.nn.Identity(), latent_avg=hn.latent_avg,
                                  opts=hn.opts)  # hn.decoder_state_dict is dropped: it is the family's generator
    bundle.hypernet.to(models.device).eval().requires_grad_(False)
    return HyperStyleBundle(hypernet=bundle.hypernet, encoder=bundle.encoder,
                            latent_avg=bundle.latent_avg.to(models.device), opts=bundle.opts, n_iters=bundle.n_iters)


def _load_start(models) -> Any:
    """The encoder giving the starting code: FFHQ's W-encoder, or the built-in e4e bundle."""
    from inversion.checkpoints import load_torch_file

    if models.family.name == "builtin":
        return models.encoder("e4e")
    encoder = load_w_encoder_checkpoint(load_torch_file(models._locate(FFHQ_FILES["hyperstyle:start"])))
    return encoder.to(models.device).eval().requires_grad_(False)


HYPERNET_PIECE = Piece("hyperstyle", "HyperStyle hypernetwork", _hypernet_files, _load_hypernet,
                       families=("ffhq", "builtin"))
START_PIECE = Piece("hyperstyle:start", "HyperStyle W-encoder", _start_files, _load_start, families=("ffhq", "builtin"))


def _start_codes(request: RunRequest, bundle: HyperStyleBundle, x: torch.Tensor) -> torch.Tensor:
    models = request.models
    if models.family.name == "builtin":  # the run's shared e4e pass (identical to e4e's own start)
        return request.starts.codes(models, "e4e", request.image)
    w = models.load_piece(START_PIECE)(x)
    return w[:, None].expand(-1, bundle.latent_avg.shape[0], -1) + bundle.latent_avg.to(w.dtype)


@torch.no_grad()
def run_hyperstyle(request: RunRequest, n_iters: Optional[int] = None) -> Inversion:
    """Start code, ``n_iters`` refinement passes (5), the adjusted generator. Progress: one step per pass."""
    models, image = request.models, request.image
    g = models.generator()
    bundle = models.load_piece(HYPERNET_PIECE)
    x = metrics.match_size(image, bundle.input_size)
    codes = _start_codes(request, bundle, x)
    total = bundle.n_iters if n_iters is None else n_iters
    check_cancel(request.cancel)

    def on_pass(i: int, deltas, out: torch.Tensor) -> None:
        check_cancel(request.cancel)
        if request.callback is not None:
            request.callback(i, total, {"mse": float(metrics.mse(out, image)[0])})

    deltas, out = refine(bundle.hypernet, g, x, codes, n_iters=total, on_pass=on_pass)
    adjusted = adjusted_generator(g, deltas)
    tuned = sum(layer.conv.weight.numel() for (_, layer, _), d in zip(generator_layers(g), deltas) if d is not None)
    return Inversion(method="hyperstyle", w_plus=codes, image=out, generator=adjusted, info={
        "mse": float(metrics.mse(out, image)[0]), "tuned_weights": tuned,
        "recipe": {"function": "inversion.hyperstyle.refine", "n_iters": total,
                   "start": "e4e" if models.family.name == "builtin" else "w-encoder"}})


def invert_hyperstyle(models, image: torch.Tensor, **kwargs) -> Inversion:
    """HyperStyle on an aligned image ``(1, 3, S, S)`` (shorthand for ``invert(models, "hyperstyle", image)``)."""
    from inversion.methods import invert

    return invert(models, "hyperstyle", image, **kwargs)


HYPERSTYLE = Method(
    "hyperstyle", "HyperStyle",
    "e4e-style start, then a hypernetwork adjusts the generator's weights for this photo in 5 quick passes: "
    "close to PTI's fidelity at encoder speed; edits run on the adjusted generator.",
    run_hyperstyle, needs=("generator", "hyperstyle", "hyperstyle:start"), order=25,
    how="encoder start, then a hypernetwork predicts weight offsets (5 passes)",
    pieces=(HYPERNET_PIECE, START_PIECE))
