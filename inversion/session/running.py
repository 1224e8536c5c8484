"""Run the chosen methods on the aligned face, one after another, and tabulate their metrics."""
from __future__ import annotations

import math
import threading
from dataclasses import replace
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import torch

from inversion.checkpoints import CheckpointError, CheckpointMissingError
from inversion.methods import METHODS, MethodRegistry, StartCache, evaluate, invert
from inversion.models import ModelSet
from inversion.result import Inversion
from inversion.session.availability import _PIECE_LABEL, method_status, order_methods
from inversion.session.state import (
    FilePresent, MethodResult, ProgressFn, SessionError, Skipped, TunedGenerator, VisitorState,
)


def _inversion_to(inv: Inversion, device: torch.device, *, copy_generator: bool,
                  keep_generator: bool = False) -> Inversion:
    """``inv`` with its tensors on ``device``. Its tuned generator stays where it is with ``keep_generator``;
    otherwise it moves too, as a copy with ``copy_generator`` (the stored one is left alone)."""
    gen = inv.generator
    if gen is not None and not keep_generator:
        ref = next(iter(gen.parameters()))
        if ref.device != device:
            if copy_generator:
                import copy

                gen = copy.deepcopy(gen)
            gen = gen.to(device)
    noise = None if inv.noise is None else [n.detach().to(device) for n in inv.noise]
    return replace(inv, w_plus=inv.w_plus.detach().to(device), image=inv.image.detach().to(device),
                   generator=gen, noise=noise)


