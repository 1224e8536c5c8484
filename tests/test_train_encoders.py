"""Encoder training script on CPU at toy size: pSp and e4e steps run, ``last.pt`` is weights_only-safe, resume continues
the step counter, the export loads with ``load_bundled_encoder`` and encodes; loss pieces and schedules."""
from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from editing.attributes import AttributeInfo, AttributeNet
from inversion.encoders import E4EEncoder, load_bundled_encoder
from inversion.stylegan2 import Generator
from training.faces import ATTRIBUTES
from training.train_encoders import (EncoderArch, Hparams, RegressorFeatureLoss, build_encoder, delta_norms, e4e_stage,
                                     load_generator_file, lr_factor, main, multiscale_l2, sample_wplus,
                                     supports_head_channels)

HEADS = "16" if supports_head_channels() else "64"  # narrow heads where inversion.encoders offers them
TINY = ["--batch", "4", "--widths", "8,8,16,16", "--units", "1,1,1,1", "--head-channels", HEADS, "--metrics-every", "1",
        "--sample-every", "2", "--eval-n", "4", "--feature-loss", "multiscale", "--device", "cpu"]


def tiny_generator_files(folder) -> tuple[Generator, torch.Tensor]:
    """A random 32 px generator saved like train_gan's export (safetensors + JSON with latent_avg)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=64).eval()
    avg = g.mean_latent(1000, generator=torch.Generator().manual_seed(0))
    save_file({k: v.contiguous() for k, v in g.state_dict().items()}, str(folder / "builtin_g32.safetensors"))
    (folder / "builtin_g32.json").write_text(json.dumps({"config": g.config(), "latent_avg": avg.view(-1).tolist()}))
    return g, avg.view(-1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both encoders: 2 steps, then a resumed session to step 3."""
    root = tmp_path_factory.mktemp("enc")
    g, avg = tiny_generator_files(root)
    args = ["--generator", str(root / "builtin_g32.safetensors"), "--kind", "both", "--run-dir", str(root / "run"),
            "--export-dir", str(root / "export"), *TINY]
    main([*args, "--max-steps", "2"])
    first = {k: torch.load(root / "run" / k / "last.pt", map_location="cpu", weights_only=True) for k in ("psp", "e4e")}
    results = main([*args, "--max-steps", "3"])
    return root, g, avg, first, results


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_train_resume_export(trained, kind):
    root, g, avg, first, results = trained
    assert first[kind]["step"] == 2
    state = torch.load(root / "run" / kind / "last.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 3 and state["kind"] == kind
    assert {"encoder", "opt", "arch", "hparams", "encoder_config", "latent_avg", "stage"} <= set(state)
    assert torch.equal(state["latent_avg"], avg)
    before = first[kind]["encoder"]
    changed = [k for k, v in state["encoder"].items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert changed  # the resumed step trained

    records = json.loads((root / "run" / kind / "metrics.json").read_text())
    steps = [r["step"] for r in records if not r.get("final")]
    assert steps == [1, 2, 3]
    finals = [r for r in records if r.get("final")]
    assert len(finals) == 2 and finals[-1]["step"] == 3
    for r in records:
        assert all(math.isfinite(v) for v in r.values() if isinstance(v, float))
    train_keys = {"pixel", "latent", "feature", "loss"} | ({"delta"} if kind == "e4e" else set())
    assert train_keys <= set(records[0])
    assert {"gen_pixel_mse", "gen_latent_mse", "real_pixel_mse"} <= set(finals[-1])
    assert results[kind]["step"] == 3
    assert (root / "run" / kind / "samples" / "step_0000002.png").is_file()
    assert (root / "run" / kind / "samples" / "latest.png").is_file()

    # the export: bundled format, loads strictly, encodes (N, 3, 32, 32) -> (N, 8, 64) = W+ of the tiny generator
    tensors = load_file(str(root / "export" / f"builtin_{kind}32.safetensors"))
    config = json.loads((root / "export" / f"builtin_{kind}32.json").read_text())
    assert config["kind"] == kind and config["output_size"] == 32 and config["info"]["step"] == 3
    bundle = load_bundled_encoder(tensors, config, kind=kind)
    assert bundle.output_size == 32 and bundle.opts["input_size"] == 32
    assert torch.allclose(bundle.latent_avg, avg.expand(8, -1))
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    wplus = bundle.encode(images)
    assert wplus.shape == (2, g.n_latent, g.style_dim) and torch.isfinite(wplus).all()
    # fp16 export == the checkpoint's float32 encoder (eval mode, all e4e offsets) to fp16 precision
    ref = build_encoder(kind, n_styles=8, input_size=32, style_dim=64, arch=EncoderArch(**{
        k: tuple(v) if isinstance(v, list) else v for k, v in state["arch"].items()}))
    ref.load_state_dict(state["encoder"])
    ref.eval()
    with torch.no_grad():
        expected = ref(images) + avg
    assert (wplus - expected).abs().max() < 2e-2 * expected.abs().max()
    assert g.synthesis(wplus).shape == (2, 3, 32, 32)


def test_e4e_progressive_stage_in_checkpoint(trained):
    root, *_ = trained
    state = torch.load(root / "run" / "e4e" / "last.pt", map_location="cpu", weights_only=True)
    records = [r for r in json.loads((root / "run" / "e4e" / "metrics.json").read_text()) if not r.get("final")]
    stages = [r["stage"] for r in records]
    assert stages == sorted(stages) and stages[0] == 0 and state["stage"] == stages[-1] == 7


def test_generator_file_latent_avg(tmp_path):
    g, avg = tiny_generator_files(tmp_path)
    loaded, loaded_avg = load_generator_file(tmp_path / "builtin_g32.safetensors")
    assert torch.equal(loaded_avg, avg)
    (tmp_path / "builtin_g32.json").unlink()  # no JSON: the mean of 10k mapped z
    _, fallback = load_generator_file(tmp_path / "builtin_g32.safetensors")
    assert (fallback - avg).abs().max() < 0.15 and fallback.shape == (64,)


def test_sample_wplus_mixing_and_truncation():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=64).eval()
    avg = torch.zeros(64)
    with torch.no_grad():
        plain = sample_wplus(g, 6, torch.Generator().manual_seed(1), w_avg=avg, mixing=0.0, trunc_min=1.0)
        mixed = sample_wplus(g, 6, torch.Generator().manual_seed(1), w_avg=avg, mixing=1.0, trunc_min=1.0)
        shrunk = sample_wplus(g, 6, torch.Generator().manual_seed(1), w_avg=avg, mixing=0.0, trunc_min=0.0)
    assert plain.shape == (6, 8, 64) and torch.equal(plain, plain[:, :1].expand_as(plain))
    for codes in mixed:  # exactly two distinct rows, switched once
        distinct = torch.unique(codes, dim=0)
        assert len(distinct) == 2 and not torch.equal(codes[0], codes[-1])
    assert (shrunk.norm(dim=2) <= plain.norm(dim=2) + 1e-5).all()  # psi in [0, 1] towards w_avg = 0


def test_loss_pieces():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=gen) * 2 - 1
    y = (x + 0.3 * torch.randn(3, 3, 32, 32, generator=gen)).clamp(-1, 1)
    assert torch.equal(multiscale_l2(x, x), torch.zeros(3))
    assert (multiscale_l2(x, y) > 0).all()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = AttributeNet([AttributeInfo(a.name, a.low, a.high, a.binary) for a in ATTRIBUTES], input_size=32,
                           widths=(8, 8, 8), feat_dim=16)
    feat = RegressorFeatureLoss(net)
    assert len(feat.taps(x)) == 3  # one tap per conv (three stride-2 convs at this width list)
    same, diff = feat(x, x), feat(y.requires_grad_(True), x)
    assert same.abs().max() < 1e-6 and (diff > 1e-3).all()
    diff.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0 and not any(p.requires_grad for p in net.parameters())

    codes = torch.zeros(2, 8, 4)
    codes[:, 1:, 0] = 3.0  # every offset row is 3 away from row 0
    assert torch.equal(delta_norms(codes, 0), torch.zeros(2))
    assert torch.allclose(delta_norms(codes, 2), torch.full((2,), 6.0))  # rows 1 and 2
    assert torch.allclose(delta_norms(codes, 18), torch.full((2,), 21.0))  # all 7 offset rows
    enc = E4EEncoder(n_styles=8, input_size=32, widths=(8, 8, 16, 16), units=(1, 1, 1, 1), style_dim=16)
    enc.set_progressive_stage(0)
    out = enc(x)
    assert torch.equal(out, out[:, :1].expand_as(out))


