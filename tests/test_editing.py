"""Latent editing: direction files, InterFaceGAN / GANSpace / SeFa math, registry, apply/render on a tiny G."""
from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from editing import (EDITS, FFHQ, EditError, EditRequest, apply_edits, coordinate, generator_pca, get_edit,
                     list_edits, load_direction, load_pca, modulation_keys, pca_from_samples, render_edits,
                     sefa_directions)
from editing.directions import DATA_DIR
from editing.sefa import cached_sefa_directions
from inversion.result import Inversion
from inversion.stylegan2 import Generator

SHARED_DIRECTIONS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "directions"

# sha256 of the float32 bytes of each tensor in e4e's published files (computed from ../shared/reference/directions)
PUBLISHED_SHA256 = {
    ("age", "direction"): "8cfe162abbf3de5b596f5663555e903e42d87d54fb1a22fa0ea43f2588d4c7a7",
    ("smile", "direction"): "51221e0df0a088ef0dc1a905c87dc0071a69caa558eea1a6855b11b68d598c66",
    ("pose", "direction"): "8cebaa2d3d95eb580724b68ed4b12cadf9be50c33034df6e0094549f3dd7a1bb",
    ("ffhq_pca", "mean"): "52906bdec3be4af3ff97616cdfc1ca102fbb1f58db180cae5d4648c6a13cba62",
    ("ffhq_pca", "comp"): "27329f3ddf9324d26a1020db962b2886c2bf7c0d00574cbd3c624db2793122ec",
    ("ffhq_pca", "std"): "e663e921d0f4f6506ff0b2d9bbbf4be458edddc06863e8580171fe4a88ea2a59",
}
PUBLISHED_SHAPES = {("age", "direction"): (1, 512), ("smile", "direction"): (1, 512),
                    ("pose", "direction"): (1, 18, 512), ("ffhq_pca", "mean"): (1, 512),
                    ("ffhq_pca", "comp"): (80, 1, 512), ("ffhq_pca", "std"): (80,)}

FFHQ_SHAPED = SimpleNamespace(n_latent=18, style_dim=512)  # stands in for the 1024 G where only shapes matter


def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()


