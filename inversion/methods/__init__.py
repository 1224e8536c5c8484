"""The inversion methods behind one call, and the metrics that compare them.

Each method is one registered object (:class:`~inversion.methods.base.Method`: run function, model pieces and
files, presets, labels, help text, order); :data:`METHODS` (:mod:`inversion.methods.registry`) lists them in run
order and everything else derives its lists from it. ``invert(models, "e4e", image)`` runs one method on an
aligned photo tensor (1, 3, S, S) in [-1, 1] (S = the family's generator size) and returns an
:class:`~inversion.result.Inversion`; ``evaluate(models, inversion, image)`` measures it. ``invert_batch`` runs one
method on several photos together where the method has a batched form (batch jobs: the CLI).

Modules: :mod:`.base` (Method, MethodRegistry, RunRequest), :mod:`.registry` (the shipped methods),
:mod:`.encoding` (e4e, pSp), :mod:`.optimization` (W, W+), :mod:`.tuning` (PTI), :mod:`.starts` (one encoder pass
per photo and run), :mod:`.presets` (APP_PRESETS, bf16 choice), :mod:`.run` (invert, evaluate, available).
"""
from __future__ import annotations

from inversion.methods.base import DEFAULT_PRESET, Method, MethodRegistry, RunRequest
from inversion.methods.optimization import MSE_ONLY_NOTE
from inversion.methods.presets import APP_PRESETS, PRESETS, use_bf16
from inversion.methods.registry import METHODS
from inversion.methods.run import available, evaluate, invert, invert_batch
from inversion.methods.starts import StartCache, encoder_input

__all__ = [
    "APP_PRESETS", "DEFAULT_PRESET", "METHODS", "MSE_ONLY_NOTE", "Method", "MethodRegistry", "PRESETS", "RunRequest",
    "StartCache", "available", "encoder_input", "evaluate", "invert", "invert_batch", "use_bf16",
]
