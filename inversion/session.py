"""What one visitor of the app does, as plain functions: photo -> aligned face -> inversions -> edits ->
paste-back -> export.

No gradio here: the app keeps one :class:`VisitorState` per visitor (in ``gr.State``) and calls these
functions; they take and return PIL images, numpy arrays, torch tensors and plain dicts. Errors the visitor
should read are raised as :class:`SessionError` (or the domain errors of :mod:`inversion.align`,
:mod:`inversion.checkpoints` and :mod:`editing`), all with plain messages.

States are frozen: every step returns a new :class:`VisitorState` (``dataclasses.replace``), so two
events of one visitor never see a half-updated state. Stored inversions live on the CPU; a PTI-tuned
generator is the visitor's own copy and goes away with the state.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import threading
import time
import weakref
import zipfile
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from editing import EditError, EditRequest, coordinate, get_edit, list_edits, load_pca, render_edits
from editing.directions import data_file
from inversion import align as alignment
from inversion.checkpoints import REGISTRY, CheckpointError, CheckpointMissingError, FileStatus
from inversion.methods import METHODS, available, evaluate, invert
from inversion import models as model_files
from inversion.models import ModelSet
from inversion.result import Cancelled, Inversion

ALIGN_SIZE = 1024
"""The aligned crop is kept in the FFHQ frame at this size; each model family gets it resized to its own size."""
WORK_MAX_SIDE = 4096
"""Photos with a longer side are kept downscaled to it (display and paste-back; bounds per-visitor memory); their
faces are aligned from the full-resolution pixels at upload, as the original code aligns them."""
MAX_FACES = 8
"""Faces aligned at upload from a photo larger than :data:`WORK_MAX_SIDE` (the best ones)."""
METHOD_ORDER = ("e4e", "psp", "w", "w+", "pti")
"""Run order: the one-pass encoders first, so their results show while the slow methods work."""
IDENTITY_MODEL = "ArcFace IR-SE50"
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
    does. One FFHQ copy is ~120 MB, so this bounds the app's memory whatever the number of visitors."""

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

    @property
    def label(self) -> str:
        return METHODS[self.method].label

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


# --------------------------------------------------------------------------------------------- photo

def open_photo(source: alignment.ImageSource, *, max_side: int = WORK_MAX_SIDE) -> Photo:
    """Load a photo (path, bytes or PIL; EXIF rotation applied) and find its faces at full resolution.

    A photo whose longer side exceeds ``max_side`` is kept downscaled to it; its faces (the best
    :data:`MAX_FACES`) are aligned from the full-resolution pixels first, so the aligned crops are those of the
    original code. Raises :class:`~inversion.align.InvalidImageError` for unreadable files and
    :class:`~inversion.align.NoFaceError` when no face is found.
    """
    image = alignment.load_image(source)
    original = image.size
    faces = alignment.detect_faces(image)
    if not faces:
        msg = "No face found in the photo. Please use a photo with a clearly visible, roughly frontal face"
        if max(original) > max_side:
            raise alignment.NoFaceError(
                f"{msg}. The photo ({original[0]}x{original[1]}) is large and the faces in it are small: crop it "
                "around the face and try again.")
        if min(image.size) < 80:
            raise alignment.FaceTooSmallError(f"{msg}; this image is only {image.width}x{image.height} pixels.")
        raise alignment.NoFaceError(msg + ".")
    if max(original) <= max_side:
        return Photo(image=image, faces=tuple(faces))
    aligned = tuple(_align(image, face) if i < MAX_FACES else None for i, face in enumerate(faces))
    scale = max_side / max(original)
    size = (max(1, round(original[0] * scale)), max(1, round(original[1] * scale)))
    image = image.resize(size, Image.Resampling.LANCZOS)
    factor = np.array([size[0] / original[0], size[1] / original[1]])
    faces = [_scaled_face(face, factor) for face in faces]
    aligned = tuple(None if a is None else _scaled_aligned(a, factor, face) for a, face in zip(aligned, faces))
    note = (f"The photo ({original[0]}x{original[1]}) was reduced to {size[0]}x{size[1]} pixels for display and "
            "paste-back; the faces were aligned from the full-resolution photo.")
    return Photo(image=image, faces=tuple(faces), notes=(note,), aligned=aligned)


