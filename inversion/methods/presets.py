"""Preset names and the app's preset options per (method, preset); bf16 choice per device.

``APP_PRESETS`` maps (method, preset) -> the options a method's run function passes to the library on top of the
library's own preset (``inversion.optimize.PRESETS`` / ``inversion.pti.PRESETS``). Run functions read it when they
run, so a changed entry takes effect at once.
"""
from __future__ import annotations

import torch

PRESETS = ("fast", "balanced", "quality")


# How the app's presets map onto the library's (inversion.optimize.PRESETS / inversion.pti.PRESETS hold the
# papers' step counts). "fast" is sized for a visitor on a CPU: start from the e4e codes (when e4e is
# present) and take few steps; "quality" is the papers' recipe (mean-w start, W-optimized PTI pivot).
APP_PRESETS: dict[tuple[str, str], dict] = {
    # from an encoder's codes the projector's lr 0.1 overshoots and never beats the start (measured on the
    # built-in set: MSE stays 0.0055 at 0.1, reaches 0.0007 in 30 steps at 0.01)
    **{(m, "fast"): {"steps": 30, "start": "e4e", "lr": 0.01} for m in ("w", "w+")},
    **{(m, "balanced"): {"start": "e4e", "lr": 0.01} for m in ("w", "w+")},
    **{(m, "quality"): {"start": "mean"} for m in ("w", "w+")},
    ("pti", "fast"): {"pivot": "e4e", "tune_steps": 40},
    ("pti", "balanced"): {"pivot": "e4e"},
    ("pti", "quality"): {"pivot": "w"},
}


def use_bf16(device: torch.device) -> bool:
    """bf16 autocast for the per-image methods where it measured faster: CPUs with native bf16
    (AVX512-BF16 / AMX: 1024 fwd+bwd 1.3 s vs 2.8 s fp32 on 2 cores). Not on CUDA: a batch-1 W+ step on
    an H200 took 30.7 ms in fp32 and 40.5 ms under bf16 autocast (bench/results/h200_folded)."""
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
