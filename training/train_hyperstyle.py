"""Train the built-in model set's small HyperStyle on the small generator; exports ``builtin_hyperstyle<size>``.

    python -m training.train_hyperstyle --minutes 4 --device cuda --export-dir inversion/data

Starting code: the bundled e4e (``builtin_e4e<size>``), frozen, as HyperStyle starts from its frozen W-encoder
(the built-in family has no W-only encoder; e4e's W+ start is the paper's "HyperStyle with an e4e initialisation").
The generator is frozen too; only the hypernetwork learns.

Data, as the built-in pSp/e4e (:mod:`training.train_encoders`): every step draws generated samples (truncation psi
~ U[trunc_min, 1], style mixing, random noise) and procedural faces (``real_frac`` of the batch) on the device.

Per step, HyperStyle's training recipe: ``train_iters`` refinement passes; pass k feeds ``[image, current
reconstruction]``, adds its offsets to the (detached) running sum, re-synthesises with the generator's stored noise
and back-propagates its own loss (pixel MSE + ``lambda_feature`` x the perceptual stand-in of train_encoders: the
attribute regressor's activations); one Adam step after the passes. The offsets' last layers start at zero, so the
untrained network returns e4e's reconstruction. bf16 autocast and TF32 on CUDA.

Architecture (``builtin_config``): the official layout narrowed for 128 px: ResNet body 32/48/96/128 wide with
2/2/2/2 blocks, the FFHQ choice of tuned layers (every 3x3 conv, no to-RGB), the shared hypernetwork serving the
256-wide layers (0, 2, 3, 5, 6, 8, 9) with a 32-d code, per-layer blocks for the narrower ones (11, 12, 14, 15).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from inversion.encoders import load_bundled_encoder
from inversion.hyperstyle import HyperNet, HyperNetConfig, add_deltas, layer_shapes, synthesis_with_deltas
from inversion.hyperstyle_io import bundled_hyperstyle_files, load_bundled_hyperstyle
from inversion.stylegan2 import Generator
from training.train_encoders import (ProceduralStream, load_generator_file, make_batch, make_feature_loss,
                                     procedural_faces)

DATA = Path(__file__).resolve().parents[1] / "inversion" / "data"
HELD_OUT_SEED = 777_101


@dataclass
class Hparams:
    batch: int = 32
    lr: float = 3e-4
    warmup: int = 100
    real_frac: float = 0.25
    mixing: float = 0.5
    trunc_min: float = 0.7
    train_iters: int = 3
    lambda_feature: float = 0.5
    bf16: bool = True
    seed: int = 0


def builtin_config(g: Generator) -> HyperNetConfig:
    """The narrowed official architecture for generator ``g`` (see the module docstring)."""
    shapes = tuple(layer_shapes(g.size, channel_multiplier=g.channel_multiplier, max_channels=g.max_channels))
    tuned = tuple(i for i, s in enumerate(shapes) if s[0] == 3)
    widest = max(s[2] for s in shapes)
    shared = tuple(i for i in tuned if shapes[i] == (3, widest, widest))
    return HyperNetConfig(layer_shapes=shapes, layers_to_tune=tuned, shared_layers=shared, input_nc=6,
                          input_size=g.size, widths=(32, 48, 96, 128), units=(2, 2, 2, 2), shared_width=widest,
                          z_dim=32, shared_inner=32, refine_width=16, refine_inner=32)


def zero_last_layers(net: HyperNet) -> None:
    """Start from zero offsets: the shared hypernetwork's ``w1``/``b1`` and every per-layer output conv."""
    with torch.no_grad():
        net.shared_weight_hypernet.w1.zero_()
        net.shared_weight_hypernet.b1.zero_()
        net.shared_weight_hypernet.w2.mul_(0.1)  # the official init scale (randn / 40), from the default randn
        for block in net.refinement_blocks:
            if block is not None and hasattr(block, "output"):
                block.output[-1].weight.zero_()
                block.output[-1].bias.zero_()


def load_e4e(size: int):
    from safetensors.torch import load_file

    stem = DATA / f"builtin_e4e{size}"
    config = json.loads(stem.with_suffix(".json").read_text())
    return load_bundled_encoder(load_file(str(stem.with_suffix(".safetensors"))), config, kind="e4e")


def passes(net: HyperNet, g: Generator, images: torch.Tensor, codes: torch.Tensor, n: int, *, amp: bool,
           loss_fn=None) -> tuple[list, torch.Tensor, list[float]]:
    """``n`` refinement passes; with ``loss_fn`` each pass's loss is back-propagated (detached between passes)."""
    with torch.no_grad(), torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
        y_hat = g.synthesis(codes).float()
    deltas, losses = None, []
    for _ in range(n):
        with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=amp):
            new = net(torch.cat([images, y_hat.clamp(-1, 1)], dim=1))
            deltas = add_deltas(deltas, [None if d is None else d.float() for d in new])
            image = synthesis_with_deltas(g, codes, deltas).float()
        if loss_fn is not None:
            loss = loss_fn(image, images)
            loss.backward()
            losses.append(float(loss.detach()))
        deltas = [None if d is None else d.detach() for d in deltas]
        y_hat = image.detach()
    return deltas, y_hat, losses


