"""PTI (pivotal tuning): a pivot code in W, then a private copy of the generator tuned so the pivot redraws the
photo. The tuned generator travels in the result (``Inversion.generator``)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from inversion.methods.base import Method, RunRequest
from inversion.methods.optimization import app_options, lpips_or_none, run_info
from inversion.methods.presets import PRESETS
from inversion.result import Inversion


def _pivot_choice(request: RunRequest) -> tuple[bool, dict[str, Any]]:
    """Whether the preset (or ``pti_pivot``) starts from e4e codes, and the preset's other options."""
    options = app_options("pti", request.preset)
    wants_e4e = options.pop("pivot", None) == "e4e"
    if request.pti_pivot != "auto":
        wants_e4e = request.pti_pivot == "e4e"
    return wants_e4e, options


def run_pti(request: RunRequest, pivot_run: Optional[Inversion] = None) -> Inversion:
    """Run PTI; the pivot starts from the run's shared e4e codes when the preset (or ``pti_pivot``) asks for it.
    ``pivot_run``: the W pivot already optimized (by a batch of photos)."""
    from inversion import pti

    models, image = request.models, request.image
    wants_e4e, options = _pivot_choice(request)
    e4e = request.starts.try_codes(models, "e4e", image) if wants_e4e and pivot_run is None else None
    lpips = lpips_or_none(request)
    result = pti.pivotal_tuning(models.generator(), image, pivot=e4e, preset=request.preset, lpips=lpips,
                                seed=request.seed, callback=request.callback, cancel=request.cancel,
                                autocast=request.autocast, fuse=request.fuse, pivot_run=pivot_run, **options)
    recipe = {"function": "inversion.pti.pivotal_tuning", **result.info.get("recipe", {}), "app_options": options,
              "pivot": "e4e" if e4e is not None else "w"}
    info = run_info(recipe, start="e4e" if e4e is not None else "mean", lpips=lpips)
    return dataclasses.replace(result, info={**result.info, **info})


def run_pti_batch(requests: list[RunRequest]) -> list[Inversion]:
    """PTI for several photos: the pivots together (e4e codes in one encoder pass, or the W pivots in one batched
    optimization), then each photo's generator tuned on its own (the tuning copies stay per photo)."""
    import torch

    from inversion import pti
    from inversion.methods.starts import try_fill_starts

    first = requests[0]
    models = first.models
    wants_e4e, options = _pivot_choice(first)
    # as alone: without e4e's weights the pivot is optimized in W
    if wants_e4e and try_fill_starts(models, "e4e", [(r.image, r.starts) for r in requests]):
        return [run_pti(r) for r in requests]
    lpips = lpips_or_none(first)
    keys = ("pivot_steps", "pivot_lr", "w_avg_samples", "tune_steps", "tune_lr", "lpips_threshold", "l2_weight",
            "lpips_weight")
    recipe = pti.resolve_pti_recipe(first.preset, **{k: v for k, v in options.items() if k in keys})
    pivots = pti.batch_pivots(models.generator(), torch.cat([r.image for r in requests]), lpips=lpips, recipe=recipe,
                              seed=first.seed, callback=first.callback, cancel=first.cancel,
                              autocast=first.autocast, fuse=first.fuse)
    return [run_pti(r, pivot_run=p) for r, p in zip(requests, pivots)]


PTI = Method(
    "pti", "PTI (pivotal tuning)",
    "Finds a pivot in W, then fine-tunes a copy of the generator so the pivot reproduces the photo: close "
    "reconstruction that still edits well.",
    run_pti, needs=("generator",), optional=("lpips", "encoder:e4e"), presets=PRESETS, order=50,
    run_batch=run_pti_batch,
    how="pivot code, then fine-tunes a private copy of the generator")
