"""Open a visitor's photo, find and align its faces, and hand the aligned face to a model family."""
from __future__ import annotations

from dataclasses import replace

import torch
from PIL import Image

from inversion import align as alignment
from inversion.session.state import ALIGN_SIZE, WORK_MAX_SIDE, Photo, SessionError, VisitorState, to_tensor


def open_photo(source: alignment.ImageSource, *, max_side: int = WORK_MAX_SIDE) -> Photo:
    """Load a photo (path, bytes or PIL; EXIF rotation applied), downscale it past ``max_side``, find faces.

    Raises :class:`~inversion.align.InvalidImageError` for unreadable files and
    :class:`~inversion.align.NoFaceError` when no face is found.
    """
    image = alignment.load_image(source)
    notes = []
    original = image.size
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        notes.append(f"The photo ({image.width}x{image.height}) was reduced to {size[0]}x{size[1]} pixels.")
        image = image.resize(size, Image.Resampling.LANCZOS)
    faces = alignment.detect_faces(image)
    if not faces:
        msg = "No face found in the photo. Please use a photo with a clearly visible, roughly frontal face"
        if image.size != original:
            raise alignment.NoFaceError(
                f"{msg}. The photo ({original[0]}x{original[1]}) had to be reduced to {image.width}x{image.height} "
                "pixels, which makes the faces in it small: crop it around the face and try again.")
        if min(image.size) < 80:
            raise alignment.FaceTooSmallError(f"{msg}; this image is only {image.width}x{image.height} pixels.")
        raise alignment.NoFaceError(msg + ".")
    return Photo(image=image, faces=tuple(faces), notes=tuple(notes))


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
    aligned = alignment.align_face(photo.image, ALIGN_SIZE, landmarks=photo.faces[face_index].landmarks)
    aligned = replace(aligned, face=photo.faces[face_index])
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
