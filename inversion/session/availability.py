"""Which methods can run now: model pieces, the files behind them, and their plain-word labels."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from inversion import models as model_files
from inversion.checkpoints import REGISTRY, FileStatus
from inversion.methods import METHODS, available
from inversion.models import ModelSet
from inversion.session.state import IDENTITY_MODEL, FilePresent, SessionError

METHOD_ORDER = ("e4e", "psp", "w", "w+", "pti")
"""Run order: the one-pass encoders first, so their results show while the slow methods work."""
_PIECE_LABEL = {"generator": "generator", "encoder:e4e": "e4e encoder", "encoder:psp": "pSp encoder",
                "lpips": "LPIPS (VGG16)", "identity": f"identity ({IDENTITY_MODEL})"}


def file_present_from(statuses: Optional[Mapping[str, FileStatus]]) -> FilePresent:
    """``present(name)``: registry files by their download status, built-in files by their existence."""
    def present(name: str) -> bool:
        if name in REGISTRY:
            st = (statuses or {}).get(name)
            return st is not None and st.state == "present"
        return (model_files.DATA / f"{name}.safetensors").is_file()
    return present


def _piece_files(models: ModelSet, piece: str) -> tuple[str, ...]:
    family = models.family
    if piece == "generator":
        return family.generator_files
    if piece.startswith("encoder:"):
        name = family.encoder_files.get(piece.split(":", 1)[1])
        return (name,) if name else ()
    return {"lpips": ("vgg16",), "identity": ("irse50",)}.get(piece, ())


def piece_present(models: ModelSet, piece: str, file_present: FilePresent) -> bool:
    """Whether a model piece ("generator", "encoder:e4e", "lpips", ...) is loaded or its files are present."""
    return piece in models.loaded() or any(file_present(name) for name in _piece_files(models, piece))


def method_status(models: ModelSet, file_present: FilePresent) -> dict[str, tuple[bool, str]]:
    """``{method: (can_run, reason_when_not)}`` for every method, in :data:`METHOD_ORDER`; reasons name the
    missing weights in plain words."""
    def present(piece: str) -> bool:
        return piece_present(models, piece, file_present)

    out = {}
    for m in METHOD_ORDER:
        ok, reason = available(models, m, present=present)
        if not ok:
            missing = [_PIECE_LABEL.get(p, p) for p in METHODS[m].needs if not present(p)]
            reason = f"{METHODS[m].label} needs {' and '.join(missing)} weights (not downloaded yet)"
        out[m] = (ok, reason)
    return out


def default_family(model_sets: Mapping[str, ModelSet], file_present: FilePresent) -> str:
    """The first family whose generator is available (order of ``model_sets``), else the first family."""
    for name, models in model_sets.items():
        if piece_present(models, "generator", file_present):
            return name
    return next(iter(model_sets))


def order_methods(methods: Sequence[str]) -> list[str]:
    """Unique known methods, fast ones first; raises :class:`SessionError` for an unknown name."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SessionError(f"Unknown method(s) {', '.join(map(repr, unknown))}; choose from {', '.join(METHOD_ORDER)}.")
    return [m for m in METHOD_ORDER if m in set(methods)]
