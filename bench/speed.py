"""Speed of the project's own code on random FFHQ-architecture weights (seeded).

Every function takes a :class:`bench.run.Context`-like object (``device``, ``quick``, ``budget(part)``,
``log``) and returns a list of records (plain dicts) that :mod:`bench.report` turns into tables.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence

import torch

from bench import common

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def variants(device: torch.device, quick: bool, *, part: str = "synthesis") -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs to try on this device. The generator runs channels-last internally
    (inversion.stylegan2 since a7e07d2), so the memory-format switch is only tried where it changes something:
    the encoders (weights and input)."""
    if device.type != "cuda":  # bf16 pays off on CPUs with AMX/AVX-512-BF16 (oneDNN), so it is tried there too
        if part == "synthesis":
            return [("fp32", False), ("bf16", False)]
        return [("fp32", False), ("bf16", True)] + ([] if quick else [("fp32", True)])
    if part == "synthesis":
        return [("fp32", False), ("bf16", False)] + ([] if quick else [("fp16", False)])
    if quick:
        return [("fp32", False), ("bf16", True)]
    return [("fp32", False), ("bf16", True), ("fp16", True)]


def variant_name(prec: str, channels_last: bool) -> str:
    return prec + ("+channels_last" if channels_last else "")


def _autocast(device: torch.device, prec: str):
    dtype = DTYPES[prec]
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def _set_memory_format(modules: Sequence[torch.nn.Module], channels_last: bool) -> None:
    """Switch every 4-D parameter/buffer to channels-last (or back); other ranks are left as they are."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    with torch.no_grad():
        for m in modules:
            for t in list(m.parameters()) + list(m.buffers()):
                if t.dim() == 4:
                    t.data = t.data.contiguous(memory_format=fmt)


def _rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = x.double(), ref.double()
    return float((x - ref).norm() / ref.norm().clamp_min(1e-30))


def _record(part: str, variant: str, batch: int, timing: dict, mem: dict, **extra: Any) -> dict[str, Any]:
    med = timing["median_s"]
    return {"part": part, "impl": "ours", "variant": variant, "batch": batch, "median_s": med,
            "per_image_s": med / batch, "img_per_s": batch / med, **{k: v for k, v in timing.items() if k != "median_s"},
            **mem, **extra}


def _random_ws(g, batch: int, seed: int = 5) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    device = g.input.input.device
    with torch.no_grad():
        w = g.mapping(torch.randn(batch, g.style_dim, generator=gen).to(device))
    return w[:, None].expand(batch, g.n_latent, g.style_dim).contiguous()


# ----------------------------------------------------------------------------------------------- synthesis

def synthesis(ctx, g, *, batches: Sequence[int], size: int, part: str = "synthesis",
              only: Optional[Sequence[tuple[str, bool]]] = None) -> list[dict]:
    """Images per second of ``g.synthesis`` (no grad) per batch and numeric variant."""
    records = []
    dev = ctx.device
    for batch in batches:
        ws = _random_ws(g, batch)
        with torch.no_grad():
            ref = g.synthesis(ws[:1]).float()
        for prec, cl in (only or variants(dev, ctx.quick)):
            if ctx.out_of_time(part):
                ctx.log(f"  {part}: time budget spent, skipping the rest")
                return records
            _set_memory_format([g], cl)
            try:
                def fn() -> torch.Tensor:
                    with torch.no_grad(), _autocast(dev, prec):
                        return g.synthesis(ws)
                with torch.no_grad(), _autocast(dev, prec):
                    err = _rel_err(g.synthesis(ws[:1]).float(), ref)
                t = common.time_call(fn, device=dev, warmup=ctx.warmup, repeats=ctx.repeats,
                                     budget_s=ctx.call_budget)
                with common.peak_memory(dev) as mem:  # one more (warm) call: no autotuning workspaces in it
                    fn()
                rec = _record(part, variant_name(prec, cl), batch, t, mem, size=size, rel_err_vs_fp32=err)
                records.append(rec)
                ctx.log(f"  {part} {size}px b{batch} {rec['variant']}: {rec['median_s'] * 1e3:.1f} ms "
                        f"({rec['img_per_s']:.1f} img/s, rel.err {err:.1e}, {mem.get('peak_mem_mb')} MiB)")
            except Exception as err:  # noqa: BLE001 - a failing variant is reported, the rest still runs
                ctx.error(f"{part} b{batch} {variant_name(prec, cl)}", err)
            finally:
                _set_memory_format([g], False)
                common.free_cuda()
    return records


# ----------------------------------------------------------------------------------------------- encoders

def encoders(ctx, g, *, batches: Sequence[int]) -> list[dict]:
    """pSp / e4e: encode a 256 px batch, add the average latent, synthesize at ``g.size`` (end to end), plus the
    encoder alone (at the smallest and largest batch). Batch-major, so a cut budget still covers both encoders."""
    records = []
    dev = ctx.device
    avg = g.mean_latent(2000, generator=torch.Generator().manual_seed(7))
    encs = {kind: common.encoder(kind, n_styles=g.n_latent, device=dev) for kind in ("e4e", "psp")}
    for batch in batches:
        x = torch.rand(batch, 3, 256, 256, generator=torch.Generator().manual_seed(batch)).to(dev) * 2 - 1
        for kind, enc in encs.items():
            for prec, cl in variants(dev, ctx.quick, part="encoders"):
                if ctx.out_of_time("encoders"):
                    ctx.log("  encoders: time budget spent, skipping the rest")
                    return records
                _set_memory_format([g, enc], cl)
                xin = x.contiguous(memory_format=torch.channels_last) if cl else x
                try:
                    def end_to_end() -> torch.Tensor:
                        with torch.no_grad(), _autocast(dev, prec):
                            return g.synthesis(enc(xin) + avg)

                    def encode_only() -> torch.Tensor:
                        with torch.no_grad(), _autocast(dev, prec):
                            return enc(xin)
                    parts = [(f"{kind} encode+synthesize", end_to_end)]
                    if batch in (batches[0], batches[-1]):
                        parts.append((f"{kind} encoder only", encode_only))
                    for part, fn in parts:
                        t = common.time_call(fn, device=dev, warmup=ctx.warmup, repeats=ctx.repeats,
                                             budget_s=ctx.call_budget)
                        with common.peak_memory(dev) as mem:
                            fn()
                        rec = _record(part, variant_name(prec, cl), batch, t, mem, size=g.size)
                        records.append(rec)
                        ctx.log(f"  {part} b{batch} {rec['variant']}: {rec['median_s'] * 1e3:.1f} ms "
                                f"({rec['img_per_s']:.1f} img/s)")
                except Exception as err:  # noqa: BLE001
                    ctx.error(f"{kind} b{batch} {variant_name(prec, cl)}", err)
                finally:
                    _set_memory_format([g, enc], False)
                    common.free_cuda()
    del encs
    common.free_cuda()
    return records


# ----------------------------------------------------------------------------------------------- optimization / PTI

class StepClock:
    """Progress callback that timestamps every step (the methods synchronize each step via ``float(loss)``)."""

    def __init__(self, cancel_after_s: Optional[float] = None, cancel_after_steps: Optional[int] = None) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []
        self.metrics: list[dict[str, float]] = []
        self.totals: list[int] = []
        self.cancel = threading.Event()
        self.cancel_after_s = cancel_after_s
        self.cancel_after_steps = cancel_after_steps

    def __call__(self, step: int, total: int, metrics: dict[str, float]) -> None:
        self.stamps.append(time.perf_counter())
        self.metrics.append(dict(metrics))
        self.totals.append(total)
        if self.cancel_after_steps is not None and len(self.stamps) >= self.cancel_after_steps:
            self.cancel.set()
        if self.cancel_after_s is not None and self.stamps[-1] - self.start > self.cancel_after_s:
            self.cancel.set()

    def per_step(self, skip: int = 1) -> Optional[float]:
        """Median seconds per step over the steps after the first ``skip`` (warm-up)."""
        d = [b - a for a, b in zip(self.stamps[skip:], self.stamps[skip + 1:])]
        if not d:
            return None
        d.sort()
        return d[len(d) // 2]

    def setup_s(self) -> Optional[float]:
        """Seconds from the call to the first step's end, minus one step (setup: w statistics, target features)."""
        ps = self.per_step()
        return None if not self.stamps or ps is None else max(0.0, self.stamps[0] - self.start - ps)


