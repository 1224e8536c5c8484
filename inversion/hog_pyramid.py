"""Full-resolution dlib face boxes for large photos, without scanning the full-resolution pyramid.

dlib's frontal face detector (``detector(image, 1)``) upsamples the photo to ``(2W + 2) x (2H + 1)`` pixels,
then builds a ``pyramid_down<6>`` pyramid: level ``k + 1`` is a bilinear resize of level ``k`` to
``floor(5/6)`` of its size (dlib's ``resize_image``: output pixel ``c`` samples input ``c * (n_in - 1) /
(n_out - 1)``, float32 weights, truncated to uint8).  An 80 px window slides over every level in steps of one
8 px HOG cell; a hit at level ``l`` is mapped back with ``p -> 1.2 p + 0.3`` (``l`` times, rounded), then
``p -> p / 2 - (1.25, 0.75)`` (rounded).

A face whose box is ``s`` px wide is found at the level where it is about 73 px wide, ``l ~ log(2 s / 73) /
log(1.2)``.  So instead of the whole pyramid (about 3.3 x 4 x the photo's pixels), :func:`refine_box` rebuilds
only a small patch of levels ``l - 1 .. l + 1`` around a face located on a downscaled copy:

* the patch's origin is a multiple of the cell size in that level's own pixel grid, so its HOG cells and
  windows coincide with the whole-image ones and a hit maps back through dlib's own formula to the same box;
* its pixels follow the whole-image level: the last :data:`EXACT_STEPS` resizes repeat dlib's arithmetic
  (float32 lanes, truncation) on the patch, the steps below them are one antialiased Pillow resize of the
  photo onto the same pixel grid (the grid positions themselves are exact);
* the margin (:data:`MARGIN_CELLS` cells around the window) keeps every window that overlaps the face
  away from the patch border.

The detector runs on each patch with ``upsample=0``; only hits at the patch's own level count (box width
:data:`LEVEL_BOX`), the best over the candidate levels wins, as in dlib's non-maximum suppression.
Scores differ from the whole-image ones by a few hundredths (pixels below the exact steps are approximate);
boxes are equal in the cases measured (``tests/test_align_large.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from PIL import Image

CELL = 8
"""HOG cell size of dlib's frontal detector (px at a pyramid level)."""
LEVEL_BOX = 73
"""Width of a detection box at the level it was found on (px), for an 80 px window."""
MARGIN_CELLS = 6
"""Cells of real content kept around the expected window on every side."""
EXACT_STEPS = 4
"""Pyramid steps below the scanned level computed with dlib's own resize arithmetic."""
TIE = 0.12
"""Score gap below which two different candidate boxes are scored again, more exactly (measured score error
with :data:`EXACT_STEPS` steps: up to about 0.06)."""
EXACT_STEPS_TIE = 8
"""Exact steps for that second scoring (measured score error: up to about 0.03)."""
BASE_BLUR = 0.45
"""Extra Gaussian blur (sigma, base-level pixels) of the antialiased base: dlib's chain of bilinear steps is
softer than one antialiased resize."""
TRUNCATION_BIAS = 0.42
"""Grey levels lost per resize step of dlib's chain (it truncates to uint8), taken off the base (measured)."""
_RATE = 1.2  # pyramid_down<6>: 6/5


@dataclass(frozen=True)
class Hit:
    """A detection mapped to photo pixels: inclusive ``box`` (l, t, r, b), ``score``, sub-detector, level."""

    box: tuple[int, int, int, int]
    score: float
    subdetector: int
    level: int


