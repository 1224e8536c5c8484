"""HyperStyle: parity of inversion.hyperstyle with the original code, loading of the official containers.

Golden data: tests/data/hyperstyle/golden.npz, made by make_golden.py there from the ORIGINAL yuval-alaluf/hyperstyle
code on CPU in float64 (official FFHQ hypernetwork and W-encoder; a 256 px config-f decoder, 5 passes, batch 2).
Weights: tests/reference_fill.py on the containers' own keys, family "auto", in float64; the ten names of the shared
hypernetwork tensors share the value filled for ``hypernet.shared_weight_hypernet.*``. Our side goes through the
official-container loader (``load_hyperstyle_checkpoint``) with the same float64 dicts.

Error = max |ours - ref| / max |ref| per array, tolerance REL_TOL = 1e-5 (as pSp/e4e; golden arrays are stored in
float32, whose rounding is ~6e-8 relative). Measured values are in the report / training README.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golden import COMPACT, seeded_rand_pm1
from inversion.hyperstyle import (HyperNet, HyperNetConfig, WEncoder, adjusted_generator, layer_shapes, refine,
                                  synthesis_with_deltas)
from inversion.hyperstyle_io import (HyperStyleCheckpointError, load_hyperstyle_checkpoint, load_hyperstyle_files)
from inversion.stylegan2 import Generator
from reference_fill import fill_tensor

DATA = COMPACT / "hyperstyle"
GOLD = np.load(DATA / "golden.npz")
REL_TOL = 1e-5
SIZE, ITERS = 256, 5
LAYERS = tuple(int(v) for v in GOLD["layers"])
SEED_X = int(GOLD["seeds"][0])


def rel_err(ours: torch.Tensor, ref: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(ours.detach().double().numpy() - ref).max() / np.abs(ref).max())


def shared_alias(key: str) -> str:
    parts = key.split(".")
    if len(parts) == 5 and parts[:2] == ["hypernet", "refinement_blocks"] and parts[3] == "hypernet":
        return "hypernet.shared_weight_hypernet." + parts[4]
    return key


def filled(module_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The reference fill of a container's ``prefix.*`` keys (float64; aliases share the canonical tensor)."""
    out: dict[str, torch.Tensor] = {}
    for k, v in module_state.items():
        key, canon = prefix + k, shared_alias(prefix + k)
        if canon not in out:
            src = module_state[canon[len(prefix):]]
            like = src if src.device.type != "meta" else torch.empty((), dtype=src.dtype)
            if not src.is_floating_point():
                out[canon] = torch.zeros(src.shape, dtype=src.dtype)
            elif src.device.type == "meta":
                out[canon] = fill_tensor(canon, torch.empty(src.shape, dtype=torch.float64, device="meta"), "auto")
            else:
                out[canon] = fill_tensor(canon, like.double(), "auto")
        out[key] = out[canon]
    return out


@pytest.fixture(scope="module")
def reference_run():
    """Our HyperStyle on the golden configuration, through the official loader, in float64."""
    g = Generator(SIZE).double()
    dec = filled(g.state_dict(), "decoder.")
    g.load_state_dict({k[len("decoder."):]: v for k, v in dec.items()}, strict=True)
    g.eval().requires_grad_(False)
    config = HyperNetConfig(layer_shapes=tuple(layer_shapes(SIZE)), layers_to_tune=LAYERS)
    with torch.device("meta"):
        hn_state, enc_state = HyperNet(config).state_dict(), WEncoder().state_dict()
    # latent_avg: (14, 512) randn float64, seed 208, as make_golden.py draws it
    latent_avg = torch.randn((14, 512), generator=torch.Generator().manual_seed(int(GOLD["seeds"][1])),
                             dtype=torch.float64)
    hyper = {"state_dict": {**filled(hn_state, "hypernet."), **dec}, "latent_avg": latent_avg,
             "opts": {"encoder_type": "SharedWeightsHyperNetResNet", "input_nc": 6, "output_size": SIZE,
                      "layers_to_tune": ",".join(map(str, LAYERS))}}
    wenc = {"state_dict": {**filled(enc_state, "encoder."), **dec}, "opts": {"encoder_type": "WEncoder"}}
    del hn_state, enc_state
    bundle = load_hyperstyle_checkpoint(hyper, wenc, dtype=torch.float64)
    del hyper, wenc
    x = seeded_rand_pm1((2, 3, SIZE, SIZE), SEED_X)
    passes: dict[int, tuple[list, torch.Tensor]] = {}
    with torch.no_grad():
        w_raw = bundle.encoder(x)
        codes = bundle.initial_codes(x)
        y0 = g.synthesis(codes)

        def keep(i, deltas, image):
            passes[i] = ([None if d is None else d.clone() for d in deltas], image.clone())

        refine(bundle.hypernet, g, x, codes, n_iters=ITERS, on_pass=keep)
    return {"g": g, "bundle": bundle, "w_raw": w_raw, "codes": codes, "y0": y0, "passes": passes}


