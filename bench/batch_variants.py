"""Time one batched W+ step (:func:`inversion.batch.optimize_batch`) under its formulation choices.

    python -m bench.batch_variants --out bench/results/batch_variants_h200 --batches 1,8,16,32

For each batch size B, synthesis formulation (``folded``: per-sample weights, one grouped convolution; ``scaled``:
activations scaled around one shared-weight convolution), precision (fp32/TF32 or bf16 autocast) and, with
``--fuse``, torch.compile of the synthesis, two runs of ``--short`` and ``--long`` steps (early stop off, CUDA graph
on) are timed; the step time is their difference over the extra steps, so capture and set-up cancel out. Seeded
random FFHQ-1024 weights, the LPIPS stand-in trunk, generator samples as photos. Writes ``<out>.json`` / ``.md``
after every configuration (a run cut short keeps what it measured).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench import common
from inversion.device import setup_device


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--batches", default="1,8,16,32")
    ap.add_argument("--modes", default="folded,scaled")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--fuse", default="0", help="comma list of 0/1: torch.compile the synthesis")
    ap.add_argument("--fold", default="0", help="comma list of 0/1: G.fold_blur (FIR folded, polyphase upsampling)")
    ap.add_argument("--short", type=int, default=6)
    ap.add_argument("--long", type=int, default=21)
    ap.add_argument("--autotune", action="store_true", help="cudnn.benchmark on (setup_device leaves it off)")
    ap.add_argument("--profile", default="", metavar="B,MODE,PREC",
                    help="instead of timing: profile 4 eager steps of one configuration, top kernels to <out>.txt")
    ap.add_argument("--budget", type=float, default=500.0, help="seconds; later configurations are skipped")
    args = ap.parse_args()
    from inversion.batch import optimize_batch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    setup_device(device)
    if args.autotune:
        torch.backends.cudnn.benchmark = True
    g = common.ffhq_generator(args.size, device=device)
    lpips, label = common.lpips_model("vgg", device=device)
    nmax = max(int(b) for b in args.batches.split(","))
    photos = torch.cat([common.known_target(g, seed=100 + i)[1] for i in range(nmax)]).clamp(-1, 1)
    starts = g.mean_latent(2000, generator=torch.Generator().manual_seed(3))[:, None].expand(nmax, g.n_latent, -1)
    rows, t_start = [], time.monotonic()
    meta = {"machine": common.machine_info(device), "size": args.size, "lpips": label,
            "how": f"per-step = (t({args.long} steps) - t({args.short} steps)) / {args.long - args.short}"}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2))
        lines = ["| B | mode | precision | fold | fused | step ms | ms per photo-step | photos/h at 400 steps | peak GB |",
                 "|---:|---|---|---|---|---:|---:|---:|---:|"]
        for r in rows:
            if r.get("error"):
                lines.append(f"| {r['batch']} | {r['mode']} | {r['precision']} | {r.get('fold', False)} | {r['fuse']} | {r['error']} | | | |")
                continue
            lines.append(f"| {r['batch']} | {r['mode']} | {r['precision']} | {r.get('fold', False)} | {r['fuse']} | {r['step_ms']:.2f} | "
                         f"{r['per_photo_step_ms']:.2f} | {r['photos_per_hour_400']:,.0f} | {r['peak_gb']:.1f} |")
        args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")

    if args.profile:
        b, mode, prec = args.profile.split(",")
        b = int(b)
        g.fold_blur = bool(int(args.fold.split(",")[0]))

        def steps(n: int) -> None:
            optimize_batch(g, photos[:b], lpips=lpips, space="w+", steps=n, lr=0.01, init=starts[:b],
                           early_stop=False, autocast=prec == "bf16", synthesis_mode=mode, compile=False,
                           fold_blur=g.fold_blur, fuse=False)
        steps(2)
        common.sync(device)
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
        with profile(activities=acts) as prof:
            steps(4)
            common.sync(device)
        table = prof.key_averages().table(sort_by=f"{device.type}_time_total", row_limit=40, max_name_column_width=90)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".txt").write_text(f"{args.profile} autotune={args.autotune}\n{table}\n")
        print(table[:6000])
        return

    for fold, fuse in [(bool(int(a)), bool(int(f))) for a in args.fold.split(",") for f in args.fuse.split(",")]:
        g.fold_blur = fold
        for mode in args.modes.split(","):
            for prec in args.precisions.split(","):
                for b in [int(x) for x in args.batches.split(",")]:
                    if time.monotonic() - t_start > args.budget:
                        break
                    row = {"batch": b, "mode": mode, "precision": prec, "fuse": fuse, "fold": fold}

                    def run(steps: int) -> float:
                        common.sync(device)
                        t0 = time.perf_counter()
                        optimize_batch(g, photos[:b], lpips=lpips, space="w+", steps=steps, lr=0.01,
                                       init=starts[:b], early_stop=False, autocast=prec == "bf16",
                                       synthesis_mode=mode, fold_blur=fold, fuse=fuse)
                        common.sync(device)
                        return time.perf_counter() - t0
                    try:
                        if device.type == "cuda":
                            torch.cuda.reset_peak_memory_stats()
                        run(args.short)  # warm-up (compilation, allocator)
                        short, long_ = run(args.short), run(args.long)
                        step = (long_ - short) / (args.long - args.short)
                        row.update(step_ms=1000 * step, per_photo_step_ms=1000 * step / b,
                                   photos_per_hour_400=3600.0 / (400 * step / b),
                                   peak_gb=(torch.cuda.max_memory_allocated() / 2**30) if device.type == "cuda" else 0.0)
                    except Exception as err:  # noqa: BLE001 - record and go on (OOM, a compile failure)
                        row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
                    print(row, flush=True)
                    rows.append(row)
                    save()
                    common.free_cuda()


if __name__ == "__main__":
    main()
