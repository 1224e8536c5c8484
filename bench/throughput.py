"""Photos per hour per method: one photo at a time vs batched on one device, and several processes (torchrun-style).

    python -m bench.throughput --device cuda --out bench/results/throughput_h200     # a GPU: FFHQ 1024 architecture
    python -m bench.throughput --device cpu --out bench/results/throughput_cpu       # the CPU: built-in 128 px set
    python -m bench.throughput --device cpu --ranks 2 ...                            # + two processes (gloo)

Writes ``<out>.json`` and ``<out>.md``. What is timed, per method:

- encoders (e4e, pSp): ``batch 1`` = ``inversion.methods.invert`` per photo (the CLI's path: encode + synthesis);
  ``batched`` = :func:`inversion.batching.encode_batch` over the photos in chunks of ``--batch`` (one encoder
  forward + one synthesis per chunk).
- W / W+ / PTI: the preset's steps on CUDA (``--steps K``: K steps timed and scaled to the preset's count, the CPU
  default), early stop off, from the e4e start (its encoder pass timed too), the app's learning rate: an upper
  bound per photo (a run that stops early is cheaper). ``batch 1`` = ``optimize_latent`` / ``pivotal_tuning`` per
  photo (the app's path); ``batched`` = ``inversion.batch.optimize_batch`` over chunks of ``--batch`` (W/W+; the
  CLI's path) or, for PTI, the chunk's pivots in one encoder pass and the tuning photo by photo.
- ``--ranks N``: N processes started with ``torch.multiprocessing`` exactly as torchrun would (env
  ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``, :mod:`inversion.distributed`: gloo on the CPU, NCCL + one GPU per process
  on CUDA), each doing its :func:`~inversion.distributed.shard` of the photos batch 1; the wall time from the
  first barrier to the last. On a shared 2-core CPU this is a functional check, not a speed figure.

Photos are generator samples (seeded), the content does not change the cost of a fixed number of steps.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from inversion.device import setup_device

from bench import common

METHODS = ("e4e", "psp", "w", "w+", "pti")


# ------------------------------------------------------------------------------------------ models and photos

def build_models(device: torch.device, family: str, tmp: Path):
    """``(models, lpips)``: the built-in 128 px set (real weights) or seeded random FFHQ-1024 weights; LPIPS with
    the real VGG trunk when on disk, else the bench's stand-in trunk (same cost)."""
    lpips, _label = common.lpips_model("vgg", device=device)
    if family == "builtin":
        from inversion.models import ModelSet

        models = ModelSet("builtin", device=device)
    else:
        from bench.appruns import random_ffhq_models

        models = random_ffhq_models(common.ffhq_generator(1024, device=device), lpips, tmp, device)
    models.generator()
    return models, lpips


def photos(models, n: int) -> torch.Tensor:
    """``n`` seeded generator samples ``(n, 3, S, S)`` (stand-ins for aligned photos)."""
    g = models.generator()
    return torch.cat([common.known_target(g, seed=100 + i)[1] for i in range(n)]).clamp(-1, 1)


def _clock(device: torch.device, fn: Callable[[], Any]) -> float:
    common.sync(device)
    t0 = time.perf_counter()
    fn()
    common.sync(device)
    return time.perf_counter() - t0


def _row(method: str, mode: str, batch: int, n: int, seconds: float, how: str, **extra) -> dict[str, Any]:
    per_photo = seconds / n
    return {"method": method, "mode": mode, "batch": batch, "photos": n, "seconds": round(seconds, 4),
            "per_photo_s": round(per_photo, 5), "photos_per_hour": round(3600.0 / per_photo, 1), "how": how, **extra}


# ------------------------------------------------------------------------------------------ one device

