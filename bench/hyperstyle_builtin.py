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
    p.add_argument("--n-pti", type=int, default=None, help="run PTI-fast on the first N images only (slow on a CPU)")
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
        per_image: dict[str, list[float]] = {m: [] for m in acc}
        n_pti = images.shape[0] if args.n_pti is None else min(args.n_pti, images.shape[0])
        for i in range(images.shape[0]):
            x = images[i:i + 1]
            t = time.perf_counter()
            e4e = invert(models, "e4e", x)
            per_image["e4e"].append(float(metrics.mse(e4e.image, x)[0]))
            acc["e4e"][0] += per_image["e4e"][-1]
            acc["e4e"][1] += time.perf_counter() - t
            t = time.perf_counter()
            hs = invert(models, "hyperstyle", x)
            per_image["hyperstyle"].append(float(metrics.mse(hs.image, x)[0]))
            acc["hyperstyle"][0] += per_image["hyperstyle"][-1]
            acc["hyperstyle"][1] += time.perf_counter() - t
            if i < n_pti:
                t = time.perf_counter()
                pti = pivotal_tuning(g, x, lpips=None, pivot=e4e, preset="fast", tune_steps=40, seed=0)
                per_image["pti-fast"].append(float(metrics.mse(pti.image, x)[0]))
                acc["pti-fast"][0] += per_image["pti-fast"][-1]
                acc["pti-fast"][1] += time.perf_counter() - t
            print(name, i, {k: round(sum(v) / len(v), 5) for k, v in per_image.items() if v},
                  {k: round(v[1] / max(1, len(per_image[k])), 2) for k, v in acc.items()}, flush=True)
        for m, v in acc.items():
            k = len(per_image[m])
            rows.append((name, m, k, v[0] / k, v[1] / k))
        if n_pti < images.shape[0]:  # the encoders on PTI's subset too, for a like-for-like comparison
            rows += [(name, f"{m} (first {n_pti})", n_pti, sum(per_image[m][:n_pti]) / n_pti, float("nan"))
                     for m in ("e4e", "hyperstyle")]
    lines = ["# HyperStyle on the built-in set (CPU, `python -m bench.hyperstyle_builtin`)", "",
             f"torch threads: {torch.get_num_threads()}; shared 2-core machine, so times are upper bounds.", "",
             "| set | method | images | MSE | s / image |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d:.5f} | {e:.2f} |" for a, b, c, d, e in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
