"""Procedural faces: determinism, shapes, and each attribute acting where it should."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.faces import (ATTRIBUTE_NAMES, ATTRIBUTES, NUISANCE, face_batch, render_faces, sample_attributes,
                            sample_nuisance)

# 128 px pixel boxes (rows, cols): FFHQ-like layout, eyes at y~60, mouth at y~94
EYES = (slice(50, 70), slice(30, 98))
MOUTH = (slice(84, 104), slice(44, 84))
CORNERS = (slice(0, 12), slice(0, 12))


def _with(attrs: np.ndarray, **values: float) -> np.ndarray:
    out = attrs.copy()
    for k, v in values.items():
        out[:, ATTRIBUTE_NAMES.index(k)] = v
    return out


def _diff(a: np.ndarray, b: np.ndarray, box) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32))[:, box[0], box[1]].mean())


@pytest.fixture(scope="module")
def base() -> np.ndarray:
    """Six faces, frontal, eyes open, no glasses, young (no wrinkles), neutral mouth."""
    return _with(sample_attributes(6, 11), yaw=0.0, glasses=0.0, eye_open=0.9, age=0.1, smile=0.0)


def test_sampling_ranges_and_determinism():
    a, b = sample_attributes(500, 3), sample_attributes(500, 3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (500, len(ATTRIBUTES)) and a.dtype == np.float32
    for j, spec in enumerate(ATTRIBUTES):
        assert a[:, j].min() >= spec.low and a[:, j].max() <= spec.high
        if spec.binary:
            assert set(np.unique(a[:, j])) == {spec.low, spec.high}
    assert not np.array_equal(a, sample_attributes(500, 4))
    n = sample_nuisance(10, 0)
    assert n.shape == (10, len(NUISANCE)) and 0 <= n.min() and n.max() <= 1


def test_render_deterministic_by_seed():
    attrs = sample_attributes(4, 0)
    a, b = render_faces(attrs, seed=5), render_faces(attrs, seed=5)
    assert a.shape == (4, 128, 128, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert _diff(a, render_faces(attrs, seed=6), (slice(None), slice(None))) > 5  # other backgrounds/shapes
    x1, y1 = face_batch(4, 9)
    x2, y2 = face_batch(4, 9)
    assert x1.shape == (4, 3, 128, 128) and y1.shape == (4, len(ATTRIBUTES))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert -1.0 <= x1.min() and x1.max() <= 1.0 and x1.std() > 0.2
    small, _ = face_batch(2, 9, size=64)
    assert small.shape == (2, 3, 64, 64)


def test_smile_acts_on_mouth(base):
    frown, smile = render_faces(_with(base, smile=-1.0), seed=1), render_faces(_with(base, smile=1.0), seed=1)
    mouth, eyes = _diff(frown, smile, MOUTH), _diff(frown, smile, EYES)
    assert mouth > 5.0          # measured ~7.7
    assert eyes < 0.05 * mouth  # measured 0: the mouth is drawn in its own band
    assert _diff(frown, smile, CORNERS) == 0.0


def test_glasses_darken_the_eye_band(base):
    nuis = sample_nuisance(len(base), 1)
    nuis[:, NUISANCE.index("frame")] = 0.1  # black frames
    off = render_faces(_with(base, glasses=0.0), nuisance=nuis)
    on = render_faces(_with(base, glasses=1.0), nuisance=nuis)
    assert _diff(off, on, MOUTH) == 0.0
    dark_off = (off[:, EYES[0], EYES[1]].max(-1) < 50).sum(axis=(1, 2))
    dark_on = (on[:, EYES[0], EYES[1]].max(-1) < 50).sum(axis=(1, 2))
    assert (dark_on - dark_off).min() > 40  # frames: measured >= ~120 more dark pixels per face


def test_eye_openness_and_age_regions(base):
    closed, opened = render_faces(_with(base, eye_open=0.0), seed=2), render_faces(_with(base, eye_open=1.0), seed=2)
    assert _diff(closed, opened, EYES) > 5.0 and _diff(closed, opened, MOUTH) == 0.0
    young, old = render_faces(_with(base, age=0.0), seed=2), render_faces(_with(base, age=0.49), seed=2)
    assert _diff(young, old, (slice(30, 106), slice(30, 98))) > 0.1  # thin wrinkle lines: measured 0.21
    assert _diff(young, old, CORNERS) == 0.0  # below 0.5: no gray hair yet, background untouched
    gray = render_faces(_with(base, age=1.0), seed=2)
    assert _diff(young, gray, (slice(0, 30), slice(30, 98))) > 10.0  # hair on top turns gray: measured 27


def test_yaw_moves_features_right(base):
    def mouth_x(yaw: float) -> np.ndarray:  # x centroid of what smiling changes = where the mouth is
        a = render_faces(_with(base, yaw=yaw, smile=-1.0), seed=3).astype(np.float32)
        b = render_faces(_with(base, yaw=yaw, smile=1.0), seed=3).astype(np.float32)
        w = np.abs(a - b).sum(-1)
        return (w * np.arange(128)).sum(axis=(1, 2)) / w.sum(axis=(1, 2))

    shift = mouth_x(1.0) - mouth_x(-1.0)
    assert np.all((shift > 7.0) & (shift < 11.0))  # 9 px by construction (mouth x = 64 + 4.5 yaw), 128 px