def _randn(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def small_g() -> Generator:
    torch.manual_seed(0)
    g = Generator(64, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=32).eval().requires_grad_(False)
    with torch.no_grad():  # fresh noise gains are 0; make the noise inputs matter
        for name, p in g.named_parameters():
            if name.endswith("noise.weight"):
                p.fill_(0.5)
    return g


@pytest.fixture(scope="module")
def inversion(small_g: Generator) -> Inversion:
    w = small_g.mapping(_randn(1, 64, seed=5)).unsqueeze(1).repeat(1, small_g.n_latent, 1)
    w = w + 0.1 * _randn(*w.shape, seed=6)  # a genuine W+ code
    with torch.no_grad():
        return Inversion(method="test", w_plus=w, image=small_g.synthesis(w))


# ----------------------------------------------------------------------------- direction files


def test_bundled_files_are_the_published_tensors() -> None:
    total = 0
    for (stem, key), digest in PUBLISHED_SHA256.items():
        raw = load_file(str(DATA_DIR / f"{stem}.safetensors"))  # the file's own layout, e.g. comp (80, 1, 512)
        assert tuple(raw[key].shape) == PUBLISHED_SHAPES[(stem, key)] and raw[key].dtype == torch.float32
        assert _sha(raw[key]) == digest, (stem, key)
    for stem in ("age", "smile", "pose", "ffhq_pca"):
        total += (DATA_DIR / f"{stem}.safetensors").stat().st_size
    for stem in ("age", "smile"):
        assert abs(float(load_direction(DATA_DIR / f"{stem}.safetensors").norm()) - 1) < 1e-5
    assert total < 300_000
    license_text = (DATA_DIR / "LICENSE-e4e-directions").read_text()
    assert "MIT License" in license_text and "omertov" in license_text
    if SHARED_DIRECTIONS.is_dir():  # same tensors as the originals, loaded through the .pt path
        for stem in ("age", "smile", "pose"):
            assert torch.equal(load_direction(SHARED_DIRECTIONS / f"{stem}.pt"),
                               load_direction(DATA_DIR / f"{stem}.safetensors"))
        a, b = load_pca(SHARED_DIRECTIONS / "ffhq_pca.pt"), load_pca(DATA_DIR / "ffhq_pca.safetensors")
        assert all(torch.equal(a.tensors()[k], b.tensors()[k]) for k in ("mean", "comp", "std"))
        assert (SHARED_DIRECTIONS / "LICENSE").read_text() == license_text


def test_published_format_loads_and_applies_to_chosen_layers(tmp_path: Path) -> None:
    vec = _randn(1, 512, seed=1)
    vec = vec / vec.norm()
    rows = _randn(1, 18, 512, seed=2)
    torch.save(vec, tmp_path / "vec.pt")
    torch.save(rows, tmp_path / "rows.pt")
    np.savez(tmp_path / "vec.npz", direction=vec.numpy())
    save_file({"direction": rows}, str(tmp_path / "rows.safetensors"))
    assert torch.equal(load_direction(tmp_path / "vec.pt"), vec)
    assert torch.equal(load_direction(tmp_path / "vec.npz"), vec)
    assert torch.equal(load_direction(tmp_path / "rows.pt"), rows)
    assert torch.equal(load_direction(tmp_path / "rows.safetensors"), rows)

    from editing.interfacegan import apply_direction
    codes = _randn(2, 18, 512, seed=3)
    out = apply_direction(codes, load_direction(tmp_path / "vec.pt"), 2.5, layers=(3, 7))
    assert torch.equal(out[:, :3], codes[:, :3]) and torch.equal(out[:, 7:], codes[:, 7:])
    assert torch.equal(out[:, 3:7], codes[:, 3:7] + 2.5 * vec)
    out = apply_direction(codes, load_direction(tmp_path / "rows.pt"), -1.5, layers=(10, 18))
    assert torch.equal(out[:, :10], codes[:, :10])
    assert torch.equal(out[:, 10:], codes[:, 10:] + -1.5 * rows[:, 10:])
    out = apply_direction(codes, vec, 1.0)  # default: all 18 layers
    assert torch.equal(out, codes + vec)

    torch.save(torch.zeros(2, 512), tmp_path / "bad.pt")
    with pytest.raises(EditError):
        load_direction(tmp_path / "bad.pt")
    with pytest.raises(EditError):
        load_direction(tmp_path / "missing.pt")
    with pytest.raises(EditError):  # (1, 18, 512) rows do not fit 14-layer codes
        apply_direction(codes[:, :14], rows, 1.0)


# ----------------------------------------------------------------------------- registry and FFHQ edits


def test_registry_entries() -> None:
    names = {e.name for e in EDITS}
    assert {"age", "smile", "pose", "ganspace", "sefa"} <= names
    published = {e.name: (e.component, *e.layers, e.default_strength) for e in EDITS
                 if e.kind == "ganspace" and e.component is not None}
    assert published == {"eye_openness": (54, 7, 8, 20), "ganspace_smile": (46, 4, 5, -20),
                         "trimmed_beard": (58, 7, 9, 20), "white_hair": (57, 7, 10, -24),
                         "lipstick": (34, 10, 11, 20)}
    for e in EDITS:
        assert e.label and e.source and e.license
        assert e.strength_range[0] <= e.default_strength <= e.strength_range[1]
        assert e.file is None or (DATA_DIR / e.file).is_file()
        assert e.mode == ("target" if e.name in published else "offset")
    assert {e.name for e in list_edits(None)} == {"ganspace", "sefa"}
    assert {e.name for e in list_edits(FFHQ)} == {e.name for e in EDITS if e.generators is None or FFHQ in e.generators}
    assert {e.name for e in list_edits("builtin")} == {"ganspace", "sefa"} | {
        f"builtin_{a}" for a in ("smile", "age", "yaw", "glasses", "hair_color", "hair_length", "eye_open", "light")}
    with pytest.raises(EditError, match="unknown edit"):
        get_edit("nope")


def test_ffhq_interfacegan_edits() -> None:
    codes = _randn(1, 18, 512, seed=7)
    inv = Inversion(method="t", w_plus=codes, image=torch.zeros(1, 3, 8, 8))
    age = load_direction(DATA_DIR / "age.safetensors")
    pose = load_direction(DATA_DIR / "pose.safetensors")
    out = apply_edits(inv, [EditRequest("age", 3.0)], generator=FFHQ_SHAPED, generator_kind=FFHQ)
    assert torch.equal(out, codes + 3.0 * age)
    out = apply_edits(inv, [EditRequest("pose", -2.0, layers=(0, 4))], generator=FFHQ_SHAPED, generator_kind=FFHQ)
    assert torch.equal(out[:, 4:], codes[:, 4:]) and torch.equal(out[:, :4], codes[:, :4] + -2.0 * pose[:, :4])
    out = apply_edits(inv, [EditRequest("smile", 0.0)], generator=FFHQ_SHAPED, generator_kind=FFHQ)
    assert torch.equal(out, codes)
    with pytest.raises(EditError, match="generator kind"):
        apply_edits(inv, [EditRequest("age", 1.0)], generator=FFHQ_SHAPED)
    with pytest.raises(EditError, match="within"):
        apply_edits(inv, [EditRequest("age", 50.0)], generator=FFHQ_SHAPED, generator_kind=FFHQ)


def test_ffhq_ganspace_named_edit_has_e4e_semantics() -> None:
    codes = _randn(1, 18, 512, seed=8)
    inv = Inversion(method="t", w_plus=codes, image=torch.zeros(1, 3, 8, 8))
    pca = load_pca(DATA_DIR / "ffhq_pca.safetensors")
    out = apply_edits(inv, [EditRequest("white_hair")], generator=FFHQ_SHAPED, generator_kind=FFHQ)  # (57, 7, 10, -24)
    mean, comp, std = (pca.mean.double().numpy(), pca.comp.double().numpy(), pca.std.double().numpy())
    w = codes.double().numpy()[0]
    c = float((w[0] - mean[0]) @ comp[57]) / std[57]  # e4e: coordinate read from layer 0
    expected = w.copy()
    expected[7:10] += (-24.0 - c) * comp[57] * std[57]
    np.testing.assert_allclose(out[0].double().numpy(), expected, rtol=0, atol=2e-5)
    assert torch.equal(out[:, :7], codes[:, :7]) and torch.equal(out[:, 10:], codes[:, 10:])
    # target mode: strength equal to the current coordinate is the identity
    here = float(coordinate(codes, pca, 57))
    same = apply_edits(inv, [EditRequest("white_hair", here)], generator=FFHQ_SHAPED, generator_kind=FFHQ)
    assert torch.equal(same, codes)
    # the explorer on FFHQ uses the published PCA in offset mode: strength * std * comp
    out = apply_edits(inv, [EditRequest("ganspace", 2.0, component=3, layers=(0, 5))],
                      generator=FFHQ_SHAPED, generator_kind=FFHQ)
    np.testing.assert_allclose(out[0, :5].numpy(), (codes[0, :5] + 2.0 * pca.std[3] * pca.comp[3]).numpy(), atol=1e-6)
    assert torch.equal(out[:, 5:], codes[:, 5:])
    with pytest.raises(EditError, match="fixed to component"):
        apply_edits(inv, [EditRequest("lipstick", component=3)], generator=FFHQ_SHAPED, generator_kind=FFHQ)


# ----------------------------------------------------------------------------- GANSpace PCA


def test_pca_from_samples_matches_numpy_svd() -> None:
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.2, 16)
    basis = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    x = (rng.standard_normal((4000, 16)) * scales) @ basis.T + rng.standard_normal(16)
    pca = pca_from_samples(torch.from_numpy(x).float(), n_components=10)
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    np.testing.assert_allclose(pca.mean[0].numpy(), x.mean(0), atol=1e-5)
    np.testing.assert_allclose(pca.std.numpy(), s[:10] / np.sqrt(len(x) - 1), rtol=1e-5)
    dots = np.abs(np.sum(pca.comp.double().numpy() * vt[:10], axis=1))
    np.testing.assert_allclose(dots, 1.0, atol=1e-5)
    comp = pca.comp.double()
    assert torch.allclose(comp @ comp.T, torch.eye(10, dtype=torch.float64), atol=1e-6)
    assert bool((pca.std[:-1] > pca.std[1:]).all())


