"""PTI's tuning stage per photo, plain vs fused (``pivotal_tuning(fuse=True)``), several photos in a row.

    python -m bench.pti_fused --out bench/results/pti_fused_h200 --photos 3 --steps 200

Seeded random FFHQ-1024 weights, the LPIPS stand-in trunk, generator samples as photos, the mean w as the pivot,
all ``--steps`` tuning steps (threshold off), bf16 autocast as the app runs on CUDA. Each call is timed whole (copy
of the generator, capture, compile on the first fused call); the later calls show whether a new photo recompiles.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench import common
from inversion.device import setup_device
from inversion.pti import pivotal_tuning


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--photos", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    device = setup_device("cuda" if torch.cuda.is_available() else "cpu")
    g = common.ffhq_generator(args.size, device=device)
    lpips, label = common.lpips_model("vgg", device=device)
    targets = [common.known_target(g, seed=200 + i)[1].clamp(-1, 1) for i in range(args.photos)]
    pivot = g.mean_latent(2000, generator=torch.Generator().manual_seed(3))
    rows = []
    for fuse in (False, True):
        for k, target in enumerate(targets):
            common.sync(device)
            t0 = time.perf_counter()
            inv = pivotal_tuning(g, target, lpips=lpips, pivot=pivot, tune_steps=args.steps, lpips_threshold=-1.0,
                                 autocast=device.type == "cuda", fuse=fuse)
            common.sync(device)
            rows.append({"fuse": fuse, "photo": k, "seconds": time.perf_counter() - t0, "fused": inv.info["fused"],
                         "mse": inv.info["mse"], "lpips": inv.info.get("lpips"),
                         "steps": inv.info["tune_steps_run"]})
            print(rows[-1], flush=True)
            del inv
            common.free_cuda()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"machine": common.machine_info(device), "lpips": label, "size": args.size, "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = ["| fuse | photo | seconds (whole call) | ran fused | MSE | LPIPS |", "|---|---:|---:|---|---:|---:|"]
    lines += [f"| {r['fuse']} | {r['photo']} | {r['seconds']:.2f} | {r['fused']} | {r['mse']:.5f} | "
              f"{r['lpips'] if r['lpips'] is None else round(r['lpips'], 5)} |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
