"""HyperStyle beside e4e and PTI-fast on the built-in set (CPU): reconstruction MSE and seconds per image.

    python -m bench.hyperstyle_builtin --n 20 --out bench/results/hyperstyle_builtin.md

Images: the first ``n`` generated faces of ``bench.builtin_table`` (z seed 1234, truncation 0.7, random noise seed 5)
and the first ``n`` of its held-out procedural faces (seed 98765). Methods: e4e (``invert(..., "e4e")``),
HyperStyle (``invert(..., "hyperstyle")``, 5 passes), PTI-fast (``inversion.pti.pivotal_tuning`` from the e4e pivot,
40 tuning steps: the app's ``fast`` preset). MSE on the [-1, 1] scale, mean over images.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from inversion import metrics
from inversion.methods import invert
from inversion.models import ModelSet
from inversion.pti import pivotal_tuning
from training.faces import face_batch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sets", default="generated,procedural")
    p.add_argument("--out", type=Path, default=Path("bench/results/hyperstyle_builtin.md"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = ModelSet("builtin")
    g = models.generator()
    with torch.no_grad():
        z = torch.randn(200, g.style_dim, generator=torch.Generator().manual_seed(1234))
        w = models.latent_avg() + 0.7 * (g.mapping(z) - models.latent_avg())
        generated = g.synthesis(w[:, None].repeat(1, g.n_latent, 1), "random",
                                generator=torch.Generator().manual_seed(5)).clamp(-1, 1)
    procedural, _ = face_batch(200, seed=98765, size=g.size)
    sets = {"generated": generated[:args.n], "procedural": procedural[:args.n]}
    invert(models, "hyperstyle", sets["generated"][:1])  # load once, outside the timings
    rows = []
    for name in args.sets.split(","):
        images = sets[name]
        acc = {m: [0.0, 0.0] for m in ("e4e", "hyperstyle", "pti-fast")}
        for i in range(images.shape[0]):
            x = images[i:i + 1]
            t = time.perf_counter()
            e4e = invert(models, "e4e", x)
            acc["e4e"][0] += float(metrics.mse(e4e.image, x)[0])
            acc["e4e"][1] += time.perf_counter() - t
            t = time.perf_counter()
            hs = invert(models, "hyperstyle", x)
            acc["hyperstyle"][0] += float(metrics.mse(hs.image, x)[0])
            acc["hyperstyle"][1] += time.perf_counter() - t
            t = time.perf_counter()
            pti = pivotal_tuning(g, x, lpips=None, pivot=e4e, preset="fast", tune_steps=40, seed=0)
            acc["pti-fast"][0] += float(metrics.mse(pti.image, x)[0])
            acc["pti-fast"][1] += time.perf_counter() - t
            print(name, i, {k: round(v[0] / (i + 1), 5) for k, v in acc.items()}, flush=True)
        n = images.shape[0]
        rows += [(name, m, n, v[0] / n, v[1] / n) for m, v in acc.items()]
    lines = ["# HyperStyle on the built-in set (CPU, `python -m bench.hyperstyle_builtin`)", "",
             f"torch threads: {torch.get_num_threads()}; shared 2-core machine, so times are upper bounds.", "",
             "| set | method | images | MSE | s / image |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d:.5f} | {e:.2f} |" for a, b, c, d, e in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
