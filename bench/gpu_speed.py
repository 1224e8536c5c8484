"""Where the time goes on a GPU, and what each speed variant buys (one device call measures them all).

    python -m bench.gpu_speed --out $OUT/h200_speed.json [--budget 240]

Every variant runs in THIS process after :func:`inversion.device.setup_device` (the flags the app and CLI
use: cuDNN benchmark off, workspace capped, TF32 on). Parts:

- profile: the eager W+ step under ``torch.profiler`` (kernel count, top kernels by GPU time);
- synthesis at 1024: batch 1/8/32, fp32/bf16, folded/scaled, eager and as a CUDA graph (forward only), peak memory;
- W+ / W steps: whole ``optimize_latent`` runs of 10 and 110 steps, eager vs CUDA graph, fp32 vs bf16, full-res
  vs the 256 px coarse phase: per step = (t110 - t10) / 100, set-up + capture = t10 - 10 per step; peak memory;
- PTI tuning steps the same way (``pivotal_tuning`` with a given pivot);
- e4e: encode (256 px) + synthesize at 1024, batch 1 and 32, eager and graphed.
Random weights (FFHQ config-f architecture; speed does not depend on the values), stand-in LPIPS-VGG trunk.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from bench import common
from inversion.device import setup_device


def _now() -> float:
    torch.cuda.synchronize()
    return time.perf_counter()


def _peak(fn: Callable[[], Any]) -> tuple[Any, float]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() / 2**20


def _graphed(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """A no-grad forward captured as a CUDA graph (after two warm-up calls on a side stream)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g), torch.no_grad():
        out = fn()

    def replay() -> torch.Tensor:
        g.replay()
        return out
    replay.graph = g  # keep alive
    return replay


class Bench:
    def __init__(self, out: Path, budget: float) -> None:
        self.out, self.deadline = out, time.perf_counter() + budget
        self.data: dict[str, Any] = {"machine": common.machine_info(torch.device("cuda")), "records": [], "errors": []}

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def add(self, **rec: Any) -> None:
        self.data["records"].append(rec)
        print(json.dumps(rec), flush=True)
        self.save()

    def save(self) -> None:
        self.out.write_text(json.dumps(self.data, indent=1))

    def guard(self, name: str, fn: Callable[[], None]) -> None:
        if self.left() < 5:
            self.data["errors"].append(f"{name}: skipped (budget)")
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001 - a failed variant is reported, the rest still runs
            self.data["errors"].append(f"{name}: {type(err).__name__}: {err}"[:400])
            print("ERROR", name, err, flush=True)
        finally:
            torch.cuda.empty_cache()


