"""Train the small built-in StyleGAN2 on procedural faces; resumable; exports ``g_ema``.

    python -m training.train_gan --run-dir runs/g128 --minutes 14 --bf16

Real images are drawn on the training device by :func:`training.faces.render_faces_torch` (no data set on
disk). Loss: non-saturating logistic, lazy R1 on reals (every ``--r1-every`` steps, in float32), EMA generator
with ramp-up, per-sample style mixing; no path-length regularisation.

All randomness is keyed by ``(seed, step)`` (the latent/noise generator is reseeded every step and real
batches come from ``numpy.random.default_rng([seed, block])``), so a resumed run draws exactly what an
uninterrupted one would; ``last.pt`` holds the seed and step for that.

``RUN_DIR`` gets ``last.pt`` (g, d, g_ema, both optimisers, step, config; plain tensors and dicts, loadable
with ``torch.load(weights_only=True)``), ``metrics.json`` (a list of records), ``samples/*.png``. Every clean
stop (time budget, ``--kimg``/``--max-steps`` reached, Ctrl-C) saves ``last.pt`` and exports the EMA generator
to ``EXPORT_DIR/builtin_g<size>.safetensors`` (rosinality state dict, ``generator_from_state_dict`` loads it)
and ``builtin_g<size>.json`` (``config`` for :class:`~inversion.stylegan2.Generator`, ``latent_avg``,
provenance). ``--export-only`` just re-exports from ``last.pt``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from inversion.stylegan2 import Generator
from training.discriminator import Discriminator
from training.faces import render_faces_torch, sample_attributes, sample_nuisance, save_grid

DEFAULT_EXPORT_DIR = Path(__file__).resolve().parents[1] / "inversion" / "data"
HELD_OUT_SEED = 424_242


@dataclass(frozen=True)
class Arch:
    """Generator / discriminator architecture (stored in ``last.pt``; fixed for the life of a run)."""

    size: int = 128
    style_dim: int = 512
    n_mlp: int = 4
    channel_multiplier: float = 0.5
    max_channels: int = 256


@dataclass(frozen=True)
class Hparams:
    """Training hyper-parameters (may change between resumed sessions)."""

    batch: int = 64
    lr: float = 0.002
    r1_gamma: float = 0.1
    r1_every: int = 16
    ema_kimg: float = 10.0
    ema_rampup: float = 0.05
    mixing: float = 0.9
    bf16: bool = False
    seed: int = 0


# ----------------------------------------------------------------------------- pieces


def build(arch: Arch) -> tuple[Generator, Discriminator]:
    """Fresh G and D (float32, CPU)."""
    g = Generator(arch.size, arch.style_dim, arch.n_mlp, arch.channel_multiplier, max_channels=arch.max_channels)
    d = Discriminator(arch.size, channel_multiplier=arch.channel_multiplier, max_channels=arch.max_channels)
    return g, d


def make_optimizers(g: Generator, d: Discriminator, hp: Hparams) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam(0, 0.99) for G; D's lr and betas corrected for lazy R1 (StyleGAN2's ratio r/(r+1))."""
    c = hp.r1_every / (hp.r1_every + 1)
    g_opt = torch.optim.Adam(g.parameters(), lr=hp.lr, betas=(0.0, 0.99), eps=1e-8)
    d_opt = torch.optim.Adam(d.parameters(), lr=hp.lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)
    return g_opt, d_opt


def sample_ws(g: Generator, n: int, gen: torch.Generator, *, mixing: float) -> torch.Tensor:
    """W+ codes (n, n_latent, style_dim) from two z per sample, switched at a random layer with prob ``mixing``."""
    dev = g.input.input.device
    z = torch.randn(2 * n, g.style_dim, generator=gen, device=dev)
    w = g.mapping(z).view(2, n, -1)
    mix = torch.rand(n, generator=gen, device=dev) < mixing
    cut = torch.randint(1, g.n_latent, (n,), generator=gen, device=dev)
    cut = torch.where(mix, cut, torch.full_like(cut, g.n_latent))
    layer = torch.arange(g.n_latent, device=dev).view(1, -1, 1)
    return torch.where(layer < cut.view(-1, 1, 1), w[0].unsqueeze(1), w[1].unsqueeze(1))