def _align(image: Image.Image, face: alignment.Face) -> alignment.AlignedFace:
    return replace(alignment.align_face(image, ALIGN_SIZE, landmarks=face.landmarks), face=face)


def _scaled_face(face: alignment.Face, factor: np.ndarray) -> alignment.Face:
    l, t, r, b = face.bbox
    box = (l * factor[0], t * factor[1], r * factor[0], b * factor[1])
    return replace(face, bbox=box, landmarks=(face.landmarks + 0.5) * factor - 0.5)


def _scaled_aligned(aligned: alignment.AlignedFace, factor: np.ndarray, face: alignment.Face) -> alignment.AlignedFace:
    """The same crop, with its quad and landmarks in the downscaled photo's pixels (for paste-back)."""
    quad = (aligned.quad + 0.5) * factor - 0.5  # pixel centres scale about the image's corner
    return replace(aligned, quad=quad, landmarks=(aligned.landmarks + 0.5) * factor - 0.5,
                   qsize=aligned.qsize * float(factor.mean()), face=face)


def face_thumbnails(photo: Photo, *, size: int = 112) -> list[Image.Image]:
    """A square crop around each detected face (best first), ``size`` pixels, for a face picker."""
    thumbs = []
    for face in photo.faces:
        l, t, r, b = face.bbox
        cx, cy, half = (l + r) / 2, (t + b) / 2, 0.8 * max(r - l, b - t)
        box = tuple(round(v) for v in (cx - half, cy - half, cx + half, cy + half))
        thumbs.append(photo.image.crop(box).resize((size, size), Image.Resampling.LANCZOS))
    return thumbs


def align_photo(state: VisitorState, photo: Photo, face_index: int = 0) -> VisitorState:
    """Align face ``face_index`` of ``photo`` (FFHQ frame, :data:`ALIGN_SIZE` px); clears earlier results."""
    if not 0 <= face_index < len(photo.faces):
        raise SessionError(f"There is no face number {face_index} (counting from 0): the photo has "
                           f"{len(photo.faces)} face(s).")
    aligned = photo.aligned[face_index] if face_index < len(photo.aligned) else None
    if aligned is None:
        aligned = _align(photo.image, photo.faces[face_index])
    return replace(state, photo=photo, face_index=face_index, aligned=aligned, results={}, edit=None,
                   pasted=None, pasted_method=None)


def photo_notes(state: VisitorState) -> tuple[str, ...]:
    """Notes for the visitor about the current photo and alignment (downscaled, small face, several faces)."""
    if state.photo is None:
        return ()
    notes = list(state.photo.notes)
    if len(state.photo.faces) > 1:
        notes.append(f"{len(state.photo.faces)} faces were found; face {state.face_index + 1} is used "
                     "(pick another one below).")
    if state.aligned is not None:
        notes.extend(state.aligned.warnings)
    return tuple(notes)


def model_input(state: VisitorState, size: int) -> torch.Tensor:
    """The aligned face as the model input (1, 3, size, size) in [-1, 1]."""
    if state.aligned is None:
        raise SessionError("Align a photo first (step 1).")
    return to_tensor(state.aligned.image, size)


# --------------------------------------------------------------------------------------------- availability

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


# --------------------------------------------------------------------------------------------- inversion

def _inversion_to(inv: Inversion, device: torch.device, *, copy_generator: bool) -> Inversion:
    gen = inv.generator
    if gen is not None:
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

    def lpips(self) -> Any:
        return self._load(_PIECE_LABEL["lpips"], self._models.lpips)

    def identity(self) -> Any:
        return self._load(_PIECE_LABEL["identity"], self._models.identity)