def encoder_rows(models, kind: str, images: torch.Tensor, batch: int, device: torch.device, ones: int) -> list[dict]:
    """``ones`` photos one at a time, then all photos in chunks of ``batch``."""
    from inversion.batching import encode_batch
    from inversion.methods import invert

    n = images.shape[0]
    invert(models, kind, images[:1])  # warm-up (cuDNN autotune, allocator)
    encode_batch(models, kind, images[:batch])
    single = _clock(device, lambda: [invert(models, kind, images[i:i + 1]) for i in range(ones)])
    batched = _clock(device, lambda: [encode_batch(models, kind, images[i:i + batch]) for i in range(0, n, batch)])
    return [_row(kind, "batch 1", 1, ones, single, "methods.invert per photo (encode + synthesis)"),
            _row(kind, "batched", batch, n, batched, f"encode_batch, chunks of {batch}")]


def _preset_steps(method: str, preset: str) -> int:
    from inversion.methods import APP_PRESETS
    from inversion.optimize import PRESETS as OPT
    from inversion.pti import PRESETS as PTI

    opts = APP_PRESETS[(method, preset)]
    if method == "pti":
        return int(opts.get("tune_steps", PTI[preset].tune_steps))
    return int(opts.get("steps", OPT[preset].steps))


def optimization_rows(models, lpips, method: str, preset: str, images: torch.Tensor, batch: int, steps: int,
                      device: torch.device, ones: int) -> list[dict]:
    """W/W+/PTI from the e4e start (its encoder pass included in the time), ``steps`` per photo (0: the preset's
    own count, else scaled to it), early stop off (an upper bound per photo). Batch 1 = the app's one-photo path
    (``optimize_latent`` / ``pivotal_tuning``); batched = ``optimize_batch`` (W/W+) or the pivots in one encoder
    pass and the tuning photo by photo (PTI). A short warm-up run first (CUDA graph capture, compilation)."""
    from inversion import optimize
    from inversion.batch import optimize_batch, triton_available
    from inversion.batching import encode_batch
    from inversion.methods import APP_PRESETS, use_bf16
    from inversion.pti import pivotal_tuning

    g = models.generator()
    autocast = use_bf16(device)
    lr = APP_PRESETS[(method, preset)].get("lr", 0.01)
    total = _preset_steps(method, preset)
    run_steps = steps or total
    n = images.shape[0]
    scale = total / run_steps
    label = (f"{run_steps} steps timed, scaled to {total}" if steps else f"{total} steps") + \
        " (no early stop: upper bound), e4e start encoded in the time"

    def starts_of(chunk: torch.Tensor) -> torch.Tensor:
        return torch.cat([inv.w_plus for inv in encode_batch(models, "e4e", chunk)])

    def one(i: int, k: int) -> None:
        start = starts_of(images[i:i + 1])
        if method == "pti":
            pivotal_tuning(g, images[i:i + 1], lpips=lpips, pivot=start, tune_steps=k, lpips_threshold=-1.0,
                           autocast=autocast)
        else:
            optimize.optimize_latent(g, images[i:i + 1], lpips=lpips, space=method, steps=k, lr=lr, init=start,
                                     early_stop=False, autocast=autocast)

    def many(i: int, k: int) -> dict:
        chunk = images[i:i + batch]
        start = starts_of(chunk)
        if method == "pti":  # pivots together, tuning one after another
            for j in range(chunk.shape[0]):
                pivotal_tuning(g, chunk[j:j + 1], lpips=lpips, pivot=start[j:j + 1], tune_steps=k,
                               lpips_threshold=-1.0, autocast=autocast)
            return {}
        out = optimize_batch(g, chunk, lpips=lpips, space=method, steps=k, lr=lr, init=start, early_stop=False,
                             autocast=autocast, fuse=device.type == "cuda" and triton_available())  # as the CLI
        return out[0].info.get("step", {})

    one(0, min(run_steps, 10))  # warm-up
    single = _clock(device, lambda: [one(i, run_steps) for i in range(ones)])
    rows = [_row(method, "batch 1", 1, ones, single * scale, label, preset=preset)]
    step = many(0, min(run_steps, 10))  # warm-up (and compilation)
    batched = _clock(device, lambda: [many(i, run_steps) for i in range(0, n, batch)])
    how = ("e4e pivots in one pass per chunk, tuning photo by photo" if method == "pti" else
           f"optimize_batch {step}") + f", chunks of {batch}; " + label
    rows.append(_row(method, "batched", batch, n, batched * scale, how, preset=preset))
    return rows


