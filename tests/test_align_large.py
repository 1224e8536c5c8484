"""Large photos: the bounded detection path gives the boxes and landmarks of a whole-image full-resolution
detection, so the aligned face matches the original FFHQ/pSp/PTI alignment of the full photo.

Photos are built from the shipped examples (``tests/large_photos.py``: rotated, upscaled, off-centre on a
large canvas, up to 8000 px on a side).  Times are measured in ``bench/align_large.py``, not here.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from PIL import Image

from inversion import align, hog_pyramid
from inversion import session as S
from tests.large_photos import EXAMPLES, make_photo

TEST_CASES = ["hopper_rot-7_x3.1_2400x2600", "astronaut_rot5_x3_2600x2000", "hopper_rot12_x2_8000x1400"]


@functools.lru_cache(maxsize=None)
def photo(name: str) -> Image.Image:
    return make_photo(name)


@functools.lru_cache(maxsize=None)
def full_resolution(name: str) -> tuple:
    return tuple(align.detect_faces(photo(name), max_side=None))


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


@pytest.mark.parametrize("name", TEST_CASES)
def test_large_photo_matches_full_resolution_detection(name):
    image = photo(name)
    assert max(image.size) > align.DEFAULT_DETECT_MAX_SIDE  # the bounded path is taken
    full = full_resolution(name)
    ours = align.detect_faces(image)
    assert len(full) >= 1 and [f.bbox for f in ours] == [f.bbox for f in full]
    for a, b in zip(ours, full):
        assert np.abs(a.landmarks - b.landmarks).max() <= 1.0
        assert a.subdetector == b.subdetector
        # Pixels below the exact steps are approximate: measured score differences up to 0.09.
        assert a.score == pytest.approx(b.score, abs=0.12)
    aligned = align.align_face(image, 1024)
    reference = align.align_face(image, 1024, landmarks=full[0].landmarks)
    assert mean_abs_diff(aligned.image, reference.image) < 1.0


def test_open_photo_aligns_large_photo_at_full_resolution():
    """The app's path (open_photo -> align_photo -> paste-back): the photo is kept at 4096 px, but the face is
    aligned from the full-resolution pixels, as the original code aligns it; paste-back lands in place."""
    name = "hopper_rot12_x2_8000x1400"
    opened = S.open_photo(photo(name))
    assert max(opened.image.size) == S.WORK_MAX_SIDE and "reduced" in opened.notes[0]
    state = S.align_photo(S.new_state(), opened, 0)
    reference = align.align_face(photo(name), S.ALIGN_SIZE, landmarks=full_resolution(name)[0].landmarks)
    assert mean_abs_diff(state.aligned.image, reference.image) < 1.0
    back = align.paste_back(opened.image, state.aligned.image, state.aligned)
    l, t, r, b = (int(v) for v in opened.faces[0].bbox)
    # The crop pasted onto the downscaled photo it came from: resampling noise only (measured mean 1.2).
    assert mean_abs_diff(back.crop((l, t, r, b)), opened.image.crop((l, t, r, b))) < 3.0


def test_resize_patch_repeats_dlib_resize():
    import dlib

    image = np.asarray(align.load_image(EXAMPLES / "grace_hopper.jpg"))
    h, w = image.shape[:2]
    for rows, cols in [(2 * h + 1, 2 * w + 2), ((5 * h) // 6, (5 * w) // 6), (h // 3 + 7, w // 2 + 5)]:
        theirs = dlib.resize_image(image, rows, cols)
        ours = hog_pyramid.resize_patch(image, (0, 0), (w, h), (cols, rows), (0, 0, cols, rows))
        diff = np.abs(theirs.astype(np.int16) - ours)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-4  # float32 rounding ties: 26 of 1.8M values measured
        part = hog_pyramid.resize_patch(image[40:420, 90:330], (90, 40), (w, h), (cols, rows),
                                        (cols // 4, rows // 4, cols // 2, rows // 2))
        np.testing.assert_array_equal(part, ours[rows // 4:rows // 2, cols // 4:cols // 2])


def test_exact_level_patch_gives_dlib_box_and_score():
    """A patch of the level dlib found the face on, built with every step exact, scores as dlib scores."""
    image = align.load_image(EXAMPLES / "grace_hopper.jpg")
    detector, _ = align._detector()
    rects, scores, _ = detector.run(np.asarray(image), 1, 0.0)
    box = (rects[0].left(), rects[0].top(), rects[0].right(), rects[0].bottom())
    level = round(hog_pyramid.level_for_width(box[2] - box[0] + 1))
    single, _ = align._single_level_detector()
    hits = hog_pyramid._scan_level(image, single, box, level, exact_steps=level + 1, threshold=0.0)
    assert [h.box for h in hits] == [box]
    assert hits[0].score == pytest.approx(scores[0], abs=1e-4)


def test_box_mapping_matches_dlib_geometry():
    assert hog_pyramid.level_sizes(512, 600, 1) == [(1026, 1201), (855, 1000)]
    assert hog_pyramid.level_scale(512, 600, 0) == (511 / 1025, 599 / 1200)
    assert hog_pyramid.box_to_photo((0, 0, 0, 0), 0) == (-1, -1, -1, -1)