def test_generator_pca_orthonormal_ordered_and_cached(small_g: Generator, tmp_path: Path) -> None:
    pca = generator_pca(small_g, n_samples=3000, seed=1, n_components=20, cache_dir=tmp_path)
    files = list(tmp_path.glob("ganspace-*.safetensors"))
    assert len(files) == 1
    comp = pca.comp.double()
    assert torch.allclose(comp @ comp.T, torch.eye(20, dtype=torch.float64), atol=1e-6)
    assert bool((pca.std[:-1] >= pca.std[1:]).all()) and float(pca.std[-1]) > 0
    # the same z (seed 1, CPU, one batch) through the mapping gives the same PCA
    z = torch.randn(3000, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        w = small_g.mapping(z)
    ref = pca_from_samples(w, n_components=20)
    assert torch.allclose(pca.comp, ref.comp, atol=1e-6) and torch.allclose(pca.std, ref.std, rtol=1e-6)
    # std is the spread of the samples along each component
    proj = (w.double() - w.double().mean(0)) @ comp.T
    assert torch.allclose(proj.std(0), pca.std.double(), rtol=1e-5)
    again = generator_pca(small_g, n_samples=3000, seed=1, n_components=20, cache_dir=tmp_path)
    assert torch.equal(again.comp, pca.comp) and len(list(tmp_path.glob("*.safetensors"))) == 1
    other = copy.deepcopy(small_g)
    with torch.no_grad():
        other.style[1].weight.mul_(1.5)
    generator_pca(other, n_samples=3000, seed=1, n_components=20, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("ganspace-*.safetensors"))) == 2