def profile_step(b: Bench, g, lp, target) -> None:
    from torch.profiler import ProfilerActivity, profile

    from inversion.optimize import ReconstructionLoss
    crit = ReconstructionLoss(target, lpips=lp)
    code = g.mean_latent(1000)[:, None].expand(1, g.n_latent, -1).clone().requires_grad_(True)

    def step() -> None:
        loss, _ = crit(g.synthesis(code))
        (gr,) = torch.autograd.grad(loss, [code])
        code.data.add_(gr, alpha=-0.01)
    for _ in range(3):
        step()
    t0 = _now()
    for _ in range(10):
        step()
    eager = (_now() - t0) / 10
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    events = prof.key_averages()
    kernels = [e for e in events if e.device_type.name == "CUDA"]
    gpu_us = sum(e.self_device_time_total for e in kernels) / 3
    n_kernels = sum(e.count for e in kernels) / 3
    top = sorted(kernels, key=lambda e: -e.self_device_time_total)[:12]
    b.add(part="profile", what="eager W+ step fp32 (synthesis+LPIPS+MSE+backward), no optimizer",
          wall_ms=eager * 1e3, gpu_busy_ms=gpu_us / 1e3, kernels_per_step=n_kernels,
          top=[(e.key[:70], round(e.self_device_time_total / 3e3, 3), e.count // 3) for e in top])


def check(b: Bench) -> None:
    """The graphed step equals the eager one (tiny test generator, fp32): losses and results."""
    from inversion.optimize import optimize_latent
    from inversion.pti import pivotal_tuning
    from tests.test_optimize import filled_lpips, small_generator

    g = small_generator().cuda()
    lp = filled_lpips().cuda()
    with torch.no_grad():
        target = g.synthesis(g.mapping(torch.randn(g.n_latent, g.style_dim, generator=torch.Generator().manual_seed(1)
                                                    ).cuda())[None])
    for kw in (dict(steps=40, lr=0.1, optimize_noise=True, latent_noise=0.05), dict(steps=300, lr=0.1),
               dict(steps=40, lr=0.1, coarse_steps=20, coarse_size=32)):
        runs = [optimize_latent(g, target, lpips=lp, space="w+", compile=c, **kw) for c in (False, True)]
        b.add(part="check", what=f"optimize {kw}", steps_run=[r.info["steps_run"] for r in runs],
              max_loss_diff=max(abs(x - y) for x, y in zip(runs[0].losses, runs[1].losses)),
              code_diff=float((runs[0].w_plus - runs[1].w_plus).abs().max()),
              final=[r.info["loss"] for r in runs], returned=[r.info["returned_step"] for r in runs])
    runs = [pivotal_tuning(g, target, lpips=lp, pivot_steps=20, tune_steps=30, lpips_threshold=t, compile=c)
            for t in (0.0, 0.03) for c in (False, True)]
    b.add(part="check", what="pti (threshold 0, 0.03)", steps_run=[r.info["tune_steps_run"] for r in runs],
          lpips=[r.info["lpips"] for r in runs], losses_close=[
              max(abs(x - y) for x, y in zip(runs[k].losses, runs[k + 1].losses)) for k in (0, 2)])


def fold(b: Bench, g, lp, target) -> None:
    """FIR folded into the transposed conv (CUDA default) vs the separate depthwise blur: agreement and speed."""
    from inversion.optimize import optimize_latent

    ws = g.mean_latent(1000)[:, None].expand(1, g.n_latent, -1).contiguous()
    ws = ws + 0.2 * torch.randn_like(ws)
    imgs = {}
    for f in (False, True):
        g.fold_blur = f
        with torch.no_grad():
            imgs[f] = g.synthesis(ws)
        for prec in ("fp32", "bf16"):
            def fn() -> torch.Tensor:
                with torch.autocast("cuda", torch.bfloat16, enabled=prec == "bf16", cache_enabled=False):
                    return g.synthesis(ws)
            call = _graphed(fn)
            t = common.time_call(call, device=torch.device("cuda"), warmup=3, repeats=20, budget_s=10)
            b.add(part="fold", what="synthesis b1 graph", fold=f, prec=prec, ms=t["median_s"] * 1e3)
        for bf16 in (False, True):
            times = {}
            for n in (10, 110):
                t0 = _now()
                optimize_latent(g, target, lpips=lp, space="w+", steps=n, lr=0.1, early_stop=False, autocast=bf16)
                times[n] = _now() - t0
            b.add(part="fold", what="W+ step graph", fold=f, prec="bf16" if bf16 else "fp32",
                  per_step_ms=(times[110] - times[10]) / 100 * 1e3)
    g.fold_blur = None
    b.add(part="fold", what="fp32 TF32 image difference fold vs separate",
          max_abs=float((imgs[True] - imgs[False]).abs().max()), img_max=float(imgs[False].abs().max()))


def synthesis(b: Bench, g) -> None:
    for batch in (1, 8, 32):
        ws = g.mean_latent(1000)[:, None].expand(batch, g.n_latent, -1).contiguous()
        ws = ws + 0.1 * torch.randn_like(ws)
        for mode in (("folded", "scaled") if batch > 1 else ("folded",)):
            for prec in ("fp32", "bf16"):
                def fn() -> torch.Tensor:
                    with torch.autocast("cuda", torch.bfloat16, enabled=prec == "bf16", cache_enabled=False):
                        return g.synthesis(ws, mode=mode)
                for how in ("eager", "graph"):
                    if b.left() < 10:
                        return

                    def one() -> None:
                        call = fn if how == "eager" else _graphed(fn)
                        t = common.time_call(call, device=torch.device("cuda"), warmup=3, repeats=10, budget_s=10)
                        _, peak = _peak(call)
                        b.add(part="synthesis", batch=batch, mode=mode, prec=prec, how=how,
                              ms=t["median_s"] * 1e3, img_per_s=batch / t["median_s"], peak_mib=peak)
                    b.guard(f"synthesis b{batch} {mode} {prec} {how}", one)


def optimization(b: Bench, g, lp, target, pti_only: bool = False) -> None:
    from inversion.optimize import optimize_latent
    from inversion.pti import pivotal_tuning

    variants = [("w+", False, False, 0), ("w+", True, False, 0), ("w+", True, True, 0), ("w+", False, True, 0),
                ("w+", True, True, 1000), ("w+", True, False, 1000), ("w", True, True, 0)]
    for space, graph, bf16, coarse in ([] if pti_only else variants):
        def one() -> None:
            times, peaks = {}, {}
            for n in (10, 110):
                def run():
                    return optimize_latent(g, target, lpips=lp, space=space, steps=n, lr=0.1, early_stop=False,
                                           autocast=bf16, compile=graph, coarse_steps=coarse)
                t0 = _now()
                _, peaks[n] = _peak(run)
                times[n] = _now() - t0
            per = (times[110] - times[10]) / 100
            b.add(part="optimize", space=space, graph=graph, prec="bf16" if bf16 else "fp32",
                  phase="coarse 256" if coarse else "full 1024", per_step_ms=per * 1e3,
                  setup_and_capture_s=times[10] - 10 * per, peak_mib=max(peaks.values()))
        b.guard(f"optimize {space} graph={graph} bf16={bf16} coarse={coarse}", one)
    pivot = g.mean_latent(1000)
    for graph, bf16 in ((False, False), (True, False), (True, True)):
        def one() -> None:
            times, peaks = {}, {}
            for n in (10, 60):
                def run():
                    return pivotal_tuning(g, target, lpips=lp, pivot=pivot, tune_steps=n, lpips_threshold=0.0,
                                          autocast=bf16, compile=graph)
                t0 = _now()
                _, peaks[n] = _peak(run)
                times[n] = _now() - t0
            per = (times[60] - times[10]) / 50
            b.add(part="pti_tune", graph=graph, prec="bf16" if bf16 else "fp32", per_step_ms=per * 1e3,
                  setup_and_capture_s=times[10] - 10 * per, peak_mib=max(peaks.values()))
        b.guard(f"pti graph={graph} bf16={bf16}", one)


def e4e(b: Bench, g) -> None:
    enc = common.encoder("e4e", n_styles=g.n_latent, device=torch.device("cuda"))
    avg = g.mean_latent(1000)
    for batch in (1, 32):
        x = torch.rand(batch, 3, 256, 256, device="cuda") * 2 - 1
        for prec in ("fp32", "bf16"):
            def fn() -> torch.Tensor:
                with torch.autocast("cuda", torch.bfloat16, enabled=prec == "bf16", cache_enabled=False):
                    return g.synthesis(enc(x) + avg)
            for how in ("eager", "graph"):
                def one() -> None:
                    call = fn if how == "eager" else _graphed(fn)
                    t = common.time_call(call, device=torch.device("cuda"), warmup=3, repeats=10, budget_s=10)
                    _, peak = _peak(call)
                    b.add(part="e4e", batch=batch, prec=prec, how=how, ms=t["median_s"] * 1e3,
                          img_per_s=batch / t["median_s"], peak_mib=peak)
                b.guard(f"e4e b{batch} {prec} {how}", one)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=240)
    ap.add_argument("--only", nargs="*", default=["check", "profile", "optimization", "synthesis", "e4e"])
    args = ap.parse_args()
    dev = setup_device("cuda")
    b = Bench(args.out, args.budget)
    g = common.ffhq_generator(1024, device=dev)
    lp, label = common.lpips_model("vgg", device=dev, real=False)
    b.data["lpips"] = label
    _, target = common.known_target(g)
    for part in args.only:
        if part == "check":
            b.guard("check", lambda: check(b))
        elif part == "profile":
            b.guard("profile", lambda: profile_step(b, g, lp, target))
        elif part == "fold":
            b.guard("fold", lambda: fold(b, g, lp, target))
        elif part == "pti":
            b.guard("pti", lambda: optimization(b, g, lp, target, pti_only=True))
        elif part == "optimization":
            optimization(b, g, lp, target)
        elif part == "synthesis":
            synthesis(b, g)
        elif part == "e4e":
            b.guard("e4e", lambda: e4e(b, g))
    b.save()


if __name__ == "__main__":
    main()