def generate(g: Generator, n: int, gen: torch.Generator, *, mixing: float) -> torch.Tensor:
    """Training-time samples: mixed styles, fresh noise (n, 3, S, S)."""
    return g.synthesis(sample_ws(g, n, gen, mixing=mixing), noise="random", generator=gen)


class RealFaces:
    """Procedural real images on ``device``, rendered ``block`` batches at a time; batch ``step`` depends only
    on ``(seed, step, batch, block)``."""

    def __init__(self, size: int, batch: int, seed: int, device: torch.device, *, block: int = 8) -> None:
        self.size, self.batch, self.seed, self.device, self.block = size, batch, seed, device, block
        self._key, self._images = None, None

    def render(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        attrs = torch.from_numpy(sample_attributes(n, rng)).to(self.device)
        nuis = torch.from_numpy(sample_nuisance(n, rng)).to(self.device)
        with torch.no_grad():
            return render_faces_torch(attrs, nuis, size=self.size) * 2 - 1

    def batch_at(self, step: int) -> torch.Tensor:
        key = step // self.block
        if key != self._key:
            self._images = self.render(self.batch * self.block, np.random.default_rng([self.seed, key]))
            self._key = key
        i = step % self.block
        return self._images[i * self.batch:(i + 1) * self.batch]


@torch.no_grad()
def ema_update(g_ema: Generator, g: Generator, beta: float) -> None:
    """``g_ema = beta * g_ema + (1 - beta) * g`` on parameters; buffers copied."""
    torch._foreach_lerp_(list(g_ema.parameters()), list(g.parameters()), 1.0 - beta)
    for be, b in zip(g_ema.buffers(), g.buffers()):
        be.copy_(b)


def ema_beta(hp: Hparams, nimg: int) -> float:
    """EMA decay per step: half-life ``ema_kimg`` thousand images, ramped up to ``ema_rampup * nimg``."""
    ema_nimg = hp.ema_kimg * 1000
    if hp.ema_rampup > 0:
        ema_nimg = min(ema_nimg, nimg * hp.ema_rampup)
    return 0.5 ** (hp.batch / max(ema_nimg, 1e-8))


def train_step(g, d, g_ema, g_opt, d_opt, real: torch.Tensor, step: int, nimg: int, hp: Hparams,
               gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One D step (+ lazy R1), one G step, EMA update. Returns detached 0-d loss tensors (no host sync)."""
    dev = real.device

    def amp() -> torch.autocast:
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=hp.bf16)

    n = real.shape[0]
    out: dict[str, torch.Tensor] = {}

    d.requires_grad_(True)
    with torch.no_grad(), amp():
        fake = generate(g, n, gen, mixing=hp.mixing)
    with amp():
        fake_pred, real_pred = d(fake).float(), d(real).float()
    d_loss = F.softplus(fake_pred).mean() + F.softplus(-real_pred).mean()
    d_opt.zero_grad(set_to_none=True)
    d_loss.backward()
    d_opt.step()
    out["d_loss"], out["real_score"], out["fake_score"] = d_loss.detach(), real_pred.mean().detach(), fake_pred.mean().detach()

    if hp.r1_every > 0 and step % hp.r1_every == 0:
        x = real.detach().float().requires_grad_(True)
        with torch.autocast(dev.type, enabled=False):
            pred = d(x)
        (grad,) = torch.autograd.grad(pred.sum(), x, create_graph=True)
        r1 = grad.square().sum(dim=(1, 2, 3)).mean()
        d_opt.zero_grad(set_to_none=True)
        (hp.r1_gamma / 2 * r1 * hp.r1_every + 0 * pred[0, 0]).backward()
        d_opt.step()
        out["r1"] = r1.detach()

    d.requires_grad_(False)
    with amp():
        g_pred = d(generate(g, n, gen, mixing=hp.mixing)).float()
    g_loss = F.softplus(-g_pred).mean()
    g_opt.zero_grad(set_to_none=True)
    g_loss.backward()
    g_opt.step()
    out["g_loss"] = g_loss.detach()
    ema_update(g_ema, g, ema_beta(hp, nimg))
    return out


# ----------------------------------------------------------------------------- checkpoint / export


def save_checkpoint(path: Path, *, g, d, g_ema, g_opt, d_opt, step: int, nimg: int, arch: Arch, hp: Hparams,
                    seconds: float) -> None:
    """Atomically write ``last.pt`` (plain tensors / dicts / numbers only)."""
    state = {"format": "builtin-stylegan2-train/1", "step": step, "nimg": nimg, "train_seconds": seconds,
             "arch": asdict(arch), "hparams": asdict(hp), "g": g.state_dict(), "d": d.state_dict(),
             "g_ema": g_ema.state_dict(), "g_opt": g_opt.state_dict(), "d_opt": d_opt.state_dict(),
             "rng": {"scheme": "every draw keyed by (seed, step)", "seed": hp.seed}}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def export_generator(g_ema: Generator, export_dir: Path, *, info: dict, dtype: torch.dtype = torch.float16,
                     latent_samples: int = 10000) -> Path:
    """Write ``builtin_g<size>.safetensors`` (state dict in ``dtype``) and ``builtin_g<size>.json``."""
    from safetensors.torch import save_file

    export_dir.mkdir(parents=True, exist_ok=True)
    stem = export_dir / f"builtin_g{g_ema.size}"
    gen = torch.Generator(device=g_ema.input.input.device).manual_seed(0)
    latent_avg = g_ema.mean_latent(latent_samples, generator=gen).float().cpu()
    sd = {k: v.detach().to(dtype).cpu().contiguous() for k, v in g_ema.state_dict().items()}
    save_file(sd, str(stem.with_suffix(".safetensors")), metadata={"format": "rosinality-stylegan2-generator"})
    meta = {"config": g_ema.config(), "latent_avg": latent_avg.view(-1).tolist(),
            "weights": stem.with_suffix(".safetensors").name, "weights_dtype": str(dtype).replace("torch.", ""),
            "latent_avg_note": f"mean of mapping(z) over {latent_samples} z (seed 0)", **info}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return stem.with_suffix(".safetensors")


@torch.no_grad()
def sample_grid(g_ema: Generator, path: Path, *, n: int = 32, seed: int = 12345) -> None:
    """Fixed-z samples of the EMA generator (stored noise) as a PNG grid."""
    dev = g_ema.input.input.device
    z = torch.randn(n, g_ema.style_dim, generator=torch.Generator().manual_seed(seed)).to(dev)
    img = g_ema.synthesis(g_ema.mapping(z).unsqueeze(1).expand(-1, g_ema.n_latent, -1))
    img = ((img.float().clamp(-1, 1) + 1) * 127.5 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    save_grid(img, path, cols=8)


class FeatureDistance:
    """Fréchet distance on the attribute regressor's features between G samples and held-out real faces."""

    def __init__(self, size: int, n: int, device: torch.device) -> None:
        from editing.attributes import image_features, load_attribute_model

        self.model = load_attribute_model().to(device)
        self.n, self._features = n, image_features
        real = RealFaces(size, n, HELD_OUT_SEED, device).render(n, np.random.default_rng(HELD_OUT_SEED))
        self.real = image_features(self.model, real)

    @torch.no_grad()
    def __call__(self, g_ema: Generator) -> float:
        from editing.attributes import frechet_distance

        gen = torch.Generator(device=g_ema.input.input.device).manual_seed(7)
        imgs = torch.cat([generate(g_ema, min(256, self.n - i), gen, mixing=0.0).float().clamp(-1, 1)
                          for i in range(0, self.n, 256)])
        return frechet_distance(self._features(self.model, imgs), self.real)


# ----------------------------------------------------------------------------- main loop


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=None, help="stop cleanly (save + export) before this budget")
    p.add_argument("--kimg", type=float, default=None, help="stop when this many thousand reals were shown")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this total step count")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy CPU)")
    for f, v in asdict(Arch()).items():
        p.add_argument("--" + f.replace("_", "-"), type=type(v), default=None,
                       help=f"architecture (new runs only; default {v})")
    for f, v in asdict(Hparams()).items():
        if isinstance(v, bool):
            p.add_argument("--" + f.replace("_", "-"), action=argparse.BooleanOptionalAction, default=None)
        else:
            p.add_argument("--" + f.replace("_", "-"), type=type(v), default=None, help=f"default {v}")
    p.add_argument("--sample-every", type=int, default=500, help="steps between sample grids")
    p.add_argument("--metrics-every", type=int, default=100, help="steps between metrics.json records")
    p.add_argument("--fd-every", type=int, default=1000, help="steps between feature distances (0 = off)")
    p.add_argument("--fd-n", type=int, default=2048, help="images per side for the feature distance")
    p.add_argument("--ckpt-minutes", type=float, default=5.0)
    p.add_argument("--export-dir", type=Path, default=DEFAULT_EXPORT_DIR)
    p.add_argument("--export-dtype", choices=["float16", "float32"], default="float16")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--export-only", action="store_true")
    return p.parse_args(argv)