# ----------------------------------------------------------------------------- SeFa


def test_modulation_keys_follow_the_generator(small_g: Generator) -> None:
    """Tag every W+ layer with its index and record what each modulation layer actually reads."""
    seen: dict[str, set[int]] = {}
    hooks = []
    for name, module in small_g.named_modules():
        if name.endswith("conv.modulation"):
            def hook(_m, args, _out, name=name):
                seen.setdefault(f"{name}.weight", set()).update(int(v) for v in args[0][:, 0].round())
            hooks.append(module.register_forward_hook(hook))
    codes = torch.arange(small_g.n_latent, dtype=torch.float32).reshape(1, -1, 1).repeat(1, 1, 64)
    try:
        with torch.no_grad():
            small_g.synthesis(codes)
    finally:
        for h in hooks:
            h.remove()
    n = small_g.n_latent
    for layer in range(n):
        readers = {k for k, v in seen.items() if layer in v}
        assert set(modulation_keys(layer, n_latent=n, include_torgb=True)) == readers, layer
        assert set(modulation_keys(layer, n_latent=n)) == {k for k in readers if "to_rgb" not in k}
    assert modulation_keys(0, n_latent=18) == ["conv1.conv.modulation.weight"]
    assert modulation_keys(1, n_latent=18) == ["convs.0.conv.modulation.weight"]
    assert modulation_keys(16, n_latent=18) == ["convs.15.conv.modulation.weight"]
    assert modulation_keys(17, n_latent=18) == []


