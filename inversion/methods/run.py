"""``invert(models, method, image)``: run one registered method on an aligned photo; ``evaluate`` measures it."""
from __future__ import annotations

import threading
import time
from dataclasses import replace
from typing import Callable, Optional, Sequence

import torch

from inversion import metrics
from inversion.checkpoints import CheckpointError
from inversion.methods.base import MethodRegistry, RunRequest
from inversion.methods.presets import use_bf16
from inversion.methods.registry import METHODS
from inversion.methods.starts import StartCache
from inversion.models import ModelSet
from inversion.result import Inversion, ProgressCallback, check_cancel


def _try(build: Callable[[], object]) -> Optional[object]:
    try:
        return build()
    except (CheckpointError, OSError):
        return None


def invert(models: ModelSet, method: str, image: torch.Tensor, *, preset: str = "balanced",
           seed: int = 0, callback: Optional[ProgressCallback] = None,
           cancel: Optional[threading.Event] = None, pti_pivot: str = "auto",
           autocast: Optional[bool] = None, starts: Optional[StartCache] = None,
           methods: MethodRegistry = METHODS, fuse: bool = False) -> Inversion:
    """Run ``method`` on an aligned image (1, 3, S, S) in [-1, 1] on the models' device.

    ``preset`` as in :data:`~inversion.methods.presets.APP_PRESETS` (ignored by methods without presets);
    ``pti_pivot`` "w" (optimization, the paper's default), "e4e" (fast) or "auto" (the preset's choice).
    e4e-based starts fall back to the mean w when e4e is absent (``info["start"]`` says which was used).
    ``autocast`` (default: :func:`use_bf16`) runs generator and LPIPS forward passes in bf16; codes and Adam stay
    float32. ``starts``: a :class:`StartCache` shared by the methods of one run (one encoder pass per photo).
    ``fuse`` (batch jobs on CUDA): the methods that can compile their steps do (``torch.compile``: about a minute
    once per process, then faster steps; ``bench/results/pti_fused_h200``, ``batch_variants_*``).
    ``info["recipe"]`` records what the method ran with. Raises CheckpointMissingError when a needed file is not
    there yet.
    """
    spec = _checked(models, method, preset, [image], methods)
    image = image.to(models.device, torch.float32)
    autocast = use_bf16(models.device) if autocast is None else autocast
    check_cancel(cancel)
    request = RunRequest(models=models, image=image, preset=preset, seed=seed, callback=callback, cancel=cancel,
                         autocast=autocast, starts=starts if starts is not None else StartCache(), pti_pivot=pti_pivot,
                         fuse=fuse)
    start = time.perf_counter()
    result = spec.run(request)
    return _recorded(result, method, preset, seed, autocast, time.perf_counter() - start)


def _checked(models: ModelSet, method: str, preset: str, images: Sequence[torch.Tensor],
             methods: MethodRegistry):
    """The method's registry entry, after checking the method, the preset and every image's shape."""
    if method not in methods:
        raise ValueError(f"unknown method {method!r}; choose one of {sorted(methods)}")
    spec = methods[method]
    if spec.has_presets and preset not in spec.presets:
        raise ValueError(f"unknown preset {preset!r} for {method}; choose one of {spec.presets}")
    g = models.generator()
    for image in images:
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[-1] != g.size:
            raise ValueError(f"expected an aligned image (1, 3, {g.size}, {g.size}), got {tuple(image.shape)}")
    return spec


def _recorded(result: Inversion, method: str, preset: str, seed: int, autocast: bool, seconds: float) -> Inversion:
    """``result`` with its run time and the run's record (method, preset, seed, autocast, the method's recipe)."""
    recipe = {"method": method, "preset": preset, "seed": seed, "autocast": bool(autocast),
              **result.info.get("recipe", {})}
    info = dict(result.info, preset=preset, seed=seed, recipe=recipe)
    return replace(result, seconds=seconds, info=info)


def invert_batch(models: ModelSet, method: str, images: Sequence[torch.Tensor], *, preset: str = "balanced",
                 seed: int = 0, callback: Optional[ProgressCallback] = None,
                 cancel: Optional[threading.Event] = None, autocast: Optional[bool] = None,
                 starts: Optional[Sequence[StartCache]] = None, methods: MethodRegistry = METHODS,
                 fuse: bool = False) -> list[Inversion]:
    """:func:`invert` for several aligned photos (each ``(1, 3, S, S)``), together where the method has a batched
    form (``Method.run_batch``: the encoders, W, W+), else one after another. ``starts``: one cache per photo
    (filled by the batch, so later methods reuse its encoder pass). ``seconds`` is the batch's time shared
    equally; ``info["batch"]`` says how many photos ran together."""
    spec = _checked(models, method, preset, images, methods)
    starts = list(starts) if starts is not None else [StartCache() for _ in images]
    if len(starts) != len(images):
        raise ValueError(f"{len(images)} photos but {len(starts)} start caches")
    if spec.run_batch is None or len(images) < 2:
        return [invert(models, method, image, preset=preset, seed=seed, callback=callback, cancel=cancel,
                       autocast=autocast, starts=cache, methods=methods, fuse=fuse)
                for image, cache in zip(images, starts)]
    autocast = use_bf16(models.device) if autocast is None else autocast
    check_cancel(cancel)
    requests = [RunRequest(models=models, image=image.to(models.device, torch.float32), preset=preset, seed=seed,
                           callback=callback, cancel=cancel, autocast=autocast, starts=cache, fuse=fuse)
                for image, cache in zip(images, starts)]
    start = time.perf_counter()
    results = spec.run_batch(requests)
    share = (time.perf_counter() - start) / len(images)
    return [_recorded(replace(r, info={**r.info, "batch": len(images)}), method, preset, seed, autocast, share)
            for r in results]


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


def available(models: ModelSet, method: str, *, present: Callable[[str], bool],
              methods: MethodRegistry = METHODS) -> tuple[bool, str]:
    """Whether ``method`` can run now, given ``present(piece)``; with a plain reason when not."""
    missing = [need for need in methods[method].needs if not present(need)]
    if missing:
        return False, f"{methods[method].label} needs {', '.join(missing)} (not downloaded yet)"
    return True, ""