def run_inversions(models: ModelSet, image: torch.Tensor, methods: Sequence[str], *,
                   presets: Optional[Mapping[str, str]] = None, seed: int = 0,
                   on_progress: Optional[ProgressFn] = None,
                   cancel: Optional[threading.Event] = None,
                   file_present: Optional[FilePresent] = None,
                   releasable: bool = False) -> Iterator[Union[MethodResult, Skipped]]:
    """Invert ``image`` (1, 3, S, S) with each method (fast ones first), yielding each result when it is done.

    A method whose files are not there yet, or are broken, is yielded as :class:`Skipped` (with the reason) and
    the others go on. ``presets`` maps method -> preset (methods without presets use their only one). Results are
    evaluated (:func:`inversion.methods.evaluate`) and moved to the CPU. ``releasable``: a PTI-tuned generator
    is held in ``MethodResult.tuned`` (a :class:`TunedCache` may release it) instead of ``inversion.generator``.
    Cancelling raises :class:`~inversion.result.Cancelled`.
    """
    presets = dict(presets or {})
    status = method_status(models, file_present) if file_present is not None else {}
    guarded: Any = _LoadErrorsAsCheckpointErrors(models)
    for method in order_methods(methods):
        ok, reason = status.get(method, (True, ""))
        if not ok:
            yield Skipped(method, reason)
            continue
        spec = METHODS[method]
        preset = presets.get(method) or ("balanced" if "balanced" in spec.presets else spec.presets[0])
        if preset not in spec.presets:
            raise SessionError(f"{spec.label} has no preset {preset!r}; choose one of {', '.join(spec.presets)}.")

        def callback(step: int, total: int, metrics: Mapping[str, float], method: str = method) -> None:
            if on_progress is not None:
                on_progress(method, step, total, metrics)
        try:
            inv = invert(guarded, method, image, preset=preset, seed=seed, callback=callback, cancel=cancel)
        except CheckpointMissingError as err:
            yield Skipped(method, f"{spec.label} cannot run yet: {err}")
            continue
        except CheckpointError as err:
            yield Skipped(method, f"{spec.label} cannot run: {err}")
            continue
        metrics = evaluate(guarded, inv, image)
        inv = _inversion_to(inv, torch.device("cpu"), copy_generator=False)
        tuned = None
        if releasable and inv.generator is not None:
            tuned, inv = TunedGenerator(inv.generator), replace(inv, generator=None)
        yield MethodResult(method=method, family=models.family.name, preset=preset, inversion=inv, metrics=metrics,
                           tuned=tuned)


def add_result(state: VisitorState, result: MethodResult) -> VisitorState:
    """``state`` with ``result`` added (replacing that method's earlier one); other families' results and the
    last edit / paste-back are dropped (they no longer match)."""
    results = {k: v for k, v in state.results.items() if v.family == result.family and k != result.method}
    results[result.method] = result
    ordered = {m: results[m] for m in METHOD_ORDER if m in results}
    return replace(state, family=result.family, results=ordered, edit=None, pasted=None, pasted_method=None)


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


# --------------------------------------------------------------------------------------------- editing

@dataclass(frozen=True)
class EditControl:
    """How the UI presents one edit: slider range and default (offset units), whether it needs a component."""

    name: str
    label: str
    minimum: float
    maximum: float
    default: float
    component_max: Optional[int]  # None: no component to choose
    help: str


def edit_choices(models: ModelSet) -> list[tuple[str, str]]:
    """``(label, name)`` of the edits valid for the family's generator."""
    return [(e.label, e.name) for e in list_edits(models.family.edit_kind)]


def edit_control(name: str, models: ModelSet) -> EditControl:
    """Slider settings for edit ``name``. Every slider is an offset: 0 leaves the face unchanged.

    The named GANSpace edits are published as *target* coordinates; here their slider is the change from
    the inversion's own coordinate (target = own coordinate + offset), so 0 is the identity for them too.
    """
    spec = get_edit(name)
    lo, hi = spec.strength_range
    comp_max = None
    if spec.is_explorer:
        comp_max = (_style_dim(models) if spec.kind == "sefa" else _ganspace_components(models)) - 1
    if spec.kind == "interfacegan":
        help_text = "InterFaceGAN direction (linear boundary in W); positive = more."
    elif spec.kind == "sefa":
        help_text = "SeFa: closed-form direction from the generator's weights; component 0 changes the most."
    elif spec.is_explorer:
        help_text = "GANSpace: principal component of W, step in standard deviations; component 0 varies most."
    else:
        help_text = "GANSpace named edit; the slider is the change from this face's own value along that component."
    return EditControl(name=name, label=spec.label, minimum=lo, maximum=hi, default=spec.default_strength,
                       component_max=comp_max, help=help_text)


def _style_dim(models: ModelSet) -> int:
    """The generator's style size; 512 (the StyleGAN2 default) while its weights are not there yet."""
    try:
        return int(models.generator().style_dim)
    except CheckpointError:
        return 512


