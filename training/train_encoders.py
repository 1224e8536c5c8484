"""Train the built-in model set's small pSp and e4e encoders on the small generator; resumable; exports both.

    python -m training.train_encoders --generator inversion/data/builtin_g128.safetensors \\
        --kind both --minutes 7 --run-dir runs/enc128 --device cuda

Data (no data set on disk). Every step draws, on the training device:

- *generated* samples: ``z -> w`` (truncation psi ~ U[trunc_min, 1], style mixing with probability ``mixing``)
  ``-> G.synthesis(w, random noise)``; their W+ codes are known;
- *procedural faces* from :mod:`training.faces` (``real_frac`` of the batch): out-of-domain images, standing in for
  the real photos pSp/e4e train on (the generator was trained on such faces, so they are "real photos" here).

Losses (per sample, then averaged; the reconstruction uses the generator's stored noise, like the app):

- ``latent``: MSE between the predicted W+ codes and the true ones (generated samples only). The papers have no such
  term (they train on real photos); with a toy generator and a minutes-long budget it is the cheapest strong signal;
- ``pixel``: MSE between input and reconstruction ([-1, 1] images), as pSp/e4e's L2 term;
- ``feature``: a perceptual term in place of LPIPS. ``auto`` picks LPIPS-VGG when ``--lpips-vgg`` names a VGG16
  ``features.*`` safetensors file (the VGG weights are not bundled and the GPU box is offline), else an LPIPS-style
  distance on the bundled attribute regressor's activations (channel-normalised, squared difference, mean over
  space, summed over its five conv stages; it was trained on these faces), else a multi-scale L2 (1/2, 1/4, 1/8);
- e4e only: ``delta`` = sum over the active rows of ``||code_i - code_0||_2`` (e4e's delta regularisation,
  lambda 2e-4 as in the paper); progressive training (row ``i`` gets its offset once the stage reaches ``i``;
  the stages ramp over the first ``stage_ramp`` of the run); optional latent discriminator on the active rows
  (``--lambda-wdisc``, off by default: non-saturating loss vs. ``mapping(z)`` codes, R1 every 16 steps).

Both encoders start from ``latent_avg`` (pSp's ``start_from_latent_avg``): W+ = encoder output + ``latent_avg``.
Optimiser: Adam, warm-up then linear decay to 0.1x over the last 30 % of the run; bf16 autocast and TF32 on CUDA.

``RUN_DIR/<kind>/`` gets ``last.pt`` (plain tensors/dicts/numbers: ``torch.load(weights_only=True)``),
``metrics.json`` (a list of records; the last one is the held-out evaluation) and ``samples/*.png`` (rows of
inputs, then reconstructions: generated samples, then procedural faces). Every clean stop (time budget,
``--max-steps``, Ctrl-C) saves ``last.pt`` and exports ``EXPORT_DIR/builtin_<kind><size>.safetensors`` + ``.json``
(:func:`inversion.encoders.bundled_encoder_files` format, read by ``load_bundled_encoder``). Resuming continues the
step counter; the learning-rate schedule and e4e stages follow this session's budget (stages never go back).
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inversion.encoders import E4EEncoder, EncoderBundle, PSPEncoder, bundled_encoder_files
from inversion.stylegan2 import Generator, generator_from_state_dict
from training.faces import render_faces_torch, sample_attributes, sample_nuisance, save_grid

DEFAULT_EXPORT_DIR = Path(__file__).resolve().parents[1] / "inversion" / "data"
KINDS = ("psp", "e4e")
HELD_OUT_SEED = 777_001
ImageLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EncoderArch:
    """Encoder architecture (fixed for the life of a run). ``head_channels``: width of the style heads' convs
    (pSp/e4e use ``style_dim``, 512: ~110M parameters here; 64 gives 6.4M, a 12 MiB float16 file)."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    units: tuple[int, ...] = (2, 2, 2, 2)
    head_channels: int = 64
    coarse_ind: int = 3
    middle_ind: int = 7


@dataclass(frozen=True)
class Hparams:
    """Training hyper-parameters (may change between resumed sessions)."""

    batch: int = 96
    lr: float = 2e-4
    warmup: int = 100
    real_frac: float = 0.25
    mixing: float = 0.5
    trunc_min: float = 0.7
    lambda_latent: float = 1.0
    lambda_pixel: float = 1.0
    lambda_feature: float = 0.8
    lambda_delta: float = 2e-4
    lambda_wdisc: float = 0.0
    stage_ramp: float = 0.5
    bf16: bool = True
    seed: int = 0


