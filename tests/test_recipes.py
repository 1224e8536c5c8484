"""One recipe per preset name: the library and the app run the same named recipe, and results record it."""
from __future__ import annotations

import pytest
import torch

from inversion.optimize import optimize_latent
from inversion.recipes import (APP_PRESETS, PROJECTOR, PTI_PAPER, RECIPES, OptimizeRecipe, PTIRecipe, get_recipe,
                               recipe_from_dict)
from tests.test_optimize import small_generator


def test_every_preset_has_one_recipe_and_round_trips() -> None:
    for method in ("w", "w+", "pti"):
        for preset in ("fast", "balanced", "quality"):
            r = get_recipe(method, preset)
            assert r is RECIPES[(method, preset)] and r.name == f"{method}/{preset}"
            assert recipe_from_dict(r.to_dict()) == r
            start = APP_PRESETS[(method, preset)]
            assert start == ({"pivot": r.pivot} if isinstance(r, PTIRecipe) else {"start": r.start})
    assert recipe_from_dict(PROJECTOR.to_dict()) == PROJECTOR and recipe_from_dict(PTI_PAPER.to_dict()) == PTI_PAPER
    assert (PROJECTOR.steps, PROJECTOR.lr, PROJECTOR.optimize_noise) == (1000, 0.1, True)
    with pytest.raises(ValueError, match="preset"):
        get_recipe("w+", "slow")


def test_library_preset_is_the_app_recipe_and_is_recorded() -> None:
    torch.set_num_threads(1)
    G = small_generator()
    target = G.synthesis(G.mean_latent(200, generator=torch.Generator().manual_seed(1))[:, None]
                         .expand(1, G.n_latent, -1) + 0.3)
    inv = optimize_latent(G, target, lpips=None, space="w+", preset="fast")
    assert inv.info["recipe"] == RECIPES[("w+", "fast")].to_dict()
    again = optimize_latent(G, target, lpips=None, recipe=recipe_from_dict(inv.info["recipe"]))
    assert again.losses == inv.losses  # the recorded recipe reproduces the run
    custom = optimize_latent(G, target, lpips=None, recipe=OptimizeRecipe(space="w", steps=3, early_stop=False))
    assert custom.method == "w" and custom.info["steps_run"] == 3