def test_w_encoder_and_start_match_reference(reference_run):
    assert rel_err(reference_run["w_raw"], GOLD["w_raw"]) < REL_TOL
    assert rel_err(reference_run["codes"], GOLD["codes"]) < REL_TOL
    assert rel_err(reference_run["y0"][:, :, 112:144, 112:144], GOLD["y_hat0_crop"]) < REL_TOL


@pytest.mark.parametrize("it", range(1, ITERS + 1))
def test_weight_deltas_per_pass_match_reference(reference_run, it):
    deltas, _ = reference_run["passes"][it]
    assert [i for i, d in enumerate(deltas) if d is not None] == list(LAYERS)
    for j in LAYERS:
        d = deltas[j]
        full = d.expand(-1, -1, -1, *GOLD[f"it{it}_l{j}_crop"].shape[-2:])  # per-(out, in) offsets cover all taps
        flat = full.reshape(2, -1)
        idx = torch.linspace(0, flat.shape[1] - 1, GOLD[f"it{it}_l{j}_pick"].shape[1], dtype=torch.float64).round().long()
        assert rel_err(full[:, :4, :4], GOLD[f"it{it}_l{j}_crop"]) < REL_TOL, (it, j)
        assert rel_err(flat[:, idx], GOLD[f"it{it}_l{j}_pick"]) < REL_TOL, (it, j)
        assert rel_err(flat.sum(1), GOLD[f"it{it}_l{j}_sum"]) < REL_TOL, (it, j)
        assert rel_err(flat.abs().sum(1), GOLD[f"it{it}_l{j}_abssum"]) < REL_TOL, (it, j)


def test_images_per_pass_match_reference(reference_run):
    for it in range(1, ITERS + 1):
        image = reference_run["passes"][it][1]
        assert rel_err(image[:, :, 120:136, 120:136], GOLD[f"it{it}_image_crop"]) < REL_TOL, it
        assert rel_err(image.sum(dim=(2, 3)), GOLD[f"it{it}_image_sum"]) < REL_TOL, it
    assert rel_err(reference_run["passes"][ITERS][1][:, :, 112:144, 112:144], GOLD["image_crop"]) < REL_TOL


def test_adjusted_generator_reproduces_the_final_image(reference_run):
    g, deltas = reference_run["g"], reference_run["passes"][ITERS][0]
    for n in range(2):
        adjusted = adjusted_generator(g, [None if d is None else d[n:n + 1] for d in deltas])
        with torch.no_grad():
            image = adjusted.synthesis(reference_run["codes"][n:n + 1])
        assert rel_err(image[:, :, 112:144, 112:144], GOLD["image_crop"][n:n + 1]) < REL_TOL
        # untouched tensors are shared with g, tuned weights are new; g itself is unchanged
        assert adjusted.style[1].weight.data_ptr() == g.style[1].weight.data_ptr()
        assert adjusted.convs[0].conv.weight.data_ptr() != g.convs[0].conv.weight.data_ptr()
    assert rel_err(g.synthesis(reference_run["codes"])[:, :, 112:144, 112:144], GOLD["y_hat0_crop"]) < REL_TOL


# ------------------------------------------------------------------------------------------------- loading


