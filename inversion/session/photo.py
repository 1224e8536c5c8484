"""Open a visitor's photo, find and align its faces, and hand the aligned face to a model family."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from PIL import Image

from inversion import align as alignment
from inversion.session.state import ALIGN_SIZE, MAX_FACES, WORK_MAX_SIDE, Photo, SessionError, VisitorState, to_tensor


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