def test_sefa_matches_numpy_eigh(small_g: Generator, tmp_path: Path) -> None:
    sd = small_g.state_dict()
    for layers, torgb, keys in [((2, 6), False, [f"convs.{i}.conv.modulation.weight" for i in range(1, 5)]),
                                ((0, 2), True, ["conv1.conv.modulation.weight", "convs.0.conv.modulation.weight",
                                                "to_rgb1.conv.modulation.weight"])]:
        dirs = sefa_directions(sd, layers=layers, include_torgb=torgb)
        w = np.concatenate([sd[k].double().numpy().T for k in keys], axis=1)
        w = w / np.linalg.norm(w, axis=0, keepdims=True)
        evals, evecs = np.linalg.eigh(w @ w.T)
        evals, evecs = evals[::-1], evecs[:, ::-1]
        np.testing.assert_allclose(dirs.eigenvalues.double().numpy(), evals, rtol=1e-5, atol=1e-5)
        gaps = np.minimum(np.abs(np.diff(evals, prepend=np.inf)), np.abs(np.diff(evals, append=-np.inf)))
        distinct = gaps > 1e-3 * evals[0]
        assert distinct[:10].all()
        dots = np.abs(np.sum(dirs.vectors.double().numpy() * evecs.T, axis=1))
        np.testing.assert_allclose(dots[distinct], 1.0, atol=1e-5)
        v = dirs.vectors.double()
        assert torch.allclose(v @ v.T, torch.eye(64, dtype=torch.float64), atol=1e-5)
        assert dirs.layers == layers
    cached = cached_sefa_directions(sd, layers=(2, 6), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("sefa-*.safetensors"))) == 1
    assert torch.equal(cached_sefa_directions(sd, layers=(2, 6), cache_dir=tmp_path).vectors, cached.vectors)
    assert torch.equal(cached.vectors, sefa_directions(sd, layers=(2, 6)).vectors)
    with pytest.raises(EditError, match="include_torgb"):
        sefa_directions(sd, layers=(small_g.n_latent - 1, small_g.n_latent))


# ----------------------------------------------------------------------------- apply / render on a tiny G


