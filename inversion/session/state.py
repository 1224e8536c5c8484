"""A visitor's state: the photo, the aligned face, each method's result, the last edit and paste-back.

States are frozen: every step returns a new :class:`VisitorState` (``dataclasses.replace``), so two
events of one visitor never see a half-updated state. Stored inversions live on the CPU; a PTI-tuned
generator is the visitor's own copy: it stays on the device it was tuned on, held releasably
(:class:`TunedCache`), and goes away with the state.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Optional

import numpy as np
import torch
from PIL import Image

from inversion import align as alignment
from inversion.methods import METHODS
from inversion.pieces import IDENTITY_MODEL  # noqa: F401 (re-exported)
from inversion.result import Inversion

ALIGN_SIZE = 1024
"""The aligned crop is kept in the FFHQ frame at this size; each model family gets it resized to its own size."""
WORK_MAX_SIDE = 4096
"""Photos with a longer side are kept downscaled to it (display and paste-back; bounds per-visitor memory); their
faces are aligned from the full-resolution pixels at upload, as the original code aligns them."""
MAX_FACES = 8
"""Faces aligned at upload from a photo larger than :data:`WORK_MAX_SIDE`, and faces of the all-faces mode."""
STRIP_STEPS = (1, 9)

ProgressFn = Callable[[str, int, int, Mapping[str, float]], None]
"""``on_progress(method, step, total, metrics)``."""
FilePresent = Callable[[str], bool]


class SessionError(ValueError):
    """A request that does not fit the visitor's state (e.g. "align a photo first"); plain message."""


class TunedGenerator:
    """Holds one PTI-tuned generator for a result; :meth:`release` drops it (see :class:`TunedCache`)."""

    def __init__(self, generator: torch.nn.Module) -> None:
        self._generator: Optional[torch.nn.Module] = generator

    @property
    def generator(self) -> Optional[torch.nn.Module]:
        """The tuned generator, or None once released."""
        return self._generator

    def release(self) -> None:
        """Drop the generator (its memory is freed once no edit is using it)."""
        self._generator = None


class TunedCache:
    """Keeps at most ``capacity`` PTI-tuned generators alive across all visitors of one app (the most recently
    used); older ones are released. Holds its entries weakly: a generator also goes when its visitor's state
    does. One FFHQ copy is ~120 MB (kept on the device it was tuned on, so edits neither copy nor move it), so this
    bounds the app's (GPU) memory whatever the number of visitors."""

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._entries: "dict[int, weakref.ref[TunedGenerator]]" = {}
        self._lock = threading.Lock()

    def keep(self, state: Optional[VisitorState]) -> None:
        """Mark the state's tuned generators as the most recently used; release the oldest past ``capacity``."""
        if state is None:
            return
        with self._lock:
            for result in state.results.values():
                box = result.tuned
                if box is None or box.generator is None:
                    continue
                self._entries.pop(id(box), None)
                self._entries[id(box)] = weakref.ref(box)
            alive = [(key, ref()) for key, ref in self._entries.items()]
            alive = [(key, box) for key, box in alive if box is not None and box.generator is not None]
            for _, box in alive[:max(0, len(alive) - self.capacity)]:
                box.release()
            self._entries = {key: weakref.ref(box) for key, box in alive[max(0, len(alive) - self.capacity):]}

    def __len__(self) -> int:
        """How many tuned generators are held now."""
        with self._lock:
            return sum(1 for ref in self._entries.values() if (box := ref()) is not None and box.generator is not None)


# --------------------------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Photo:
    """The visitor's photo: upright RGB (downscaled when huge), the faces found in it (coordinates of ``image``),
    notes for the visitor. ``aligned``: for a downscaled photo, face ``i``'s FFHQ crop made from the
    full-resolution pixels (None past :data:`MAX_FACES`); empty when ``image`` is the full photo."""

    image: Image.Image
    faces: tuple[alignment.Face, ...]
    notes: tuple[str, ...] = ()
    aligned: tuple[Optional[alignment.AlignedFace], ...] = ()


@dataclass(frozen=True)
class MethodResult:
    """One method's inversion of the aligned face (tensors on the CPU) and its metrics."""

    method: str
    family: str
    preset: str
    inversion: Inversion
    metrics: dict[str, Optional[float]]
    tuned: Optional[TunedGenerator] = None  # PTI's generator when kept releasable (then inversion.generator is None)
    method_label: Optional[str] = None  # the method's label (default: from the shipped registry)

    @property
    def label(self) -> str:
        return self.method_label or (METHODS[self.method].label if self.method in METHODS else self.method)

    def full_inversion(self) -> Inversion:
        """The inversion with its PTI-tuned generator; :class:`SessionError` when that was released."""
        if self.tuned is None:
            return self.inversion
        generator = self.tuned.generator
        if generator is None:
            raise SessionError(f"The {self.label} result's tuned generator was freed to keep the server's memory "
                               "bounded (only the most recent ones are kept). Run PTI again to edit it.")
        return replace(self.inversion, generator=generator)

    @property
    def reconstruction(self) -> Image.Image:
        return to_pil(self.inversion.image)


@dataclass(frozen=True)
class Skipped:
    """A method that could not run; ``reason`` is meant for the visitor."""

    method: str
    reason: str


@dataclass(frozen=True)
class EditStrip:
    """One method's edit: offsets (slider units), their images, and the image/codes at the chosen offset."""

    method: str
    offsets: tuple[float, ...]
    images: tuple[Image.Image, ...]
    edited: Image.Image
    edited_codes: torch.Tensor  # (1, n_latent, dim), CPU


@dataclass(frozen=True)
class EditOutcome:
    """The last edit a visitor rendered."""

    name: str
    offset: float
    component: Optional[int]
    strips: dict[str, EditStrip]


@dataclass(frozen=True)
class VisitorState:
    """Everything one visitor has made so far; results are keyed by method, in run order."""

    photo: Optional[Photo] = None
    face_index: int = 0
    aligned: Optional[alignment.AlignedFace] = None
    family: Optional[str] = None
    seed: int = 0
    results: dict[str, MethodResult] = field(default_factory=dict)
    edit: Optional[EditOutcome] = None
    pasted: Optional[Image.Image] = None
    pasted_method: Optional[str] = None


def new_state() -> VisitorState:
    """An empty visitor state."""
    return VisitorState()


# --------------------------------------------------------------------------------------------- images


def to_tensor(image: Image.Image, size: Optional[int] = None) -> torch.Tensor:
    """PIL RGB -> (1, 3, size, size) float32 in [-1, 1] (LANCZOS resize when ``size`` differs)."""
    rgb = image.convert("RGB")
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) or (3, H, W) in [-1, 1] -> PIL RGB (clamped, rounded)."""
    t = image.detach().float().cpu()
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {t.shape[0]}")
        t = t[0]
    arr = ((t.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(arr), "RGB")
