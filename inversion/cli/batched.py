"""Several photos through the methods together: the batch size, and the methods' batched runs for one group.

A group of aligned photos goes through every chosen method that has a batched form (``Method.run_batch``: e4e and
pSp in one encoder forward, W and W+ in one optimization of all of them) before each photo is finished on its own
(:func:`inversion.cli.photo.finish_photo`: the other methods, metrics, edits, files). The photos' e4e codes are
computed in one pass too and handed to the per-photo methods (PTI's e4e pivot), so nothing is encoded twice.
"""
from __future__ import annotations

import threading
from typing import Callable, Mapping, Sequence

import torch

from inversion.batch import batch_size_for, triton_available
from inversion.checkpoints import CheckpointError
from inversion.methods import MethodRegistry, StartCache, invert_batch
from inversion.methods.starts import try_fill_starts
from inversion.models import ModelSet
from inversion.result import Cancelled, Inversion
from inversion.session.availability import order_methods

BATCH_LIMIT = 16
"""The largest automatic batch: an H200 measured the same time per photo at 16 and 32 (``bench/results``)."""
FUSE_FROM = 64
"""Jobs of at least this many photos (per process) compile their optimization steps on CUDA: about a minute once
(PTI: 58 s on an H200), then 0.7 s less per PTI photo (3.2 -> 2.5 s, ``bench/results/pti_fused_h200``) and about
half the time per batched W/W+ step (``bench/results/batch_variants_*``): worth it from some 80 PTI photos."""


def choose_fuse(device: torch.device, photos: int) -> bool:
    """Whether this job compiles its steps: CUDA with Triton, and at least :data:`FUSE_FROM` photos."""
    return device.type == "cuda" and photos >= FUSE_FROM and triton_available()


def choose_batch(asked: int, device: torch.device, size: int, *, all_faces: bool) -> int:
    """Photos per group: ``asked`` when given (>= 1), else from free GPU memory (at most :data:`BATCH_LIMIT`),
    1 on the CPU (it has no batched speed-up to give) and in the all-faces mode (each photo is a group already)."""
    if all_faces:
        return 1
    if asked >= 1:
        return asked
    return batch_size_for(device, size, limit=BATCH_LIMIT)


def batched_results(models: ModelSet, methods: Sequence[str], images: Sequence[torch.Tensor], *,
                    presets: Mapping[str, str], seed: int, cancel: threading.Event,
                    on_progress: Callable[[str, int, int, Mapping[str, float]], None],
                    registry: MethodRegistry, on_note: Callable[[str], None], fuse: bool = False
                    ) -> tuple[list[dict[str, Inversion]], list[StartCache]]:
    """For each photo (``(1, 3, S, S)`` each): the results of the methods run together, and its start cache.

    A method whose batched run fails (missing weights, out of memory, ...) is left out here, with a note, and then
    runs photo by photo, where a missing file is reported per photo as usual. ``Cancelled`` is passed on.
    """
    starts = [StartCache() for _ in images]
    results: list[dict[str, Inversion]] = [{} for _ in images]
    if len(images) < 2:
        return results, starts
    images = [image.to(models.device, torch.float32) for image in images]  # as each method's run sees it
    for method in order_methods(methods, registry):
        spec = registry[method]
        if spec.run_batch is None:
            continue
        preset = presets.get(method) or spec.default_preset

        def callback(step: int, total: int, metrics: Mapping[str, float], method: str = method) -> None:
            on_progress(method, step, total, metrics)
        try:
            done = invert_batch(models, method, images, preset=preset, seed=seed, callback=callback, cancel=cancel,
                                starts=starts, methods=registry, fuse=fuse)
        except (Cancelled, KeyboardInterrupt):
            raise
        except CheckpointError:
            continue  # said per photo, where the method is skipped with its reason
        except Exception as err:  # noqa: BLE001 - the photos still get this method, one at a time
            on_note(f"{spec.label}: the batched run failed ({type(err).__name__}: {err}); running photo by photo")
            _free(models.device)
            continue
        for mine, result in zip(results, done):
            mine[method] = result
    if any("encoder:e4e" in registry[m].optional for m in methods if m in registry):
        try_fill_starts(models, "e4e", list(zip(images, starts)))  # without e4e they start as they would alone
    return results, starts


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