def test_schedules():
    assert [e4e_stage(p, 12, 0.5) for p in (0.0, 0.04, 0.1, 0.25, 0.49, 0.5, 1.0)] == [0, 0, 2, 6, 11, 11, 11]
    assert e4e_stage(0.0, 12, 0.0) == 11
    hp = Hparams(warmup=10)
    assert lr_factor(0, 0.0, hp) == pytest.approx(0.1) and lr_factor(9, 0.5, hp) == 1.0
    assert lr_factor(50, 0.85, hp) == pytest.approx(0.55) and lr_factor(50, 1.0, hp) == pytest.approx(0.1)


def test_head_width():
    arch = EncoderArch(widths=(8, 8, 16, 16), units=(1, 1, 1, 1), head_channels=16)
    full = build_encoder("psp", n_styles=8, input_size=32, style_dim=64, arch=EncoderArch(
        widths=(8, 8, 16, 16), units=(1, 1, 1, 1), head_channels=64))
    assert "head_channels" not in full.config() and full.styles[0].linear.weight.shape == (64, 64)
    if supports_head_channels():
        narrow = build_encoder("e4e", n_styles=8, input_size=32, style_dim=64, arch=arch)
        assert narrow.config()["head_channels"] == 16 and narrow.styles[0].linear.weight.shape == (64, 16)
    else:
        with pytest.raises(ValueError, match="head_channels"):
            build_encoder("e4e", n_styles=8, input_size=32, style_dim=64, arch=arch)


