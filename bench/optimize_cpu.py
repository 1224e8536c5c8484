"""Time W+ optimization and PTI tuning steps at 1024 px (FFHQ config-f architecture, random weights).

Usage: ``python -m bench.optimize_cpu [--threads N] [--steps K]``. Runs one warm-up step and ``K`` timed
steps of each; prints wall and process-CPU seconds per step. Random generator weights and a filled VGG
backbone (tests/reference_fill.py) cost the same as the real ones.
"""
from __future__ import annotations

import argparse
import time

import torch

from inversion.lpips import LPIPS, backbone_keys
from inversion.optimize import PRESETS, optimize_latent
from inversion.pti import PRESETS as PTI_PRESETS
from inversion.pti import pivotal_tuning
from inversion.stylegan2 import Generator
from tests.reference_fill import fill_tensor


def _timer(log: list[tuple[float, float]]):
    def callback(step: int, total: int, metrics: dict) -> None:
        log.append((time.perf_counter(), time.process_time()))
    return callback


def _per_step(log: list[tuple[float, float]]) -> tuple[float, float]:
    n = len(log) - 1  # step 1 is the warm-up: time from its end to the last step's end
    return (log[-1][0] - log[0][0]) / n, (log[-1][1] - log[0][1]) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--steps", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        G = Generator(1024).eval().requires_grad_(False)
    lpips = LPIPS("vgg").load_backbone(
        {k: fill_tensor(k, torch.empty(s), "conv") for k, s in backbone_keys("vgg").items()})
    target = torch.rand(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0)) * 2 - 1
    n = args.steps + 1
    print(f"threads={args.threads}")

    t0, c0 = time.perf_counter(), time.process_time()
    G.mean_latent(10000, generator=torch.Generator().manual_seed(0))
    print(f"mean w (10000 draws): wall {time.perf_counter() - t0:.2f} s, cpu {time.process_time() - c0:.2f} s")

    wall = cpu = 0.0
    for noise in (True, False):
        log: list[tuple[float, float]] = []
        optimize_latent(G, target, lpips=lpips, space="w+", steps=n, early_stop=False, optimize_noise=noise,
                        w_avg_samples=512, callback=_timer(log))
        wall, cpu = _per_step(log)
        print(f"W+ step (optimize_noise={noise}): wall {wall:.2f} s, cpu {cpu:.2f} s")
        if not noise:
            for name, p in PRESETS.items():
                print(f"  preset {name}: {p.steps} steps ~ {p.steps * wall / 60:.1f} min wall, "
                      f"{p.steps * cpu / 60:.1f} min of CPU at this rate")

    log = []
    pivotal_tuning(G, target, lpips=lpips, pivot=G.mean_latent(64, generator=torch.Generator().manual_seed(0)),
                   tune_steps=n, lpips_threshold=0.0, callback=_timer(log))
    tune_wall, tune_cpu = _per_step(log)
    print(f"PTI tuning step: wall {tune_wall:.2f} s, cpu {tune_cpu:.2f} s")
    for name, p in PTI_PRESETS.items():
        est = p.pivot_steps * wall + p.tune_steps * tune_wall
        est_cpu = p.pivot_steps * cpu + p.tune_steps * tune_cpu
        print(f"  preset {name}: {p.pivot_steps} + {p.tune_steps} steps ~ {est / 60:.1f} min wall, "
              f"{est_cpu / 60:.1f} min of CPU (no early stop)")


if __name__ == "__main__":
    main()