def supports_head_channels() -> bool:
    """Whether the project's encoders take a ``head_channels`` argument (narrow style heads)."""
    return "head_channels" in inspect.signature(PSPEncoder.__init__).parameters


def build_encoder(kind: str, *, n_styles: int, input_size: int, style_dim: int, arch: EncoderArch) -> nn.Module:
    """A fresh pSp/e4e encoder (float32, CPU) for a generator with ``n_styles`` rows of ``style_dim``."""
    kwargs = dict(n_styles=n_styles, input_size=input_size, widths=tuple(arch.widths), units=tuple(arch.units),
                  style_dim=style_dim, coarse_ind=arch.coarse_ind, middle_ind=arch.middle_ind)
    if arch.head_channels != style_dim:
        if not supports_head_channels():
            raise ValueError(f"inversion.encoders has no head_channels option, so the style heads are style_dim "
                             f"({style_dim}) wide; pass --head-channels {style_dim} to train such full-width heads")
        kwargs["head_channels"] = arch.head_channels
    return (PSPEncoder if kind == "psp" else E4EEncoder)(**kwargs)


def load_generator_file(path: Path) -> tuple[Generator, torch.Tensor]:
    """The exported generator (``train_gan`` format: rosinality safetensors + JSON with ``latent_avg``) and its
    average code ``(style_dim,)``: a ``latent_avg`` tensor in the file, else the JSON's, else 10k mapped z (seed 0)."""
    from safetensors.torch import load_file

    sd = load_file(str(path))
    latent_avg = sd.pop("latent_avg", None)
    g = generator_from_state_dict(sd)
    meta_path = Path(path).with_suffix(".json")
    if latent_avg is None and meta_path.is_file():
        stored = json.loads(meta_path.read_text()).get("latent_avg")
        latent_avg = None if stored is None else torch.tensor(stored, dtype=torch.float32)
    if latent_avg is None:
        latent_avg = g.mean_latent(10_000, generator=torch.Generator().manual_seed(0))
    latent_avg = latent_avg.float().reshape(-1)
    if latent_avg.numel() != g.style_dim:
        raise ValueError(f"latent_avg has {latent_avg.numel()} values, the generator's style_dim is {g.style_dim}")
    return g, latent_avg


# ----------------------------------------------------------------------------- data


def sample_wplus(g: Generator, n: int, gen: torch.Generator, *, w_avg: torch.Tensor, mixing: float,
                 trunc_min: float) -> torch.Tensor:
    """True W+ codes (n, n_latent, style_dim): two truncated w per sample (one psi per sample), switched at a random
    layer with probability ``mixing``."""
    dev = w_avg.device
    z = torch.randn(2 * n, g.style_dim, generator=gen, device=dev)
    w = g.mapping(z).float().view(2, n, -1)
    psi = trunc_min + (1 - trunc_min) * torch.rand(1, n, 1, generator=gen, device=dev)
    w = w_avg + psi * (w - w_avg)
    cut = torch.randint(1, g.n_latent, (n,), generator=gen, device=dev)
    cut = torch.where(torch.rand(n, generator=gen, device=dev) < mixing, cut, torch.full_like(cut, g.n_latent))
    layer = torch.arange(g.n_latent, device=dev).view(1, -1, 1)
    return torch.where(layer < cut.view(-1, 1, 1), w[0].unsqueeze(1), w[1].unsqueeze(1))


def procedural_faces(n: int, size: int, rng: np.random.Generator, device: torch.device) -> torch.Tensor:
    """``n`` procedural faces (n, 3, size, size) in [-1, 1] on ``device``."""
    attrs = torch.from_numpy(sample_attributes(n, rng)).to(device)
    nuis = torch.from_numpy(sample_nuisance(n, rng)).to(device)
    with torch.no_grad():
        return render_faces_torch(attrs, nuis, size=size) * 2 - 1


@dataclass
class Batch:
    """One training batch: ``images`` (N, 3, S, S) in [-1, 1]; the first ``len(codes)`` are generated with ``codes``."""

    images: torch.Tensor
    codes: torch.Tensor