def tiny_parts(seed: int = 0):
    """A tiny generator, hypernetwork and W-encoder with the official key layout."""
    torch.manual_seed(seed)
    g = Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=16).eval()
    shapes = tuple(layer_shapes(32, channel_multiplier=1, max_channels=16))
    config = HyperNetConfig(layer_shapes=shapes, layers_to_tune=(0, 2, 3, 4, 5, 6, 8, 9), shared_layers=(0, 2, 3, 5),
                            input_size=64, widths=(8, 12, 16, 16), units=(1, 2, 1, 1), shared_width=16, z_dim=8,
                            shared_inner=8, refine_width=8, refine_inner=8)
    hypernet = HyperNet(config).eval()
    with torch.no_grad():
        for p in hypernet.parameters():
            p.mul_(0.1)
    enc = WEncoder(widths=(8, 12, 16, 24), units=(1, 2, 1, 1), style_dim=64).eval()
    return g, hypernet, enc


def fake_containers(g, hypernet, enc) -> tuple[dict, dict]:
    hyper = {"state_dict": {**{f"hypernet.{k}": v for k, v in hypernet.state_dict().items()},
                            **{f"decoder.{k}": v for k, v in g.state_dict().items()}},
             "latent_avg": torch.randn(8, 64),
             "opts": {"encoder_type": "SharedWeightsHyperNetResNet", "input_nc": 6, "output_size": 32,
                      "layers_to_tune": "0,2,3,4,5,6,8,9", "n_iters_per_batch": 5}}
    wenc = {"state_dict": {**{f"encoder.{k}": v for k, v in enc.state_dict().items()},
                           **{f"decoder.{k}": v for k, v in g.state_dict().items()}},
            "latent_avg": torch.randn(64), "opts": {"encoder_type": "WEncoder", "output_size": 32}}
    return hyper, wenc


def test_official_container_round_trip(tmp_path):
    g, hypernet, enc = tiny_parts()
    hyper, wenc = fake_containers(g, hypernet, enc)
    assert sum(k.endswith(".hypernet.w2") for k in hyper["state_dict"]) == 4  # aliases of the shared tensors
    torch.save(hyper, tmp_path / "hyperstyle_ffhq.pt")
    torch.save(wenc, tmp_path / "faces_w_encoder.pt")
    bundle = load_hyperstyle_files(tmp_path / "hyperstyle_ffhq.pt", tmp_path / "faces_w_encoder.pt")
    assert bundle.hypernet.config == hypernet.config
    assert bundle.input_size == 64 and bundle.n_iters == 5
    blocks = bundle.hypernet.refinement_blocks
    assert blocks[0].hypernet is bundle.hypernet.shared_weight_hypernet is blocks[5].hypernet
    loaded_g = bundle.build_generator()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        codes = enc(x)[:, None].expand(-1, 8, -1) + hyper["latent_avg"]
        expected = refine(hypernet, g, x, codes, n_iters=3)
        got_codes, got_deltas, got_image = bundle.invert(loaded_g, x, n_iters=3)
    assert torch.equal(got_codes, codes)
    assert torch.allclose(got_image, expected[1], atol=1e-5, rtol=1e-5)
    assert [d is None for d in got_deltas] == [i not in hypernet.config.layers_to_tune for i in range(len(got_deltas))]
    with torch.no_grad():
        batched = synthesis_with_deltas(loaded_g, got_codes, got_deltas)
        one = adjusted_generator(loaded_g, got_deltas).synthesis(got_codes)
    assert torch.allclose(batched, one, atol=1e-5, rtol=1e-5)


def test_official_container_faults():
    g, hypernet, enc = tiny_parts()
    hyper, wenc = fake_containers(g, hypernet, enc)
    sd = dict(hyper["state_dict"])
    sd.pop("hypernet.body.0.conv2.weight")
    with pytest.raises(HyperStyleCheckpointError, match="missing keys: body.0.conv2.weight"):
        load_hyperstyle_checkpoint({**hyper, "state_dict": sd}, wenc)
    sd = dict(hyper["state_dict"])
    sd["hypernet.refinement_blocks.2.hypernet.w1"] = sd["hypernet.refinement_blocks.2.hypernet.w1"] + 1
    with pytest.raises(HyperStyleCheckpointError, match="must be one tensor"):
        load_hyperstyle_checkpoint({**hyper, "state_dict": sd}, wenc)
    with pytest.raises(HyperStyleCheckpointError, match="only SharedWeightsHyperNetResNet"):
        load_hyperstyle_checkpoint({**hyper, "opts": {"encoder_type": "SharedWeightsHyperNetResNetSeparable"}}, wenc)
    with pytest.raises(HyperStyleCheckpointError, match="latent_avg"):
        load_hyperstyle_checkpoint({k: v for k, v in hyper.items() if k != "latent_avg"}, wenc)
    with pytest.raises(HyperStyleCheckpointError, match="no 'encoder"):
        load_hyperstyle_checkpoint(hyper, {"state_dict": {}})
    with pytest.raises(HyperStyleCheckpointError, match="'state_dict'"):
        load_hyperstyle_checkpoint([], wenc)


