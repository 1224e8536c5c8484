"""The bundled attribute regressor: file sizes, held-out accuracy on procedural faces, feature distance,
save/load round trip and errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from editing.attributes import (DATA_DIR, AttributeInfo, AttributeNet, feature_distance, frechet_distance,
                                load_attribute_model, predict_attributes, save_attribute_model)
from inversion.checkpoints import CheckpointError
from training.faces import ATTRIBUTE_NAMES, face_batch
from training.train_attributes import evaluate

# Held-out scores on 256 images (seed 2024): R^2 for continuous attributes, accuracy for glasses.
# Measured with the bundled weights (see attributes_128.json "info" for the 2048-image numbers); thresholds
# leave a margin for the 256-sample noise.
MIN_SCORE = {"yaw": 0.97, "smile": 0.95, "age": 0.85, "hair_color": 0.97, "hair_length": 0.95,
             "skin_tone": 0.97, "glasses": 0.98, "eye_open": 0.94, "light": 0.97}
# measured (seed 2024, 256 images): yaw 0.991, smile 0.978, age 0.927, hair_color 0.990, hair_length 0.979,
# skin_tone 0.994, glasses 1.0, eye_open 0.972, light 0.991


@pytest.fixture(scope="module")
def model() -> AttributeNet:
    return load_attribute_model()


@pytest.fixture(scope="module")
def held_out() -> tuple[torch.Tensor, torch.Tensor]:
    return face_batch(256, 2024)


def test_bundled_files_small_and_self_describing():
    weights, cfg = DATA_DIR / "attributes_128.safetensors", DATA_DIR / "attributes_128.json"
    assert weights.stat().st_size < 2_000_000
    meta = json.loads(cfg.read_text())
    assert [a["name"] for a in meta["config"]["attributes"]] == list(ATTRIBUTE_NAMES)
    assert set(meta["info"]["held_out_scores"]) == set(ATTRIBUTE_NAMES)


def test_held_out_accuracy(model):
    scores = evaluate(model, n=256, seed=2024)
    assert sum(p.numel() for p in model.parameters()) < 500_000
    low = {k: round(v, 4) for k, v in scores.items() if v < MIN_SCORE[k]}
    assert not low, f"below threshold: {low}"


def test_predict_attributes_ranges_and_any_size(model, held_out):
    images, attrs = held_out
    pred = predict_attributes(model, images[:16])
    assert list(pred) == list(ATTRIBUTE_NAMES)
    for a in model.attributes:
        assert pred[a.name].shape == (16,)
        assert a.low <= pred[a.name].min() and pred[a.name].max() <= a.high
    small = torch.nn.functional.interpolate(images[:16], size=64, mode="bilinear", antialias=True)
    half = predict_attributes(model, small)  # other sizes are resized to 128
    assert (half["smile"] - pred["smile"]).abs().mean() < 0.15


def test_feature_distance_separates_sets(model, held_out):
    images, _ = held_out
    other, _ = face_batch(256, 77)
    same = feature_distance(images, other, model=model)
    few, _ = face_batch(8, 5)
    collapsed = feature_distance(images, few.repeat(32, 1, 1, 1), model=model)  # mode collapse: 8 faces
    blurred = torch.nn.functional.avg_pool2d(other, 4).repeat_interleave(4, 2).repeat_interleave(4, 3)
    far = feature_distance(images, blurred, model=model)
    assert 0 <= same < 0.2 * collapsed  # measured 1.79 vs 23.6
    assert same < 0.6 * far  # measured 5.75 (the regressor was trained blur-robust, so blur moves it less)


def test_frechet_distance_matches_scipy_sqrtm():
    from scipy import linalg

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(500, 20)), rng.normal(size=(400, 20)) * 1.3 + 0.2
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * np.trace(linalg.sqrtm(ca @ cb).real)
    assert abs(frechet_distance(a, b) - ref) < 1e-9
    assert abs(frechet_distance(a, a)) < 1e-9


def test_save_load_round_trip_and_errors(tmp_path):
    net = AttributeNet([AttributeInfo("a", -1, 1), AttributeInfo("b", 0, 1, binary=True)],
                       widths=(8, 8, 8, 8, 8), feat_dim=16).eval()
    path = tmp_path / "m.safetensors"
    save_attribute_model(net, path, info={"note": "test"})
    back = load_attribute_model(path)
    x = torch.rand(2, 3, 128, 128) * 2 - 1
    torch.testing.assert_close(back(x), net(x))
    assert back.attributes[1].binary
    cfg = json.loads(path.with_suffix(".json").read_text())
    cfg["config"]["feat_dim"] = 32
    path.with_suffix(".json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="does not match"):
        load_attribute_model(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_attribute_model(tmp_path / "missing.safetensors")