def _ganspace_components(models: ModelSet) -> int:
    return 80 if models.family.edit_kind == "ffhq" else min(80, _style_dim(models))


def strip_offsets(offset: float, steps: int) -> tuple[float, ...]:
    """``steps`` values from ``-offset`` to ``offset`` (one value: just ``offset``), without duplicates."""
    if not STRIP_STEPS[0] <= steps <= STRIP_STEPS[1]:
        raise SessionError(f"The strip needs {STRIP_STEPS[0]} to {STRIP_STEPS[1]} steps, got {steps}.")
    values = [offset] if steps == 1 or offset == 0 else np.linspace(-offset, offset, steps).tolist()
    out: list[float] = []
    for v in values:
        v = float(f"{v:.6g}")
        if v not in out:
            out.append(v)
    return tuple(out)


def edit_strengths(name: str, codes: torch.Tensor, offsets: Sequence[float]) -> list[float]:
    """Registry strengths for slider offsets: the offsets themselves, except for target-mode GANSpace edits,
    where strength = the codes' own coordinate (W+ layer 0 of ``codes`` (1, n_latent, dim)) + offset, clipped."""
    spec = get_edit(name)
    if spec.kind == "ganspace" and spec.mode == "target":
        own = float(coordinate(codes.float(), load_pca(data_file(spec.file)), int(spec.component))[0])
        lo, hi = spec.strength_range
        return [min(hi, max(lo, own + o)) for o in offsets]
    return [float(o) for o in offsets]


def edit_results(models: ModelSet, state: VisitorState, name: str, offset: float, *, component: Optional[int] = None,
                 steps: int = 5, batch_size: int = 8, cache_dir: Optional[Path] = None) -> VisitorState:
    """Apply edit ``name`` to EVERY inversion of the state: a strip of ``steps`` offsets per method plus the
    image and codes at ``offset``. Offset 0 reuses the reconstruction (it is the identity). A PTI result whose
    tuned generator was released (:class:`TunedCache`) is dropped from the returned state (the caller can tell
    the visitor); when it is the only result, :class:`SessionError` says to run PTI again."""
    if not state.results:
        raise SessionError("Invert the photo first (step 2).")
    freed = [m for m, r in state.results.items() if r.tuned is not None and r.tuned.generator is None]
    if freed:
        if len(freed) == len(state.results):
            state.results[freed[0]].full_inversion()  # raises the plain message
        state = replace(state, results={m: r for m, r in state.results.items() if m not in freed})
    spec = get_edit(name)
    if spec.generators is not None and models.family.edit_kind not in spec.generators:
        raise SessionError(f"The edit {spec.label!r} is made for the FFHQ generator; choose another edit.")
    lo, hi = spec.strength_range
    if not (math.isfinite(offset) and lo <= offset <= hi):
        raise SessionError(f"The strength of {spec.label!r} must be between {lo:g} and {hi:g}.")
    if spec.is_explorer and component is None:
        component = 0
    request = EditRequest(name, component=int(component) if spec.is_explorer else None)
    offsets = strip_offsets(offset, steps)
    wanted = offsets if offset in offsets else (*offsets, offset)
    base = _LoadErrorsAsCheckpointErrors(models).generator()
    device = models.device
    strips = {}
    for method, result in state.results.items():
        inv = _inversion_to(result.full_inversion(), device, copy_generator=True)
        strengths = edit_strengths(name, inv.w_plus, wanted)
        todo = [s for o, s in zip(wanted, strengths) if o != 0]
        images: dict[float, Image.Image] = {}
        codes: dict[float, torch.Tensor] = {}
        if todo:
            with torch.no_grad():
                rendered = render_edits(inv, [request], todo, base_generator=base, batch_size=batch_size,
                                        generator_kind=models.family.edit_kind, cache_dir=cache_dir)
            from editing import apply_edits

            edited_codes = apply_edits(inv, [request], generator=base, generator_kind=models.family.edit_kind,
                                       strengths=todo, cache_dir=cache_dir)
            nonzero = [o for o in wanted if o != 0]
            for i, o in enumerate(nonzero):
                images[o] = to_pil(rendered[i:i + 1])
                codes[o] = edited_codes[i:i + 1].detach().cpu()
        if 0 in wanted:
            images[0.0] = result.reconstruction
            codes[0.0] = result.inversion.w_plus.detach().cpu()
        strips[method] = EditStrip(method=method, offsets=offsets, images=tuple(images[o] for o in offsets),
                                   edited=images[offset], edited_codes=codes[offset])
    outcome = EditOutcome(name=name, offset=float(offset), component=request.component, strips=strips)
    return replace(state, edit=outcome, pasted=None, pasted_method=None)