# ------------------------------------------------------------------------------------------------- the method


def test_ffhq_path_loads_the_two_official_files_and_returns_the_adjusted_generator(tmp_path):
    """The FFHQ family's pieces (fake official files, tiny shapes): start from the W-encoder + the hypernetwork's
    latent_avg, 5 passes, adjusted generator sharing the untouched tensors with the family's generator."""
    from inversion.methods import METHODS, invert
    from inversion.models import ModelSet

    g, hypernet, enc = tiny_parts(1)
    hyper, wenc = fake_containers(g, hypernet, enc)
    files = {"stylegan2_ffhq": tmp_path / "g.pt", "hyperstyle_ffhq": tmp_path / "h.pt",
             "hyperstyle_w_encoder": tmp_path / "w.pt"}
    torch.save({"g_ema": g.state_dict(), "latent_avg": torch.zeros(64)}, files["stylegan2_ffhq"])
    torch.save(hyper, files["hyperstyle_ffhq"])
    torch.save(wenc, files["hyperstyle_w_encoder"])
    models = ModelSet("ffhq", locate=lambda name: files[name])
    assert [p for p in METHODS["hyperstyle"].needs] == ["generator", "hyperstyle", "hyperstyle:start"]
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    result = invert(models, "hyperstyle", image)
    with torch.no_grad():
        x = torch.nn.functional.interpolate(image, size=(64, 64), mode="bilinear", align_corners=False)
        codes = enc(x)[:, None].expand(-1, 8, -1) + hyper["latent_avg"]
        deltas, expected = refine(hypernet, g, x, codes, n_iters=5)
    assert result.method == "hyperstyle" and result.info["recipe"]["n_iters"] == 5
    assert torch.allclose(result.w_plus, codes, atol=1e-6)
    assert torch.allclose(result.image, expected, atol=1e-5, rtol=1e-5)
    shared = models.generator()
    assert result.generator is not shared
    assert result.generator.style[1].weight.data_ptr() == shared.style[1].weight.data_ptr()
    with torch.no_grad():
        assert torch.allclose(result.generator.synthesis(result.w_plus), expected, atol=1e-5, rtol=1e-5)
    assert set(models.loaded()) >= {"generator", "hyperstyle", "hyperstyle:start"}


def test_builtin_hyperstyle_improves_on_its_e4e_start():
    """The bundled 128 px HyperStyle on held-out generated faces: lower MSE than e4e (its start, same codes),
    and the adjusted generator redraws the result from the codes."""
    from inversion import metrics
    from inversion.methods import StartCache, invert
    from inversion.models import ModelSet

    models = ModelSet("builtin")
    g = models.generator()
    with torch.no_grad():
        z = torch.randn(3, g.style_dim, generator=torch.Generator().manual_seed(4321))
        w = models.latent_avg() + 0.7 * (g.mapping(z) - models.latent_avg())
        faces = g.synthesis(w[:, None].repeat(1, g.n_latent, 1), "random",
                            generator=torch.Generator().manual_seed(6)).clamp(-1, 1)
    e4e_mse, hs_mse = [], []
    for i in range(faces.shape[0]):
        x, starts = faces[i:i + 1], StartCache()
        e4e = invert(models, "e4e", x, starts=starts)
        hs = invert(models, "hyperstyle", x, starts=starts)
        assert starts.encoder_passes == 1 and torch.equal(hs.w_plus, e4e.w_plus)
        e4e_mse.append(float(metrics.mse(e4e.image, x)[0]))
        hs_mse.append(float(metrics.mse(hs.image, x)[0]))
        with torch.no_grad():
            assert torch.allclose(hs.generator.synthesis(hs.w_plus), hs.image, atol=1e-4)
    assert sum(hs_mse) < 0.95 * sum(e4e_mse), (hs_mse, e4e_mse)
