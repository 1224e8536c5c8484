"""Quality part: invert generator samples whose W+ code is known, per method and preset.

Uses the built-in model set (``inversion/data/builtin_*.safetensors``) through the app's own
``inversion.methods.invert`` / ``evaluate``. When those files are absent, a tiny seeded generator stands in
for the optimization methods (the encoders need trained weights, so pSp/e4e are then skipped) and every row
says so. LPIPS: the real VGG16 trunk when it is already on disk, otherwise the deterministic stand-in trunk
(both sides of every comparison use the same one; the label is in the results).
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from bench import common


def _lpips_locator(lpips_model, tmp: Path):
    """A ``locate(name)`` for ModelSet: ``vgg16`` -> a safetensors file with the trunk we use; others missing."""
    from safetensors.torch import save_file

    from inversion.checkpoints import CheckpointMissingError

    path = tmp / "vgg16_trunk.safetensors"
    save_file({f"features.{k}": v.detach().cpu().contiguous() for k, v in lpips_model.features.state_dict().items()},
              str(path))

    def locate(name: str) -> Path:
        if name == "vgg16":
            return path
        raise CheckpointMissingError(f"{name} is not available to the benchmark (offline)")
    return locate


def _targets(g, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [common.known_target(g, seed=1000 + i) for i in range(n)]


def _row(method: str, preset: str, evals: list[dict], w_errs: list[float]) -> dict[str, Any]:
    row: dict[str, Any] = {"method": method, "preset": preset, "samples": len(evals)}
    for key in ("mse", "psnr", "lpips", "identity", "code_spread", "seconds"):
        vals = [e[key] for e in evals if e.get(key) is not None]
        row[key] = statistics.fmean(vals) if vals else None
    row["w_plus_error"] = statistics.fmean(w_errs) if w_errs else None
    return row


def run(ctx, *, samples: int, presets: Sequence[str], lpips_model, lpips_label: str,
        methods: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Returns ``{"model_set", "lpips_label", "rows": [...], "skipped": [...]}``."""
    from inversion.checkpoints import CheckpointError

    out: dict[str, Any] = {"lpips_label": lpips_label, "rows": [], "skipped": [], "notes": []}
    tmp = Path(tempfile.mkdtemp(prefix="bench_quality_"))
    try:
        from inversion.models import ModelSet

        models = ModelSet("builtin", device=ctx.device, locate=_lpips_locator(lpips_model, tmp))
        g = models.generator()
        out["model_set"] = f"built-in model set ({g.size} px, inversion/data/builtin_*)"
        use_models = True
    except (CheckpointError, OSError) as err:
        out["model_set"] = "STAND-IN: tiny seeded random generator (32 px, 64 channels) — built-in set absent"
        out["notes"].append(f"built-in model set not available ({err}); quality rows use a tiny seeded generator; "
                            "pSp/e4e skipped (they need trained weights)")
        from inversion.stylegan2 import Generator

        torch.manual_seed(0)
        g = Generator(32, max_channels=64).to(ctx.device).eval().requires_grad_(False)
        models, use_models = None, False
    targets = _targets(g, samples)
    if use_models:  # load every piece (and warm the kernels) before timing anything
        from inversion.methods import invert

        for piece in (models.latent_avg, models.lpips, lambda: models.encoder("e4e"), lambda: models.encoder("psp")):
            try:
                piece()
            except (CheckpointError, OSError) as err:
                out["notes"].append(f"not available: {err}")
        invert(models, "w", targets[0][1], preset="fast")
    from inversion.methods import METHODS

    methods = list(methods or METHODS.order)
    jobs = [(m, "default") for m in methods if not METHODS[m].has_presets]  # encoders, HyperStyle
    jobs += [(m, p) for p in presets for m in methods if METHODS[m].has_presets]  # every method's fast preset first
    for method, preset in jobs:
        if ctx.out_of_time("quality"):
            out["skipped"].append(f"{method}/{preset}: time budget spent")
            continue
        evals, w_errs = [], []
        try:
            for ws, image in targets:
                inv, ev = _invert(ctx, models, g, method, preset, image, lpips_model, use_models)
                if inv is None:
                    break
                evals.append(ev)
                w_errs.append(float((inv.w_plus.float() - ws.float()).norm(dim=-1).mean()))
        except CheckpointError as err:
            out["skipped"].append(f"{method}/{preset}: {err}")
            continue
        except Exception as err:  # noqa: BLE001
            ctx.error(f"quality {method}/{preset}", err)
            continue
        if not evals:
            out["skipped"].append(f"{method}/{preset}: not available on the stand-in model")
            continue
        row = _row(method, preset, evals, w_errs)
        out["rows"].append(row)
        ctx.log(f"  quality {method}/{preset}: LPIPS {_fmt(row['lpips'])}, MSE {_fmt(row['mse'])}, "
                f"spread {_fmt(row['code_spread'])}, {row['seconds']:.2f} s")
    return out


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _invert(ctx, models, g, method: str, preset: str, image: torch.Tensor, lpips_model, use_models: bool):
    from inversion import metrics

    if use_models:
        from inversion.methods import evaluate, invert

        inv = invert(models, method, image, preset=preset)
        return inv, evaluate(models, inv, image)
    if method not in ("w", "w+", "pti"):  # the encoders and HyperStyle need their weight files (use_models)
        return None, {}
    from inversion.optimize import optimize_latent
    from inversion.pti import pivotal_tuning

    common.sync(ctx.device)
    t0 = time.perf_counter()
    if method in ("w", "w+"):
        inv = optimize_latent(g, image, lpips=lpips_model, space=method, preset=preset)
    else:
        inv = pivotal_tuning(g, image, lpips=lpips_model, preset=preset)
    common.sync(ctx.device)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        rec = inv.image.float()
        ev = {"mse": float(metrics.mse(rec, image)[0]), "psnr": float(metrics.psnr(rec, image)[0]),
              "lpips": float(metrics.lpips_distance(lpips_model, rec, image)[0]), "identity": None,
              "code_spread": float(metrics.code_spread(inv.w_plus.float())[0]), "seconds": seconds}
    return inv, ev
