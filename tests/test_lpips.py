"""LPIPS v0.1 parity with the `lpips` package (golden data) and behaviour of the helpers.

Backbones are filled with tests/reference_fill.py (the same fill the reference used); the heads are the
real v0.1 weights. Golden data: ../shared/reference/lpips when present, else the compact copy in
tests/data/lpips/expected.json (seeded inputs are regenerated from the README recipe).
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from inversion.lpips import (
    DATA_DIR,
    LPIPS,
    LPIPSWeightsError,
    backbone_keys,
    build_lpips,
    default_heads,
    downsample_256,
    head_keys,
    lpips_on_256,
)
from tests.reference_fill import fill_tensor

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "lpips"
COMPACT = json.loads((Path(__file__).parent / "data" / "lpips" / "expected.json").read_text())
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/reference/lpips not present")

HEADS_SHA256 = {  # our safetensors copies of the wheel's weights/v0.1/{net}.pth
    "vgg": "95a80236e8ad8958a7d6251b3ebd5c40a043890c38f07d5e330820e76ab0b09a",
    "alex": "5c1a6e4b26335250d0dadedaeec66bea2801a57ff5e3f7c0cc2a885a0c747837",
}
F64_RTOL = 1e-12  # observed <= 2.3e-15
F32_RTOL = 1e-5  # observed <= 1e-6 (per layer), 1.2e-7 (dist)
BF16_RTOL = 1e-2  # CPU autocast: observed <= 1.5e-3


@lru_cache(maxsize=None)
def filled_backbone(net: str) -> dict[str, torch.Tensor]:
    """Reference quirk: fill float32 tensors with torchvision names (values float32-rounded)."""
    return {k: fill_tensor(k, torch.empty(shape, dtype=torch.float32), "conv") for k, shape in backbone_keys(net).items()}


@lru_cache(maxsize=None)
def model(net: str, dtype: torch.dtype = torch.float32) -> LPIPS:
    return LPIPS(net).load_backbone(filled_backbone(net)).to(dtype)


def seeded_pair(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    in0 = 2 * torch.rand(shape, generator=g, dtype=torch.float64) - 1
    in1 = torch.clamp(in0 + 0.5 * torch.randn(shape, generator=g, dtype=torch.float64), -1, 1)
    return in0, in1


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a / b - 1)))


SEED_CASES = sorted(COMPACT["cases"])


# ----------------------------------------------------------------------------- weights and keys
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_bundled_heads(net: str) -> None:
    path = DATA_DIR / f"lpips_v0.1_{net}.safetensors"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == HEADS_SHA256[net]
    heads = default_heads(net)
    assert {k: tuple(v.shape) for k, v in heads.items()} == head_keys(net)
    assert all(v.dtype == torch.float32 and (v >= 0).all() for v in heads.values())
    assert (DATA_DIR / "LICENSE-lpips.txt").read_text().count("Richard Zhang") >= 1


@needs_shared
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_bundled_heads_equal_official(net: str) -> None:
    ref = np.load(SHARED / f"heads_v0.1_{net}_float64.npz")
    heads = default_heads(net)
    assert sorted(ref.files) == sorted(heads)
    for k in ref.files:
        assert np.array_equal(heads[k].double().numpy(), ref[k]), k


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_backbone_keys(net: str) -> None:
    expected = COMPACT["backbone_keys"][net]
    if SHARED.is_dir():
        manifest = json.loads((SHARED / "manifest.json").read_text())
        key = "torchvision_vgg16_features" if net == "vgg" else "torchvision_alexnet_features"
        assert manifest[key] == expected
    assert {k: list(v) for k, v in backbone_keys(net).items()} == expected


@needs_shared
def test_compact_copy_matches_shared() -> None:
    for name, case in COMPACT["cases"].items():
        z = np.load(SHARED / f"{name}.npz")
        in0, in1 = seeded_pair(case["seed"], tuple(case["shape"]))
        assert np.array_equal(in0.numpy(), z["in0"]) and np.array_equal(in1.numpy(), z["in1"])
        assert np.array_equal(np.array(case["dist"]), z["dist"])
        assert np.array_equal(np.array(case["per_layer"]), z["per_layer"])


# ----------------------------------------------------------------------------- parity
@pytest.mark.parametrize("name", SEED_CASES)
def test_parity_float64_seeded(name: str) -> None:
    case = COMPACT["cases"][name]
    in0, in1 = seeded_pair(case["seed"], tuple(case["shape"]))
    with torch.no_grad():
        pl = model(case["net"], torch.float64).per_layer(in0, in1).numpy()
    assert pl.shape == (5, case["shape"][0])
    assert rel_err(pl, np.array(case["per_layer"])) < F64_RTOL
    assert rel_err(pl.sum(0), np.array(case["dist"])) < F64_RTOL


@needs_shared
@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_parity_float64_natural(net: str) -> None:
    z = np.load(SHARED / f"{net}_natural_pub_2x3x256x256.npz")
    with torch.no_grad():
        pl = model(net, torch.float64).per_layer(torch.from_numpy(z["in0"]), torch.from_numpy(z["in1"])).numpy()
    assert rel_err(pl, z["per_layer"]) < F64_RTOL
    assert rel_err(pl.sum(0), z["dist"]) < F64_RTOL


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_parity_float32(net: str) -> None:
    case = COMPACT["cases"][f"{net}_seed1_2x3x64x64"]
    in0, in1 = seeded_pair(case["seed"], tuple(case["shape"]))
    with torch.no_grad():
        pl = model(net).per_layer(in0.float(), in1.float())
    assert pl.dtype == torch.float32
    assert rel_err(pl.double().numpy(), np.array(case["per_layer"])) < F32_RTOL
    assert rel_err(pl.sum(0).double().numpy(), np.array(case["dist"])) < F32_RTOL


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_autocast_bf16_keeps_float32_outputs(net: str) -> None:
    case = COMPACT["cases"][f"{net}_seed1_2x3x64x64"]
    in0, in1 = seeded_pair(case["seed"], tuple(case["shape"]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        d = model(net)(in0.float(), in1.float())
    assert d.dtype == torch.float32
    assert rel_err(d.double().numpy(), np.array(case["dist"])) < BF16_RTOL


# ----------------------------------------------------------------------------- helpers and behaviour
def test_target_features_match_forward_and_give_gradients() -> None:
    m = model("vgg", torch.float64)
    x, y = seeded_pair(3, (2, 3, 32, 32))
    target = y[:1]
    feats = m.target_features(target)
    assert all(not f.requires_grad for f in feats)
    xg = x.clone().requires_grad_(True)
    d = m.distance_to_features(xg, feats)
    with torch.no_grad():
        ref = m(x, target.expand(2, -1, -1, -1))
        ref_b1 = m(x, target)
    assert d.shape == (2,)
    assert rel_err(d.detach().numpy(), ref.numpy()) < F64_RTOL
    assert rel_err(ref_b1.numpy(), ref.numpy()) < F64_RTOL
    d.sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in m.parameters())
    assert float(m(x[:1], x[:1])) == 0.0


def test_spatial_map() -> None:
    m = LPIPS("vgg", spatial=True).load_backbone(filled_backbone("vgg")).double()
    x, y = seeded_pair(4, (2, 3, 32, 32))
    with torch.no_grad():
        dmap = m(x, y)
        pl = m.per_layer(x, y)
        flat = model("vgg", torch.float64).per_layer(x, y)
    assert dmap.shape == (2, 1, 32, 32) and pl.shape == (5, 2, 1, 32, 32)
    assert (dmap >= 0).all()
    # the first VGG tap is at full resolution, so its map needs no resizing: its mean is the flat term
    assert rel_err(pl[0].mean(dim=(1, 2, 3)).numpy(), flat[0].numpy()) < F64_RTOL


def test_lpips_on_256_area_downsamples_larger_images() -> None:
    m = model("alex")
    x, y = (t.float() for t in seeded_pair(5, (1, 3, 512, 512)))
    with torch.no_grad():
        d = lpips_on_256(m, x, y)
        ref = m(F.avg_pool2d(x, 2), F.avg_pool2d(y, 2))
        small = lpips_on_256(m, x[..., :256, :256], y[..., :256, :256])
        small_ref = m(x[..., :256, :256], y[..., :256, :256])
    assert torch.allclose(d, ref, rtol=1e-5, atol=0)
    assert torch.equal(small, small_ref)
    assert downsample_256(torch.zeros(1, 3, 1024, 512)).shape == (1, 3, 256, 128)


def test_load_backbone_ignores_classifier_keys_and_checks_layout() -> None:
    sd = dict(filled_backbone("vgg"))
    timm_like = {**sd, "pre_logits.fc1.weight": torch.zeros(8, 512, 7, 7), "head.fc.weight": torch.zeros(2, 3),
                 "classifier.0.weight": torch.zeros(1)}
    m = build_lpips("vgg", backbone_state_dict=timm_like)
    assert m.backbone_loaded and torch.equal(m.features[0].weight, sd["features.0.weight"])

    with pytest.raises(LPIPSWeightsError, match="missing keys"):
        LPIPS("vgg").load_backbone({k: v for k, v in sd.items() if k != "features.28.bias"})
    with pytest.raises(LPIPSWeightsError, match="unexpected keys"):
        LPIPS("vgg").load_backbone({**sd, "features.1.running_mean": torch.zeros(64)})
    with pytest.raises(LPIPSWeightsError, match="shape"):
        LPIPS("alex").load_backbone({**filled_backbone("alex"), "features.0.bias": torch.zeros(3)})
    with pytest.raises(LPIPSWeightsError, match="heads"):
        LPIPS("vgg", heads=False).load_heads(default_heads("alex"))
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        LPIPS("squeeze")


def test_unloaded_backbone_and_bad_inputs_raise() -> None:
    fresh = LPIPS("alex")
    x = torch.zeros(1, 3, 64, 64)
    with pytest.raises(RuntimeError, match="not loaded"):
        fresh(x, x)
    # a full state dict (e.g. a saved LPIPS module) also counts as loading the backbone
    fresh.load_state_dict(model("alex").state_dict())
    assert fresh.backbone_loaded
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        fresh(torch.zeros(3, 64, 64), torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="same size"):
        fresh(x, torch.zeros(1, 3, 32, 32))
