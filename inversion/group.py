"""All faces of a group photo: align every face (reading order), invert them with encoder passes batched over
the faces, apply one edit to all, and paste every edited face back into the one photo.

Pure functions over the session's states (no gradio). A :class:`Group` holds one
:class:`~inversion.session.VisitorState` per face, all sharing the photo. Paste-back blends each face through
a mask that follows the face (hull of the jaw and brow landmarks, raised to the hairline, grown a little, then
feathered with a Gaussian), so there is no hard edge and no colour step; pixels where every mask is 0 are the
input's own, bit for bit.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from inversion import align as alignment
from inversion import session as S
from inversion.checkpoints import CheckpointError
from inversion.methods import StartCache
from inversion.methods.starts import encoder_input
from inversion.models import ModelSet

MASK_GROW = 0.12
"""The face hull is grown by this fraction of its size before feathering (covers the jaw line and hairline)."""
MASK_FEATHER = 0.06
"""Gaussian sigma of the mask's edge, as a fraction of the face size (eye-to-chin scale)."""
ENCODERS = ("e4e", "psp")


@dataclass(frozen=True)
class Group:
    """Every face of one photo: ``faces[i]`` is face ``i`` (reading order) with its alignment, results and edit;
    ``pasted`` is the photo with every face pasted back (None until :func:`paste_all`)."""

    photo: S.Photo
    faces: tuple[S.VisitorState, ...]
    pasted: Optional[Image.Image] = None
    pasted_method: Optional[str] = None


