"""Parity of inversion.stylegan2 with rosinality's Generator (golden vectors from ../shared/reference).

Both sides load the same deterministic weights (tests/reference_fill.py, filled in float64). Every case
runs against the compact copy in tests/data/stylegan2 (crops + whole-image sums); when ../shared is
present, the same cases are also compared against the full reference arrays.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from golden import COMPACT, seeded_randn, shared_reference
from golden import seeded_randn as golden_randn
from inversion.stylegan2 import Generator, config_from_state_dict, load_generator
from reference_fill import fill_state_dict

DATA = COMPACT / "stylegan2"
SEEDS = json.loads((DATA / "seeds.json").read_text())
COMPACT_NPZ = np.load(DATA / "compact.npz")
F64_TOL = 1e-8  # README: two correct float64 formulations differ by ~1e-13; float32-rounded weights by ~1e-6
F32_TOL = 1e-4


def filled_generator(size: int, *, dtype=torch.float64, mapping_scale: float = 1.0) -> Generator:
    """The reference's weights: build, convert to float64, fill, load strictly (then cast if asked)."""
    g = Generator(size).double().eval()
    sd = fill_state_dict(g.state_dict(), "stylegan2")
    if mapping_scale != 1.0:
        for i in range(1, 9):
            sd[f"style.{i}.weight"] = sd[f"style.{i}.weight"] * mapping_scale
    g.load_state_dict(sd, strict=True)
    return g.to(dtype).requires_grad_(False)


def run_case(g: Generator, tag: str, case: str) -> dict[str, torch.Tensor]:
    """Inputs regenerated from the recorded seeds; returns the case's outputs by reference name."""
    s = SEEDS[tag][case]
    n_latent = g.n_latent
    dtype = g.input.input.dtype

    def seeded_randn(shape, seed):  # inputs in the model's dtype
        return golden_randn(shape, seed).to(dtype)

    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if case == "mapping":
            z = seeded_randn((4, 512), s["seed_z"])
            out["w"] = g.mapping(z)
            if "seed_layer_inputs" in s:
                h = [z]
                for layer in g.style:
                    h.append(layer(h[-1]))
                out["intermediates"] = torch.stack(h[1:])
                out["layer_outputs"] = torch.stack([
                    g.style[k + 1](seeded_randn((4, 512), seed)) for k, seed in enumerate(s["seed_layer_inputs"])])
        elif case in ("w_plus", "w_single"):
            shape = (2, n_latent, 512) if case == "w_plus" else (2, 512)
            if tag == "c1024":
                shape = (1, n_latent, 512)
            out["image"], _ = g([seeded_randn(shape, s["seed_latent"])], input_is_latent=True)
        elif case in ("z_trunc", "w_trunc"):
            key = "seed_z" if case == "z_trunc" else "seed_latent"
            x = seeded_randn((2, 512), s[key])
            t = seeded_randn((1, 512), s["seed_truncation_latent"])
            out["image"], out["latent_out"] = g([x], input_is_latent=case == "w_trunc", truncation=s["truncation"],
                                                truncation_latent=t, return_latents=True)
        elif case.startswith("explicit_noise"):
            noise = [seeded_randn(shape, seed) for shape, seed in zip(s["noise_shapes"], s["seeds_noise"])]
            out["image"], _ = g([seeded_randn((2, n_latent, 512), s["seed_latent"])], input_is_latent=True, noise=noise)
        elif case in ("style_mixing", "style_mixing_w"):
            names = ("z1", "z2") if case == "style_mixing" else ("w1", "w2")
            a, b = (seeded_randn((2, 512), s[f"seed_{n}"]) for n in names)
            out["image"], out["latent_out"] = g([a, b], input_is_latent=case == "style_mixing_w",
                                                inject_index=s["inject_index"], return_latents=True)
        else:
            raise KeyError(case)
    return out


def compare_compact(tag: str, case: str, outputs: dict[str, torch.Tensor], tol: float) -> float:
    """Max abs diff against the compact copy (crops exactly, whole-image sums relatively)."""
    worst = 0.0
    for name, value in outputs.items():
        key = f"{tag}:{case}__{name}"
        v = value.double().numpy()
        if name == "image":
            for crop, (ys, xs) in {"center": (slice(112, 144), slice(112, 144)),
                                   "corner": (slice(0, 16), slice(0, 16))}.items():
                worst = max(worst, float(np.abs(v[:, :, ys, xs] - COMPACT_NPZ[f"{key}__{crop}"]).max()))
            for stat, got in (("sum", v.sum(axis=(1, 2, 3))), ("abssum", np.abs(v).sum(axis=(1, 2, 3)))):
                ref = COMPACT_NPZ[f"{key}__{stat}"]
                assert np.allclose(got, ref, rtol=0, atol=tol * v[0].size), (key, stat, got, ref)
        else:
            worst = max(worst, float(np.abs(v - COMPACT_NPZ[key]).max()))
    return worst


CASES_256 = ["mapping", "w_plus", "w_single", "z_trunc", "explicit_noise", "explicit_noise_per_sample",
             "style_mixing", "style_mixing_w", "w_trunc"]