class ProceduralStream:
    """Procedural faces for training step ``step``: rendered ``block`` steps at a time (fewer, larger kernel
    launches); the faces of a step depend only on ``(seed, step // block)`` and the sizes."""

    def __init__(self, n: int, size: int, seed: int, device: torch.device, *, block: int = 16) -> None:
        self.n, self.size, self.seed, self.device, self.block = n, size, seed, device, block
        self._key: Optional[int] = None
        self._images: Optional[torch.Tensor] = None

    def batch_at(self, step: int) -> torch.Tensor:
        key = step // self.block
        if key != self._key:
            rng = np.random.default_rng([self.seed, 1, key])
            self._images = procedural_faces(self.n * self.block, self.size, rng, self.device)
            self._key = key
        i = step % self.block
        return self._images[i * self.n:(i + 1) * self.n]


@torch.no_grad()
def make_batch(g: Generator, w_avg: torch.Tensor, step: int, hp: Hparams, *, n_gen: int,
               real: Optional[ProceduralStream] = None) -> Batch:
    """The batch of ``step``: ``n_gen`` generated samples (depend only on ``(seed, step)``), then ``real``'s faces."""
    dev = w_avg.device
    gen = torch.Generator(device=dev).manual_seed(hp.seed * 1_000_003 + step)
    codes = sample_wplus(g, n_gen, gen, w_avg=w_avg, mixing=hp.mixing, trunc_min=hp.trunc_min)
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=hp.bf16 and dev.type == "cuda"):
        images = g.synthesis(codes, noise="random", generator=gen).float()
    if real is not None and real.n:
        images = torch.cat([images, real.batch_at(step)])
    return Batch(images=images.clamp(-1, 1), codes=codes)


# ----------------------------------------------------------------------------- losses


class RegressorFeatureLoss(nn.Module):
    """LPIPS-style distance on the attribute regressor's conv activations (no learned heads): per tap, unit-normalise
    along channels, squared difference summed over channels, mean over space; summed over taps. Returns (N,)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        h, out = self.model.prepare(x), []
        for layer in self.model.body:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                out.append(h)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        total = x.new_zeros(n, dtype=torch.float32)
        for f in self.taps(torch.cat([x, y])):
            f = f.float()
            f = f / (f.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + (f[:n] - f[n:]).square().sum(1).mean((1, 2))
        return total


class LPIPSLoss(nn.Module):
    """LPIPS-VGG (``inversion.lpips``) as a per-sample loss (N,)."""

    def __init__(self, lpips: nn.Module) -> None:
        super().__init__()
        self.lpips = lpips

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y).float().reshape(x.shape[0])


def multiscale_l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean of the MSEs at 1/2, 1/4 and 1/8 resolution (area pooling): (N,)."""
    terms = [F.avg_pool2d(x.float(), k).sub(F.avg_pool2d(y.float(), k)).square().mean((1, 2, 3)) for k in (2, 4, 8)]
    return torch.stack(terms).mean(0)


def make_feature_loss(choice: str, *, lpips_vgg: Optional[Path], attributes: Optional[Path],
                      device: torch.device) -> tuple[Optional[ImageLoss], str]:
    """``(loss or None, description)`` for ``choice`` in auto | lpips | regressor | multiscale | none."""
    if choice in ("auto", "lpips") and lpips_vgg is not None:
        from inversion.checkpoints import load_safetensors_subset
        from inversion.lpips import build_lpips

        lp = build_lpips("vgg", backbone_state_dict=load_safetensors_subset(lpips_vgg, "features."))
        return LPIPSLoss(lp.to(device)), f"LPIPS-VGG ({Path(lpips_vgg).name})"
    if choice == "lpips":
        raise SystemExit("--feature-loss lpips needs --lpips-vgg PATH (VGG16 features.* safetensors)")
    if choice in ("auto", "regressor"):
        from editing.attributes import load_attribute_model

        try:
            model = load_attribute_model(attributes)
        except Exception as err:  # noqa: BLE001 - optional in auto mode
            if choice == "regressor":
                raise SystemExit(f"attribute regressor not usable: {err}") from None
        else:
            name = Path(attributes).name if attributes else "attributes_128 (bundled)"
            return RegressorFeatureLoss(model.to(device)), f"attribute-regressor activations ({name})"
    if choice in ("auto", "multiscale"):
        return multiscale_l2, "multi-scale L2 (1/2, 1/4, 1/8)"
    return None, "none"