# ------------------------------------------------------------------------------------------ several processes

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, cfg: dict[str, Any]) -> None:
    """One process of a ``--ranks`` measurement: its shard of the photos, batch 1, between two barriers."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(cfg["threads"])
    from inversion import distributed as D
    from inversion.methods import invert

    launch = D.detect_launch()
    device = D.rank_device(launch, torch.device(cfg["device"]))
    folder = Path(cfg["tmp"]) / f"rank{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    models, _lpips = build_models(device, cfg["family"], folder)
    images = photos(models, cfg["photos"])
    mine = D.shard(cfg["photos"], launch)
    with D.open_ranks(launch, device) as ranks:
        for method in cfg["methods"]:
            invert(models, method, images[:1], preset=cfg["preset"])  # warm-up
            ranks.barrier()
            t0 = time.perf_counter()
            for i in mine:
                if method in ("e4e", "psp"):
                    invert(models, method, images[i:i + 1])
                else:
                    invert(models, method, images[i:i + 1], preset=cfg["preset"])
            common.sync(device)
            ranks.barrier()
            wall = time.perf_counter() - t0
            if launch.is_main:
                path = Path(cfg["tmp"]) / f"ranks_{method}.json"
                path.write_text(json.dumps({"seconds": wall, "shares": [len(D.shard(cfg["photos"], D.Launch(r, world, r)))
                                                                        for r in range(world)]}))


def rank_rows(world: int, cfg: dict[str, Any]) -> list[dict]:
    import torch.multiprocessing as mp

    mp.spawn(_rank_worker, args=(world, _free_port(), cfg), nprocs=world, join=True)
    rows = []
    for method in cfg["methods"]:
        data = json.loads((Path(cfg["tmp"]) / f"ranks_{method}.json").read_text())
        backend = "NCCL" if cfg["device"] == "cuda" else "gloo"
        rows.append(_row(method, f"{world} process{'es' if world > 1 else ''} ({backend})", 1, cfg["photos"], data["seconds"],
                         f"methods.invert per photo, shards {data['shares']}, {cfg['threads']} thread(s) each",
                         preset=cfg["preset"] if method not in ("e4e", "psp") else None))
    return rows


# ------------------------------------------------------------------------------------------ report

def markdown(result: dict[str, Any]) -> str:
    lines = [f"# Throughput: photos per hour ({result['machine'].get('gpu') or result['machine'].get('cpu_model')})",
             "", f"{result['note']}", "",
             f"Machine: {result['machine'].get('cpu_count')} CPU(s), load average at start "
             f"{result['machine'].get('loadavg')}, {result.get('threads')} torch thread(s); torch "
             f"{result['machine'].get('torch')}; {result['created']}.", "",
             "| method | preset | mode | batch | photos/hour | per photo (s) | x batch 1 | how |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    base = {r["method"]: r["photos_per_hour"] for r in result["rows"] if r["mode"] == "batch 1"}
    for r in result["rows"]:
        pph = r.get("photos_per_hour")
        gain = f"{pph / base[r['method']]:.2f}" if pph and base.get(r["method"]) else ""
        lines.append(f"| {r['method']} | {r.get('preset') or ''} | {r['mode']} | {r['batch']} | "
                     f"{'' if pph is None else f'{pph:,.0f}'} | {r.get('per_photo_s', '')} | {gain} | {r['how']} |")
    if result.get("errors"):
        lines += ["", "Errors:", *(f"- {e}" for e in result["errors"])]
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    p.add_argument("--family", choices=("builtin", "random1024"), default=None,
                   help="default: random1024 on CUDA, builtin on the CPU")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--preset", default=None, help="preset of w, w+, pti (default balanced on CUDA, fast on CPU)")
    p.add_argument("--photos", type=int, default=None, help="photos per measurement (default 16 CUDA, 4 CPU)")
    p.add_argument("--ones", type=int, default=None, help="photos timed one at a time (default: min(4, --photos))")
    p.add_argument("--batch", type=int, default=None, help="batched chunk size (default = --photos)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per optimization, scaled to the preset (default: 0 = the preset's own on CUDA, "
                        "3 on the CPU)")
    p.add_argument("--ranks", type=int, default=0, help="also N processes (torch.distributed), batch 1")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default 1 on the CPU: a shared machine slows 2 threads far more than 1)")
    p.add_argument("--rank-methods", default="e4e,w+", help="methods of the --ranks measurement")
    args = p.parse_args(argv)
    device = setup_device(args.device)  # the backend settings app and CLI run with (cuDNN autotuning off)
    cuda = device.type == "cuda"
    threads = args.threads or (torch.get_num_threads() if cuda else 1)
    torch.set_num_threads(threads)
    family = args.family or ("random1024" if cuda else "builtin")
    preset = args.preset or ("balanced" if cuda else "fast")
    n = args.photos or (16 if cuda else 4)
    batch = args.batch or n
    ones = min(args.ones or 4, n)
    steps = args.steps if args.steps is not None else (0 if cuda else 3)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result: dict[str, Any] = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": common.machine_info(device),
        "family": family, "preset": preset, "photos": n, "batch": batch, "steps": steps, "rows": [], "errors": [],
        "threads": threads, "note": (f"{'Seeded random FFHQ-1024-architecture weights' if family == 'random1024' else 'Built-in 128 px set'}"
                 f" on {device}; {ones} photos timed one at a time, {n} batched; optimization rows run "
                 f"{f'{steps} steps scaled to' if steps else 'all the steps of'} the preset (upper bound, no early stop)." + ("" if cuda else " Shared 2-core CPU: upper bounds."))}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(markdown(result))
    with tempfile.TemporaryDirectory() as tmp:
        models, lpips = build_models(device, family, Path(tmp))
        images = photos(models, n)
        for method in methods:
            t0 = time.perf_counter()
            try:
                if method in ("e4e", "psp"):
                    rows = encoder_rows(models, method, images, batch, device, ones)
                else:
                    rows = optimization_rows(models, lpips, method, preset, images, batch, steps, device, ones)
            except Exception as err:  # noqa: BLE001 - one failing part must not lose the others
                result["errors"].append(f"{method}: {type(err).__name__}: {str(err)[:300]}")
                rows = []
            result["rows"].extend(rows)
            print(f"{method}: {time.perf_counter() - t0:.1f} s " + "; ".join(
                f"{r['mode']} {r.get('photos_per_hour')}/h" for r in rows), flush=True)
            save()
        world = args.ranks
        if world > 1 and cuda and torch.cuda.device_count() < world:
            result["errors"].append(f"--ranks {world}: only {torch.cuda.device_count()} GPU(s) visible; not measured")
        elif world > 1:
            del models
            cfg = {"device": args.device, "family": family, "photos": n, "preset": preset, "tmp": tmp,
                   "methods": [m.strip() for m in args.rank_methods.split(",") if m.strip()],
                   "threads": threads}
            try:
                for w in (1, world):  # the same path in one process and in `world`
                    result["rows"].extend(rank_rows(w, cfg))
            except Exception as err:  # noqa: BLE001
                result["errors"].append(f"--ranks {world}: {type(err).__name__}: {' '.join(str(err).split())[-400:]}")
            save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
