"""HyperStyle's time per photo at FFHQ 1024 (official architecture, seeded random weights: speed does not depend on
the values): W-encoder pass + 5 refinement passes (hypernetwork + synthesis with the offsets), batch 1 and batched.

    python -m bench.hyperstyle_speed --device cuda --out bench/results/hyperstyle_h200

Writes OUT.json and OUT.md; median of ``--repeats`` timed calls after two warm-up calls.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench import common
from inversion.device import setup_device
from inversion.hyperstyle import N_ITERS, HyperNet, HyperNetConfig, WEncoder, refine
from inversion.stylegan2 import Generator


@torch.no_grad()
def invert(hypernet: HyperNet, w_encoder: WEncoder, g: Generator, images: torch.Tensor, *, bf16: bool) -> torch.Tensor:
    """One HyperStyle inversion of ``images`` (N, 3, 256, 256): W code, then the refinement passes."""
    with torch.autocast(images.device.type, dtype=torch.bfloat16, enabled=bf16):
        w = w_encoder(images)
        codes = w[:, None, :].expand(-1, g.n_latent, -1).float()
        _, image = refine(hypernet, g, images, codes, n_iters=N_ITERS)
    return image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    device = setup_device(args.device)
    torch.manual_seed(0)
    g = Generator(1024).eval().requires_grad_(False).to(device)
    hypernet = HyperNet(HyperNetConfig()).eval().requires_grad_(False).to(device)
    w_encoder = WEncoder().eval().requires_grad_(False).to(device)
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        images = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch)).to(device) * 2 - 1
        for bf16 in ((False, True) if device.type == "cuda" else (False,)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            timing = common.time_call(lambda: invert(hypernet, w_encoder, g, images, bf16=bf16), device=device,
                                      warmup=2, repeats=args.repeats, budget_s=60.0)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            rows.append({"batch": batch, "dtype": "bf16 autocast" if bf16 else "fp32", "median_s": timing["median_s"],
                         "per_photo_s": timing["median_s"] / batch, "peak_gib": peak, "n": timing["n"]})
            print(rows[-1], flush=True)
    data = {"machine": common.machine_info(device), "passes": N_ITERS, "rows": rows,
            "params": {"hypernet": sum(p.numel() for p in hypernet.parameters()),
                       "w_encoder": sum(p.numel() for p in w_encoder.parameters())},
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(data, indent=1))
    lines = [f"# HyperStyle at FFHQ 1024 ({device.type})", "",
             f"W-encoder + {N_ITERS} refinement passes, official architecture, random weights; median of timed calls.",
             "", "| batch | dtype | seconds per call | seconds per photo | peak GiB |", "|---:|---|---:|---:|---:|"]
    for r in rows:
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.2f}"
        lines.append(f"| {r['batch']} | {r['dtype']} | {r['median_s']:.4f} | {r['per_photo_s']:.4f} | {peak} |")
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
