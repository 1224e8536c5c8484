"""PTI (pivotal tuning): a pivot code in W, then a private copy of the generator tuned so the pivot redraws the
photo. The tuned generator travels in the result (``Inversion.generator``)."""
from __future__ import annotations

import dataclasses

from inversion.methods.base import Method, RunRequest
from inversion.methods.optimization import app_options, lpips_or_none, run_info
from inversion.methods.presets import PRESETS
from inversion.result import Inversion


def run_pti(request: RunRequest) -> Inversion:
    """Run PTI; the pivot starts from the run's shared e4e codes when the preset (or ``pti_pivot``) asks for it."""
    from inversion import pti

    models, image = request.models, request.image
    options = app_options("pti", request.preset)
    wants_e4e = options.pop("pivot", None) == "e4e"
    if request.pti_pivot != "auto":
        wants_e4e = request.pti_pivot == "e4e"
    e4e = request.starts.try_codes(models, "e4e", image) if wants_e4e else None
    lpips = lpips_or_none(request)
    result = pti.pivotal_tuning(models.generator(), image, pivot=e4e, preset=request.preset, lpips=lpips,
                                seed=request.seed, callback=request.callback, cancel=request.cancel,
                                autocast=request.autocast, fuse=request.fuse, **options)
    recipe = {"function": "inversion.pti.pivotal_tuning", **result.info.get("recipe", {}), "app_options": options,
              "pivot": "e4e" if e4e is not None else "w"}
    info = run_info(recipe, start="e4e" if e4e is not None else "mean", lpips=lpips)
    return dataclasses.replace(result, info={**result.info, **info})


PTI = Method(
    "pti", "PTI (pivotal tuning)",
    "Finds a pivot in W, then fine-tunes a copy of the generator so the pivot reproduces the photo: close "
    "reconstruction that still edits well.",
    run_pti, needs=("generator",), optional=("lpips", "encoder:e4e"), presets=PRESETS, order=50,
    how="pivot code, then fine-tunes a private copy of the generator")
