"""FFHQ-style face alignment: load a photo, find faces, crop/rotate to the FFHQ frame, paste edits back.

The alignment from 68 landmarks onward reproduces the pSp / e4e / PTI ``align_face`` (itself from NVlabs'
``download_ffhq.py``) byte for byte: same quad, same shrink / crop / reflect-pad + blur branches, Pillow's
``QUAD`` transform with bilinear sampling.  Face *selection* differs on purpose: the reference keeps the last
(least confident) dlib detection, :func:`detect_faces` orders by detector score and ``face_index=0`` is the
best one.  Landmarks are computed on the pixels we are given (a JPEG decoded by Pillow), not on dlib's own
JPEG decode, so for JPEG inputs they may differ from the reference by a few pixels.

Coordinates are ``(x, y)`` pixels of the image passed in, x to the right, y down.  Quads are
``(4, 2)`` float64 arrays with the corners of the output's top-left, bottom-left, bottom-right, top-right.
dlib models load lazily on first use and are cached per path.
"""
from __future__ import annotations

import functools
import importlib.util
import io
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from inversion import hog_pyramid

PREDICTOR_FILENAME = "shape_predictor_68_face_landmarks.dat"
PREDICTOR_ENV = "STYLEGAN_EDIT_DLIB_PREDICTOR"
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_DETECT_MAX_SIDE = 1600
SMALL_FACE_EYE_TO_MOUTH = 64.0  # px; below this the aligned image is a strong upscale -> warning
MIN_FACE_EYE_TO_EYE = 8.0  # px; below this the landmarks are meaningless -> FaceTooSmallError

# Landmark index groups of the 68-point (iBUG 300-W) scheme used by the alignment.
_EYE_LEFT = slice(36, 42)
_EYE_RIGHT = slice(42, 48)
_MOUTH_LEFT, _MOUTH_RIGHT = 48, 54

ImageSource = Union[str, Path, bytes, bytearray, Image.Image]


class AlignmentError(ValueError):
    """Base class of the alignment errors (the message is meant for the visitor)."""


class NoFaceError(AlignmentError):
    """No face was found in the photo."""


class FaceTooSmallError(NoFaceError):
    """A face may be present but is too small to place landmarks on."""


class InvalidImageError(AlignmentError):
    """The input is not a readable, supported image (or is too large)."""


class PredictorNotFoundError(FileNotFoundError):
    """The dlib 68-point landmark model file could not be located."""


@dataclass(frozen=True)
class Face:
    """One detected face: ``bbox`` (left, top, right, bottom), detector ``score``, ``landmarks`` (68, 2)."""

    bbox: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    subdetector: int = -1


@dataclass(frozen=True)
class AlignedFace:
    """An FFHQ-aligned crop and what is needed to map it back into the photo.

    ``image``: RGB, ``output_size`` square.  ``quad``: (4, 2) source corners (TL, BL, BR, TR) in the
    input image's pixel coordinates.  ``info``: the intermediate values of the reference algorithm
    (``shrink``, ``border``, ``crop_box``, ``pad``, ``transform_data``).  ``warnings``: plain-language
    notes for the visitor (e.g. a small face).
    """

    image: Image.Image
    landmarks: np.ndarray
    quad: np.ndarray
    qsize: float
    output_size: int
    transform_size: int
    face: Optional[Face] = None
    warnings: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- loading