@pytest.fixture(scope="module")
def g256() -> Generator:
    return filled_generator(256)


@pytest.fixture(scope="module")
def outputs_256(g256) -> dict[str, dict[str, torch.Tensor]]:
    return {case: run_case(g256, "c256", case) for case in CASES_256}


def test_state_dict_layout_matches_manifests():
    for size, n_keys in ((256, 135), (1024, 171)):
        sd = Generator(size).state_dict()
        assert len(sd) == n_keys
        ref = shared_reference()
        if ref is not None:
            manifest = json.loads((ref / "stylegan2" / f"manifest_{size}.json").read_text())
            assert [e["key"] for e in manifest] == list(sd)
            assert all(list(sd[e["key"]].shape) == e["shape"] for e in manifest)
    # every FIR kernel buffer sums to 4 (blur after upsampling and skip upsampling include the x4 gain)
    assert all(abs(float(v.sum()) - 4.0) < 1e-6 for k, v in Generator(256).state_dict().items() if k.endswith("kernel"))


@pytest.mark.parametrize("case", CASES_256)
def test_parity_256_float64_compact(outputs_256, case):
    assert compare_compact("c256", case, outputs_256[case], F64_TOL) <= F64_TOL


def test_parity_256_float64_full_reference(outputs_256):
    ref = shared_reference()
    if ref is None:
        pytest.skip("../shared/reference not present (fresh clone): the compact test covers these cases")
    data = np.load(ref / "stylegan2" / "cases_256.npz")
    for case, outs in outputs_256.items():
        for name, value in outs.items():
            diff = np.abs(value.numpy() - data[f"{case}__{name}"]).max()
            assert diff <= F64_TOL, (case, name, diff)


def test_seed_recipe_reproduces_reference_inputs():
    ref = shared_reference()
    if ref is None:
        pytest.skip("../shared/reference not present: nothing to check the input recipe against")
    data = np.load(ref / "stylegan2" / "cases_256.npz")
    assert np.array_equal(seeded_randn((2, 14, 512), SEEDS["c256"]["w_plus"]["seed_latent"]).numpy(),
                          data["w_plus__latent"])
    s = SEEDS["c256"]["explicit_noise"]
    assert np.array_equal(seeded_randn(s["noise_shapes"][5], s["seeds_noise"][5]).numpy(), data["explicit_noise__noise_05"])


@pytest.mark.parametrize("mode", ["folded", "scaled", "per_sample"])
def test_every_batch_formulation_matches_the_golden_outputs(g256, outputs_256, mode):
    """The three batch formulations agree with the golden-checked images (per-sample noise included)."""
    s = SEEDS["c256"]["explicit_noise_per_sample"]
    noise = [seeded_randn(shape, seed) for shape, seed in zip(s["noise_shapes"], s["seeds_noise"])]
    with torch.no_grad():
        image = g256.synthesis(seeded_randn((2, 14, 512), s["seed_latent"]), noise, mode=mode)
        plain = g256.synthesis(seeded_randn((2, 14, 512), SEEDS["c256"]["w_plus"]["seed_latent"]), mode=mode)
    assert (image - outputs_256["explicit_noise_per_sample"]["image"]).abs().max() <= F64_TOL
    assert (plain - outputs_256["w_plus"]["image"]).abs().max() <= F64_TOL


def test_parity_mapping_x100_float64():
    """Mapping weights at realistic scale: the z path, pixel norm and mixing split become observable."""
    g = filled_generator(256, mapping_scale=100.0)
    for case in ("mapping", "z_trunc", "style_mixing"):
        outs = run_case(g, "x100", case)
        assert compare_compact("x100", case, outs, F64_TOL) <= F64_TOL
    ref = shared_reference()
    if ref is not None:
        data = np.load(ref / "stylegan2" / "cases_256_mapping_x100.npz")
        assert np.abs(outs["image"].numpy() - data["style_mixing__image"]).max() <= F64_TOL
        assert outs["latent_out"][:, 0].std() > 0.5  # really z-dependent


def test_parity_256_float32(g256):
    g32 = filled_generator(256, dtype=torch.float32)
    out = run_case(g32, "c256", "w_plus")
    ref = run_case(g256, "c256", "w_plus")  # float64 reference computed above = golden within 1e-8
    assert (out["image"].double() - ref["image"]).abs().max() <= F32_TOL


def test_parity_1024():
    g = filled_generator(1024)
    outs = run_case(g, "c1024", "mapping")
    assert compare_compact("c1024", "mapping", outs, 1e-12) <= 1e-12
    image = run_case(g, "c1024", "w_plus")["image"]
    crop = image[:, :, 480:544, 480:544].numpy()
    assert np.abs(crop - COMPACT_NPZ["c1024:w_plus__image_crop64_f64"]).max() <= F64_TOL
    ref = shared_reference()
    if ref is not None:
        full = np.load(ref / "stylegan2" / "cases_1024.npz")["w_plus__image"]
        assert np.abs(image.numpy() - full).max() <= 2e-6  # stored as float32
    g32 = g.float()
    latent = seeded_randn((1, 18, 512), SEEDS["c1024"]["w_plus"]["seed_latent"]).float()
    with torch.no_grad():
        image32 = g32.synthesis(latent)
    assert (image32[:, :, 496:528, 496:528].double().numpy() - COMPACT_NPZ["c1024:w_plus__image_center_f32"]).__abs__().max() <= F32_TOL