def _cold_start(dev: torch.device, call) -> Optional[float]:
    """On CUDA, one short run before the timed one (cuDNN autotuning of the backward convolutions, allocator
    growth); returns its wall time. Nothing on the CPU (no autotuning there; keeps the slow machine's run short)."""
    from inversion.result import Cancelled

    if dev.type != "cuda":
        return None
    clock = StepClock(cancel_after_steps=3)
    t0 = time.perf_counter()
    try:
        call(clock)
    except Cancelled:
        pass
    common.sync(dev)
    return time.perf_counter() - t0


def optimization(ctx, g, lpips, target: torch.Tensor, *, timed_steps: int) -> list[dict]:
    """Seconds per step of ``optimize_latent`` (W and W+, fp32 and bf16 autocast), started from a given code as
    the app does (so no w statistics in the set-up)."""
    from inversion.optimize import optimize_latent
    from inversion.result import Cancelled

    records = []
    dev = ctx.device
    init = g.mean_latent(2000, generator=torch.Generator().manual_seed(7))
    for space in ("w+", "w"):
        for autocast in (False, True):
            if ctx.out_of_time("optimization"):
                return records
            cold = _cold_start(dev, lambda c: optimize_latent(
                g, target, lpips=lpips, space=space, preset="quality", early_stop=False, init=init, callback=c,
                cancel=c.cancel, autocast=autocast))
            clock = StepClock(cancel_after_steps=timed_steps + 2)
            try:
                with common.peak_memory(dev) as mem:
                    optimize_latent(g, target, lpips=lpips, space=space, preset="quality", early_stop=False,
                                    init=init, callback=clock, cancel=clock.cancel, autocast=autocast)
            except Cancelled:
                pass
            except Exception as err:  # noqa: BLE001
                ctx.error(f"optimization {space} autocast={autocast}", err)
                continue
            per_step, setup = clock.per_step(), clock.setup_s()
            if per_step is None:
                continue
            variant = "bf16 autocast" if autocast else "fp32"
            records.append({"part": "opt step", "impl": "ours", "method": space, "variant": variant, "batch": 1,
                            "per_step_s": per_step, "median_s": per_step, "setup_s": setup, "cold_3_steps_s": cold,
                            "timed_steps": len(clock.stamps) - 2, **mem})
            ctx.log(f"  optimization {space} {variant}: {per_step * 1e3:.1f} ms/step, setup {setup:.2f} s "
                    f"({len(clock.stamps) - 2} steps timed)")
    return records


