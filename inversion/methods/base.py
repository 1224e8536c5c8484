"""What a method is: one registered object (principle 16), and the registry the app, CLI and bench read.

A :class:`Method` holds its run function, the model pieces it needs (and uses when present), its presets, labels,
help text and place in the run order. A :class:`MethodRegistry` keeps them in run order together with the model
pieces they need; everything that lists methods (library, session, UI, CLI, status panel, benchmark) derives
its list from one. Adding a method = one module that builds a :class:`Method` + one ``register`` line
(:mod:`inversion.methods.registry`). Weight files stay in the one checkpoint table
(:mod:`inversion.checkpoints.registry`, which also generates LICENSES.md): a method's pieces name them there.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

import torch

from inversion.pieces import BASE_PIECES, Piece
from inversion.result import Inversion, ProgressCallback

if TYPE_CHECKING:  # pragma: no cover
    from inversion.methods.starts import StartCache
    from inversion.models import ModelSet

DEFAULT_PRESET = ("default",)
"""The preset list of a method without choices (the encoders)."""


@dataclass(frozen=True)
class RunRequest:
    """Everything a run function gets: the aligned image (1, 3, S, S) in [-1, 1] on the models' device, the chosen
    preset, seed, progress callback, cancel event, bf16 autocast flag and the run's shared encoder starts."""

    models: "ModelSet"
    image: torch.Tensor
    preset: str
    seed: int
    callback: Optional[ProgressCallback]
    cancel: Optional[threading.Event]
    autocast: bool
    starts: "StartCache"
    pti_pivot: str = "auto"
    fuse: bool = False  # batch jobs: compile the optimization steps (a minute once per process, faster per step)


RunFn = Callable[[RunRequest], Inversion]
"""``run(request) -> Inversion``; ``info["recipe"]`` (a dict) records the options it ran with."""

BatchRunFn = Callable[[list[RunRequest]], list[Inversion]]
"""``run_batch(requests) -> one Inversion per request``, computed together (one forward or one optimization for
all the photos); the requests share models, preset, seed, cancel and autocast and differ in image and starts.
Each result is what ``run`` gives for its request, within the stated float tolerance of the batched form."""


@dataclass(frozen=True)
class Method:
    """One inversion method as the library, UI, CLI and benchmark see it."""

    key: str
    label: str
    description: str  # one or two sentences for the help table and the CLI
    run: RunFn
    needs: tuple[str, ...]  # model pieces: "generator", "lpips", "encoder:psp", "encoder:e4e", ...
    optional: tuple[str, ...] = ()  # used when present (e.g. e4e as a fast PTI pivot)
    presets: tuple[str, ...] = DEFAULT_PRESET
    order: int = 100  # run order: one-pass methods first, so their results show while the slow ones work
    how: str = ""  # a short phrase for the run-time table
    pieces: tuple[Piece, ...] = ()  # model pieces this method brings (beyond inversion.pieces.BASE_PIECES)
    run_batch: Optional[BatchRunFn] = None  # several photos at once (batch jobs); None: one after another

    @property
    def has_presets(self) -> bool:
        """Whether the visitor chooses a preset for it (the optimizing methods)."""
        return self.presets != DEFAULT_PRESET

    @property
    def default_preset(self) -> str:
        """``balanced`` when offered, else the first preset."""
        return "balanced" if "balanced" in self.presets else self.presets[0]


@dataclass
class MethodRegistry(Mapping[str, Method]):
    """Methods by key, iterated in run order, and the model pieces they use.

    A read-only mapping for its users; ``register`` adds a method (and the pieces and files it brings).
    ``copy()`` gives an independent registry (tests register extra methods in one).
    """

    _methods: dict[str, Method] = field(default_factory=dict)
    pieces: dict[str, Piece] = field(default_factory=lambda: dict(BASE_PIECES))

    def register(self, method: Method) -> Method:
        """Add ``method``; raises ValueError for a taken key or a piece nobody provides."""
        if method.key in self._methods:
            raise ValueError(f"a method {method.key!r} is already registered")
        for piece in method.pieces:
            if piece.key in self.pieces and self.pieces[piece.key] != piece:
                raise ValueError(f"another model piece is already registered as {piece.key!r}")
            self.pieces[piece.key] = piece
        unknown = [p for p in (*method.needs, *method.optional) if p not in self.pieces]
        if unknown:
            raise ValueError(f"{method.key}: unknown model piece(s) {unknown}; bring them in Method.pieces")
        self._methods[method.key] = method
        self._methods = dict(sorted(self._methods.items(), key=lambda kv: kv[1].order))
        return method

    def copy(self) -> "MethodRegistry":
        """An independent registry with the same methods and pieces."""
        return MethodRegistry(dict(self._methods), dict(self.pieces))

    def __getitem__(self, key: str) -> Method:
        return self._methods[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._methods)

    def __len__(self) -> int:
        return len(self._methods)

    @property
    def order(self) -> tuple[str, ...]:
        """Method keys in run order."""
        return tuple(self._methods)

    def with_presets(self) -> list[Method]:
        """The methods the visitor picks a preset for, in run order."""
        return [m for m in self._methods.values() if m.has_presets]

    def piece_label(self, piece: str) -> str:
        """Plain-word name of a model piece."""
        return self.pieces[piece].label if piece in self.pieces else piece

    def used_pieces(self) -> list[str]:
        """Every piece some method needs or uses, in run order (needs before optional ones)."""
        keys = [p for m in self._methods.values() for p in m.needs]
        keys += [p for m in self._methods.values() for p in m.optional]
        return list(dict.fromkeys(keys))

    def describe(self) -> dict[str, Any]:
        """A plain summary (key -> label, presets, needs) for tables and ``--help``."""
        return {k: {"label": m.label, "presets": list(m.presets), "needs": list(m.needs)}
                for k, m in self._methods.items()}
