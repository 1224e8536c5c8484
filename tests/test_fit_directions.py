"""InterFaceGAN direction fitting for the built-in generator: recovery of a known linear direction, the CLI's files
(read by editing's loader), the faithfulness table, and the registry block for the "builtin" generator kind."""
from __future__ import annotations

import json

import pytest
import torch

from editing.attributes import AttributeInfo, AttributeNet, save_attribute_model
from editing.directions import BUILTIN, BUILTIN_EDITS, EDITS_BY_NAME, load_direction
from editing.interfacegan import apply_direction
from inversion.models import FAMILIES
from inversion.stylegan2 import Generator
from training.faces import ATTRIBUTES
from training.fit_directions import (MANIFEST, direction_file, faithfulness_table, fit_both, fit_direction, main,
                                     sample_codes)
from tests.test_train_encoders import tiny_generator_files


def _tiny_generator() -> Generator:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=64).eval()


def test_recovers_a_known_linear_direction():
    """Labels = w . d (+ small noise) on the tiny generator's (anisotropic) W codes: both fits find d.
    Measured (n = 5000, 64-d): cos 0.976 (SVM on the top/bottom 20 %), 0.99998 (least squares)."""
    g = _tiny_generator()
    w = sample_codes(g, 5000, seed=1)
    d_true = torch.randn(64, generator=torch.Generator().manual_seed(2))
    d_true /= d_true.norm()
    values = w @ d_true + 0.01 * torch.randn(5000, generator=torch.Generator().manual_seed(3))
    dirs, stats = fit_both(w, values)
    for d in dirs.values():
        assert d.shape == (64,) and d.dtype == torch.float32 and abs(float(d.norm()) - 1) < 1e-5
    assert float(dirs["svm"] @ d_true) > 0.95
    assert float(dirs["lstsq"] @ d_true) > 0.999
    assert stats["accuracy"] > 0.97 and stats["cos_svm_lstsq"] > 0.95
    # orientation follows the labels: + increases them
    flipped, _ = fit_direction(w, -values, method="lstsq")
    assert float(flipped @ d_true) < -0.999
    # a monotone non-linear label (a probability) gives the same direction
    prob = torch.sigmoid(4 * (w @ d_true))
    assert float(fit_direction(w, prob, method="lstsq")[0] @ d_true) > 0.97
    with pytest.raises(ValueError):
        fit_direction(w, values, method="pca")


def test_faithfulness_table():
    names, attrs, ranges = ["a"], ["a", "b", "c"], [2.0, 1.0, 1.0]
    plus = torch.tensor([[1.0, 0.1, -0.2]])
    minus = torch.tensor([[-0.6, 0.1, 0.0]])
    row = faithfulness_table(names, attrs, ranges, plus, minus)["a"]
    assert row["target_plus"] == pytest.approx(0.5) and row["target_minus"] == pytest.approx(-0.3)
    assert row["others_max_abs"] == pytest.approx(0.2) and row["others_mean_abs"] == pytest.approx(0.1)
    # target 0.4 (mean |.| of 0.5, 0.3); others 0.1 (b) + 0.1 (c)
    assert row["selectivity"] == pytest.approx(0.4 / 0.6) and row["most_affected_other"] in ("b", "c")


def test_cli_writes_directions_editing_reads(tmp_path):
    tiny_generator_files(tmp_path)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = AttributeNet([AttributeInfo(a.name, a.low, a.high, a.binary) for a in ATTRIBUTES], input_size=32,
                           widths=(8, 8, 8), feat_dim=16)
    save_attribute_model(net, tmp_path / "attr.safetensors")
    out = tmp_path / "dirs"
    manifest = main(["--generator", str(tmp_path / "builtin_g32.safetensors"), "--attributes",
                     str(tmp_path / "attr.safetensors"), "--n", "200", "--eval-n", "4", "--device", "cpu",
                     "--out-dir", str(out)])
    fitted = [a.name for a in ATTRIBUTES if a.name != "skin_tone"]
    assert list(manifest["directions"]) == fitted
    assert not (out / direction_file("skin_tone")).exists()
    assert json.loads((out / MANIFEST).read_text())["directions"].keys() == set(fitted)
    codes = torch.zeros(1, 8, 64)
    for name in fitted:
        d = load_direction(out / direction_file(name))
        assert d.shape == (1, 64) and abs(float(d.norm()) - 1) < 1e-5
        rec = manifest["directions"][name]
        assert rec["method"] in ("svm", "lstsq") and rec["sigma"] > 0
        assert set(rec["effect"]["plus"]) == {a.name for a in ATTRIBUTES}
        edited = apply_direction(codes, d, 2.0)
        assert torch.allclose(edited[0, 3], 2.0 * d[0])


def test_registry_block_matches_fitted_files():
    assert FAMILIES["builtin"].edit_kind == BUILTIN
    fitted = {direction_file(a.name) for a in ATTRIBUTES if a.name != "skin_tone"}
    assert {e.file for e in BUILTIN_EDITS} == fitted
    for e in BUILTIN_EDITS:
        assert e.name == f"builtin_{e.file[len('builtin_'):-len('.safetensors')]}"
        assert e.kind == "interfacegan" and e.generators == (BUILTIN,)
        assert EDITS_BY_NAME.get(e.name, e) == e  # no name clash, before or after joining EDITS
        assert e.strength_range[0] <= e.default_strength <= e.strength_range[1] and e.label and e.source
