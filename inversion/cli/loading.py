"""The model sets the command line uses, and the pieces loaded once per batch."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import torch

from inversion import align as alignment
from inversion import checkpoints
from inversion import session as S
from inversion.checkpoints import CheckpointError
from inversion.cli.report import Reporter
from inversion.methods import METHODS, MSE_ONLY_NOTE, MethodRegistry
from inversion.models import FAMILIES, ModelSet
from inversion.pieces import METRIC_PIECES


Locator = Callable[[str], Path]
ModelSetFactory = Callable[[torch.device, Locator], Mapping[str, ModelSet]]
"""``factory(device, locate) -> {family: ModelSet}`` (first = preferred for ``--family auto``)."""


class FatalError(RuntimeError):
    """Something that stops the whole batch (missing generator weights, no landmark model)."""


def default_model_sets(device: torch.device, locate: Locator) -> dict[str, ModelSet]:
    """Every family of :data:`inversion.models.FAMILIES` (FFHQ first), lazily loaded on ``device``."""
    return {name: ModelSet(name, device=device, locate=locate) for name in FAMILIES}


@dataclass
class Loaded:
    """Model pieces loaded once for the batch, and which methods can run."""

    methods: list[str]
    dropped: dict[str, str] = field(default_factory=dict)  # method -> why it cannot run
    notes: list[str] = field(default_factory=list)


def load_models(models: ModelSet, methods: Sequence[str], registry: MethodRegistry = METHODS) -> Loaded:
    """Load the generator and every piece ``methods`` use, once (downloads happen here).

    A missing generator raises :class:`FatalError`; a method whose other needed pieces are missing is dropped
    (with a note); a missing optional piece (e4e start, LPIPS) is noted, and the methods run without it; missing
    metric models leave that metric empty.
    """
    try:
        alignment.predictor_file()
        models.generator()
        models.latent_avg()
    except (CheckpointError, alignment.PredictorNotFoundError) as err:
        raise FatalError(str(err)) from None
    usable, dropped, notes = [], {}, []
    for method in methods:
        spec = registry[method]
        try:
            for piece in spec.needs:
                if piece != "generator":
                    models.load_piece(registry.pieces[piece])
        except CheckpointError as err:
            dropped[method] = f"{spec.label} cannot run: {err}"
            notes.append(dropped[method])
            continue
        usable.append(method)
    chosen = [registry[m] for m in usable]
    optional = [p for p in dict.fromkeys(p for m in chosen for p in m.optional) if p not in METRIC_PIECES]
    for piece in optional:
        if any(piece in m.needs for m in chosen):
            continue  # loaded above
        try:
            models.load_piece(registry.pieces[piece])
        except CheckpointError:
            users = ", ".join(m.label for m in chosen if piece in m.optional)
            if piece == "encoder:e4e":
                notes.append("the e4e encoder is missing: optimization starts from the average code")
            else:
                notes.append(f"the {registry.piece_label(piece)} is missing: {users} run without it")
    for piece in METRIC_PIECES:
        spec = registry.pieces.get(piece)
        if spec is None or (spec.families and models.family.name not in spec.families):
            continue
        try:
            models.load_piece(spec)
        except (CheckpointError, OSError) as err:
            what = {"lpips": "LPIPS", "identity": "identity similarity"}.get(piece, spec.label)
            notes.append(f"{what} is left empty: {err}")
            if piece == "lpips":
                mse_only = [m.label for m in chosen if "lpips" in m.optional]
                if mse_only:
                    notes.append(f"{', '.join(mse_only)}: {MSE_ONLY_NOTE}")
    return Loaded(usable, dropped, notes)


def _locate_with_progress(reporter: Reporter) -> Locator:
    def locate(name: str) -> Path:
        def progress(done: int, total: Optional[int]) -> None:
            share = done / total if total else 0.0
            reporter.progress(share, f"downloading {name} {done / 1e6:,.0f} MB", key=name)
        return checkpoints.fetch(name, progress=progress)
    return locate


def _present_locally(model_sets: Mapping[str, ModelSet]) -> S.FilePresent:
    names = [n for m in model_sets.values() for n in m.family.generator_files if n in checkpoints.REGISTRY]
    return S.file_present_from(checkpoints.status(list(dict.fromkeys(names))) if names else {})
