"""Parity of inversion.identity (IR-SE50 ArcFace backbone, ID-loss preprocessing) with the reference, and the
dlib face-recognition identity measure.

Golden data and weights as in test_encoders.py (tests/data/encoders; ../shared/reference/encoders when present).
Embeddings: error = max |ours - ref| / max |ref| <= 1e-5 in float64 (measured 2.4e-8 and 1.5e-10). The pooled
ID-loss input is pure averaging: exact to 1e-12 against the full float64 set, to float32 storage (1e-7) against the
compact copy. float32 embeddings cannot be checked under this fill (measured 0.67 / 0.013 relative: the fill makes
the net explosive); the shared body is checked in float32 up to c1 in test_encoders.py.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from golden import COMPACT, seeded_rand_pm1, shared_reference
from inversion.align import NoFaceError
from inversion.identity import (
    DLIB_SAME_PERSON_DISTANCE,
    IRSE50,
    DlibIdentity,
    FaceNotFoundError,
    id_preprocess,
    identity_similarity,
    load_irse50,
)
from reference_fill import fill_state_dict

DATA = COMPACT / "encoders"
GOLD = np.load(DATA / "golden.npz")
SEEDS = dict(zip(("psp", "irse", "idloss", "e4e"), (int(s) for s in GOLD["seeds"])))
REL_TOL = 1e-5


def rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(ours.detach().double().numpy() - ref).max() / np.abs(ref).max())


def full_cases():
    root = shared_reference()
    return None if root is None else np.load(root / "encoders" / "cases.npz")


def test_state_dict_layout_matches_model_ir_se50():
    manifest = json.loads((DATA / "manifests.json").read_text())["irse50"]
    with torch.device("meta"):
        sd = IRSE50().state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == manifest
    root = shared_reference()
    if root is not None:
        full = json.loads((root / "encoders" / "irse50.json").read_text())
        assert {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()} == {
            e["key"]: (e["shape"], e["dtype"]) for e in full}


@pytest.fixture(scope="module")
def irse64() -> IRSE50:
    model = IRSE50().eval().double()
    model.load_state_dict(fill_state_dict(model.state_dict(), "conv"), strict=True)
    return model.requires_grad_(False)


def test_embedding_parity(irse64):
    x = seeded_rand_pm1((2, 3, 112, 112), SEEDS["irse"])
    with torch.no_grad():
        emb = irse64(x)
    assert emb.shape == (2, 512)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert rel_err(emb, GOLD["irse_emb"]) <= REL_TOL
    full = full_cases()
    if full is not None:
        assert rel_err(emb, full["irse_emb"]) <= REL_TOL


def test_id_loss_preprocessing_and_similarity(irse64):
    x = seeded_rand_pm1((2, 3, 256, 256), SEEDS["idloss"])
    pooled = id_preprocess(x)
    assert pooled.shape == (2, 3, 112, 112)
    assert np.abs(pooled.numpy() - GOLD["idloss_pooled112"]).max() <= 1e-7  # float32 storage
    with torch.no_grad():
        emb = irse64(pooled)
        # every size goes through 256: a 4x nearest-upscaled copy area-pools back to x exactly
        x1024 = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
        sim = identity_similarity(irse64, x1024[:1], x[1:])
        self_sim = identity_similarity(irse64, x, x1024)
    assert rel_err(emb, GOLD["idloss_emb"]) <= REL_TOL
    ref = GOLD["idloss_emb"].astype(np.float64)
    assert sim.shape == (1,) and abs(float(sim) - float(ref[0] @ ref[1])) <= 1e-5
    assert torch.allclose(self_sim, torch.ones(2, dtype=torch.float64), atol=1e-12)
    full = full_cases()
    if full is not None:
        assert np.abs(pooled.numpy() - full["idloss_pooled112"]).max() <= 1e-12
        assert rel_err(emb, full["idloss_emb"]) <= REL_TOL
        e = full["idloss_emb"]
        assert abs(float(sim) - float(e[0] @ e[1])) <= 1e-5


def test_id_preprocess_other_sizes_and_loader():
    x = torch.zeros(1, 3, 512, 512)
    x[:, :, 70:446, 64:440] = 1.0  # the 256 crop box scaled by 2: the crop sees only ones
    assert torch.equal(id_preprocess(x), torch.ones(1, 3, 112, 112))
    small = torch.rand(1, 3, 128, 128) * 2 - 1
    assert id_preprocess(small).shape == (1, 3, 112, 112)
    with torch.device("meta"):
        sd = IRSE50().state_dict()
    with pytest.raises(ValueError, match="output_layer.3.weight"):
        load_irse50({k: torch.zeros(v.shape, dtype=v.dtype) for k, v in sd.items() if k != "output_layer.3.weight"})


# ------------------------------------------------------------------------------------------------- dlib

HOPPER = DATA / "hopper128.jpg"    # Grace Hopper (U.S. Navy portrait, public domain), FFHQ-aligned, 128 px
COLLINS = DATA / "collins128.jpg"  # Eileen Collins (NASA, public domain), FFHQ-aligned, 128 px


@pytest.fixture(scope="module")
def dlib_id() -> DlibIdentity:
    return DlibIdentity()


def test_dlib_identity(dlib_id):
    hopper, collins = Image.open(HOPPER), Image.open(COLLINS)
    hopper_blur = hopper.resize((256, 256), Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    same = dlib_id.distance(hopper, hopper_blur)
    other = dlib_id.distance(hopper, collins)
    # measured (5-point landmarks): same person 0.19, different people 0.69 (dlib: < 0.6 = same person)
    assert same < 0.35
    assert other > DLIB_SAME_PERSON_DISTANCE
    assert dlib_id.similarity(hopper, hopper) == pytest.approx(1.0, abs=1e-9)
    assert dlib_id.similarity(hopper, collins) == pytest.approx(1.0 - other, abs=1e-9)


def test_dlib_identity_no_face(dlib_id):
    blank = Image.new("RGB", (128, 128), (120, 110, 100))
    with pytest.raises(FaceNotFoundError, match="reconstruction") as info:
        dlib_id.distance(Image.open(HOPPER), blank)
    assert isinstance(info.value, NoFaceError)
