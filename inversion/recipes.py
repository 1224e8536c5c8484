"""One recipe per preset name: the full settings of a W / W+ optimization or a PTI run.

The app, the CLI and the library share these: ``optimize_latent(G, x, space="w+", preset="fast")`` runs
exactly the recipe the app's *fast* W+ button runs (the start, e4e codes or the mean w, is the caller's:
the library has no encoder; ``info["start"]`` records which one was used). Every result records
``recipe.to_dict()`` (in ``Inversion.info["recipe"]`` and so in ``metrics.json``), so a run can be
reproduced through the library with ``recipe_from_dict``.

The originals are kept as named recipes too (:data:`PROJECTOR`: rosinality's / NVlabs' StyleGAN2 projector,
1000 steps at lr 0.1 from the mean w with latent noise and noise maps; :data:`PTI_PAPER`: Roich et al.'s
450 + 350 steps), because the benchmark's time-to-quality part compares against them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Optional

__all__ = ["OptimizeRecipe", "PTIRecipe", "RECIPES", "APP_PRESETS", "PRESET_NAMES", "PROJECTOR", "PTI_PAPER",
           "get_recipe", "recipe_from_dict"]

PRESET_NAMES = ("fast", "balanced", "quality")


@dataclass(frozen=True)
class OptimizeRecipe:
    """Everything that defines one W / W+ optimization run (besides the target and the start code).

    steps, lr: number of Adam steps and peak learning rate (projector schedule: linear warm-up over the
    first ``rampup`` of the run, cosine ramp-down over the last ``rampdown``). start: ``"e4e"`` (the
    encoder's codes; the app falls back to the mean w without e4e) or ``"mean"``. Losses:
    ``mse_weight * MSE + lpips_weight * LPIPS(256 px)`` (+ ``noise_weight`` x noise autocorrelation with
    ``optimize_noise``). latent_noise: the projector's Gaussian code noise (x w_std, ramped to 0 at 75 %).
    Stop rule: with ``early_stop``, stop when the best loss improved by at most ``stall_eps`` (relative)
    + ``stall_abs`` over ``stall_window`` steps (None: ``max(10, steps // 10)``). Resolution schedule: the
    first ``coarse_steps`` steps fit the ``coarse_size`` px skip output of the generator (layers up to
    that size only) against the area-downsampled target, the rest the full image.
    """

    space: str = "w+"
    steps: int = 400
    lr: float = 0.1
    start: str = "mean"
    rampup: float = 0.05
    rampdown: float = 0.25
    mse_weight: float = 1.0
    lpips_weight: float = 1.0
    optimize_noise: bool = False
    noise_weight: float = 1e5
    latent_noise: float = 0.0
    early_stop: bool = True
    stall_window: Optional[int] = None
    stall_eps: float = 1e-3
    stall_abs: float = 1e-5
    coarse_steps: int = 0
    coarse_size: int = 256
    w_avg_samples: int = 10000
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "optimize", **asdict(self)}

    def with_(self, **changes: Any) -> "OptimizeRecipe":
        """A copy with some fields changed (unknown names raise ``TypeError``)."""
        return replace(self, **changes)


@dataclass(frozen=True)
class PTIRecipe:
    """Everything that defines one PTI run: the pivot (``pivot="e4e"``: the encoder's codes, the app's fast
    path; ``"w"``: the ``pivot_recipe`` W optimization) and the tuning stage (``tune_steps`` of Adam at
    ``tune_lr`` on the synthesis weights, ``l2_weight * MSE + lpips_weight * LPIPS``, stop once LPIPS <=
    ``lpips_threshold``; 0 disables the stop)."""

    pivot: str = "e4e"
    pivot_recipe: OptimizeRecipe = field(default_factory=lambda: PTI_PIVOT)
    tune_steps: int = 200
    tune_lr: float = 3e-4
    lpips_threshold: float = 0.06
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    name: str = ""

    @property
    def pivot_steps(self) -> int:
        """Steps of the W pivot optimization (used when no pivot is given)."""
        return self.pivot_recipe.steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pivot_recipe"] = self.pivot_recipe.to_dict()
        return {"kind": "pti", **d}

    def with_(self, **changes: Any) -> "PTIRecipe":
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------------- the originals

PROJECTOR = OptimizeRecipe(space="w+", steps=1000, lr=0.1, start="mean", optimize_noise=True, latent_noise=0.05,
                           mse_weight=0.0, early_stop=False, name="projector")
"""rosinality's ``projector.py`` (W+, 1000 steps, lr 0.1, noise maps + 1e5 penalty, latent noise 0.05, LPIPS only)."""

PTI_PIVOT = OptimizeRecipe(space="w", steps=450, lr=0.01, start="mean", latent_noise=0.05, mse_weight=0.0,
                           early_stop=False, name="pti-pivot")
"""PTI's W pivot (450 steps, lr 0.01, latent noise 0.05, LPIPS only; PTI also optimizes noise maps: see bench)."""

PTI_PAPER = PTIRecipe(pivot="w", pivot_recipe=PTI_PIVOT, tune_steps=350, name="pti-paper")

# ---------------------------------------------------------------------------------------------- the presets
# W / W+: from an encoder's codes the projector's lr 0.1 overshoots and never beats the start (measured on the
# built-in set: MSE stays 0.0055 at 0.1, reaches 0.0007 in 30 steps at 0.01), so the e4e-started presets use
# 0.01; "quality" is the papers' recipe from the mean w.
_E4E = dict(start="e4e", lr=0.01)
RECIPES: dict[tuple[str, str], Any] = {}
for _space in ("w", "w+"):
    RECIPES[(_space, "fast")] = OptimizeRecipe(space=_space, steps=30, **_E4E, name=f"{_space}/fast")
    RECIPES[(_space, "balanced")] = OptimizeRecipe(space=_space, steps=400, **_E4E, name=f"{_space}/balanced")
    RECIPES[(_space, "quality")] = OptimizeRecipe(space=_space, steps=1000, lr=0.1, start="mean",
                                                  name=f"{_space}/quality")
# e4e pivots; without e4e (or a pivot) the W pivot is optimized with fewer steps than the paper's 450
RECIPES[("pti", "fast")] = PTIRecipe(pivot="e4e", pivot_recipe=PTI_PIVOT.with_(steps=100), tune_steps=40,
                                     name="pti/fast")
RECIPES[("pti", "balanced")] = PTIRecipe(pivot="e4e", pivot_recipe=PTI_PIVOT.with_(steps=250), tune_steps=200,
                                         name="pti/balanced")
RECIPES[("pti", "quality")] = PTIRecipe(pivot="w", tune_steps=350, name="pti/quality")

APP_PRESETS: dict[tuple[str, str], dict[str, Any]] = {
    key: ({"pivot": r.pivot} if isinstance(r, PTIRecipe) else {"start": r.start}) for key, r in RECIPES.items()
}
"""What ``inversion.methods`` needs beyond the recipe itself (which it finds by preset name): the start."""


def get_recipe(method: str, preset: str):
    """The recipe of ``method`` (``"w"``, ``"w+"``, ``"pti"``) and ``preset``; ``ValueError`` if unknown."""
    try:
        return RECIPES[(method, preset)]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r} for {method}; expected one of {PRESET_NAMES}") from None


def recipe_from_dict(d: dict[str, Any]):
    """Rebuild a recipe from :meth:`to_dict` output (e.g. ``metrics.json``'s ``recipe``)."""
    d = dict(d)
    kind = d.pop("kind", "optimize")
    if kind == "pti":
        d["pivot_recipe"] = recipe_from_dict(d["pivot_recipe"])
        return PTIRecipe(**d)
    return OptimizeRecipe(**d)
