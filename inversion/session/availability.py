"""Which methods can run now: model pieces, the files behind them, and their plain-word labels.

Every list here derives from a :class:`~inversion.methods.MethodRegistry` (default: the shipped
:data:`~inversion.methods.METHODS`); pass another registry to see its methods."""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

from inversion import models as model_files
from inversion.checkpoints import REGISTRY, FileStatus
from inversion.methods import METHODS, MethodRegistry, available
from inversion.models import ModelSet
from inversion.session.state import FilePresent, SessionError

METHOD_ORDER = METHODS.order
"""Run order of the shipped methods: the one-pass encoders first, so their results show while the slow methods
work (:func:`method_order` for another registry)."""
_PIECE_LABEL = {key: piece.label for key, piece in METHODS.pieces.items()}
"""Plain-word names of the shipped model pieces (``MethodRegistry.piece_label`` for another registry)."""


def method_order(methods: MethodRegistry = METHODS) -> tuple[str, ...]:
    """Method keys in run order."""
    return methods.order


def file_present_from(statuses: Optional[Mapping[str, FileStatus]]) -> FilePresent:
    """``present(name)``: registry files by their download status, built-in files by their existence."""
    def present(name: str) -> bool:
        if name in REGISTRY:
            st = (statuses or {}).get(name)
            return st is not None and st.state == "present"
        return (model_files.DATA / f"{name}.safetensors").is_file()
    return present


def _piece_files(models: ModelSet, piece: str, methods: MethodRegistry = METHODS) -> tuple[str, ...]:
    """The files that can serve ``piece`` in the models' family (first = the one to download)."""
    spec = methods.pieces.get(piece)
    if spec is None or (spec.families and models.family.name not in spec.families):
        return ()
    return tuple(spec.files(models.family))


def piece_present(models: ModelSet, piece: str, file_present: FilePresent, methods: MethodRegistry = METHODS) -> bool:
    """Whether a model piece ("generator", "encoder:e4e", "lpips", ...) is loaded or its files are present."""
    return piece in models.loaded() or any(file_present(name) for name in _piece_files(models, piece, methods))


def method_status(models: ModelSet, file_present: FilePresent,
                  methods: MethodRegistry = METHODS) -> dict[str, tuple[bool, str]]:
    """``{method: (can_run, reason_when_not)}`` for every method, in run order; reasons name the missing weights
    in plain words."""
    def present(piece: str) -> bool:
        return piece_present(models, piece, file_present, methods)

    out = {}
    for m, spec in methods.items():
        ok, reason = available(models, m, present=present, methods=methods)
        if not ok:
            missing = [methods.piece_label(p) for p in spec.needs if not present(p)]
            reason = f"{spec.label} needs {' and '.join(missing)} weights (not downloaded yet)"
        out[m] = (ok, reason)
    return out


def default_family(model_sets: Mapping[str, ModelSet], file_present: FilePresent) -> str:
    """The first family whose generator is available (order of ``model_sets``), else the first family."""
    for name, models in model_sets.items():
        if piece_present(models, "generator", file_present):
            return name
    return next(iter(model_sets))


def order_methods(names: Sequence[str], methods: MethodRegistry = METHODS) -> list[str]:
    """Unique known methods, fast ones first; raises :class:`SessionError` for an unknown name."""
    unknown = [m for m in names if m not in methods]
    if unknown:
        raise SessionError(f"Unknown method(s) {', '.join(map(repr, unknown))}; "
                           f"choose from {', '.join(methods.order)}.")
    return [m for m in methods.order if m in set(names)]


def download_order(model_sets: Mapping[str, ModelSet], methods: MethodRegistry = METHODS,
                   first: Sequence[str] = ("dlib_landmarks",)) -> tuple[str, ...]:
    """Registry files to fetch, in order: ``first`` (face alignment), then, per family, the preferred file of each
    piece the methods need or use, the pieces used by the most methods first (ties: run order), then the metric
    pieces (LPIPS, identity). Built-in files (not in the checkpoint registry) are left out."""
    from inversion.pieces import METRIC_PIECES

    used = methods.used_pieces()
    users = {p: sum(p in (*m.needs, *m.optional) for m in methods.values()) for p in used}
    pieces = sorted(used, key=lambda p: -users[p]) + [p for p in METRIC_PIECES if p in methods.pieces]
    names = list(first)
    for models in model_sets.values():
        for piece in pieces:
            files = _piece_files(models, piece, methods)
            if files and files[0] in REGISTRY:
                names.append(files[0])
    return tuple(dict.fromkeys(names))
