"""Parity of inversion.encoders (pSp GradualStyleEncoder, e4e Encoder4Editing) with the reference modules.

Golden data: ../shared/reference/encoders (full, float64) when present, always the compact copy in
tests/data/encoders (outputs stored as float32, inputs regenerated from the seeds; see make_compact.py there).
Weights: tests/reference_fill.py, family "conv", filled in float64 after ``.double()`` (the README's procedure).

Tolerances, error = max |ours - ref| / max |ref| (the fill makes the nets explosive, see the README's table):
- float64 codes/W+: REL_TOL = 1e-5. Measured here: pSp 9.6e-9, e4e 2.4e-7 (an input change of 1 ulp moves the
  reference itself by 9e-9 / 2e-7; any structural mistake the README tried gives > 0.1).
- float32: the whole encoders cannot be checked under this fill: float32 rounding alone moves the codes by 0.38-0.5
  of their max (c2 by 0.56). The deepest level float32 reproduces is c1 (unit 6): measured 7.3e-7, tolerance 1e-5.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from golden import COMPACT, seeded_rand_pm1, shared_reference
from inversion.encoders import (
    E4EEncoder,
    EncoderBundle,
    EncoderCheckpointError,
    PSPEncoder,
    bundled_encoder_files,
    face_pool,
    load_bundled_encoder,
    load_encoder_checkpoint,
    preprocess,
)
from inversion.stylegan2 import Generator
from reference_fill import fill_state_dict

DATA = COMPACT / "encoders"
GOLD = np.load(DATA / "golden.npz")
MANIFESTS = json.loads((DATA / "manifests.json").read_text())
SEEDS = dict(zip(("psp", "irse", "idloss", "e4e"), (int(s) for s in GOLD["seeds"])))
REL_TOL = 1e-5
C1_F32_TOL = 1e-5
FEATURE_TOL = {"psp_c1": 1e-10, "psp_c2": 1e-8, "psp_c3": 1e-6}  # README, full float64 features only
E4E_STAGES = (0, 3, 7)


def rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(ours.detach().double().numpy() - ref).max() / np.abs(ref).max())


def full_cases() -> dict | None:
    root = shared_reference()
    return None if root is None else np.load(root / "encoders" / "cases.npz")


def derived_stage(codes: np.ndarray, stage: int) -> np.ndarray:
    """e4e at ``stage`` from stage 18: rows after ``stage`` repeat row 0 (checked exactly in make_compact.py)."""
    out = np.array(codes, copy=True)
    out[:, stage + 1:] = out[:, :1]
    return out


# ------------------------------------------------------------------------------------------------- layout


@pytest.mark.parametrize("cls", [PSPEncoder, E4EEncoder])
def test_state_dict_layout_matches_official(cls):
    with torch.device("meta"):
        sd = cls().state_dict()
    ours = {k: list(v.shape) for k, v in sd.items()}
    assert ours == MANIFESTS["encoder"]
    assert all(v.dtype == (torch.int64 if k.endswith("num_batches_tracked") else torch.float32) for k, v in sd.items())
    root = shared_reference()
    if root is not None:
        name = "psp_encoder.json" if cls is PSPEncoder else "e4e_encoder.json"
        full = {e["key"]: (e["shape"], e["dtype"]) for e in json.loads((root / "encoders" / name).read_text())}
        assert {k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()} == full
        ckpt = json.loads((root / "encoders" / name.replace("encoder", "ffhq_encode_state_dict")).read_text())
        enc = {e["key"].removeprefix("encoder."): e["shape"] for e in ckpt if e["key"].startswith("encoder.")}
        assert enc == ours


# ------------------------------------------------------------------------------------- float64 parity


@pytest.fixture(scope="module")
def filled_state() -> dict[str, torch.Tensor]:
    """The reference weights: float64 module state filled in float64 (one copy, shared by both encoders)."""
    model = PSPEncoder().eval().double()
    return fill_state_dict(model.state_dict(), "conv")


def _model(cls, state):
    with torch.device("meta"):
        model = cls()
    model.load_state_dict(state, strict=True, assign=True)  # shares the float64 tensors, no copy
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def psp_run(filled_state):
    model = _model(PSPEncoder, filled_state)
    taps = {}
    hooks = [model.body[i].register_forward_hook(lambda m, a, out, name=name: taps.__setitem__(name, out))
             for i, name in ((6, "psp_c1"), (20, "psp_c2"), (23, "psp_c3"))]
    x = seeded_rand_pm1((2, 3, 256, 256), SEEDS["psp"])
    with torch.no_grad():
        codes = model(x)
    for h in hooks:
        h.remove()
    return codes, taps


def test_psp_codes_and_wplus(psp_run):
    codes, taps = psp_run
    assert codes.shape == (2, 18, 512) and codes.dtype == torch.float64
    assert rel_err(codes, GOLD["psp_codes"]) <= REL_TOL
    latent_avg = torch.randn(18, 512, generator=torch.Generator().manual_seed(SEEDS["psp"] + 7), dtype=torch.float64)
    bundle = EncoderBundle(kind="psp", encoder=torch.nn.Identity(), decoder_state_dict={}, latent_avg=latent_avg)
    assert rel_err(bundle.codes_to_wplus(codes), GOLD["psp_wplus"]) <= REL_TOL
    assert rel_err(taps["psp_c1"][:, :32, :16, :16], GOLD["psp_c1_crop"]) <= 1e-7  # float32 storage
    full = full_cases()
    if full is not None:
        assert rel_err(codes, full["psp_codes"]) <= REL_TOL
        assert np.array_equal(latent_avg.numpy(), full["psp_latent_avg_example"])
        assert rel_err(bundle.codes_to_wplus(codes), full["psp_wplus"]) <= REL_TOL
        feats = np.load(shared_reference() / "encoders" / "features_psp.npz")
        for name, tol in FEATURE_TOL.items():
            assert rel_err(taps[name], feats[name]) <= tol, name


def test_e4e_codes_every_stage(filled_state):
    model = _model(E4EEncoder, filled_state)
    assert model.progressive_stage == 18
    x = seeded_rand_pm1((2, 3, 256, 256), SEEDS["e4e"])
    full = full_cases()
    with torch.no_grad():
        codes = model(x)
        assert codes.shape == (2, 18, 512)
        assert rel_err(codes, GOLD["e4e_codes"]) <= REL_TOL
        if full is not None:
            assert rel_err(codes, full["e4e_codes_stage18"]) <= REL_TOL
        for stage in E4E_STAGES:  # one sample each: the body dominates the cost
            model.progressive_stage = stage
            out = model(x[1:])
            assert rel_err(out, derived_stage(GOLD["e4e_codes"], stage)[1:]) <= REL_TOL, stage
            if full is not None:
                assert rel_err(out, full[f"e4e_codes_stage{stage}"][1:]) <= REL_TOL, stage


def test_body_float32_up_to_c1(filled_state):
    """float32 weights and arithmetic reproduce the first level (unit 6); deeper levels explode under this fill."""
    model = _model(PSPEncoder, filled_state)
    stem = copy.deepcopy(torch.nn.Sequential(model.input_layer, *model.body[:7])).float()
    x = seeded_rand_pm1((2, 3, 256, 256), SEEDS["psp"]).float()
    with torch.no_grad():
        c1 = stem(x)
    assert c1.dtype == torch.float32
    assert rel_err(c1[:, :32, :16, :16], GOLD["psp_c1_crop"]) <= C1_F32_TOL
    root = shared_reference()
    if root is not None:
        assert rel_err(c1, np.load(root / "encoders" / "features_psp.npz")["psp_c1"]) <= C1_F32_TOL


# ------------------------------------------------------------------------------------ small variants


def tiny(cls, **kw):
    torch.manual_seed(0)
    cfg = dict(n_styles=10, input_size=64, widths=(8, 16, 32, 64), units=(1, 2, 2, 1), style_dim=32)
    cfg.update(kw)
    model = cls(**cfg).eval().requires_grad_(False)
    with torch.no_grad():  # non-trivial BatchNorm statistics and PReLU slopes
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, torch.nn.PReLU):
                m.weight.uniform_(0.1, 0.3)
    return model


def test_e4e_equals_psp_base_plus_offsets_and_stages():
    psp = tiny(PSPEncoder).double()
    e4e = tiny(E4EEncoder).double()
    e4e.load_state_dict(psp.state_dict(), strict=True)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    with torch.no_grad():
        p = psp(x)
        assert p.shape == (3, 10, 32)
        expected = p[:, :1] + torch.cat([torch.zeros_like(p[:, :1]), p[:, 1:]], dim=1)
        assert torch.allclose(e4e(x), expected, rtol=0, atol=1e-12 * p.abs().max())
        for stage in (0, 1, 3, 6, 7, 9, 18):
            e4e.set_progressive_stage(stage)
            want = expected.clone()
            want[:, stage + 1:] = p[:, :1]
            assert torch.allclose(e4e(x), want, rtol=0, atol=1e-12 * p.abs().max()), stage
    with pytest.raises(ValueError):
        e4e.progressive_stage = -1
    with pytest.raises(ValueError):
        e4e.progressive_stage = 19


def test_batch_independence_channels_last_and_float32():
    model = tiny(PSPEncoder)
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        ref = model.double()(x.double())
        model = model.float()
        batched = model(x)
        single = torch.cat([model(x[i:i + 1]) for i in range(3)])
        model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        cl = model_cl(x.contiguous(memory_format=torch.channels_last))
    scale = ref.abs().max()
    assert (batched.double() - ref).abs().max() <= 1e-5 * scale  # well-conditioned weights: float32 is fine
    assert (single - batched).abs().max() <= 1e-5 * scale
    assert (cl - batched).abs().max() <= 1e-5 * scale


def test_128px_variant_shapes_and_bundled_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny(E4EEncoder, n_styles=12, input_size=128)
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        codes = model(x)
    assert codes.shape == (2, 12, 32)
    with pytest.raises(ValueError):
        model(torch.zeros(2, 1, 128, 128))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 3, 256, 256))

    bundle = EncoderBundle(kind="e4e", encoder=model, decoder_state_dict={}, latent_avg=torch.randn(32),
                           opts={"output_size": 128})
    tensors, config = bundled_encoder_files(bundle)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    back = load_bundled_encoder(load_file(str(tmp_path / "model.safetensors")),
                                json.loads((tmp_path / "config.json").read_text()), kind="e4e")
    assert back.output_size == 128 and back.latent_avg.shape == (12, 32)
    with torch.no_grad():
        assert torch.equal(back.encode(x), codes + bundle.latent_avg)
    with pytest.raises(EncoderCheckpointError, match="psp"):
        load_bundled_encoder(tensors, config, kind="psp")


# ---------------------------------------------------------------------------------------- checkpoints


def _ckpt(encoder_state, kind, **extra):
    decoder = Generator(1024).state_dict()
    state = {**{f"encoder.{k}": v for k, v in encoder_state.items()}, **{f"decoder.{k}": v for k, v in decoder.items()}}
    opts = {"encoder_type": "GradualStyleEncoder", "input_nc": 3, "output_size": 1024}
    if kind == "e4e":
        opts = {"encoder_type": "Encoder4Editing", "stylegan_size": 1024}
    return {"state_dict": state, "opts": opts, **extra}


def test_load_official_checkpoint_layout(filled_state):
    latent_avg = torch.randn(18, 512)
    ckpt = _ckpt(filled_state, "psp", latent_avg=latent_avg, optimizer={"unused": 1})
    del ckpt["opts"]["output_size"]  # older pSp checkpoints: defaulted to 1024
    bundle = load_encoder_checkpoint(ckpt, "psp")
    assert isinstance(bundle.encoder, PSPEncoder) and not bundle.encoder.training
    assert bundle.opts["output_size"] == 1024 and bundle.opts["learn_in_w"] is False
    loaded = bundle.encoder.state_dict()
    assert all(torch.equal(loaded[k], v.to(loaded[k].dtype)) for k, v in filled_state.items())
    assert torch.equal(bundle.latent_avg, latent_avg)
    gen = bundle.build_generator()
    assert gen.size == 1024 and set(gen.state_dict()) == set(bundle.decoder_state_dict)
    codes = torch.zeros(2, 18, 512)
    assert torch.equal(bundle.codes_to_wplus(codes), latent_avg.expand(2, 18, 512))

    e4e = load_encoder_checkpoint(_ckpt(filled_state, "e4e", latent_avg=latent_avg[0]), "e4e")
    assert isinstance(e4e.encoder, E4EEncoder) and e4e.encoder.progressive_stage == 18
    assert torch.equal(e4e.latent_avg, latent_avg[0].expand(18, 512))  # (512,) stored: broadcast to every row


def test_load_checkpoint_errors(filled_state):
    ckpt = _ckpt({}, "psp", latent_avg=torch.zeros(18, 512))
    with pytest.raises(EncoderCheckpointError, match="encoder_type"):
        load_encoder_checkpoint(ckpt, "e4e")
    with pytest.raises(EncoderCheckpointError, match="learn_in_w"):
        load_encoder_checkpoint({**ckpt, "opts": {**ckpt["opts"], "learn_in_w": True}}, "psp")
    with pytest.raises(EncoderCheckpointError, match="state_dict"):
        load_encoder_checkpoint({"g_ema": {}}, "psp")
    broken = dict(filled_state)
    broken.pop("styles.5.linear.bias")
    with pytest.raises(EncoderCheckpointError, match="styles.5.linear.bias"):
        load_encoder_checkpoint(_ckpt(broken, "psp", latent_avg=torch.zeros(18, 512)), "psp")
    no_avg = _ckpt(filled_state, "psp")
    no_avg["opts"]["start_from_latent_avg"] = True
    with pytest.raises(EncoderCheckpointError, match="latent_avg"):
        load_encoder_checkpoint(no_avg, "psp")


# ------------------------------------------------------------------------------------- input pipeline


def test_preprocess_and_face_pool():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)
    x = preprocess(Image.fromarray(pixels))
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    want = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    assert torch.allclose(x, want, atol=1e-6)
    big = Image.fromarray(np.full((1024, 768, 3), (0, 128, 255), dtype=np.uint8)).convert("RGBA")
    y = preprocess(big)
    assert y.shape == (1, 3, 256, 256)
    assert torch.allclose(y[0, :, 100, 100], torch.tensor([-1.0, 128 / 255 * 2 - 1, 1.0]), atol=1e-6)

    img = torch.rand(2, 3, 1024, 1024, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pooled = face_pool(img)
    assert pooled.shape == (2, 3, 256, 256)
    assert torch.allclose(pooled, img.reshape(2, 3, 256, 4, 256, 4).mean(dim=(3, 5)), rtol=0, atol=1e-15)
    assert face_pool(img[:, :, :300, :500]).shape == (2, 3, 256, 256)
    assert face_pool(pooled) is pooled