# --------------------------------------------------------------------------------------------- paste back

def paste_result(state: VisitorState, method: Optional[str] = None, *, feather: float = 0.1) -> VisitorState:
    """Warp ``method``'s edited face (its reconstruction when nothing was edited) back into the photo."""
    if state.photo is None or state.aligned is None:
        raise SessionError("Align a photo first (step 1).")
    if not state.results:
        raise SessionError("Invert the photo first (step 2).")
    method = method or next(iter(state.results))
    if method not in state.results:
        raise SessionError(f"{METHODS[method].label if method in METHODS else method} has no result yet; "
                           f"choose one of: {', '.join(r.label for r in state.results.values())}.")
    face = state.edit.strips[method].edited if state.edit is not None else state.results[method].reconstruction
    pasted = alignment.paste_back(state.photo.image, face, state.aligned, feather=feather)
    return replace(state, pasted=pasted, pasted_method=method)


# --------------------------------------------------------------------------------------------- export

def safe_name(method: str) -> str:
    """A file-name-safe form of a method key (``w+`` -> ``wplus``)."""
    return re.sub(r"[^a-z0-9_-]", "_", method.lower().replace("+", "plus"))


def export_files(state: VisitorState, folder: Path, *, app_name: str = "stylegan2-face-inversion") -> list[Path]:
    """Write the visitor's images (PNG), codes (.npy) and ``settings.json`` into ``folder`` plus a ``.zip`` of
    them all (the last path returned). File names are fixed by the app, never taken from uploads."""
    if state.aligned is None or not state.results:
        raise SessionError("Nothing to download yet: align and invert a photo first.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def png(name: str, image: Image.Image) -> None:
        path = folder / f"{name}.png"
        image.save(path, format="PNG")
        files.append(path)

    def npy(name: str, codes: torch.Tensor) -> None:
        path = folder / f"{name}.npy"
        np.save(path, codes.detach().cpu().float().numpy(), allow_pickle=False)
        files.append(path)

    png("aligned", state.aligned.image)
    methods: dict[str, Any] = {}
    for method, r in state.results.items():
        key = safe_name(method)
        png(f"{key}_reconstruction", r.reconstruction)
        npy(f"{key}_wplus", r.inversion.w_plus)
        entry: dict[str, Any] = {"label": r.label, "preset": r.preset,
                                 "metrics": {k: _fmt(v, 6) for k, v in r.metrics.items()},
                                 "wplus_file": f"{key}_wplus.npy", "wplus_shape": list(r.inversion.w_plus.shape)}
        if r.inversion.generator is not None or r.tuned is not None:
            entry["note"] = "these codes reproduce the photo only with the PTI-tuned generator (not exported)"
        if state.edit is not None and method in state.edit.strips:
            strip = state.edit.strips[method]
            png(f"{key}_edited", strip.edited)
            npy(f"{key}_edited_wplus", strip.edited_codes)
        methods[method] = entry
    if state.pasted is not None:
        png("pasted_back", state.pasted)
    first = next(iter(state.results.values()))
    settings = {
        "app": app_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_family": first.family,
        "generator_size": int(first.inversion.image.shape[-1]),
        "seed": state.seed,
        "face_index": state.face_index,
        "faces_found": len(state.photo.faces) if state.photo is not None else None,
        "aligned_size": state.aligned.output_size,
        "identity_model": IDENTITY_MODEL,
        "methods": methods,
        "edit": None if state.edit is None else {
            "name": state.edit.name, "offset": state.edit.offset, "component": state.edit.component,
            "strip_offsets": list(next(iter(state.edit.strips.values())).offsets) if state.edit.strips else []},
        "pasted_back_method": state.pasted_method,
    }
    path = folder / "settings.json"
    path.write_text(json.dumps(settings, indent=2, allow_nan=False))
    files.append(path)
    archive = folder / "inversion_results.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, arcname=f.name)
    files.append(archive)
    return files


def sweep_old(root: Path, *, max_age_s: float = 3600.0, now: Optional[float] = None) -> int:
    """Delete sub-folders of ``root`` older than ``max_age_s`` (old exports); returns how many were removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for child in root.iterdir():
        try:
            if child.is_dir() and now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed


# --------------------------------------------------------------------------------------------- status text

_PIECE_LABEL = {"generator": "generator", "encoder:e4e": "e4e encoder", "encoder:psp": "pSp encoder",
                "lpips": "LPIPS (VGG16)", "identity": f"identity ({IDENTITY_MODEL})"}


def _file_line(st: FileStatus) -> str:
    if st.state == "present":
        return f"`{st.name}` ready"
    if st.state == "downloading":
        if st.bytes_total:
            share = 100 * st.bytes_done / st.bytes_total
            return f"`{st.name}` downloading {share:.0f}% of {st.bytes_total / 1e6:,.0f} MB"
        return f"`{st.name}` downloading ({st.bytes_done / 1e6:,.0f} MB so far)"
    if st.state == "failed":
        return f"`{st.name}` **failed**: {st.message}"
    return f"`{st.name}` missing: {st.message}"


def status_markdown(models: ModelSet, file_present: FilePresent,
                    statuses: Optional[Mapping[str, FileStatus]] = None) -> str:
    """Plain status for the visitor: which methods can run with this family, and each needed file's state."""
    status = method_status(models, file_present)
    ready = [METHODS[m].label for m, (ok, _) in status.items() if ok]
    waiting = [reason for ok, reason in status.values() if not ok]
    lines = [f"**{models.family.label}** — methods ready: {', '.join(ready) if ready else 'none yet'}."]
    if waiting:
        lines.append("Not yet: " + "; ".join(waiting) + ".")
    extras = [label for piece, label in _PIECE_LABEL.items()
              if piece in ("lpips", "identity") and not piece_present(models, piece, file_present)
              and (piece != "identity" or models.family.name == "ffhq")]
    if extras:
        lines.append("Metrics not available yet: " + ", ".join(extras) + " (shown as empty).")
    names = [n for piece in _PIECE_LABEL for n in _piece_files(models, piece) if n in (statuses or {})]
    if names:
        lines.append("Files:\n" + "\n".join(f"- {_file_line(statuses[n])}" for n in dict.fromkeys(names)))
    return "\n\n".join(lines)


def family_banner(model_sets: Mapping[str, ModelSet], chosen: str, file_present: FilePresent,
                  statuses: Optional[Mapping[str, FileStatus]] = None) -> str:
    """A one-line warning when the FFHQ generator is missing (and what the app uses instead), else ''."""
    ffhq = model_sets.get("ffhq")
    if ffhq is None or piece_present(ffhq, "generator", file_present):
        return ""
    states = {(statuses or {})[n].state for n in ffhq.family.generator_files if n in (statuses or {})}
    if states & {"downloading", "missing"}:  # "missing": queued in the downloader
        why, then = "still downloading", "meanwhile"
    elif states and states <= {"failed"}:
        why, then = "not available (the download failed; see *Model files and status*)", "instead"
    else:
        why, then = "not available yet", "meanwhile"
    others = [m for k, m in model_sets.items() if k != "ffhq" and piece_present(m, "generator", file_present)]
    if others:
        return f"The FFHQ 1024 weights are {why}, so the app works on **{others[0].family.label}** {then}."
    return f"The FFHQ 1024 weights are {why}, and no other model is present: inversion cannot run yet."


__all__ = [
    "ALIGN_SIZE", "EditControl", "EditOutcome", "EditStrip", "IDENTITY_MODEL", "METHOD_ORDER", "METRIC_COLUMNS",
    "MethodResult", "Photo", "SessionError", "Skipped", "TunedCache", "TunedGenerator", "VisitorState", "WORK_MAX_SIDE", "add_result",
    "align_photo", "default_family", "edit_choices", "edit_control", "edit_results", "edit_strengths",
    "export_files", "face_thumbnails", "family_banner", "file_present_from", "method_status", "metrics_rows",
    "model_input", "new_state", "open_photo", "order_methods", "paste_result", "photo_notes", "piece_present",
    "run_inversions", "safe_name", "status_markdown", "strip_offsets", "sweep_old", "to_pil", "to_tensor",
    "tradeoff_points",
]
