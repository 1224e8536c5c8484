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
from inversion.methods import METHODS
from inversion.models import FAMILIES, ModelSet


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


def load_models(models: ModelSet, methods: Sequence[str]) -> Loaded:
    """Load the generator and every piece ``methods`` use, once (downloads happen here).

    A missing generator raises :class:`FatalError`; a missing encoder drops its method (with a note); missing
    metric models leave that metric empty.
    """
    try:
        alignment.predictor_file()
        models.generator()
        models.latent_avg()
    except (CheckpointError, alignment.PredictorNotFoundError) as err:
        raise FatalError(str(err)) from None
    usable, dropped, notes = [], {}, []
    wants_e4e = any(m in ("w", "w+", "pti") for m in methods)
    for method in methods:
        if method in ("e4e", "psp"):
            try:
                models.encoder(method)
            except CheckpointError as err:
                dropped[method] = f"{METHODS[method].label} cannot run: {err}"
                notes.append(dropped[method])
                continue
        usable.append(method)
    if wants_e4e and "e4e" not in methods:
        try:
            models.encoder("e4e")
        except CheckpointError:
            notes.append("the e4e encoder is missing: optimization starts from the average code")
    optional = [(models.lpips, "LPIPS")]
    if models.family.name == "ffhq":
        optional.append((models.identity, "identity similarity"))
    for load, what in optional:
        try:
            load()
        except (CheckpointError, OSError) as err:
            notes.append(f"{what} is left empty: {err}")
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