def test_e4e_step_with_latent_discriminator():
    """One e4e step with the optional latent discriminator (R1 at step 0): both networks move, losses finite."""
    from training.train_encoders import ProceduralStream, Trainer, make_batch

    with torch.random.fork_rng():
        torch.manual_seed(0)
        g = Generator(32, style_dim=64, n_mlp=2, channel_multiplier=1, max_channels=64).eval().requires_grad_(False)
        enc = build_encoder("e4e", n_styles=8, input_size=32, style_dim=64,
                            arch=EncoderArch(widths=(8, 8, 16, 16), units=(1, 1, 1, 1), head_channels=64))
    hp = Hparams(batch=4, lambda_wdisc=0.1, bf16=False)
    tr = Trainer(kind="e4e", encoder=enc, g=g, w_avg=torch.zeros(64), hp=hp, feature_loss=multiscale_l2, stage=2)
    d_before = [p.detach().clone() for p in tr.wdisc.parameters()]
    e_before = enc.styles[2].linear.weight.detach().clone()
    batch = make_batch(g, tr.w_avg, 0, hp, n_gen=3, real=ProceduralStream(1, 32, 0, torch.device("cpu"), block=1))
    assert batch.images.shape == (4, 3, 32, 32) and batch.codes.shape == (3, 8, 64)
    terms = tr.step(batch, 0, 1.0)
    assert {"wdisc_d", "wdisc_g", "delta", "latent", "pixel", "feature"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    assert any(not torch.equal(a, b) for a, b in zip(d_before, tr.wdisc.parameters()))
    assert not torch.equal(e_before, enc.styles[2].linear.weight)  # row 2's offset head trains at stage 2