def delta_norms(codes: torch.Tensor, stage: int) -> torch.Tensor:
    """e4e's delta regulariser: sum over rows ``1..stage`` of ``||codes_i - codes_0||_2`` per sample: (N,)."""
    last = min(stage, codes.shape[1] - 1)
    if last < 1:
        return codes.new_zeros(codes.shape[0])
    return (codes[:, 1:last + 1] - codes[:, :1]).float().norm(dim=2).sum(1)


class LatentDiscriminator(nn.Module):
    """e4e's latent discriminator: an MLP on single W codes (4 linear layers, LeakyReLU 0.2) -> one logit."""

    def __init__(self, style_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(style_dim, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 1))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.net(w.float()).squeeze(-1)


# ----------------------------------------------------------------------------- schedules


def progress(step: int, elapsed: float, *, max_steps: Optional[int], budget_s: Optional[float]) -> float:
    """Fraction of this session's run done (the larger of the step and time fractions; 0 with no limit)."""
    p = 0.0
    if max_steps:
        p = max(p, step / max_steps)
    if budget_s:
        p = max(p, elapsed / budget_s)
    return min(p, 1.0)


def lr_factor(step: int, p: float, hp: Hparams) -> float:
    """Linear warm-up over ``warmup`` steps; linear decay to 0.1 over the last 30 % of the run."""
    warm = min(1.0, (step + 1) / max(hp.warmup, 1))
    return warm * (1.0 if p < 0.7 else 1.0 - 0.9 * (p - 0.7) / 0.3)


def e4e_stage(p: float, n_styles: int, ramp: float) -> int:
    """Progressive stage at progress ``p``: 0 (only ``w0``) at the start, all ``n_styles - 1`` offsets at ``ramp``."""
    if ramp <= 0:
        return n_styles - 1
    return min(n_styles - 1, int(p / ramp * n_styles))


# ----------------------------------------------------------------------------- training