# --------------------------------------------------------------------------------------------- faces
def reading_order(faces: Sequence[alignment.Face]) -> list[int]:
    """Indices of ``faces`` in reading order: rows top to bottom (a face joins a row when its centre is within
    half a face height of the row's first face), left to right within a row."""
    centres = [((f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2, f.bbox[3] - f.bbox[1]) for f in faces]
    by_y = sorted(range(len(faces)), key=lambda i: centres[i][1])
    rows: list[list[int]] = []
    for i in by_y:
        if rows and centres[i][1] - centres[rows[-1][0]][1] < 0.5 * max(centres[rows[-1][0]][2], 1.0):
            rows[-1].append(i)
        else:
            rows.append([i])
    return [i for row in rows for i in sorted(row, key=lambda j: centres[j][0])]


def align_all(photo: S.Photo, *, max_faces: int = S.MAX_FACES) -> Group:
    """Align up to ``max_faces`` faces of ``photo`` (the most confident ones), in reading order."""
    if not photo.faces:
        raise S.SessionError("No face was found in the photo.")
    best = list(range(min(len(photo.faces), max_faces)))  # photo.faces is best-first
    order = [best[i] for i in reading_order([photo.faces[j] for j in best])]
    states = tuple(S.align_photo(S.new_state(), photo, i) for i in order)
    return Group(photo=photo, faces=states)


# --------------------------------------------------------------------------------------------- inversion
@torch.no_grad()
def batched_starts(models: ModelSet, images: Sequence[torch.Tensor], kinds: Sequence[str]) -> StartCache:
    """One encoder pass per encoder over all ``images`` ((1, 3, S, S) each), and one batched synthesis of the
    codes, stored in a :class:`StartCache` the per-face runs then read from. Missing encoders are left out."""
    cache = StartCache()
    if not images:
        return cache
    batch = torch.cat([im.to(models.device, torch.float32) for im in images])
    for kind in kinds:
        try:
            bundle = models.encoder(kind)
        except (CheckpointError, OSError):
            continue
        codes = bundle.encode(encoder_input(batch, int(bundle.opts.get("input_size", 256))))
        drawn = models.generator().synthesis(codes)
        cache.encoder_passes += 1
        for i in range(len(images)):
            cache.add(models, kind, batch[i:i + 1], codes[i:i + 1], drawn[i:i + 1])
    return cache


def invert_all(models: ModelSet, group: Group, methods: Sequence[str], *,
               presets: Optional[Mapping[str, str]] = None, seed: int = 0,
               file_present: Optional[S.FilePresent] = None, cancel: Optional[threading.Event] = None,
               on_face: Optional[Callable[[int, int], None]] = None) -> tuple[Group, list[S.Skipped]]:
    """Invert every face with ``methods``: encoders (and the e4e start of W, W+ and PTI) in one batched pass over
    the faces, then each face's methods as :func:`~inversion.session.run_inversions` runs them. Returns the
    group with every face's results and the methods skipped (once each). ``on_face(i, n)`` reports progress."""
    size = models.generator().size
    images = [S.model_input(face, size) for face in group.faces]
    wanted = S.order_methods(methods)
    kinds = [k for k in ENCODERS if k in wanted or (k == "e4e" and any(m in ("w", "w+", "pti") for m in wanted))]
    starts = batched_starts(models, images, kinds)
    faces, skipped = [], {}
    for i, (state, image) in enumerate(zip(group.faces, images)):
        if on_face is not None:
            on_face(i, len(images))
        for item in S.run_inversions(models, image, wanted, presets=presets, seed=seed, cancel=cancel,
                                     file_present=file_present, starts=starts):
            if isinstance(item, S.Skipped):
                skipped.setdefault(item.method, item)
            else:
                state = S.add_result(state, item)
        faces.append(replace(state, seed=seed))
    return replace(group, faces=tuple(faces), pasted=None, pasted_method=None), list(skipped.values())


def edit_all(models: ModelSet, group: Group, name: str, offset: float, *, component: Optional[int] = None,
             cache_dir=None) -> Group:
    """The same edit (``name`` at ``offset``) applied to every face's results."""
    faces = tuple(S.edit_results(models, face, name, offset, component=component, steps=1, cache_dir=cache_dir)
                  for face in group.faces)
    return replace(group, faces=faces, pasted=None, pasted_method=None)


# --------------------------------------------------------------------------------------------- paste back
def face_mask(aligned: alignment.AlignedFace, size: tuple[int, int], *, grow: float = MASK_GROW,
              feather: float = MASK_FEATHER) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A feathered mask that follows the face: ``(box, mask)`` with ``mask`` float32 in [0, 1] over photo region
    ``box`` (x0, y0, x1, y1), exactly 0 outside the grown, feathered face hull and outside the aligned crop."""
    from scipy.ndimage import gaussian_filter

    lm = np.asarray(aligned.landmarks, dtype=np.float64)
    jaw, brows = lm[0:17], lm[17:27]
    chin_to_brow = np.linalg.norm(lm[8] - brows.mean(axis=0))
    up = brows.mean(axis=0) - lm[8]
    up /= max(np.linalg.norm(up), 1e-6)
    forehead = brows + up * 0.45 * chin_to_brow  # brows raised to about the hairline
    points = np.concatenate([jaw, forehead[::-1]])
    centre = points.mean(axis=0)
    points = centre + (points - centre) * (1.0 + grow)
    sigma = max(feather * chin_to_brow, 1.0)
    pad = int(np.ceil(3 * sigma)) + 2
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + pad
    crop_box = alignment.quad_region(aligned.quad, size)
    if crop_box is None:
        return (0, 0, 0, 0), np.zeros((0, 0), np.float32)
    box = (max(x0, crop_box[0]), max(y0, crop_box[1]), min(x1, crop_box[2]), min(y1, crop_box[3]))
    if box[2] <= box[0] or box[3] <= box[1]:
        return (0, 0, 0, 0), np.zeros((0, 0), np.float32)
    canvas = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
    ImageDraw.Draw(canvas).polygon([(float(x - box[0]), float(y - box[1])) for x, y in points], fill=255)
    mask = gaussian_filter(np.asarray(canvas, dtype=np.float32) / 255.0, sigma, mode="constant")
    inside = np.asarray(alignment.warp_to_photo(Image.new("L", (64, 64), 255), aligned.quad, box), np.float32) / 255
    mask = np.minimum(mask, inside)  # never outside what the aligned crop covers
    mask[mask < 1.0 / 512] = 0.0
    return box, mask.astype(np.float32)


def paste_faces(image: Image.Image, faces: Sequence[tuple[alignment.AlignedFace, Image.Image]]) -> Image.Image:
    """``image`` with every ``(aligned, edited crop)`` warped back and blended through :func:`face_mask`.

    Faces are pasted in order (a later one over an earlier one where they overlap). Pixels outside every mask
    keep their exact values.
    """
    out = np.array(alignment.to_rgb(image), dtype=np.uint8)
    size = (out.shape[1], out.shape[0])
    for aligned, edited in faces:
        box, mask = face_mask(aligned, size)
        if mask.size == 0:
            continue
        warped = np.asarray(alignment.warp_to_photo(alignment.to_rgb(edited), aligned.quad, box), np.float32)
        region = out[box[1]:box[3], box[0]:box[2]]
        blend = region.astype(np.float32) + (warped - region) * mask[:, :, None]
        touched = mask > 0
        region[touched] = np.clip(np.rint(blend[touched]), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "RGB")


def paste_all(group: Group, method: Optional[str] = None) -> Group:
    """Every face's edited result of ``method`` (its reconstruction when nothing was edited) pasted back into
    the photo, in one image."""
    if not group.faces or not group.faces[0].results:
        raise S.SessionError("Invert the faces first (step 2).")
    method = method or next(iter(group.faces[0].results))
    pairs = []
    for face in group.faces:
        if method not in face.results:
            raise S.SessionError(f"{method!r} has no result for every face; choose a method that ran.")
        strip = face.edit.strips.get(method) if face.edit is not None else None
        pairs.append((face.aligned, strip.edited if strip is not None else face.results[method].reconstruction))
    return replace(group, pasted=paste_faces(group.photo.image, pairs), pasted_method=method)


def run_all(models: ModelSet, photo: S.Photo, methods: Sequence[str], *, method: Optional[str] = None,
            edit: Optional[tuple[str, float, Optional[int]]] = None, presets: Optional[Mapping[str, str]] = None,
            seed: int = 0, file_present: Optional[S.FilePresent] = None,
            cancel: Optional[threading.Event] = None) -> tuple[Group, list[S.Skipped]]:
    """The whole all-faces mode in one call: align every face, invert, apply ``edit`` ``(name, offset,
    component)`` to all (None: no edit) and paste ``method``'s results (default: the first that ran) back."""
    group, skipped = invert_all(models, align_all(photo), methods, presets=presets, seed=seed,
                                file_present=file_present, cancel=cancel)
    if not group.faces[0].results:
        reasons = "; ".join(s.reason for s in skipped) or "no method was chosen"
        raise S.SessionError(f"No method could run: {reasons}.")
    if edit is not None and edit[1] != 0:
        group = edit_all(models, group, edit[0], edit[1], component=edit[2])
    if method is not None and method not in group.faces[0].results:
        method = None
    return paste_all(group, method), skipped