def pti_steps(ctx, g, lpips, target: torch.Tensor, *, timed_steps: int) -> list[dict]:
    """Seconds per step of both PTI stages (fp32 and bf16 autocast) from short runs (``timed_steps`` + 2 steps
    per stage, no early stop). Set-up: stage 1's w statistics; stage 2's generator copy and target features."""
    from inversion import pti

    dev = ctx.device
    records = []
    n = timed_steps + 2

    def med(stamps: list[float]) -> Optional[float]:
        d = sorted(b - a for a, b in zip(stamps[1:], stamps[2:]))
        return d[len(d) // 2] if d else None
    for autocast in (False, True):
        if ctx.out_of_time("pti"):
            break
        cold = _cold_start(dev, lambda c: pti.pivotal_tuning(
            g, target, lpips=lpips, preset="quality", pivot_steps=2, tune_steps=2, lpips_threshold=0.0, callback=c,
            autocast=autocast))
        stages: dict[float, list[float]] = {1.0: [], 2.0: []}

        def cb(step: int, total: int, metrics: dict[str, float], _stages=stages) -> None:
            _stages.setdefault(float(metrics.get("stage", 0.0)), []).append(time.perf_counter())
        t0 = time.perf_counter()
        try:
            with common.peak_memory(dev) as mem:
                pti.pivotal_tuning(g, target, lpips=lpips, preset="quality", pivot_steps=n, tune_steps=n,
                                   lpips_threshold=0.0, callback=cb, autocast=autocast)
        except Exception as err:  # noqa: BLE001
            ctx.error(f"pti steps autocast={autocast}", err)
            continue
        s1, s2 = med(stages[1.0]), med(stages[2.0])
        if s1 is None or s2 is None:
            ctx.log("  pti steps: the callback did not report both stages")
            continue
        setup1 = max(0.0, stages[1.0][0] - t0 - s1)
        setup2 = max(0.0, stages[2.0][0] - stages[1.0][-1] - s2)
        variant = "bf16 autocast" if autocast else "fp32"
        ctx.log(f"  PTI {variant}: pivot {s1 * 1e3:.1f} ms/step, tuning {s2 * 1e3:.1f} ms/step, "
                f"set-up {setup1:.2f} + {setup2:.2f} s")
        records.append({"part": "pti step", "impl": "ours", "method": "pti", "variant": variant, "batch": 1,
                        "pivot_per_step_s": s1, "tune_per_step_s": s2, "median_s": s2, "setup1_s": setup1,
                        "setup2_s": setup2, "cold_2_plus_2_steps_s": cold, "timed_steps": timed_steps, **mem})
    return records


# ----------------------------------------------------------------------------------------------- scaling

def steps_scaling(ctx, g, lpips, target: torch.Tensor, *, steps_list: Sequence[int]) -> list[dict]:
    """Wall time of whole W+ optimizations with a fixed number of steps (no early stop)."""
    from inversion.optimize import optimize_latent

    records = []
    for steps in steps_list:
        if ctx.out_of_time("scaling"):
            break
        common.sync(ctx.device)
        t0 = time.perf_counter()
        try:
            optimize_latent(g, target, lpips=lpips, space="w+", steps=steps, early_stop=False)
        except Exception as err:  # noqa: BLE001
            ctx.error(f"steps scaling {steps}", err)
            continue
        common.sync(ctx.device)
        sec = time.perf_counter() - t0
        records.append({"part": "steps scaling", "impl": "ours", "method": "w+", "steps": steps,
                        "median_s": sec, "per_step_s": sec / steps, "batch": 1, "variant": "fp32"})
        ctx.log(f"  W+ optimization, {steps} steps: {sec:.2f} s")
    return records


def size_scaling(ctx, *, sizes: Sequence[int], batches: Sequence[int]) -> list[dict]:
    """Synthesis time against output size (config-f at each size), fp32 and bf16 autocast on CUDA."""
    records = []
    only = [("fp32", False), ("bf16", False)]
    for size in sizes:
        if ctx.out_of_time("scaling"):
            break
        g = common.ffhq_generator(size, device=ctx.device)
        recs = synthesis(ctx, g, batches=batches, size=size, part="size scaling", only=only)
        records += recs
        del g
        common.free_cuda()
    return records