@dataclass
class Trainer:
    """One encoder's training state on a device (the generator is shared and frozen)."""

    kind: str
    encoder: nn.Module
    g: Generator
    w_avg: torch.Tensor
    hp: Hparams
    feature_loss: Optional[ImageLoss]
    opt: torch.optim.Optimizer = field(init=False)
    wdisc: Optional[LatentDiscriminator] = None
    wdisc_opt: Optional[torch.optim.Optimizer] = None
    stage: int = 0

    def __post_init__(self) -> None:
        self.opt = torch.optim.Adam(self.encoder.parameters(), lr=self.hp.lr, betas=(0.9, 0.999))
        if self.kind == "e4e" and self.hp.lambda_wdisc > 0:
            self.wdisc = LatentDiscriminator(self.g.style_dim).to(self.w_avg.device)
            self.wdisc_opt = torch.optim.Adam(self.wdisc.parameters(), lr=2e-5, betas=(0.5, 0.999))

    @property
    def device(self) -> torch.device:
        return self.w_avg.device

    def amp(self) -> torch.autocast:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.hp.bf16 and self.device.type == "cuda")

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes before latent_avg, W+)`` for images at the encoder's input size."""
        if self.kind == "e4e":
            self.encoder.set_progressive_stage(self.stage)
        with self.amp():
            codes = self.encoder(images).float()
        return codes, codes + self.w_avg

    def reconstruct(self, wplus: torch.Tensor) -> torch.Tensor:
        with self.amp():
            return self.g.synthesis(wplus).float()

    def losses(self, batch: Batch, codes: torch.Tensor, wplus: torch.Tensor, recon: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """Per-term batch means (``latent`` over the generated part only)."""
        hp, n_gen = self.hp, batch.codes.shape[0]
        out = {"pixel": (recon - batch.images).square().mean((1, 2, 3)).mean()}
        out["latent"] = (wplus[:n_gen] - batch.codes).square().mean() if n_gen else recon.new_zeros(())
        if self.feature_loss is not None:
            with self.amp():
                out["feature"] = self.feature_loss(recon, batch.images).float().mean()
        if self.kind == "e4e":
            out["delta"] = delta_norms(codes, self.stage).mean()
        total = hp.lambda_pixel * out["pixel"] + hp.lambda_latent * out["latent"]
        if "feature" in out:
            total = total + hp.lambda_feature * out["feature"]
        if "delta" in out:
            total = total + hp.lambda_delta * out["delta"]
        out["loss"] = total
        return out

    def wdisc_rows(self, wplus: torch.Tensor) -> torch.Tensor:
        return wplus[:, :min(self.stage, wplus.shape[1] - 1) + 1].reshape(-1, wplus.shape[-1])

    def wdisc_step(self, wplus: torch.Tensor, step: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """One latent-discriminator step: real = mapped z, fake = the encoder's active rows; R1 every 16 steps."""
        assert self.wdisc is not None and self.wdisc_opt is not None
        self.wdisc.requires_grad_(True)
        fake = self.wdisc_rows(wplus.detach())
        with torch.no_grad():
            real = self.g.mapping(torch.randn(fake.shape[0], self.g.style_dim, generator=gen,
                                              device=self.device)).float()
        loss = F.softplus(self.wdisc(fake)).mean() + F.softplus(-self.wdisc(real)).mean()
        if step % 16 == 0:
            real.requires_grad_(True)
            (grad,) = torch.autograd.grad(self.wdisc(real).sum(), real, create_graph=True)
            loss = loss + 10 / 2 * grad.square().sum(1).mean() * 16
        self.wdisc_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.wdisc_opt.step()
        self.wdisc.requires_grad_(False)
        return {"wdisc_d": loss.detach()}

    def step(self, batch: Batch, step: int, lr_scale: float) -> dict[str, torch.Tensor]:
        """One optimisation step; returns the loss terms as detached 0-d tensors (no host sync)."""
        for group in self.opt.param_groups:
            group["lr"] = self.hp.lr * lr_scale
        self.encoder.train()
        codes, wplus = self.encode(batch.images)
        recon = self.reconstruct(wplus)
        terms = self.losses(batch, codes, wplus, recon)
        extra: dict[str, torch.Tensor] = {}
        loss = terms["loss"]
        if self.wdisc is not None:
            gen = torch.Generator(device=self.device).manual_seed(self.hp.seed * 1_000_003 + step + 17)
            extra = self.wdisc_step(wplus, step, gen)
            adv = F.softplus(-self.wdisc(self.wdisc_rows(wplus))).mean()
            loss = loss + self.hp.lambda_wdisc * adv
            extra["wdisc_g"] = adv
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {k: v.detach() for k, v in {**terms, **extra}.items()}


@torch.no_grad()
def evaluate(tr: Trainer, *, n: int = 256, batch: int = 64) -> dict[str, float]:
    """Held-out scores (fixed seeds): pixel MSE, feature loss and latent MSE on generated samples (psi = 1, no mixing),
    pixel MSE and feature loss on procedural faces; for e4e the delta regulariser (sum of the offsets' norms).
    Encoder in eval mode, all e4e stages; sample means."""
    enc, dev = tr.encoder.eval(), tr.device
    saved = tr.stage
    if tr.kind == "e4e":
        tr.stage = tr.encoder.n_styles - 1
    sums: dict[str, float] = {}
    hp = replace(tr.hp, mixing=0.0, trunc_min=1.0, seed=HELD_OUT_SEED)
    for i in range(0, n, batch):
        m = min(batch, n - i)
        gen_part = make_batch(tr.g, tr.w_avg, i, hp, n_gen=m)
        real = procedural_faces(m, tr.g.size, np.random.default_rng([HELD_OUT_SEED, i]), dev)
        for name, images, true in (("gen", gen_part.images, gen_part.codes), ("real", real, None)):
            codes, wplus = tr.encode(images)
            recon = tr.reconstruct(wplus)
            vals = {f"{name}_pixel_mse": (recon - images).square().mean((1, 2, 3))}
            if tr.feature_loss is not None:
                with tr.amp():
                    vals[f"{name}_feature"] = tr.feature_loss(recon, images).float()
            if true is not None:
                vals[f"{name}_latent_mse"] = (wplus - true).square().mean((1, 2))
            if tr.kind == "e4e":
                vals[f"{name}_delta_norm"] = delta_norms(codes, tr.stage)
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + float(v.sum())
    tr.stage = saved
    return {k: v / n for k, v in sums.items()}


@torch.no_grad()
def sample_grid(tr: Trainer, path: Path, *, n: int = 8) -> None:
    """PNG: generated inputs, their reconstructions, procedural inputs, their reconstructions (one row each)."""
    tr.encoder.eval()
    hp = replace(tr.hp, seed=HELD_OUT_SEED + 1)
    b = make_batch(tr.g, tr.w_avg, 0, hp, n_gen=n, real=ProceduralStream(n, tr.g.size, hp.seed, tr.device, block=1))
    recon = tr.reconstruct(tr.encode(b.images)[1])
    rows = [b.images[:n], recon[:n], b.images[n:], recon[n:]]
    img = ((torch.cat(rows).clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(img, path, cols=n)


# ----------------------------------------------------------------------------- checkpoint / export


def save_checkpoint(path: Path, tr: Trainer, *, step: int, seconds: float, arch: EncoderArch,
                    generator_file: str) -> None:
    """Atomically write ``last.pt`` (plain tensors / dicts / numbers / strings only)."""
    state = {"format": "builtin-encoder-train/1", "kind": tr.kind, "step": step, "train_seconds": seconds,
             "stage": tr.stage, "arch": asdict(arch), "encoder_config": tr.encoder.config(),
             "hparams": asdict(tr.hp), "encoder": tr.encoder.state_dict(), "opt": tr.opt.state_dict(),
             "latent_avg": tr.w_avg.detach().cpu(), "generator": {"file": generator_file, "config": tr.g.config()}}
    if tr.wdisc is not None:
        state["wdisc"], state["wdisc_opt"] = tr.wdisc.state_dict(), tr.wdisc_opt.state_dict()
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def export_encoder(tr: Trainer, export_dir: Path, *, info: dict, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``builtin_<kind><size>.safetensors`` (encoder weights in ``dtype``, ``latent_avg`` float32) and the
    ``.json`` config (``bundled_encoder_files`` layout + provenance under ``info``)."""
    from safetensors.torch import save_file

    enc = tr.encoder.eval()
    if tr.kind == "e4e":
        enc.set_progressive_stage(max(18, enc.n_styles))
    n = enc.n_styles
    bundle = EncoderBundle(kind=tr.kind, encoder=enc, decoder_state_dict={},
                           latent_avg=tr.w_avg.detach().float().cpu().reshape(1, -1).expand(n, -1),
                           opts={"output_size": tr.g.size, "input_size": enc.input_size})
    tensors, config = bundled_encoder_files(bundle)
    tensors = {k: (v.to(dtype) if v.is_floating_point() and k != "latent_avg" else v).cpu().contiguous()
               for k, v in tensors.items()}
    export_dir.mkdir(parents=True, exist_ok=True)
    stem = export_dir / f"builtin_{tr.kind}{tr.g.size}"
    save_file(tensors, str(stem.with_suffix(".safetensors")), metadata={"format": f"builtin-{tr.kind}-encoder"})
    config = {**config, "weights": stem.with_suffix(".safetensors").name,
              "weights_dtype": str(dtype).replace("torch.", ""), "info": info}
    stem.with_suffix(".json").write_text(json.dumps(config, indent=1) + "\n")
    return stem.with_suffix(".safetensors")


# ----------------------------------------------------------------------------- main loop


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, required=True, help="builtin_g<size>.safetensors (+ .json beside it)")
    p.add_argument("--kind", choices=[*KINDS, "both"], default="both")
    p.add_argument("--run-dir", type=Path, required=True, help="checkpoints go to RUN_DIR/<kind>/")
    p.add_argument("--minutes", type=float, default=None, help="total wall-clock budget of this process")
    p.add_argument("--psp-share", type=float, default=0.5, help="with --kind both: pSp's share of --minutes")
    p.add_argument("--max-steps", type=int, default=None, help="stop each encoder at this total step count")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    for f, v in asdict(EncoderArch()).items():
        kind = _ints if isinstance(v, tuple) else type(v)
        shown = ",".join(map(str, v)) if isinstance(v, tuple) else v
        p.add_argument("--" + f.replace("_", "-"), type=kind, default=None,
                       help=f"architecture (new runs only; default {shown})")
    for f, v in asdict(Hparams()).items():
        if isinstance(v, bool):
            p.add_argument("--" + f.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument("--" + f.replace("_", "-"), type=type(v), default=None, help=f"default {v}")
    p.add_argument("--feature-loss", choices=["auto", "lpips", "regressor", "multiscale", "none"], default="auto")
    p.add_argument("--lpips-vgg", type=Path, default=None, help="VGG16 safetensors (features.*) for LPIPS")
    p.add_argument("--attributes", type=Path, default=None, help="attribute regressor (default: the bundled one)")
    p.add_argument("--metrics-every", type=int, default=100)
    p.add_argument("--sample-every", type=int, default=1000)
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--eval-n", type=int, default=256)
    p.add_argument("--export-dir", type=Path, default=DEFAULT_EXPORT_DIR)
    p.add_argument("--export-dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--no-export", action="store_true")
    return p.parse_args(argv)


def _merge(cls, stored: Optional[dict], args: argparse.Namespace):
    base = asdict(cls(**stored)) if stored else asdict(cls())
    merged = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in base.items()}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()})


def train_one(kind: str, args: argparse.Namespace, *, g: Generator, w_avg: torch.Tensor,
              feature_loss: Optional[ImageLoss], feature_desc: str, deadline: Optional[float]) -> dict:
    """Train (or resume) one encoder until ``deadline`` (time.time()) / ``--max-steps``; save, evaluate, export."""
    t_start = time.time()
    run = args.run_dir / kind
    run.mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "last.pt"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None
    arch = _merge(EncoderArch, state["arch"] if state else None, args)
    if state is not None and asdict(arch) != asdict(EncoderArch(**{k: tuple(v) if isinstance(v, list) else v
                                                                    for k, v in state["arch"].items()})):
        raise SystemExit(f"{ckpt_path} was trained with {state['arch']}; architecture flags differ")
    hp = _merge(Hparams, state["hparams"] if state else None, args)
    dev = w_avg.device
    enc = build_encoder(kind, n_styles=g.n_latent, input_size=g.size, style_dim=g.style_dim, arch=arch)
    if state is not None:
        if state["encoder_config"] != enc.config():
            raise SystemExit(f"{ckpt_path}: encoder config {state['encoder_config']} != {enc.config()}")
        enc.load_state_dict(state["encoder"], strict=True)
    tr = Trainer(kind=kind, encoder=enc.to(dev), g=g, w_avg=w_avg, hp=hp, feature_loss=feature_loss)
    step, seconds = 0, 0.0
    if state is not None:
        tr.opt.load_state_dict(state["opt"])
        if tr.wdisc is not None and "wdisc" in state:
            tr.wdisc.load_state_dict(state["wdisc"])
            tr.wdisc_opt.load_state_dict(state["wdisc_opt"])
        step, seconds, tr.stage = state["step"], state["train_seconds"], state["stage"]
        print(f"[{kind}] resumed {ckpt_path}: step {step}, stage {tr.stage}")
    del state
    n_params = sum(p.numel() for p in enc.parameters())
    heads = arch.head_channels if "head_channels" in enc.config() else g.style_dim
    print(f"[{kind}] {n_params / 1e6:.2f}M params (style heads {heads} wide), hparams {asdict(hp)}, "
          f"feature loss: {feature_desc}", flush=True)

    n_real = int(round(hp.batch * hp.real_frac))
    n_gen = hp.batch - n_real
    real = ProceduralStream(n_real, g.size, hp.seed, dev)
    budget = None if deadline is None else max(1.0, deadline - t_start - 25)  # ~25 s for evaluation and export
    metrics_path = run / "metrics.json"
    records = json.loads(metrics_path.read_text()) if metrics_path.is_file() else []
    session_start_step, last_ckpt, step_times = step, time.time(), []
    sums: dict[str, torch.Tensor] = {}
    count, window_t, window_n = 0, time.time(), 0
    generator_file = str(args.generator)
    try:
        while True:
            if args.max_steps is not None and step >= args.max_steps:
                break
            if deadline is not None:  # room for one more step, a checkpoint, the evaluation and the export
                spare = 3 * (max(step_times[-20:]) if step_times else 0) + 20
                if time.time() + spare > deadline:
                    break
            t0 = time.time()
            p = progress(step - session_start_step, t0 - t_start,
                         max_steps=None if args.max_steps is None else args.max_steps - session_start_step,
                         budget_s=budget)
            if kind == "e4e":
                tr.stage = max(tr.stage, e4e_stage(p, g.n_latent, hp.stage_ramp))
            batch = make_batch(g, w_avg, step, hp, n_gen=n_gen, real=real)
            terms = tr.step(batch, step, lr_factor(step, p, hp))
            step += 1
            step_times.append(time.time() - t0)
            seconds += step_times[-1]
            window_n += hp.batch
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
            if step % args.metrics_every == 0 or (args.max_steps is not None and step == args.max_steps):
                means = {k: float(v) / count for k, v in sums.items()}  # one host sync per record
                if not all(math.isfinite(v) for v in means.values()):
                    raise FloatingPointError(f"[{kind}] non-finite loss before step {step}: {means}")
                now = time.time()
                record = {"step": step, "stage": tr.stage, "lr": tr.opt.param_groups[0]["lr"],
                          "train_s": round(seconds, 1), "img_per_s": round(window_n / max(now - window_t, 1e-9), 1),
                          **means}
                records.append(record)
                metrics_path.write_text(json.dumps(records, indent=1) + "\n")
                print(f"[{kind}] " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                              for k, v in record.items()), flush=True)
                sums, count, window_t, window_n = {}, 0, time.time(), 0
            if args.sample_every and step % args.sample_every == 0:
                sample_grid(tr, run / "samples" / f"step_{step:07d}.png")
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save_checkpoint(ckpt_path, tr, step=step, seconds=seconds, arch=arch, generator_file=generator_file)
                last_ckpt = time.time()
    except KeyboardInterrupt:
        print(f"[{kind}] interrupted: saving")
    save_checkpoint(ckpt_path, tr, step=step, seconds=seconds, arch=arch, generator_file=generator_file)
    sample_grid(tr, run / "samples" / "latest.png")
    final = {"step": step, "final": True, "held_out_n": args.eval_n, **evaluate(tr, n=args.eval_n)}
    records.append(final)
    metrics_path.write_text(json.dumps(records, indent=1) + "\n")
    print(f"[{kind}] held-out " + " ".join(f"{k} {v:.4g}" for k, v in final.items() if isinstance(v, float)))
    if not args.no_export:
        info = {"step": step, "train_seconds": round(seconds, 1), "images_seen": step * hp.batch,
                "generator": Path(generator_file).name, "hparams": asdict(hp), "arch": asdict(arch),
                "feature_loss": feature_desc, "held_out": {k: round(v, 5) for k, v in final.items()
                                                           if isinstance(v, float)},
                "data": "the generator's own samples (latent + image losses) and training.faces procedural faces "
                        "(image losses only)"}
        path = export_encoder(tr, args.export_dir, info=info,
                              dtype=torch.float16 if args.export_dtype == "float16" else torch.float32)
        print(f"[{kind}] exported {path}")
    print(f"[{kind}] stopped at step {step} after {time.time() - t_start:.0f} s in this session", flush=True)
    return final


def main(argv: Optional[list[str]] = None) -> dict[str, dict]:
    """Train the requested encoder(s); returns ``{kind: held-out metrics}``."""
    args = parse_args(argv)
    t_start = time.time()
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    g, w_avg = load_generator_file(args.generator)
    g, w_avg = g.to(dev).eval().requires_grad_(False), w_avg.to(dev)
    feature_loss, feature_desc = make_feature_loss(args.feature_loss, lpips_vgg=args.lpips_vgg,
                                                   attributes=args.attributes, device=dev)
    kinds: Sequence[str] = KINDS if args.kind == "both" else (args.kind,)
    shares = {"psp": args.psp_share, "e4e": 1.0} if len(kinds) == 2 else {kinds[0]: 1.0}
    results = {}
    for kind in kinds:
        deadline = None if args.minutes is None else t_start + args.minutes * 60 * shares[kind]
        results[kind] = train_one(kind, args, g=g, w_avg=w_avg, feature_loss=feature_loss,
                                  feature_desc=feature_desc, deadline=deadline)
    print(f"done in {time.time() - t_start:.0f} s")
    return results


if __name__ == "__main__":
    main()
