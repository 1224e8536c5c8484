"""The methods layer (one call for every method) on real model sets: the shipped built-in 128 px set, and an
FFHQ-family set whose generator file comes through the registry's local-folder override."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from inversion import checkpoints
from inversion.checkpoints import CheckpointMissingError
from inversion.methods import evaluate, invert
from inversion.models import ModelSet
from inversion.stylegan2 import Generator


@pytest.fixture(scope="module")
def builtin():
    models = ModelSet("builtin")
    g = models.generator()
    with torch.no_grad():  # a target with known codes: a truncated sample of the generator itself
        w = g.mapping(torch.randn(1, g.style_dim, generator=torch.Generator().manual_seed(3)))
        w = models.latent_avg() + 0.7 * (w - models.latent_avg())
        target = g.synthesis(w[:, None].repeat(1, g.n_latent, 1))
    return models, target


def test_builtin_encoders_and_optimization_reconstruct_a_known_sample(builtin):
    models, target = builtin
    results = {m: invert(models, m, target, preset="fast") for m in ("e4e", "psp", "w+")}
    scores = {m: evaluate(models, inv, target) for m, inv in results.items()}
    # measured on this set: e4e 0.0056, pSp 0.0069; W+ (30 steps from the e4e codes, lr 0.01) 0.0007
    assert scores["e4e"]["mse"] < 0.02 and scores["psp"]["mse"] < 0.02
    assert scores["w+"]["mse"] < 0.5 * scores["e4e"]["mse"]
    assert results["w+"].info["start"] == "e4e"
    for s in scores.values():
        assert s["lpips"] is None  # no VGG weights offline: reported as missing, not made up
        assert s["code_spread"] > 0 and s["seconds"] > 0
    assert results["e4e"].image.shape == (1, 3, 128, 128) and results["e4e"].w_plus.shape == (1, 12, 512)


def test_w_space_result_has_zero_code_spread(builtin):
    models, target = builtin
    inv = invert(models, "w", target, preset="fast")
    assert evaluate(models, inv, target)["code_spread"] < 1e-5


def test_ffhq_family_loads_a_container_through_the_weights_folder(tmp_path, monkeypatch):
    torch.manual_seed(0)
    tiny = Generator(64, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=64)
    latent_avg = torch.randn(64)
    path = tmp_path / "stylegan2-ffhq-config-f.pt"
    torch.save({"g_ema": tiny.state_dict(), "latent_avg": latent_avg}, path)
    spec = checkpoints.REGISTRY["stylegan2_ffhq"]
    monkeypatch.setitem(checkpoints.REGISTRY, "stylegan2_ffhq", dataclasses.replace(
        spec, sha256=checkpoints.sha256_file(path), size=path.stat().st_size))
    monkeypatch.setenv(checkpoints.OVERRIDE_ENV, str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))

    models = ModelSet("ffhq")
    g = models.generator()
    assert torch.equal(models.latent_avg(), latent_avg.reshape(1, -1))
    assert not any(p.requires_grad for p in g.parameters())
    with torch.no_grad():
        target = tiny.eval().synthesis(latent_avg.reshape(1, 1, -1).repeat(1, g.n_latent, 1) + 0.3)
    inv = invert(models, "w+", target, preset="fast")
    assert inv.info["start"] == "mean"  # no e4e file: the e4e start falls back to the mean w
    assert inv.info["steps_run"] <= 30 and inv.w_plus.shape == (1, g.n_latent, 64)


def test_missing_generator_names_the_files():
    def nothing(name):
        raise CheckpointMissingError(f"{name} is not downloaded")

    with pytest.raises(CheckpointMissingError, match="stylegan2_ffhq is not downloaded"):
        ModelSet("ffhq", locate=nothing).generator()
    with pytest.raises(ValueError, match="unknown method"):
        invert(ModelSet("builtin"), "magic", torch.zeros(1, 3, 128, 128))