def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open a photo as 8-bit RGB, upright (EXIF orientation applied), first frame only.

    Reads what Pillow reads (JPEG, PNG, WebP, AVIF with Pillow >= 11.3, TIFF, ...) and HEIC/HEIF through the
    ``pillow-heif`` plugin (registered on first use).

    Accepts a path, raw bytes or a PIL image.  Transparent images are composited on white; 16-bit and
    float images are scaled to 8 bits.  Raises :class:`InvalidImageError` for anything unreadable,
    truncated, unsupported or larger than ``max_pixels``.
    """
    if isinstance(source, Image.Image):
        image = source
        _check_size(image.size, max_pixels)
    else:
        image = _open(source, max_pixels)
    try:
        if getattr(image, "n_frames", 1) > 1:
            image.seek(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except InvalidImageError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        raise InvalidImageError(f"The image could not be read; the file may be damaged or truncated ({exc}).") from exc


def _open(source: Union[str, Path, bytes, bytearray], max_pixels: int) -> Image.Image:
    fp: Any = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray)) else Path(source)
    if isinstance(fp, Path) and not fp.is_file():
        raise InvalidImageError(f"No image file at {fp}.")
    if _brand(_head(source)) in _HEIF_BRANDS:
        register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(fp)
    except Image.DecompressionBombError as exc:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
        raise InvalidImageError(
            f"The image is too large to open safely (more than {limit:.0f} megapixels). "
            "Please use a smaller copy of the photo."
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(_unsupported_message(source)) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise InvalidImageError(f"The image could not be read; the file may be damaged ({exc}).") from exc
    _check_size(image.size, max_pixels)
    return image


_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


def _brand(head: bytes) -> Optional[bytes]:
    """The major brand of an ISO base media file (HEIF, AVIF...) from its first bytes, else None."""
    return head[8:12] if head[4:8] == b"ftyp" else None


@functools.lru_cache(maxsize=1)
def register_heif() -> bool:
    """Let Pillow open HEIC/HEIF files (the ``pillow-heif`` plugin); False when that package is missing.

    The plugin applies the file's rotation itself and resets the EXIF orientation to 1, so
    :func:`load_image`'s EXIF transpose does not rotate twice.
    """
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def _head(source: Union[str, Path, bytes, bytearray]) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:16])
    with open(source, "rb") as f:
        return f.read(16)


def _unsupported_message(source: Union[str, Path, bytes, bytearray]) -> str:
    """Why Pillow could not identify the file, in plain words (empty file, HEIC, AVIF, anything else)."""
    head = _head(source)
    if not head:
        return "The file is empty (0 bytes), so it is not an image."
    brand = _brand(head)
    if brand in _HEIF_BRANDS:
        if not register_heif():
            return ("HEIC/HEIF photos (the iPhone camera's default) need the pillow-heif package on the server, "
                    "which is missing: please convert the photo to JPEG or PNG first.")
        return ("This HEIC/HEIF file could not be read: it may be damaged or use a feature not supported here. "
                "Please convert the photo to JPEG or PNG first.")
    if brand in _AVIF_BRANDS:
        return ("This AVIF file could not be read (damaged, or this server's Pillow has no AVIF support): please "
                "convert the photo to JPEG or PNG first.")
    return "The file is not an image in a supported format (JPEG, PNG, WebP, HEIC, AVIF, GIF, BMP, TIFF...)."


def _check_size(size: tuple[int, int], max_pixels: int) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise InvalidImageError(f"The image is empty ({w}x{h} pixels).")
    if w * h > max_pixels:
        raise InvalidImageError(
            f"The image is too large: {w}x{h} pixels ({w * h / 1e6:.1f} megapixels); the limit is "
            f"{max_pixels / 1e6:.0f} megapixels. Please use a smaller copy of the photo."
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB (alpha composited on white, high bit depths scaled)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.float64) / 257.0  # 16-bit: 65535 -> 255
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8)).convert("RGB")
    if mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image))).convert("RGB")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as exc:
        raise InvalidImageError(f"Unsupported image colour mode {mode!r}.") from exc


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale a 32-bit int / float channel to uint8 by its value range.

    Floats within [0, 1] are scaled by 255; values within [0, 255] are kept; within [0, 65535] they are
    treated as 16-bit; anything else is stretched from its minimum to its maximum.
    """
    arr = values.astype(np.float64)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if np.issubdtype(values.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        arr = arr * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        arr = arr / 257.0
    else:
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return np.clip(np.rint(np.nan_to_num(arr)), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------- models
def predictor_file(predictor_path: Union[str, Path, None] = None) -> Path:
    """Locate ``shape_predictor_68_face_landmarks.dat``.

    Order: the ``predictor_path`` argument, the ``STYLEGAN_EDIT_DLIB_PREDICTOR`` environment variable,
    the ``face_recognition_models`` package (located without importing it).
    """
    candidates: list[Path] = []
    if predictor_path is not None:
        path = Path(predictor_path)
        if not path.is_file():
            raise PredictorNotFoundError(f"dlib landmark model not found at {path}.")
        return path
    env = os.environ.get(PREDICTOR_ENV)
    if env:
        candidates.append(Path(env))
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        roots = list(spec.submodule_search_locations or [])
        if spec.origin:
            roots.append(str(Path(spec.origin).parent))
        candidates += [Path(r) / "models" / PREDICTOR_FILENAME for r in roots]
    for path in candidates:
        if path.is_file():
            return path
    raise PredictorNotFoundError(
        f"The dlib 68-point face landmark model ({PREDICTOR_FILENAME}) was not found. Install it with "
        f"`pip install face_recognition_models`, or set {PREDICTOR_ENV} to the path of the .dat file."
    )


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Face alignment needs dlib: `pip install dlib-bin` (or `pip install dlib`).") from exc
    return dlib


@functools.lru_cache(maxsize=1)
def _detector() -> tuple[Any, threading.Lock]:
    return _import_dlib().get_frontal_face_detector(), threading.Lock()


@functools.lru_cache(maxsize=1)
def _single_level_detector() -> tuple[Any, threading.Lock]:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return hog_pyramid.single_level_detector(str(Path(folder) / "frontal_single_level.svm")), threading.Lock()


@functools.lru_cache(maxsize=4)
def _predictor(path: str) -> tuple[Any, threading.Lock]:
    return _import_dlib().shape_predictor(path), threading.Lock()


# ------------------------------------------------------------------------------------------- detection
def detect_faces(
    image: Image.Image,
    *,
    upsample: int = 1,
    max_side: Optional[int] = DEFAULT_DETECT_MAX_SIDE,
    predictor_path: Union[str, Path, None] = None,
) -> list[Face]:
    """Every face dlib's HOG detector finds, best score first, each with 68 landmarks.

    The detector runs with ``upsample`` pyramid-up steps (the reference uses 1) on the image.  When its longest
    side exceeds ``max_side``, faces are first located on a downscaled copy, then each box is found again at
    full resolution on a small, pyramid-aligned patch around it (:mod:`inversion.hog_pyramid`), which gives
    the box a whole-image full-resolution detection gives; landmarks are predicted at full resolution.
    ``max_side=None`` always scans the whole image at full resolution (slow on large photos).
    """
    dlib = _import_dlib()
    rgb = to_rgb(image)
    detector, det_lock = _detector()
    found: list[tuple[tuple[int, int, int, int], float, int]] = []
    if max_side is None or max(rgb.size) <= max_side:
        with det_lock:
            rects, scores, subs = detector.run(np.ascontiguousarray(np.asarray(rgb)), upsample, 0.0)
        found = [((r.left(), r.top(), r.right(), r.bottom()), float(s), int(k)) for r, s, k in zip(rects, scores, subs)]
    else:
        scale = max(rgb.size) / max_side
        size = (max(1, round(rgb.width / scale)), max(1, round(rgb.height / scale)))
        small = rgb.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        sx, sy = rgb.width / size[0], rgb.height / size[1]
        with det_lock:
            rects, scores, subs = detector.run(np.ascontiguousarray(np.asarray(small)), upsample, 0.0)
        del small
        for rect, score, sub in zip(rects, scores, subs):
            box = (round(rect.left() * sx), round(rect.top() * sy), round((rect.right() + 1) * sx) - 1,
                   round((rect.bottom() + 1) * sy) - 1)
            hit = None
            if upsample == 1:
                single, single_lock = _single_level_detector()
                with single_lock:
                    hit = hog_pyramid.refine_box(rgb, single, box)
            if hit is not None:
                found.append((hit.box, hit.score, hit.subdetector))
            else:  # not found again at full resolution (or another upsampling): keep the scaled box
                found.append((box, float(score), int(sub)))
        found = list({f[0]: f for f in sorted(found, key=lambda f: f[1])}.values())  # one entry per box
    predictor, pred_lock = _predictor(str(predictor_file(predictor_path)))
    faces = []
    for box, score, sub in found:
        with pred_lock:
            points = _predict(predictor, dlib, rgb, box)
        faces.append(Face(bbox=tuple(float(v) for v in box), score=score, landmarks=points, subdetector=sub))
    faces.sort(key=lambda f: -f.score)
    return faces


def _predict(predictor: Any, dlib: Any, image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """68 landmarks for ``box`` (l, t, r, b inclusive), read from a crop around it (bounded memory).

    The crop keeps one box size of margin on every side, which contains every pixel the predictor samples,
    so the result equals running it on the whole image.
    """
    l, t, r, b = box
    w, h = r - l + 1, b - t + 1
    x0, y0 = max(l - w, 0), max(t - h, 0)
    x1, y1 = min(r + w + 1, image.width), min(b + h + 1, image.height)
    if x1 <= x0 or y1 <= y0:
        x0, y0, x1, y1 = 0, 0, image.width, image.height
    crop = np.ascontiguousarray(np.asarray(image.crop((x0, y0, x1, y1))))
    shape = predictor(crop, dlib.rectangle(l - x0, t - y0, r - x0, b - y0))
    points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
    return points + np.array([x0, y0], dtype=np.float64)


# ------------------------------------------------------------------------------------------- alignment
def face_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop square for 68 landmarks: ``(quad (4, 2) TL/BL/BR/TR, qsize)`` in float64."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_left = np.mean(lm[_EYE_LEFT], axis=0)
    eye_right = np.mean(lm[_EYE_RIGHT], axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[_MOUTH_LEFT] + lm[_MOUTH_RIGHT]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    # Eye line combined with the eye->mouth vector turned by 90 degrees, then scaled.
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x /= np.hypot(x[0], x[1])
    x *= max(np.hypot(eye_to_eye[0], eye_to_eye[1]) * 2.0, np.hypot(eye_to_mouth[0], eye_to_mouth[1]) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(x[0], x[1]) * 2)


def _box(quad: np.ndarray) -> tuple[int, int, int, int]:
    return (
        int(np.floor(min(quad[:, 0]))),
        int(np.floor(min(quad[:, 1]))),
        int(np.ceil(max(quad[:, 0]))),
        int(np.ceil(max(quad[:, 1]))),
    )


def render_aligned(
    image: Image.Image, quad: np.ndarray, qsize: float, *, output_size: int, transform_size: int
) -> tuple[Image.Image, dict[str, Any]]:
    """Cut the quad out of ``image`` (RGB) as the reference does: shrink, crop, reflect-pad + blur, QUAD warp.

    Returns the aligned image and the intermediate values (``shrink`` (applied only when > 1),
    ``shrink_applied``, ``border``, ``crop_box`` / ``pad`` (None when skipped), ``transform_data``).
    """
    quad = np.array(quad, dtype=np.float64)
    img = image
    shrink = int(np.floor(qsize / output_size * 0.5))
    info: dict[str, Any] = {"shrink": shrink, "shrink_applied": shrink > 1, "crop_box": None, "pad": None}
    if shrink > 1:
        size = (int(np.rint(float(img.width) / shrink)), int(np.rint(float(img.height) / shrink)))
        img = img.resize(size, Image.Resampling.LANCZOS)
        quad /= shrink
        qsize /= shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    info["border"] = border

    l, t, r, b = _box(quad)
    crop = (max(l - border, 0), max(t - border, 0), min(r + border, img.width), min(b + border, img.height))
    if crop[2] - crop[0] < img.width or crop[3] - crop[1] < img.height:
        img = img.crop(crop)
        quad -= crop[0:2]
        info["crop_box"] = crop

    l, t, r, b = _box(quad)
    pad = (max(border - l, 0), max(border - t, 0), max(r - img.width + border, 0), max(b - img.height + border, 0))
    if max(pad) > border - 4:
        side = int(np.rint(qsize * 0.3))
        pad = tuple(max(p, side) for p in pad)
        img = _pad_and_blend(img, pad, blur=qsize * 0.02)
        quad += pad[0:2]
        info["pad"] = pad

    data = (quad + 0.5).flatten()
    info["transform_data"] = data
    out = img.transform((transform_size, transform_size), Image.Transform.QUAD, data, Image.Resampling.BILINEAR)
    if output_size < transform_size:
        out = out.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return out, info


def _pad_and_blend(img: Image.Image, pad: tuple[int, ...], *, blur: float) -> Image.Image:
    """Mirror-pad by (left, top, right, bottom), blur the padding and fade it to the median colour.

    The image is float32; the blend weights are float64 (the reference divides float32 pixel indices by
    numpy int64 pad widths), so each blend is computed in float64 and stored as float32.  Blends run in
    row blocks to bound the float64 temporaries.
    """
    from scipy.ndimage import gaussian_filter

    left, top, right, bottom = (int(p) for p in pad)
    arr = np.pad(np.asarray(img), ((top, bottom), (left, right), (0, 0)), mode="reflect").astype(np.float32)
    h, w, _ = arr.shape
    xs = np.arange(w, dtype=np.float64)[None, :]
    # Horizontal / vertical parts of the mask: 1 at the outer edge, 0 one pad width in, negative inside.
    mx = 1.0 - np.minimum(xs / left, (w - 1 - xs) / right)
    blurred = gaussian_filter(arr, [blur, blur, 0])

    def mask_rows(r0: int, r1: int) -> np.ndarray:
        ys = np.arange(r0, r1, dtype=np.float64)[:, None]
        my = 1.0 - np.minimum(ys / top, (h - 1 - ys) / bottom)
        return np.maximum(mx, my)[:, :, None]

    step = max(1, 4_000_000 // (w * 3))
    for r0 in range(0, h, step):
        rows = slice(r0, min(r0 + step, h))
        arr[rows] += (blurred[rows] - arr[rows]) * np.clip(mask_rows(rows.start, rows.stop) * 3.0 + 1.0, 0.0, 1.0)
    del blurred
    median = np.array([np.median(arr[:, :, c]) for c in range(arr.shape[2])], dtype=np.float32)
    for r0 in range(0, h, step):
        rows = slice(r0, min(r0 + step, h))
        arr[rows] += (median - arr[rows]) * np.clip(mask_rows(rows.start, rows.stop), 0.0, 1.0)
    np.rint(arr, out=arr)
    np.clip(arr, 0, 255, out=arr)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def align_face(
    image: Image.Image,
    output_size: int = 1024,
    face_index: int = 0,
    *,
    transform_size: Optional[int] = None,
    landmarks: Optional[np.ndarray] = None,
    predictor_path: Union[str, Path, None] = None,
    max_side: Optional[int] = DEFAULT_DETECT_MAX_SIDE,
) -> AlignedFace:
    """FFHQ-align face ``face_index`` (0 = best detection) of ``image`` to an ``output_size`` square.

    ``transform_size`` (default ``output_size``) is the size the quad is warped to before a final LANCZOS
    resize.  Give ``landmarks`` (68, 2) to skip detection.  The image is used as given (no EXIF
    rotation; use :func:`load_image` for files).  Raises :class:`NoFaceError` / :class:`FaceTooSmallError`.
    """
    rgb = to_rgb(image)
    face = None
    if landmarks is None:
        faces = detect_faces(rgb, predictor_path=predictor_path, max_side=max_side)
        if not faces:
            raise _no_face_error(rgb.size)
        if not -len(faces) <= face_index < len(faces):
            raise AlignmentError(f"Face {face_index} was requested, but the photo has {len(faces)} face(s).")
        face = faces[face_index]
        landmarks = face.landmarks
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.all(np.isfinite(lm)):
        raise ValueError(f"landmarks must be a finite (68, 2) array, got shape {lm.shape}")

    eye_to_eye = float(np.hypot(*(lm[_EYE_RIGHT].mean(0) - lm[_EYE_LEFT].mean(0))))
    eye_to_mouth = float(np.hypot(*((lm[_MOUTH_LEFT] + lm[_MOUTH_RIGHT]) / 2 - (lm[_EYE_LEFT].mean(0) + lm[_EYE_RIGHT].mean(0)) / 2)))
    if eye_to_eye < MIN_FACE_EYE_TO_EYE:
        raise FaceTooSmallError(
            f"The face is too small to align: its eyes are only {eye_to_eye:.0f} px apart. "
            "Please use a closer or higher-resolution photo."
        )
    quad, qsize = face_quad(lm)
    t_size = output_size if transform_size is None else int(transform_size)
    out, info = render_aligned(rgb, quad, qsize, output_size=output_size, transform_size=t_size)
    notes = []
    if eye_to_mouth < SMALL_FACE_EYE_TO_MOUTH:
        notes.append(
            f"The face is small (about {eye_to_mouth:.0f} px from eyes to mouth); the aligned image is enlarged "
            f"{output_size / qsize:.1f}x and will look soft. A closer or higher-resolution photo works better."
        )
    return AlignedFace(
        image=out, landmarks=lm, quad=quad, qsize=qsize, output_size=output_size, transform_size=t_size,
        face=face, warnings=tuple(notes), info=info,
    )


def _no_face_error(size: tuple[int, int]) -> NoFaceError:
    msg = "No face found in the photo. Please use a photo with a clearly visible, roughly frontal face"
    if min(size) < 80:
        return FaceTooSmallError(f"{msg}; this image is only {size[0]}x{size[1]} pixels, too small to find a face in.")
    return NoFaceError(msg + ".")


# ------------------------------------------------------------------------------------------ paste back
def paste_back(
    original: Image.Image, aligned_edit: Image.Image, aligned: AlignedFace, *, feather: float = 0.1
) -> Image.Image:
    """Warp an (edited) aligned crop back into ``original`` and blend it in with a feathered mask.

    ``original`` must be the image ``aligned`` was computed from (same coordinates); ``aligned_edit`` may
    have any size.  ``feather`` is the fraction of the crop side over which the mask ramps from 0 at the
    crop edge to 1.  Only the quad's bounding box is touched.  Returns a new RGB image.
    """
    base = to_rgb(original).copy()
    box = quad_region(aligned.quad, base.size)
    if box is None:
        return base
    warped = warp_to_photo(to_rgb(aligned_edit), aligned.quad, box)
    warped_mask = warp_to_photo(_feather_mask(aligned_edit.size, feather), aligned.quad, box)
    base.paste(Image.composite(warped, base.crop(box), warped_mask), box)
    return base


def quad_region(quad: np.ndarray, size: tuple[int, int]) -> Optional[tuple[int, int, int, int]]:
    """The photo pixels (x0, y0, x1, y1; exclusive ends) an aligned crop covers, clipped; None when outside."""
    x0, y0, x1, y1 = _box(np.asarray(quad) + 0.5)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, size[0]), min(y1, size[1])
    return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)


def warp_to_photo(crop: Image.Image, quad: np.ndarray, box: tuple[int, int, int, int]) -> Image.Image:
    """An aligned crop (any size, any mode) warped into photo region ``box`` (bilinear; 0 outside the quad)."""
    corners = np.asarray(quad, dtype=np.float64) + 0.5  # Pillow's continuous coordinates
    tl, bl, tr = corners[0], corners[1], corners[3]
    m_inv = np.linalg.inv(np.column_stack([tr - tl, bl - tl]))  # photo offset -> (u, v) in [0, 1]^2
    a = np.diag([crop.width, crop.height]).astype(np.float64) @ m_inv
    c = a @ (np.array(box[:2], dtype=np.float64) - tl)
    region = (box[2] - box[0], box[3] - box[1])
    return crop.transform(region, Image.Transform.AFFINE, (a[0, 0], a[0, 1], c[0], a[1, 0], a[1, 1], c[1]),
                          Image.Resampling.BILINEAR)


def _feather_mask(size: tuple[int, int], feather: float) -> Image.Image:
    """Mode-L mask: 0 at the border, smooth ramp to 255 over ``feather`` of the side (smoothstep)."""
    w, h = size
    u = (np.arange(w, dtype=np.float64) + 0.5) / w
    v = (np.arange(h, dtype=np.float64) + 0.5) / h
    dist = np.minimum(np.minimum(u, 1 - u)[None, :], np.minimum(v, 1 - v)[:, None])
    t = np.clip(dist / max(feather, 1e-6), 0.0, 1.0)
    return Image.fromarray(np.rint(255 * t * t * (3 - 2 * t)).astype(np.uint8), "L")