def _merge(cls, stored: Optional[dict], args: argparse.Namespace):
    base = asdict(cls(**stored)) if stored else asdict(cls())
    return cls(**{k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in base.items()})


def main(argv: Optional[list[str]] = None) -> dict:
    """Run (or resume) training; returns the last metrics record."""
    args = parse_args(argv)
    t_start = time.time()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    run = args.run_dir
    (run / "samples").mkdir(parents=True, exist_ok=True)
    ckpt_path = run / "last.pt"
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True) if ckpt_path.is_file() else None

    if state is not None:
        arch = Arch(**state["arch"])
        asked = {k: getattr(args, k) for k in asdict(arch) if getattr(args, k) is not None}
        if any(asked[k] != v for k, v in asdict(arch).items() if k in asked):
            raise SystemExit(f"{ckpt_path} was trained with {asdict(arch)}; architecture flags {asked} differ")
    else:
        arch = _merge(Arch, None, args)
    hp = _merge(Hparams, state["hparams"] if state else None, args)
    with torch.random.fork_rng(devices=[]):  # initial weights depend on the seed only
        torch.manual_seed(hp.seed)
        g, d = build(arch)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    g, d, g_ema = g.to(dev), d.to(dev), g_ema.to(dev)
    g_opt, d_opt = make_optimizers(g, d, hp)
    step, nimg, seconds = 0, 0, 0.0
    if state is not None:
        g.load_state_dict(state["g"])
        d.load_state_dict(state["d"])
        g_ema.load_state_dict(state["g_ema"])
        g_opt.load_state_dict(state["g_opt"])
        d_opt.load_state_dict(state["d_opt"])
        for opt, lr in ((g_opt, hp.lr), (d_opt, hp.lr * hp.r1_every / (hp.r1_every + 1))):
            for group in opt.param_groups:
                group["lr"] = lr
        step, nimg, seconds = state["step"], state["nimg"], state["train_seconds"]
        print(f"resumed {ckpt_path}: step {step}, {nimg / 1000:.1f} kimg")
    del state

    def export() -> None:
        if args.no_export:
            return
        info = {"step": step, "kimg": round(nimg / 1000, 2), "train_seconds": round(seconds, 1),
                "data": "training.faces procedural faces", "hparams": asdict(hp)}
        path = export_generator(g_ema, args.export_dir, info=info,
                                dtype=torch.float16 if args.export_dtype == "float16" else torch.float32)
        print(f"exported {path}")

    if args.export_only:
        export()
        return {}

    metrics_path = run / "metrics.json"
    records = json.loads(metrics_path.read_text()) if metrics_path.is_file() else []
    fd = None
    if args.fd_every > 0:
        try:
            fd = FeatureDistance(arch.size, args.fd_n, dev)
        except Exception as err:  # the regressor is optional here
            print(f"feature distance off: {err}")
    real = RealFaces(arch.size, hp.batch, hp.seed, dev)
    gen = torch.Generator(device=dev)
    print(f"device {dev}, arch {asdict(arch)}, hparams {asdict(hp)}")
    print(f"G {sum(p.numel() for p in g.parameters()) / 1e6:.2f}M params, D {sum(p.numel() for p in d.parameters()) / 1e6:.2f}M")

    last_ckpt, window_t, window_img, step_times = time.time(), time.time(), 0, []
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    record: dict = {}
    try:
        while True:
            if args.max_steps is not None and step >= args.max_steps:
                break
            if args.kimg is not None and nimg >= args.kimg * 1000:
                break
            if args.minutes is not None:  # leave room for one more step, a checkpoint and the export
                spare = 3 * (max(step_times[-20:]) if step_times else 0) + 30
                if time.time() - t_start + spare > args.minutes * 60:
                    break
            t0 = time.time()
            gen.manual_seed(hp.seed * 1_000_003 + step)
            losses = train_step(g, d, g_ema, g_opt, d_opt, real.batch_at(step), step, nimg, hp, gen)
            step += 1
            nimg += hp.batch
            window_img += hp.batch
            step_times.append(time.time() - t0)
            seconds += step_times[-1]
            for k, v in losses.items():  # summed on the device; read back only when a record is written
                sums[k] = sums[k] + v if k in sums else v.clone()
                counts[k] = counts.get(k, 0) + 1
            if step % args.metrics_every == 0 or (args.max_steps is not None and step == args.max_steps):
                means = {k: float(v) / counts[k] for k, v in sums.items()}
                if not all(math.isfinite(v) for v in means.values()):
                    raise FloatingPointError(f"non-finite loss before step {step}: {means}")
                now = time.time()
                record = {"step": step, "kimg": round(nimg / 1000, 3), "train_s": round(seconds, 1),
                          "kimg_per_s": round(window_img / 1000 / max(now - window_t, 1e-9), 4), **means}
                if fd is not None and args.fd_every > 0 and step % args.fd_every == 0:
                    record["feature_distance"] = fd(g_ema)
                records.append(record)
                metrics_path.write_text(json.dumps(records, indent=1) + "\n")
                print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()),
                      flush=True)
                sums, counts, window_t, window_img = {}, {}, time.time(), 0
            if step % args.sample_every == 0:
                sample_grid(g_ema, run / "samples" / f"step_{step:07d}.png")
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                save_checkpoint(ckpt_path, g=g, d=d, g_ema=g_ema, g_opt=g_opt, d_opt=d_opt, step=step, nimg=nimg,
                                arch=arch, hp=hp, seconds=seconds)
                last_ckpt = time.time()
    except KeyboardInterrupt:
        print("interrupted: saving")
    save_checkpoint(ckpt_path, g=g, d=d, g_ema=g_ema, g_opt=g_opt, d_opt=d_opt, step=step, nimg=nimg,
                    arch=arch, hp=hp, seconds=seconds)
    sample_grid(g_ema, run / "samples" / "latest.png")
    if fd is not None:
        final = {"step": step, "kimg": round(nimg / 1000, 3), "feature_distance": fd(g_ema), "final": True}
        records.append(final)
        metrics_path.write_text(json.dumps(records, indent=1) + "\n")
        print(f"final feature distance {final['feature_distance']:.4g}")
    export()
    print(f"stopped at step {step} ({nimg / 1000:.1f} kimg) after {time.time() - t_start:.0f} s in this session")
    return record


if __name__ == "__main__":
    main()
