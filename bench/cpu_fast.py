"""The fast presets at 1024 on this CPU, as the app runs them (bf16 where ``use_bf16`` says, e4e start).

    python -m bench.cpu_fast --out bench/results/cpu_fast.json [--threads 2]

Random FFHQ-architecture weights (speed does not depend on the values; the e4e start is stood in by the mean w
plus a small seeded offset, which changes nothing in the cost); stand-in LPIPS-VGG trunk. Each entry is one whole
call (set-up included), wall clock; the load average before/after is recorded (the machine is shared: upper
bounds). PTI's LPIPS-threshold stop is off (the stand-in trunk would fire it after 2 steps): an upper bound.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench import common
from inversion.device import setup_device, use_bf16
from inversion.recipes import RECIPES


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=["e4e", "w+", "w", "pti"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = setup_device("cpu")
    bf16 = use_bf16(dev)
    data = {"machine": common.machine_info(dev), "threads": args.threads, "bf16": bf16, "rows": [],
            "loadavg_start": list(os.getloadavg())}

    def save() -> None:
        data["loadavg_end"] = list(os.getloadavg())
        args.out.write_text(json.dumps(data, indent=1))

    g = common.ffhq_generator(1024)
    lp, label = common.lpips_model("vgg", real=False)
    data["lpips"] = label
    _, target = common.known_target(g)
    init = (g.mean_latent(1000, generator=torch.Generator().manual_seed(3))[:, None].expand(1, g.n_latent, -1)
            + 0.05 * torch.randn(1, g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(4)))
    for what in args.only:
        t0 = time.perf_counter()
        if what == "e4e":
            enc = common.encoder("e4e", n_styles=g.n_latent)
            avg = g.mean_latent(1000)
            x = target  # the app area-resizes the aligned photo to 256 px first
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                small = torch.nn.functional.interpolate(x, size=(256, 256), mode="area")
                g.synthesis(enc(small) + avg).float()
            row = {"method": "e4e", "preset": "default", "steps": 0}
        elif what in ("w", "w+"):
            from inversion.optimize import optimize_latent
            inv = optimize_latent(g, target, lpips=lp, space=what, preset="fast", init=init, autocast=bf16)
            row = {"method": what, "preset": "fast", "steps": inv.info["steps_run"], "lpips": inv.info.get("lpips"),
                   "mse": inv.info["mse"]}
        else:
            from inversion.pti import pivotal_tuning
            inv = pivotal_tuning(g, target, lpips=lp, preset="fast", pivot=init, lpips_threshold=0.0, autocast=bf16)
            row = {"method": "pti", "preset": "fast", "steps": inv.info["tune_steps_run"],
                   "lpips": inv.info.get("lpips"), "mse": inv.info["mse"]}
        row["seconds"] = time.perf_counter() - t0
        row["loadavg"] = list(os.getloadavg())
        data["rows"].append(row)
        print(json.dumps(row), flush=True)
        save()
    save()


if __name__ == "__main__":
    main()