def test_config_roundtrip_and_container_loading(tmp_path):
    small = Generator(64, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=64)
    rebuilt = Generator(**config_from_state_dict(small.state_dict())).state_dict()
    assert {k: v.shape for k, v in rebuilt.items()} == {k: v.shape for k, v in small.state_dict().items()}
    assert config_from_state_dict(Generator(1024).state_dict()) == Generator(1024).config()
    latent_avg = torch.randn(32)
    torch.save({"g_ema": small.state_dict(), "latent_avg": latent_avg}, tmp_path / "ckpt.pt")
    g, avg = load_generator(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert torch.equal(avg, latent_avg.reshape(1, -1))
    ws = torch.randn(2, g.n_latent, 32)
    with torch.no_grad():
        assert torch.equal(g.synthesis(ws), small.eval().synthesis(ws))
    broken = dict(small.state_dict())
    broken.pop("convs.0.noise.weight")
    with pytest.raises(RuntimeError, match="convs.0.noise.weight"):
        load_generator({"g_ema": broken})
    with pytest.raises(ValueError, match="g_ema"):
        load_generator({"something": 1})


def test_batch_consistency_and_autocast():
    """A batch gives each sample what it gets alone (no cross-talk); bf16 autocast runs and stays close."""
    torch.manual_seed(0)
    g = Generator(64, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=64).eval()
    ws = g.mapping(torch.randn(3, 64)).unsqueeze(1).repeat(1, g.n_latent, 1)
    with torch.no_grad():
        batch = g.synthesis(ws)
        single = torch.cat([g.synthesis(ws[i:i + 1]) for i in range(3)])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = g.synthesis(ws)
    assert (batch - single).abs().max() < 1e-5
    assert torch.isfinite(low).all()
    assert (low.float() - batch).abs().mean() < 0.05 * batch.abs().mean()


@pytest.mark.parametrize("mode", ["folded", "scaled", "per_sample"])
def test_folded_blur_matches_the_golden_outputs(g256, outputs_256, mode):
    """The FIR folded into the upsampling weights and run over four output phases (the batched CUDA default)
    gives the golden images in float64, in every batch formulation."""
    s = SEEDS["c256"]["explicit_noise_per_sample"]
    noise = [seeded_randn(shape, seed) for shape, seed in zip(s["noise_shapes"], s["seeds_noise"])]
    g256.fold_blur = True
    try:
        with torch.no_grad():
            image = g256.synthesis(seeded_randn((2, 14, 512), s["seed_latent"]), noise, mode=mode)
            plain = g256.synthesis(seeded_randn((1, 14, 512), SEEDS["c256"]["w_plus"]["seed_latent"]), mode=mode)
    finally:
        g256.fold_blur = None
    assert (image - outputs_256["explicit_noise_per_sample"]["image"]).abs().max() <= F64_TOL
    assert (plain - outputs_256["w_plus"]["image"][:1]).abs().max() <= F64_TOL


BF16_TOL = 0.05  # max |bf16 fast path - float64 exact| relative to the image's max |value| (measured ~0.01-0.02)


@pytest.mark.parametrize("fold", [False, True])
def test_bf16_fast_paths_agree_with_the_exact_path(g256, fold):
    """bf16 autocast (what CUDA runs), folded FIR or not, against the float64 exact synthesis at 256 px: the
    largest deviation stays within BF16_TOL of the image range, the mean within 1 %."""
    latent = seeded_randn((1, 14, 512), SEEDS["c256"]["w_plus"]["seed_latent"])
    g32 = filled_generator(256, dtype=torch.float32)
    g32.fold_blur = fold
    with torch.no_grad():
        exact = g256.synthesis(latent)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = g32.synthesis(latent.float()).double()
        full32 = g32.synthesis(latent.float()).double()
    scale = exact.abs().max()
    assert (full32 - exact).abs().max() <= F32_TOL * scale
    assert (fast - exact).abs().max() <= BF16_TOL * scale
    assert (fast - exact).abs().mean() <= 0.01 * exact.abs().mean()


def test_coarse_output_uses_only_the_early_layers():
    """``synthesis(size=s)`` is the skip RGB at s px: equal to the full run's, unaffected by later layers."""
    torch.manual_seed(0)
    g = Generator(64, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=32).eval().requires_grad_(False)
    ws = torch.randn(1, g.n_latent, 32)
    with torch.no_grad():
        a = g.synthesis(ws, size=16)
        g.to_rgbs[-1].bias.add_(1.0)  # a 64 px layer: must not matter at 16 px
        b = g.synthesis(ws, size=16)
        g.to_rgbs[-1].bias.sub_(1.0)
    assert a.shape == (1, 3, 16, 16) and torch.equal(a, b)
    with pytest.raises(ValueError, match="size"):
        g.synthesis(ws, size=24)