@torch.no_grad()
def evaluate(net: HyperNet, g: Generator, e4e, w_avg: torch.Tensor, *, n: int = 128, n_iters: int = 5,
             amp: bool) -> dict[str, float]:
    """Held-out pixel MSE of e4e's start and of HyperStyle (5 passes), on generated and procedural faces."""
    net.eval()
    dev = w_avg.device
    hp = Hparams(mixing=0.0, trunc_min=1.0, seed=HELD_OUT_SEED, bf16=False)
    gen = make_batch(g, w_avg, 0, hp, n_gen=n).images
    real = procedural_faces(n, g.size, np.random.default_rng([HELD_OUT_SEED, 0]), dev)
    out = {}
    for name, images in (("gen", gen), ("real", real)):
        codes = e4e.encode(images)
        out[f"{name}_e4e_mse"] = float((g.synthesis(codes) - images).square().mean())
        _, y, _ = passes(net, g, images, codes, n_iters, amp=amp)
        out[f"{name}_hyperstyle_mse"] = float((y - images).square().mean())
    net.train()
    return out


def main(argv: Optional[list[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, default=DATA / "builtin_g128.safetensors")
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--export-dir", type=Path, default=DATA)
    p.add_argument("--metrics-every", type=int, default=100)
    p.add_argument("--eval-n", type=int, default=128)
    p.add_argument("--init", type=Path, default=None, help="continue from an exported builtin_hyperstyle*.safetensors")
    for f, v in asdict(Hparams()).items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(v, bool) else type(v)
        p.add_argument("--" + f.replace("_", "-"), type=kind, default=v)
    args = p.parse_args(argv)
    hp = Hparams(**{f: getattr(args, f) for f in asdict(Hparams())})
    dev = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = hp.bf16 and dev.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(hp.seed)

    g, w_avg = load_generator_file(args.generator)
    g, w_avg = g.to(dev).eval().requires_grad_(False), w_avg.to(dev)
    e4e = load_e4e(g.size)
    e4e.encoder.to(dev).eval().requires_grad_(False)
    e4e = type(e4e)(kind=e4e.kind, encoder=e4e.encoder, decoder_state_dict={}, latent_avg=e4e.latent_avg.to(dev),
                    opts=e4e.opts)
    if args.init is not None:
        from safetensors.torch import load_file

        previous = json.loads(args.init.with_suffix(".json").read_text())
        net = load_bundled_hyperstyle(load_file(str(args.init)), previous, e4e).hypernet.requires_grad_(True)
        history_before = previous.get("info", {})
    else:
        net = HyperNet(builtin_config(g))
        zero_last_layers(net)
        history_before = None
    net.to(dev).train()
    n_params = sum(p.numel() for p in net.parameters())
    feature, feature_name = make_feature_loss("auto", lpips_vgg=None, attributes=None, device=dev)
    opt = torch.optim.Adam(net.parameters(), lr=hp.lr, betas=(0.9, 0.999))
    n_real = int(round(hp.batch * hp.real_frac))
    stream = ProceduralStream(n_real, g.size, hp.seed, dev)

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.mse_loss(x, y)
        if feature is not None and hp.lambda_feature:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = loss + hp.lambda_feature * feature(x, y).float().mean()
        return loss

    print(f"hypernet {n_params:,} parameters; feature loss {feature_name}; device {dev}", flush=True)
    start, step, budget = time.time(), 0, args.minutes * 60
    history = []
    while True:
        elapsed = time.time() - start
        if elapsed > budget or (args.max_steps is not None and step >= args.max_steps):
            break
        frac = elapsed / budget
        lr = hp.lr * min(1.0, (step + 1) / hp.warmup) * (1.0 if frac < 0.7 else max(0.1, (1 - frac) / 0.3))
        for group in opt.param_groups:
            group["lr"] = lr
        batch = make_batch(g, w_avg, step, hp, n_gen=hp.batch - n_real, real=stream)
        with torch.no_grad():
            codes = e4e.encode(batch.images)
        opt.zero_grad(set_to_none=True)
        _, _, losses = passes(net, g, batch.images, codes, hp.train_iters, amp=amp, loss_fn=loss_fn)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        if step % args.metrics_every == 0:
            history.append({"step": step, "seconds": round(time.time() - start, 1),
                            "losses": [round(v, 5) for v in losses]})
            print(history[-1], flush=True)
    seconds = time.time() - start
    held_out = evaluate(net, g, e4e, w_avg, n=args.eval_n, amp=amp)
    print("held-out", held_out, flush=True)
    net.eval().cpu()
    tensors, config = bundled_hyperstyle_files(
        net, output_size=g.size, initial="e4e", info={
            "step": step, "train_seconds": round(seconds, 1), "images_seen": step * hp.batch,
            "parameters": n_params, "generator": Path(args.generator).name, "hparams": asdict(hp),
            "feature_loss": feature_name, "held_out": held_out, "continued_from": history_before, "device": torch.cuda.get_device_name(dev)
            if dev.type == "cuda" else "cpu", "history": history[-5:]})
    from safetensors.torch import save_file

    args.export_dir.mkdir(parents=True, exist_ok=True)
    stem = args.export_dir / f"builtin_hyperstyle{g.size}"
    save_file({k: v.to(torch.float16).contiguous() for k, v in tensors.items()}, str(stem.with_suffix(".safetensors")),
              metadata={"format": "builtin-hyperstyle"})
    config = {**config, "weights": stem.with_suffix(".safetensors").name, "weights_dtype": "float16"}
    stem.with_suffix(".json").write_text(json.dumps(config, indent=1) + "\n")
    print("exported", stem.with_suffix(".safetensors"), flush=True)
    return config


if __name__ == "__main__":
    main()
