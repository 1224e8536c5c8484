"""Model pieces: the loadable parts a method needs ("generator", "encoder:e4e", "lpips", ...).

A :class:`Piece` says which weight files back it in each model family (registry names of
:mod:`inversion.checkpoints` or built-in files; alternatives, the first is the one to download), how to load it
from a :class:`~inversion.models.ModelSet` (which caches it), and its plain-word label for the visitor.
:data:`BASE_PIECES` are the pieces of the two families; a method that needs a new piece brings it in its
:class:`~inversion.methods.base.Method` (``pieces=``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # pragma: no cover
    from inversion.models import Family, ModelSet

IDENTITY_MODEL = "ArcFace IR-SE50"
METRIC_PIECES = ("lpips", "identity")
"""Pieces used only to score results (never needed to run a method)."""


@dataclass(frozen=True)
class Piece:
    """One loadable model part. ``files(family)`` -> file names that can serve it (first = preferred download);
    ``load(models)`` builds it (call it through ``ModelSet.load_piece``, which caches)."""

    key: str
    label: str
    files: Callable[["Family"], tuple[str, ...]]
    load: Callable[["ModelSet"], Any]
    families: tuple[str, ...] = ()  # families it exists for; () = every family


def _encoder_piece(kind: str, label: str) -> Piece:
    def files(family: "Family") -> tuple[str, ...]:
        name = family.encoder_files.get(kind)
        return (name,) if name else ()
    return Piece(f"encoder:{kind}", label, files, lambda models: models.encoder(kind))


BASE_PIECES: dict[str, Piece] = {p.key: p for p in (
    Piece("generator", "generator", lambda family: family.generator_files, lambda models: models.generator()),
    _encoder_piece("e4e", "e4e encoder"),
    _encoder_piece("psp", "pSp encoder"),
    Piece("lpips", "LPIPS (VGG16)", lambda family: ("vgg16",), lambda models: models.lpips()),
    Piece("identity", f"identity ({IDENTITY_MODEL})", lambda family: ("irse50",), lambda models: models.identity(),
          families=("ffhq",)),
)}