# ------------------------------------------------------------------------------------------- geometry
def level_sizes(width: int, height: int, levels: int) -> list[tuple[int, int]]:
    """``(cols, rows)`` of pyramid levels ``0 .. levels`` of a ``width x height`` photo (level 0 = upsampled)."""
    sizes = [(2 * width + 2, 2 * height + 1)]
    for _ in range(levels):
        c, r = sizes[-1]
        sizes.append(((5 * c) // 6, (5 * r) // 6))
    return sizes


def _step_scale(n_in: int, n_out: int) -> float:
    return (n_in - 1) / max(n_out - 1, 1)


def level_scale(width: int, height: int, level: int) -> tuple[float, float]:
    """Photo pixels per level-``level`` pixel along x and y (pixel ``c`` of the level sits at ``c * scale``)."""
    sizes = level_sizes(width, height, level)
    sx, sy = _step_scale(width, sizes[0][0]), _step_scale(height, sizes[0][1])
    for (c0, r0), (c1, r1) in zip(sizes, sizes[1:]):
        sx *= _step_scale(c0, c1)
        sy *= _step_scale(r0, r1)
    return sx, sy


def _lround(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def box_to_photo(rect: tuple[int, int, int, int], level: int) -> tuple[int, int, int, int]:
    """dlib's mapping of a level-``level`` box (inclusive, level pixels) to photo pixels, roundings included."""
    out = []
    for x, y in ((rect[0], rect[1]), (rect[2], rect[3])):
        px, py = float(x), float(y)
        for _ in range(level):
            px, py = px * _RATE + 0.3, py * _RATE + 0.3
        px, py = float(_lround(px)), float(_lround(py))
        out += [_lround(px / 2.0 - 1.25), _lround(py / 2.0 - 0.75)]
    return out[0], out[1], out[2], out[3]


def level_for_width(box_width: float) -> float:
    """The (fractional) pyramid level at which a face box ``box_width`` photo pixels wide is found."""
    return math.log(max(2.0 * box_width / LEVEL_BOX, 1e-6)) / math.log(_RATE)


# ------------------------------------------------------------------------------------------- resampling
def _positions_x(n_in: int, n_out: int, stop: int) -> tuple[np.ndarray, int]:
    """Sample positions of output columns ``0 .. stop-1`` as dlib's SIMD loop computes them (float32 lanes).

    Returns the positions and the first column done by the scalar tail loop (double precision).
    """
    xs = _step_scale(n_in, n_out)
    steps = -(-stop // 4) + 1
    inc = np.float32(4 * xs)
    x0 = -4 * xs
    lanes = np.empty((steps, 4), dtype=np.float32)
    lanes[0] = np.array([x0, x0 + xs, x0 + 2 * xs, x0 + 3 * xs], dtype=np.float64).astype(np.float32)
    lanes[1:] = inc
    pos = np.cumsum(lanes, axis=0, dtype=np.float32)[1:].reshape(-1)  # sequential float32 sums, as += in the loop
    # The SIMD loop stops at the first group of 4 whose last right neighbour is outside the input.
    right_last = pos[3::4].astype(np.int64) + 1
    bad = np.nonzero(right_last >= n_in)[0]
    tail = int(bad[0]) * 4 if bad.size else len(pos)
    tail = min(tail, n_out)
    out = pos[:stop].astype(np.float64)
    if tail < stop:
        out[tail:] = -xs + np.arange(tail, stop) * xs + xs  # double-precision tail (x = -xs + c*xs; x += xs)
    return out, tail


def _positions_y(n_in: int, n_out: int, stop: int) -> np.ndarray:
    ys = _step_scale(n_in, n_out)
    seq = np.full(stop + 1, ys, dtype=np.float64)
    seq[0] = -ys
    return np.cumsum(seq)[1:]


def resize_patch(src: np.ndarray, src_origin: tuple[int, int], in_size: tuple[int, int], out_size: tuple[int, int],
                 region: tuple[int, int, int, int]) -> np.ndarray:
    """Pixels ``region`` (x0, y0, x1, y1; exclusive ends) of dlib's bilinear resize of an ``in_size`` image to
    ``out_size`` (both (cols, rows)), from ``src``: the input's pixels starting at ``src_origin`` (x, y).

    Repeats dlib's RGB ``resize_image``: float32 weights and sums, truncation to uint8.
    """
    x0, y0, x1, y1 = region
    n_in, m_in = in_size
    xpos, tail = _positions_x(n_in, out_size[0], x1)
    ypos = _positions_y(m_in, out_size[1], y1)
    xp, yp = xpos[x0:x1], ypos[y0:y1]
    left = np.floor(xp).astype(np.int64)
    top = np.floor(yp).astype(np.int64)
    right = np.minimum(left + 1, n_in - 1)
    bottom = np.minimum(top + 1, m_in - 1)
    lr = (xp.astype(np.float32) - left.astype(np.float32)).astype(np.float32)
    tb64 = yp - top
    tb, inv_tb = tb64.astype(np.float32), (1.0 - tb64).astype(np.float32)
    inv_lr = (np.float32(1) - lr).astype(np.float32)
    cols = np.arange(x0, x1)
    scalar = cols >= tail
    if scalar.any():  # double-precision tail columns
        lr64 = xp[scalar] - left[scalar]
        lr[scalar], inv_lr[scalar] = lr64.astype(np.float32), (1.0 - lr64).astype(np.float32)
    sx0, sy0 = src_origin
    a = src.astype(np.float32)
    rows_t, rows_b = (top - sy0)[:, None], (bottom - sy0)[:, None]
    cols_l, cols_r = (left - sx0)[None, :], (right - sx0)[None, :]
    tlf = (inv_tb[:, None] * inv_lr[None, :])[:, :, None]
    trf = (inv_tb[:, None] * lr[None, :])[:, :, None]
    blf = (tb[:, None] * inv_lr[None, :])[:, :, None]
    brf = (tb[:, None] * lr[None, :])[:, :, None]
    out = tlf * a[rows_t, cols_l]
    out += trf * a[rows_t, cols_r]
    out += blf * a[rows_b, cols_l]
    out += brf * a[rows_b, cols_r]
    np.floor(out, out=out)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def _needed(region: tuple[int, int, int, int], in_size: tuple[int, int], out_size: tuple[int, int]
            ) -> tuple[int, int, int, int]:
    """Input pixels a resize needs to produce ``region`` of its output (with one pixel of slack)."""
    x0, y0, x1, y1 = region
    sx, sy = _step_scale(in_size[0], out_size[0]), _step_scale(in_size[1], out_size[1])
    return (max(int(math.floor(x0 * sx)) - 1, 0), max(int(math.floor(y0 * sy)) - 1, 0),
            min(int(math.floor((x1 - 1) * sx)) + 3, in_size[0]), min(int(math.floor((y1 - 1) * sy)) + 3, in_size[1]))


def level_patch(image: Image.Image, level: int, region: tuple[int, int, int, int], *,
                exact_steps: Optional[int] = None) -> np.ndarray:
    """Pixels ``region`` (level coordinates, exclusive ends) of pyramid level ``level`` of ``image`` (RGB).

    The last ``exact_steps`` resizes (all of them when ``level < exact_steps``, the upsampling included)
    repeat dlib's arithmetic; the level they start from is an antialiased resize of the photo onto its grid.
    """
    width, height = image.size
    sizes = level_sizes(width, height, level)
    base = level - (EXACT_STEPS if exact_steps is None else exact_steps)  # -1: start from the photo itself
    base = max(base, -1)
    regions = {level: region}
    for k in range(level, base, -1):
        in_size = sizes[k - 1] if k > 0 else (width, height)
        regions[k - 1] = _needed(regions[k], in_size, sizes[k])
    bx0, by0, bx1, by1 = regions[base]
    if base == -1:
        arr = np.asarray(image.crop((bx0, by0, bx1, by1)))
    else:
        sx, sy = level_scale(width, height, base)
        # Pillow samples output pixel i at input (box0 + (i + 0.5) * scale - 0.5): match c * s.
        box = (bx0 * sx + 0.5 - 0.5 * sx, by0 * sy + 0.5 - 0.5 * sy)
        box = (*box, box[0] + (bx1 - bx0) * sx, box[1] + (by1 - by0) * sy)
        cx0, cy0 = max(int(math.floor(box[0])) - 2, 0), max(int(math.floor(box[1])) - 2, 0)
        cx1, cy1 = min(int(math.ceil(box[2])) + 2, width), min(int(math.ceil(box[3])) + 2, height)
        crop = image.crop((cx0, cy0, cx1, cy1))
        local = (max(box[0] - cx0, 0.0), max(box[1] - cy0, 0.0), min(box[2] - cx0, crop.width),
                 min(box[3] - cy0, crop.height))
        arr = np.asarray(crop.resize((bx1 - bx0, by1 - by0), Image.Resampling.BILINEAR, box=local))
        from scipy.ndimage import gaussian_filter

        soft = gaussian_filter(arr.astype(np.float32), (BASE_BLUR, BASE_BLUR, 0))
        arr = np.clip(np.rint(soft - TRUNCATION_BIAS * (base + 1)), 0, 255).astype(np.uint8)
    origin = (bx0, by0)
    for k in range(base + 1, level + 1):
        in_size = sizes[k - 1] if k > 0 else (width, height)
        arr = resize_patch(arr, origin, in_size, sizes[k], regions[k])
        origin = regions[k][:2]
    return arr


# ------------------------------------------------------------------------------------------- detection
def single_level_detector(path: str) -> Any:
    """dlib's frontal face detector limited to the first pyramid level of what it is given (loaded from a copy
    saved at ``path``, with the scanner's ``max_pyramid_levels`` field set to 1)."""
    import dlib

    dlib.get_frontal_face_detector().save(path)
    with open(path, "rb") as f:
        data = f.read()
    # object_detector v2, scanner v1, extractor, feature pyramid (empty), cell size 8, padding 0, window 80 x 80,
    # then max_pyramid_levels = 1000 (dlib's integer encoding: length byte 2, little-endian 0x03e8).
    head = bytes.fromhex("0102010101000100010801000150015002e803")
    if not data.startswith(head):
        raise RuntimeError("Unexpected layout of dlib's frontal face detector; cannot limit its pyramid.")
    with open(path, "wb") as f:
        f.write(head[:-3] + bytes.fromhex("0101") + data[len(head):])
    return dlib.fhog_object_detector(path)


def refine_box(image: Image.Image, detector: Any, approx: tuple[float, float, float, float], *,
               spread: int = 1, threshold: float = 0.0) -> Optional[Hit]:
    """The box dlib's whole-image, full-resolution ``detector.run(image, 1, threshold)`` gives the face near
    ``approx`` (l, t, r, b photo pixels, e.g. from a downscaled copy), or None if it finds none there.

    ``detector``: :func:`single_level_detector`.  Scans levels ``round(level) - spread .. + spread`` on small
    patches (see the module docstring).  When two different boxes score within :data:`TIE` of each other,
    their levels are scanned again with :data:`EXACT_STEPS_TIE` exact steps (closer to dlib's own scores).
    """
    width, height = image.size
    centre = int(round(level_for_width(approx[2] - approx[0] + 1)))
    levels = range(max(centre - spread, 0), centre + spread + 1)
    hits = [h for level in levels for h in _scan_level(image, detector, approx, level, EXACT_STEPS, threshold)]
    near = sorted((h for h in hits if _overlap(h.box, approx) > 0.3), key=lambda h: -h.score)
    if len(near) > 1 and near[0].box != near[1].box and near[0].score - near[1].score < TIE:
        tied = sorted({h.level for h in near if near[0].score - h.score < TIE})
        again = [h for level in tied for h in _scan_level(image, detector, approx, level, EXACT_STEPS_TIE, threshold)]
        near = sorted((h for h in again if _overlap(h.box, approx) > 0.3), key=lambda h: -h.score) or near
    return near[0] if near else None


def _scan_level(image: Image.Image, detector: Any, approx: tuple[float, float, float, float], level: int,
                exact_steps: int, threshold: float) -> list[Hit]:
    """Detections on a cell-aligned patch of pyramid level ``level`` around ``approx``, in photo pixels."""
    width, height = image.size
    cols, rows = level_sizes(width, height, level)[level]
    if min(cols, rows) < 80:
        return []
    l, t, r, b = approx
    cx, cy = (l + r) / 2.0, (t + b) / 2.0
    sx, sy = level_scale(width, height, level)
    half = 40 + MARGIN_CELLS * CELL + (r - l) * 0.25 / sx  # window half + margin + locating error
    x0 = max(int(math.floor((cx / sx - half) / CELL)) * CELL, 0)
    y0 = max(int(math.floor((cy / sy - half) / CELL)) * CELL, 0)
    x1, y1 = min(int(math.ceil(cx / sx + half)), cols), min(int(math.ceil(cy / sy + half)), rows)
    if x1 - x0 < 40 or y1 - y0 < 40:
        return []
    patch = level_patch(image, level, (x0, y0, x1, y1), exact_steps=exact_steps)
    rects, scores, subs = detector.run(np.ascontiguousarray(patch), 0, threshold)
    return [Hit(box=box_to_photo((rc.left() + x0, rc.top() + y0, rc.right() + x0, rc.bottom() + y0), level),
                score=float(score), subdetector=int(sub), level=level) for rc, score, sub in zip(rects, scores, subs)]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two inclusive boxes."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / area
