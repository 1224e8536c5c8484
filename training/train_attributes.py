"""Train the bundled attribute regressor on procedural faces (CPU, a few minutes).

    python -m training.train_attributes --minutes 8 --out inversion/data/attributes_128.safetensors

Every step renders a fresh batch (seeded by ``(seed, step)``, so reruns are identical); held-out data
use a disjoint seed. Writes the weights, a JSON config (attribute names/ranges, architecture) and the
held-out scores (R^2 per continuous attribute, accuracy for binary ones) into the JSON ``info``.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from editing.attributes import (AttributeInfo, AttributeNet, encode_targets, predict_attributes,
                                save_attribute_model)
from training.faces import ATTRIBUTES, face_batch

HELD_OUT_SEED = 987_654_321
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "inversion" / "data" / "attributes_128.safetensors"


def new_model() -> AttributeNet:
    """The regressor over :data:`training.faces.ATTRIBUTES` (128 px input)."""
    return AttributeNet([AttributeInfo(a.name, a.low, a.high, a.binary) for a in ATTRIBUTES])


def degrade(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild random blur and noise (robustness to generated images): (N, 3, H, W) in [-1, 1]."""
    n = images.shape[0]
    p = F.pad(images, (1, 1, 1, 1), mode="replicate")
    p = (p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]) / 4
    blurred = (p[..., :-2] + 2 * p[..., 1:-1] + p[..., 2:]) / 4  # [1 2 1]^2 / 16
    amount = torch.rand(n, 1, 1, 1, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) < 0.5)
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * 0.03
    return images + (blurred - images) * amount + torch.randn(images.shape, generator=gen) * sigma


def loss_fn(model: AttributeNet, raw: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MSE on the continuous attributes (scaled to [-1, 1]) + BCE on the binary ones."""
    binary = torch.tensor([a.binary for a in model.attributes])
    loss = F.mse_loss(raw[:, ~binary], targets[:, ~binary])
    if binary.any():
        loss = loss + F.binary_cross_entropy_with_logits(raw[:, binary], targets[:, binary])
    return loss


@torch.no_grad()
def evaluate(model: AttributeNet, *, n: int = 1024, seed: int = HELD_OUT_SEED, size: int = 128) -> dict[str, float]:
    """Held-out scores: R^2 for continuous attributes, accuracy for binary ones."""
    images, attrs = face_batch(n, seed, size)
    pred = predict_attributes(model, images)
    scores = {}
    for j, a in enumerate(model.attributes):
        y, p = attrs[:, j].double(), pred[a.name].double()
        if a.binary:
            scores[a.name] = float(((p > 0.5).double() == (y > (a.low + a.high) / 2).double()).double().mean())
        else:
            scores[a.name] = float(1 - ((y - p) ** 2).sum() / ((y - y.mean()) ** 2).sum())
    return scores


def train(model: AttributeNet, *, steps: int, batch: int = 32, lr: float = 2e-3, seed: int = 0,
          minutes: Optional[float] = None,
          callback: Optional[Callable[[int, int, dict], None]] = None) -> int:
    """Adam with cosine decay over ``steps`` (stops early after ``minutes``); returns steps done."""
    model.train()
    model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start, step = time.time(), 0
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        images, attrs = face_batch(batch, np.random.default_rng([seed, step]))
        images = degrade(images, gen).contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model, model(images), encode_targets(model, attrs))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if callback is not None:
            callback(step + 1, steps, {"loss": loss.item(), "seconds": time.time() - start})
        if minutes is not None and time.time() - start > minutes * 60:
            break
    model.eval()
    return step + 1


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--minutes", type=float, default=None, help="stop early after this many minutes")
    p.add_argument("--eval-n", type=int, default=2048)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    model = new_model()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"params {n_params}")

    def log(step: int, total: int, m: dict) -> None:
        if step % 100 == 0 or step == total:
            print(f"step {step}/{total} loss {m['loss']:.4f} {step * args.batch / m['seconds']:.1f} img/s", flush=True)

    t0 = time.time()
    done = train(model, steps=args.steps, batch=args.batch, lr=args.lr, seed=args.seed, minutes=args.minutes,
                 callback=log)
    seconds = time.time() - t0
    scores = evaluate(model, n=args.eval_n)
    print("held-out", {k: round(v, 4) for k, v in scores.items()})
    info = {"steps": done, "batch": args.batch, "images_seen": done * args.batch, "train_seconds": round(seconds, 1),
            "params": n_params, "held_out_n": args.eval_n, "held_out_scores": scores,
            "score_kind": "R^2 (continuous), accuracy (binary)", "data": "training.faces procedural faces"}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_attribute_model(model, args.out, info=info)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