class _LoadErrorsAsCheckpointErrors:
    """A view of a :class:`ModelSet` whose loaders report a weight file with the wrong layout (the layout checks
    raise ValueError, strict ``load_state_dict`` a RuntimeError "Error(s) in loading state_dict") as
    :class:`CheckpointError`, so the visitor reads which weights are broken instead of a generic server error;
    other errors and everything else are the model set's own."""

    def __init__(self, models: ModelSet) -> None:
        self._models = models

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)

    @staticmethod
    def _load(what: str, build: Callable[[], Any]) -> Any:
        try:
            return build()
        except CheckpointError:
            raise
        except (ValueError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "Error(s) in loading state_dict" not in str(err):
                raise
            text = " ".join(str(err).split())[:300] or type(err).__name__
            raise CheckpointError(f"the {what} weights could not be loaded ({text})") from None

    def generator(self) -> Any:
        return self._load("generator", self._models.generator)

    def latent_avg(self) -> Any:
        return self._load("generator", self._models.latent_avg)

    def encoder(self, kind: str) -> Any:
        return self._load(f"{_PIECE_LABEL.get('encoder:' + kind, kind)}", lambda: self._models.encoder(kind))

    def load_piece(self, piece: Any) -> Any:
        return self._load(piece.label, lambda: self._models.load_piece(piece))

    def lpips(self) -> Any:
        return self._load(_PIECE_LABEL["lpips"], self._models.lpips)

    def identity(self) -> Any:
        return self._load(_PIECE_LABEL["identity"], self._models.identity)


def run_inversions(models: ModelSet, image: torch.Tensor, methods: Sequence[str], *,
                   presets: Optional[Mapping[str, str]] = None, seed: int = 0,
                   on_progress: Optional[ProgressFn] = None,
                   cancel: Optional[threading.Event] = None,
                   file_present: Optional[FilePresent] = None,
                   releasable: bool = False,
                   keep_on_device: bool = True,
                   registry: MethodRegistry = METHODS,
                   starts: Optional[StartCache] = None,
                   precomputed: Optional[Mapping[str, Inversion]] = None,
                   fuse: bool = False) -> Iterator[Union[MethodResult, Skipped]]:
    """Invert ``image`` (1, 3, S, S) with each method (fast ones first), yielding each result when it is done.

    A method whose files are not there yet, or are broken, is yielded as :class:`Skipped` (with the reason) and
    the others go on. ``presets`` maps method -> preset (methods without presets use their only one). The
    methods share one encoder pass per photo (:class:`~inversion.methods.StartCache`). Results are evaluated
    (:func:`inversion.methods.evaluate`) and their tensors moved to the CPU; a tuned generator (PTI) stays on the
    models' device, where edits use it without copying. ``releasable``: it is held in ``MethodResult.tuned``
    (a :class:`TunedCache` bounds how many stay alive) instead of ``inversion.generator``. ``keep_on_device=False``
    moves the tuned generator to the CPU too (where the device is not the caller's to keep, e.g. ZeroGPU).
    ``starts``: a cache shared with an earlier call for the same photo (the app runs the encoders, then the
    optimizing methods, in two calls; the all-faces mode passes one batched encoder pass over every face).
    ``precomputed``: method -> an :class:`Inversion` of this photo already made (by a batched run over several
    photos, :func:`~inversion.methods.invert_batch`); it is evaluated and yielded like a run of its own.
    ``fuse``: compile the methods' steps (batch jobs; :func:`~inversion.methods.invert`).
    Cancelling raises :class:`~inversion.result.Cancelled`.
    """
    presets = dict(presets or {})
    status = method_status(models, file_present, registry) if file_present is not None else {}
    guarded: Any = _LoadErrorsAsCheckpointErrors(models)
    starts = starts if starts is not None else StartCache()  # a caller running methods in parts shares one
    for method in order_methods(methods, registry):
        ok, reason = status.get(method, (True, ""))
        if not ok:
            yield Skipped(method, reason)
            continue
        spec = registry[method]
        preset = presets.get(method) or spec.default_preset
        if preset not in spec.presets:
            raise SessionError(f"{spec.label} has no preset {preset!r}; choose one of {', '.join(spec.presets)}.")

        def callback(step: int, total: int, metrics: Mapping[str, float], method: str = method) -> None:
            if on_progress is not None:
                on_progress(method, step, total, metrics)
        try:
            inv = (precomputed or {}).get(method) or invert(
                guarded, method, image, preset=preset, seed=seed, callback=callback, cancel=cancel, starts=starts,
                methods=registry, fuse=fuse)
        except CheckpointMissingError as err:
            yield Skipped(method, f"{spec.label} cannot run yet: {err}")
            continue
        except CheckpointError as err:
            yield Skipped(method, f"{spec.label} cannot run: {err}")
            continue
        metrics = evaluate(guarded, inv, image)
        inv = _inversion_to(inv, torch.device("cpu"), copy_generator=False, keep_generator=keep_on_device)
        tuned = None
        if releasable and inv.generator is not None:
            tuned, inv = TunedGenerator(inv.generator), replace(inv, generator=None)
        yield MethodResult(method=method, family=models.family.name, preset=preset, inversion=inv, metrics=metrics,
                           tuned=tuned, method_label=spec.label)


def add_result(state: VisitorState, result: MethodResult, registry: MethodRegistry = METHODS) -> VisitorState:
    """``state`` with ``result`` added (replacing that method's earlier one), in run order; other families'
    results and the last edit / paste-back are dropped (they no longer match)."""
    results = {k: v for k, v in state.results.items() if v.family == result.family and k != result.method}
    results[result.method] = result
    rank = {m: i for i, m in enumerate(registry.order)}
    ordered = dict(sorted(results.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    return replace(state, family=result.family, results=ordered, edit=None, pasted=None, pasted_method=None)


def result_notes(results: Mapping[str, MethodResult]) -> list[str]:
    """Plain notes about how results were made (e.g. optimized on MSE alone because LPIPS was missing)."""
    return [f"{r.label}: {r.inversion.info['warning']}" for r in results.values() if r.inversion.info.get("warning")]


METRIC_COLUMNS = ("method", "preset", "MSE", "PSNR (dB)", "LPIPS", "ID similarity", "code spread", "seconds")
"""Columns of :func:`metrics_rows`; identity similarity is the cosine of :data:`IDENTITY_MODEL` embeddings."""


def _fmt(value: Optional[float], digits: int = 4) -> Optional[float]:
    if value is None or not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def metrics_rows(results: Mapping[str, MethodResult]) -> list[list[Any]]:
    """One row per result, columns :data:`METRIC_COLUMNS` (None where a metric is not available)."""
    rows = []
    for r in results.values():
        m = r.metrics
        rows.append([r.label, r.preset, _fmt(m.get("mse")), _fmt(m.get("psnr")), _fmt(m.get("lpips")),
                     _fmt(m.get("identity")), _fmt(m.get("code_spread")), _fmt(m.get("seconds"), 3)])
    return rows


def tradeoff_points(results: Mapping[str, MethodResult]) -> tuple[str, list[dict[str, Any]]]:
    """Distortion (LPIPS when every result has it, else MSE) against code spread, one point per method.

    Returns ``(distortion_name, [{"method", "distortion", "code_spread"}, ...])``.
    """
    use_lpips = bool(results) and all(r.metrics.get("lpips") is not None for r in results.values())
    key, name = ("lpips", "LPIPS") if use_lpips else ("mse", "MSE")
    points = [{"method": r.label, "distortion": float(r.metrics[key]), "code_spread": float(r.metrics["code_spread"])}
              for r in results.values() if r.metrics.get(key) is not None]
    return name, points