def test_edit_moves_only_chosen_layers_and_zero_is_identity(small_g, inversion, tmp_path) -> None:
    w = inversion.w_plus
    vec = sefa_directions(small_g.state_dict(), layers=(2, 5)).vectors[1]
    out = apply_edits(inversion, [EditRequest("sefa", 2.0, component=1, layers=(2, 5))], generator=small_g,
                      cache_dir=tmp_path)
    assert torch.equal(out[:, :2], w[:, :2]) and torch.equal(out[:, 5:], w[:, 5:])
    assert torch.allclose(out[:, 2:5], w[:, 2:5] + 2.0 * vec, atol=1e-6, rtol=0)
    zero = [EditRequest("sefa", 0.0, component=1), EditRequest("ganspace", 0.0, component=0)]
    assert torch.equal(apply_edits(inversion, zero, generator=small_g, cache_dir=tmp_path), w)
    image = render_edits(inversion, zero, base_generator=small_g, cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(image, small_g.synthesis(w))
    with pytest.raises(EditError, match="generator kind"):  # FFHQ edits are not for this generator
        apply_edits(inversion, [EditRequest("age", 1.0)], generator=small_g)
    with pytest.raises(EditError, match="needs a component"):
        apply_edits(inversion, [EditRequest("sefa", 1.0)], generator=small_g, cache_dir=tmp_path)


def test_edits_compose_additively(small_g, inversion, tmp_path) -> None:
    w = inversion.w_plus
    a = EditRequest("sefa", 3.0, component=0, layers=(0, 4))
    b = EditRequest("ganspace", -2.0, component=2, layers=(3, 8))
    kw = dict(generator=small_g, cache_dir=tmp_path)
    both = apply_edits(inversion, [a, b], **kw)
    da = apply_edits(inversion, [a], **kw) - w
    db = apply_edits(inversion, [b], **kw) - w
    assert torch.allclose(both - w, da + db, atol=1e-6, rtol=0)
    assert float(da.abs().max()) > 0.1 and float(db.abs().max()) > 0.1


def test_strength_strip_is_one_batched_render(small_g, inversion, tmp_path) -> None:
    w = inversion.w_plus
    edits = [EditRequest("ganspace", 1.0, component=1), EditRequest("sefa", component=0, layers=(0, 6))]
    strengths = [-4.0, 0.0, 4.0]
    codes = apply_edits(inversion, edits, generator=small_g, strengths=strengths, cache_dir=tmp_path)
    assert codes.shape == (3, small_g.n_latent, 64)
    only_first = apply_edits(inversion, edits[:1], generator=small_g, cache_dir=tmp_path)
    assert torch.equal(codes[1], only_first[0])  # strip value 0 leaves the other edits in place
    images = render_edits(inversion, edits, strengths, base_generator=small_g, batch_size=2, cache_dir=tmp_path)
    assert images.shape == (3, 3, 64, 64)
    with torch.no_grad():
        for i in range(3):
            assert torch.allclose(images[i:i + 1], small_g.synthesis(codes[i:i + 1]), atol=1e-5, rtol=0)
    assert float((images[0] - images[2]).abs().max()) > 1e-2


def test_render_uses_the_inversion_generator_and_noise(small_g, inversion, tmp_path) -> None:
    tuned = copy.deepcopy(small_g)
    with torch.no_grad():
        tuned.convs[0].conv.weight.add_(0.3 * _randn(*tuned.convs[0].conv.weight.shape, seed=9))
    pti = Inversion(method="pti", w_plus=inversion.w_plus, image=inversion.image, generator=tuned)
    edits = [EditRequest("sefa", 2.0, component=0)]
    codes = apply_edits(pti, edits, generator=small_g, cache_dir=tmp_path)
    img_tuned = render_edits(pti, edits, base_generator=small_g, cache_dir=tmp_path)
    img_base = render_edits(inversion, edits, base_generator=small_g, cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(img_tuned, tuned.synthesis(codes))
        assert torch.equal(img_base, small_g.synthesis(codes))
        assert torch.equal(render_edits(pti, [], base_generator=small_g), tuned.synthesis(inversion.w_plus))
    assert float((img_tuned - img_base).abs().max()) > 1e-2

    noise = [_randn(*b.shape, seed=20 + i) for i, b in enumerate(small_g.noises.as_list())]
    noisy = Inversion(method="opt", w_plus=inversion.w_plus, image=inversion.image, noise=noise)
    img_noisy = render_edits(noisy, edits, base_generator=small_g, cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(img_noisy, small_g.synthesis(codes, noise=noise))
    assert float((img_noisy - img_base).abs().max()) > 1e-2


def test_generator_directions_are_hashed_once_per_generator(small_g, inversion, tmp_path, monkeypatch) -> None:
    """SeFa reads the weights' hash once per generator, not on every edit; a change to the weights is seen."""
    import editing.sefa as sefa_module
    from editing import render_codes

    calls = []
    real = sefa_module.tensors_hash
    monkeypatch.setattr(sefa_module, "tensors_hash", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    g = copy.deepcopy(small_g)
    request = [EditRequest("sefa", component=0, layers=(0, 4))]
    first = apply_edits(inversion, request, generator=g, strengths=[1.0, 2.0], cache_dir=tmp_path)
    again = apply_edits(inversion, request, generator=g, strengths=[1.0, 2.0], cache_dir=tmp_path)
    assert torch.equal(first, again) and len(calls) == 1
    images = render_codes(inversion, first, base_generator=g)
    assert torch.equal(images, render_edits(inversion, request, [1.0, 2.0], base_generator=g, cache_dir=tmp_path))
    assert len(calls) == 1
    with torch.no_grad():  # tuned weights: the directions follow
        weight = dict(g.named_parameters())["conv1.conv.modulation.weight"]
        weight.add_(_randn(*weight.shape, seed=5))
    changed = apply_edits(inversion, request, generator=g, strengths=[1.0, 2.0], cache_dir=tmp_path)
    assert len(calls) == 2 and not torch.equal(changed, first)
