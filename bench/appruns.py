"""The app's own code path (``inversion.methods.invert``) at 1024 px on seeded random FFHQ-architecture weights.

A :class:`~inversion.models.ModelSet` of the ``ffhq`` family is pointed (through its public ``locate`` hook) at
temporary checkpoint files written here in the official layouts: the generator container (``g_ema`` +
``latent_avg``), an e4e checkpoint (``encoder.*`` + ``decoder.*`` + ``opts``; encoder weights stored in float16
to halve the file, loaded back as float32) and the LPIPS trunk. So the timings include exactly what the app
does per preset (e4e starts, step counts, bf16 autocast where :func:`inversion.methods.use_bf16` says so).

Also: :func:`estimates`, the same per-preset seconds extrapolated from the per-step measurements, for machines
where whole runs take too long (the CPU).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import torch

from bench import common


def random_ffhq_models(g, lpips_model, tmp: Path, device: torch.device):
    """A ``ModelSet("ffhq")`` whose files are ``g``'s weights, a seeded e4e encoder and ``lpips_model``'s trunk."""
    from safetensors.torch import save_file

    from inversion.checkpoints import CheckpointMissingError
    from inversion.models import ModelSet

    sd = {k: v.detach().cpu() for k, v in g.state_dict().items()}
    avg = g.mean_latent(10000, generator=torch.Generator().manual_seed(0)).detach().cpu().reshape(-1)
    paths = {"stylegan2_ffhq": tmp / "g.pt", "e4e_ffhq": tmp / "e4e.pt", "vgg16": tmp / "vgg16.safetensors"}
    torch.save({"g_ema": sd, "latent_avg": avg}, paths["stylegan2_ffhq"])
    enc = common.encoder("e4e", n_styles=g.n_latent)
    state = {f"encoder.{k}": (v.half() if v.is_floating_point() else v) for k, v in enc.state_dict().items()}
    state.update({f"decoder.{k}": v.half() if v.is_floating_point() else v for k, v in sd.items()})
    torch.save({"state_dict": state, "latent_avg": avg.expand(g.n_latent, -1).clone(),
                "opts": {"encoder_type": "Encoder4Editing", "output_size": g.size, "stylegan_size": g.size,
                         "start_from_latent_avg": True}}, paths["e4e_ffhq"])
    del enc, state
    save_file({f"features.{k}": v.detach().cpu().contiguous()
               for k, v in lpips_model.features.state_dict().items()}, str(paths["vgg16"]))

    def locate(name: str) -> Path:
        if name in paths:
            return paths[name]
        raise CheckpointMissingError(f"{name}: not part of the benchmark's random model set")
    return ModelSet("ffhq", device=device, locate=locate)


def app_run(ctx, models, method: str, preset: str, target: torch.Tensor, *, limit_s: float,
            lpips_model) -> Optional[dict[str, Any]]:
    """One ``methods.invert`` call, timed with a device sync, cancelled after ``limit_s``."""
    from inversion import metrics
    from inversion.methods import invert, use_bf16
    from inversion.result import Cancelled

    clock_start = time.perf_counter()
    steps = [0]
    cancel = __import__("threading").Event()

    def callback(step: int, total: int, m: dict[str, float]) -> None:
        steps[0] += 1
        if time.perf_counter() - clock_start > limit_s:
            cancel.set()
    common.sync(ctx.device)
    t0 = time.perf_counter()
    cut = False
    inv = None
    try:
        with common.peak_memory(ctx.device) as mem:
            inv = invert(models, method, target, preset=preset, callback=callback, cancel=cancel)
            common.sync(ctx.device)
    except Cancelled:
        cut = True
    except Exception as err:  # noqa: BLE001
        ctx.error(f"app run {method}/{preset}", err)
        return None
    seconds = time.perf_counter() - t0
    rec = {"part": "app run", "impl": "ours", "method": method, "preset": preset, "batch": 1, "median_s": seconds,
           "per_image_s": seconds, "steps_run": steps[0], "cut_at_budget": cut,
           "variant": "bf16 autocast" if (use_bf16(ctx.device) and method not in ("e4e", "psp")) else "fp32",
           "autotune_note": "cuDNN benchmark on" if torch.backends.cudnn.benchmark and ctx.device.type == "cuda" else "",
           **mem}
    if inv is not None:
        with torch.no_grad():
            rec.update({"lpips": float(metrics.lpips_distance(lpips_model, inv.image.float(), target)[0]),
                        "mse": float(metrics.mse(inv.image.float(), target)[0]),
                        "start": inv.info.get("start"),
                        "stopped_early": inv.info.get("stopped_early", inv.info.get("hit_lpips_threshold"))})
    ctx.log(f"  app {method}/{preset}: {seconds:.2f} s, {steps[0]} steps" + (" (CUT)" if cut else "")
            + (f", start {rec.get('start')}" if rec.get("start") else ""))
    return rec


def app_jobs() -> list[tuple[str, str]]:
    """Every (method, preset) the app offers, cheapest first."""
    from inversion.methods import METHODS

    order = {"default": 0, "fast": 1, "balanced": 2, "quality": 3}
    jobs = [(m, p) for m, spec in METHODS.items() for p in spec.presets]
    return sorted(jobs, key=lambda j: (order.get(j[1], 9), j[0]))


def estimates(records: list[dict], device: torch.device) -> list[dict]:
    """Per (method, preset) seconds as the app would spend them, from per-step records (see module doc)."""
    from inversion.methods import APP_PRESETS, use_bf16
    from inversion.optimize import PRESETS as OPT
    from inversion.pti import PRESETS as PTI

    variant = "bf16 autocast" if use_bf16(device) else "fp32"
    e2e = {r["variant"]: r["median_s"] for r in records if r.get("part") == "e4e encode+synthesize"
           and r.get("impl") == "ours" and r.get("batch") == 1}
    e4e_s = e2e.get("fp32", min(e2e.values()) if e2e else None)  # the app encodes in fp32
    out = []
    for (method, preset), opts in APP_PRESETS.items():
        opts = dict(opts)
        if method in ("w", "w+"):
            step = next((r for r in records if r.get("part") == "opt step" and r.get("method") == method
                         and r.get("variant") == variant), None)
            if step is None:
                continue
            steps = int(opts.get("steps", OPT[preset].steps))
            e4e = opts.get("start") == "e4e"
            secs = step["setup_s"] + steps * step["per_step_s"] + ((e4e_s or 0.0) if e4e else 0.0)
            how = f"{steps} steps x {step['per_step_s'] * 1e3:.1f} ms" + (" + e4e start" if e4e else "")
        else:
            step = next((r for r in records if r.get("part") == "pti step" and r.get("variant") == variant), None)
            if step is None:
                continue
            tune = int(opts.get("tune_steps", PTI[preset].tune_steps))
            if opts.get("pivot") == "e4e":
                secs = (e4e_s or 0.0) + step["setup2_s"] + tune * step["tune_per_step_s"]
                how = f"e4e pivot + {tune} tuning steps"
            else:
                piv = int(opts.get("pivot_steps", PTI[preset].pivot_steps))
                secs = step["setup1_s"] + step["setup2_s"] + piv * step["pivot_per_step_s"] + tune * step["tune_per_step_s"]
                how = f"{piv} pivot + {tune} tuning steps"
        out.append({"part": "app estimate", "impl": "ours", "method": method, "preset": preset, "variant": variant,
                    "batch": 1, "median_s": secs, "per_image_s": secs, "how": how + " (extrapolated, no early stop)",
                    "peak_mem_mb": step.get("peak_mem_mb")})
    return out
