"""The per-image optimization methods: W (one code for every layer) and W+ (a code per layer), and the run-time
pieces they share with PTI (LPIPS when present, the e4e start, the recipe record)."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from inversion.checkpoints import CheckpointError
from inversion.methods.base import Method, RunRequest
from inversion.methods.presets import APP_PRESETS, PRESETS
from inversion.result import Inversion

MSE_ONLY_NOTE = "the LPIPS network is not available, so this method optimized on MSE alone (no perceptual loss)"
"""Said to the visitor and written into metrics.json / metrics.csv when LPIPS is missing."""


def lpips_or_none(request: RunRequest) -> Optional[Any]:
    """The LPIPS network when its weights are present, else ``None`` (the methods then use MSE alone)."""
    try:
        return request.models.lpips()
    except (CheckpointError, OSError):
        return None


def app_options(key: str, preset: str) -> dict[str, Any]:
    """A copy of :data:`~inversion.methods.presets.APP_PRESETS` for (method, preset), read now."""
    return dict(APP_PRESETS.get((key, preset), {}))


def run_info(recipe: dict[str, Any], *, start: str, lpips: Optional[Any]) -> dict[str, Any]:
    """The ``info`` entries every optimizing method adds: its start, whether LPIPS was used, its recipe."""
    info: dict[str, Any] = {"start": start, "lpips_used": lpips is not None, "recipe": dict(recipe, start=start)}
    if lpips is None:
        info["warning"] = MSE_ONLY_NOTE
    return info


def run_optimization(space: str):
    """The run function of W (``space="w"``) or W+ (``"w+"``) optimization."""
    def run(request: RunRequest) -> Inversion:
        from inversion import optimize

        models, image = request.models, request.image
        options = app_options(space, request.preset)
        wants_e4e = options.pop("start", None) == "e4e"
        e4e = request.starts.try_codes(models, "e4e", image) if wants_e4e else None
        lpips = lpips_or_none(request)
        result = optimize.optimize_latent(
            models.generator(), image, space=space, preset=request.preset, lpips=lpips, seed=request.seed,
            init=e4e if e4e is not None else models.latent_avg(), callback=request.callback,
            cancel=request.cancel, autocast=request.autocast, **options)
        # the library records the full recipe it ran (inversion.recipes, the right space); add the app's start
        recipe = {"function": "inversion.optimize.optimize_latent", **result.info.get("recipe", {}),
                  "app_options": options}
        info = run_info(recipe, start="e4e" if e4e is not None else "mean", lpips=lpips)
        return dataclasses.replace(result, info={**result.info, **info})
    return run


def run_optimization_batch(space: str):
    """The batched run of W / W+ optimization (:func:`inversion.batch.optimize_batch`): the photos' e4e starts in
    one encoder pass, then one optimization of all of them, each photo its own problem and its own early stop."""
    def run_batch(requests: list[RunRequest]) -> list[Inversion]:
        import torch

        from inversion.batch import optimize_batch
        from inversion.methods.starts import try_fill_starts

        first = requests[0]
        models = first.models
        options = app_options(space, first.preset)
        starts = None
        if options.pop("start", None) == "e4e" and try_fill_starts(models, "e4e", [(r.image, r.starts)
                                                                                  for r in requests]):
            starts = torch.cat([r.starts.codes(models, "e4e", r.image) for r in requests])
        init = starts if starts is not None else models.latent_avg().expand(len(requests), -1)
        lpips = lpips_or_none(first)
        results = optimize_batch(models.generator(), torch.cat([r.image for r in requests]), space=space,
                                 preset=first.preset, lpips=lpips, seed=first.seed, init=init,
                                 callback=first.callback, cancel=first.cancel, autocast=first.autocast,
                                 fuse=first.fuse, **options)
        out = []
        for result in results:
            recipe = {"function": "inversion.batch.optimize_batch", **result.info.get("recipe", {}),
                      "app_options": options}
            info = run_info(recipe, start="e4e" if starts is not None else "mean", lpips=lpips)
            out.append(dataclasses.replace(result, info={**result.info, **info}))
        return out
    return run_batch


W = Method(
    "w", "W optimization",
    "Optimizes one 512-d code shared by all layers (MSE + LPIPS): good editability, limited fidelity.",
    run_optimization("w"), needs=("generator",), optional=("lpips", "encoder:e4e"), presets=PRESETS, order=30,
    run_batch=run_optimization_batch("w"),
    how="optimizes one code for all layers (MSE + LPIPS)")

W_PLUS = Method(
    "w+", "W+ optimization",
    "Optimizes every layer's code separately: very close reconstruction, edits drift more.",
    run_optimization("w+"), needs=("generator",), optional=("lpips", "encoder:e4e"), presets=PRESETS, order=40,
    run_batch=run_optimization_batch("w+"),
    how="optimizes a code per layer")
