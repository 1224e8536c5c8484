"""The five inversion methods behind one call, and the metrics that compare them.

``invert(models, "e4e", image)`` runs one method on an aligned photo tensor (1, 3, S, S) in [-1, 1]
(S = the family's generator size) and returns an :class:`~inversion.result.Inversion`;
``evaluate(models, inversion, image)`` measures it. ``METHODS`` lists what the UI shows.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Callable, Optional

import torch

from inversion import metrics
from inversion.checkpoints import CheckpointError
from inversion.device import use_bf16
from inversion.models import ModelSet
from inversion.recipes import APP_PRESETS
from inversion.result import Inversion, ProgressCallback, check_cancel


@dataclass(frozen=True)
class Method:
    """One inversion method as the UI and CLI see it."""

    key: str
    label: str
    description: str
    presets: tuple[str, ...]
    needs: tuple[str, ...]  # model pieces: "generator", "lpips", "encoder:psp", "encoder:e4e"
    optional: tuple[str, ...] = ()  # used when present (e.g. e4e as a fast PTI pivot)


PRESETS = ("fast", "balanced", "quality")
METHODS: dict[str, Method] = {m.key: m for m in (
    Method("e4e", "e4e encoder", "One pass of the e4e encoder: codes kept near W, so edits behave well; "
           "reconstruction is coarser.", ("default",), ("generator", "encoder:e4e")),
    Method("psp", "pSp encoder", "One pass of the pSp encoder straight into W+: fast, loses fine detail, "
           "edits less reliably.", ("default",), ("generator", "encoder:psp")),
    Method("w", "W optimization", "Optimizes one 512-d code shared by all layers (MSE + LPIPS): "
           "good editability, limited fidelity.", PRESETS, ("generator",), ("lpips",)),
    Method("w+", "W+ optimization", "Optimizes every layer's code separately: very close reconstruction, "
           "edits drift more.", PRESETS, ("generator",), ("lpips",)),
    Method("pti", "PTI (pivotal tuning)", "Finds a pivot in W, then fine-tunes a copy of the generator so the "
           "pivot reproduces the photo: close reconstruction that still edits well.",
           PRESETS, ("generator",), ("lpips", "encoder:e4e")),
)}


def _try(build: Callable[[], object]) -> Optional[object]:
    try:
        return build()
    except (CheckpointError, OSError):
        return None


def _piece(models: ModelSet, need: str):
    if need == "generator":
        return models.generator()
    if need == "lpips":
        return models.lpips()
    if need.startswith("encoder:"):
        return models.encoder(need.split(":", 1)[1])
    raise KeyError(need)


def encoder_input(image: torch.Tensor, size: int = 256) -> torch.Tensor:
    """The encoders' input: the aligned image area-resized to ``size`` (pSp/e4e read 256 px)."""
    return metrics.match_size(image, size)


@torch.no_grad()
def _encode(models: ModelSet, kind: str, image: torch.Tensor) -> Inversion:
    bundle = models.encoder(kind)
    g = models.generator()
    w_plus = bundle.encode(encoder_input(image, int(bundle.opts.get("input_size", 256))))
    return Inversion(method=kind, w_plus=w_plus, image=g.synthesis(w_plus))


def invert(models: ModelSet, method: str, image: torch.Tensor, *, preset: str = "balanced",
           seed: int = 0, callback: Optional[ProgressCallback] = None,
           cancel: Optional[threading.Event] = None, pti_pivot: str = "auto",
           autocast: Optional[bool] = None) -> Inversion:
    """Run ``method`` on an aligned image (1, 3, S, S) in [-1, 1] on the models' device.

    ``preset`` as in :data:`APP_PRESETS`; ``pti_pivot`` "w" (optimization, the paper's default), "e4e"
    (fast) or "auto" (the preset's choice). e4e-based starts fall back to the mean w when e4e is absent
    (``info["start"]`` says which was used). ``autocast`` (default: :func:`use_bf16`) runs generator and
    LPIPS forward passes in bf16; codes and Adam stay float32. Raises CheckpointMissingError when a
    needed file is not there yet.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(METHODS)}")
    if method not in ("psp", "e4e") and preset not in METHODS[method].presets:  # encoders have no presets
        raise ValueError(f"unknown preset {preset!r} for {method}; choose one of {METHODS[method].presets}")
    g = models.generator()
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[-1] != g.size:
        raise ValueError(f"expected an aligned image (1, 3, {g.size}, {g.size}), got {tuple(image.shape)}")
    image = image.to(models.device, torch.float32)
    autocast = use_bf16(models.device) if autocast is None else autocast
    check_cancel(cancel)
    start = time.perf_counter()
    if method in ("psp", "e4e"):
        result = _encode(models, method, image)
        extra = {}
    else:
        from inversion.optimize import optimize_latent
        from inversion.pti import pivotal_tuning

        lpips = _try(models.lpips)
        options = dict(APP_PRESETS[(method, preset)])
        wants_e4e = "e4e" in (options.pop("start", None), options.pop("pivot", None))
        if method == "pti" and pti_pivot != "auto":
            wants_e4e = pti_pivot == "e4e"
        e4e = _encode(models, "e4e", image).w_plus if wants_e4e and _try(
            lambda: models.encoder("e4e")) is not None else None
        extra = {"start": "e4e" if e4e is not None else "mean"}
        if method in ("w", "w+"):
            result = optimize_latent(g, image, space=method, preset=preset, lpips=lpips, seed=seed,
                                     init=e4e if e4e is not None else models.latent_avg(),
                                     callback=callback, cancel=cancel, autocast=autocast, **options)
        else:
            result = pivotal_tuning(g, image, pivot=e4e, preset=preset, lpips=lpips, seed=seed,
                                    callback=callback, cancel=cancel, autocast=autocast, **options)
    info = dict(result.info, preset=preset, seed=seed, **extra)
    return replace(result, seconds=time.perf_counter() - start, info=info)


@torch.no_grad()
def evaluate(models: ModelSet, inversion: Inversion, image: torch.Tensor) -> dict[str, Optional[float]]:
    """MSE, PSNR, LPIPS (if its weights are present), IR-SE50 identity similarity (if present),
    code spread (editability proxy: 0 = all layers equal) and seconds."""
    image = image.to(inversion.image.device, torch.float32)
    rec = inversion.image.float()
    out: dict[str, Optional[float]] = {
        "mse": float(metrics.mse(rec, image)[0]),
        "psnr": float(metrics.psnr(rec, image)[0]),
        "lpips": None,
        "identity": None,
        "code_spread": float(metrics.code_spread(inversion.w_plus.float())[0]),
        "seconds": inversion.seconds,
    }
    lpips = _try(models.lpips)
    if lpips is not None:
        out["lpips"] = float(metrics.lpips_distance(lpips, rec, image)[0])
    ident = _try(models.identity) if models.family.name == "ffhq" else None
    if ident is not None:
        from inversion.identity import identity_similarity

        out["identity"] = float(identity_similarity(ident, rec.clamp(-1, 1), image)[0])
    return out


def available(models: ModelSet, method: str, *, present: Callable[[str], bool]) -> tuple[bool, str]:
    """Whether ``method`` can run now, given ``present(piece)``; with a plain reason when not."""
    missing = [need for need in METHODS[method].needs if not present(need)]
    if missing:
        return False, f"{METHODS[method].label} needs {', '.join(missing)} (not downloaded yet)"
    return True, ""
