"""Small-StyleGAN2 training script on CPU at toy size: steps run, checkpoint is weights_only-safe, resume is
exact, export loads with the project's generator loader; discriminator shapes."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from inversion.stylegan2 import generator_from_state_dict
from training.discriminator import ConvLayer, Discriminator, minibatch_stddev
from training.train_gan import main

TINY = ["--size", "32", "--batch", "4", "--style-dim", "32", "--n-mlp", "2", "--channel-multiplier", "0.25",
        "--max-channels", "32", "--r1-every", "2", "--metrics-every", "1", "--sample-every", "2", "--device", "cpu",
        "--threads", "1"]


@pytest.fixture(autouse=True)
def _keep_threads():
    """The script sets torch's thread count (1 here: tiny ops on a shared CPU); restore it afterwards."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(run_dir, export_dir, steps: int, *extra: str) -> None:
    main(["--run-dir", str(run_dir), "--max-steps", str(steps), "--export-dir", str(export_dir), *TINY, *extra])


def test_train_resume_export(tmp_path):
    run, export = tmp_path / "run", tmp_path / "export"
    _run(run, export, 2, "--fd-every", "1", "--fd-n", "16")
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and state["nimg"] == 8
    assert {"g", "d", "g_ema", "g_opt", "d_opt", "arch", "hparams", "rng"} <= set(state)

    _run(run, export, 3, "--fd-every", "0")
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3
    records = [r for r in json.loads((run / "metrics.json").read_text()) if not r.get("final")]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("d_loss", "g_loss", "real_score", "fake_score"))
    assert "r1" in records[0] and "r1" in records[2]  # lazy R1 at steps 0 and 2 (every 2)
    assert (run / "samples" / "step_0000002.png").is_file() and (run / "samples" / "latest.png").is_file()

    g = generator_from_state_dict(load_file(str(export / "builtin_g32.safetensors")))
    meta = json.loads((export / "builtin_g32.json").read_text())
    assert meta["step"] == 3 and len(meta["latent_avg"]) == g.style_dim == 32
    assert g.size == meta["config"]["size"] == 32 and g.n_latent == 8
    ws = torch.tensor(meta["latent_avg"]).view(1, 1, -1).expand(1, g.n_latent, -1)
    img = g.synthesis(ws)
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
    # fp16 export of the EMA weights matches the checkpoint's g_ema to fp16 precision
    ref = generator_from_state_dict(state["g_ema"])
    assert torch.allclose(ref.synthesis(ws), img, atol=2e-2)


def test_resume_is_exact(tmp_path):
    """2 steps + resume to 3 gives the same weights as 3 uninterrupted steps (all draws keyed by step)."""
    _run(tmp_path / "a", tmp_path / "ea", 2, "--fd-every", "0", "--no-export")
    _run(tmp_path / "a", tmp_path / "ea", 3, "--fd-every", "0", "--no-export")
    _run(tmp_path / "b", tmp_path / "eb", 3, "--fd-every", "0", "--no-export")
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for part in ("g", "d", "g_ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")


def test_resume_refuses_other_architecture(tmp_path):
    _run(tmp_path / "r", tmp_path / "e", 1, "--fd-every", "0", "--no-export")
    with pytest.raises(SystemExit, match="architecture"):
        main(["--run-dir", str(tmp_path / "r"), "--max-steps", "2", "--max-channels", "64", "--device", "cpu",
              "--threads", "1"])


def test_discriminator_shapes():
    d = Discriminator(32, channel_multiplier=0.25, max_channels=32)
    assert d(torch.randn(6, 3, 32, 32)).shape == (6, 1)  # 6 samples: stddev groups of 3
    x = torch.randn(6, 8, 4, 4)
    y = minibatch_stddev(x, group_size=4)
    assert y.shape == (6, 9, 4, 4)
    expected = x.view(3, 2, 8, 4, 4).std(dim=0, unbiased=False).mean(dim=(1, 2, 3))  # strided groups
    torch.testing.assert_close(y[:2, 8, 0, 0], expected, rtol=1e-4, atol=1e-6)
    assert ConvLayer(8, 16, 3, downsample=True)(torch.randn(2, 8, 16, 16)).shape == (2, 16, 8, 8)
    assert ConvLayer(8, 16, 1, downsample=True, activate=False, bias=False)(torch.randn(2, 8, 16, 16)).shape == (2, 16, 8, 8)
    with pytest.raises(ValueError, match="images must be"):
        d(torch.randn(2, 3, 64, 64))
