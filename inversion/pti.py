"""Pivotal Tuning Inversion (Roich et al., 2021): a pivot code, then a tuned copy of the generator.

Stage 1 (pivot): :func:`inversion.optimize.optimize_latent` in W, as PTI's projector does it: LPIPS only
(MSE only when no LPIPS module is given), peak lr 0.01 with the projector's warm-up / cosine ramp-down
(PTI's config says ``first_inv_lr = 5e-3`` but its projector overwrites the rate with its own default
0.01 every step), decaying latent noise ``0.05 * w_std`` (seeded), noise maps not optimized (PTI
optimizes them and then discards them: the tuned generator runs with its stored noise). Or the pivot
is given: an :class:`Inversion` (e.g. e4e's W+ codes; the fast path) or a code ``(1, D)`` /
``(1, n_latent, D)``; then stage 1 is skipped.

Stage 2 (tuning): a ``copy.deepcopy`` of ``G`` (the only extra copy; the shared ``G`` is never
modified) has its synthesis parameters fitted with Adam (lr 3e-4) so that ``synthesis(pivot)`` (stored
noise) reproduces the photo: ``l2_weight * MSE + lpips_weight * LPIPS`` (weights 1, 1). LPIPS runs on
the 256-px area downsample, as everywhere in this project (PTI measures it at full size). Before each
update the run stops once LPIPS <= ``lpips_threshold`` (0.06, PTI's final config). The mapping network
is not tuned (no gradient reaches it). Optional locality regularization (PTI's ``use_locality_regularization``,
off by default there too): each ``locality_every`` steps (PTI: 1), ``locality_samples`` w's (PTI: 1) are
drawn with truncation 0.5 from the original mapping, moved to distance ``locality_alpha`` (PTI: 30) from the
pivot along the pivot->w direction (norm over the whole W+ code), and ``0.1 * MSE + 0.1 * LPIPS`` between
the tuned and the original generator's images there is added (averaged over the samples).

Presets are the named recipes of :mod:`inversion.recipes` (``RECIPES[("pti", name)]``, the same the app
runs; ``recipe=`` takes any :class:`PTIRecipe`, e.g. ``PTI_PAPER``: 450 pivot + 350 tuning steps). The tuning
step runs like the W/W+ step (:mod:`inversion.stepper`): one CUDA graph on CUDA (``compile``), losses kept on
the device and read every ``check_every`` steps; the LPIPS threshold is tested on the device before each
update and freezes the weights at the step it fires (the same result as stopping there).

One ``lpips`` module serves both stages (PTI uses NVIDIA's VGG16 feature distance for the pivot and
AlexNet LPIPS for tuning).

Progress: ``callback(step, total, metrics)`` with ``total = pivot_steps + tune_steps`` (just
``tune_steps`` when a pivot is given) and ``step`` counted over both stages: stage 1 always runs all its
steps (no early stop, as in PTI), stage 2 continues the count and may end early at the LPIPS threshold.
``metrics["stage"]`` is 1.0 or 2.0 and ``metrics["stage_step"]`` the step within the stage.
"""
from __future__ import annotations

import copy
import functools
import threading
import time
from typing import Any, Optional, Union

import torch

from inversion.lpips import LPIPS, downsample_256
from inversion.optimize import ReconstructionLoss, _start_code, check_target, optimize_latent, w_statistics
from inversion.recipes import PRESET_NAMES, RECIPES, PTIRecipe
from inversion.result import Inversion, ProgressCallback, check_cancel
from inversion.stepper import CapturedStep, adam, graph_default, run_steps
from inversion.stylegan2 import Generator

__all__ = ["PRESETS", "PTIRecipe", "batch_pivots", "locality_codes", "pivotal_tuning", "resolve_pti_recipe"]

PRESETS: dict[str, PTIRecipe] = {name: RECIPES[("pti", name)] for name in PRESET_NAMES}
"""The PTI recipes by preset name (the app's)."""
LOCALITY_TRUNCATION = 0.5


@torch.no_grad()
def locality_codes(G: Generator, pivot: torch.Tensor, w_avg: torch.Tensor, *, n: int, alpha: float,
                   generator: torch.Generator) -> torch.Tensor:
    """``n`` W+ codes ``(n, n_latent, D)`` at distance ``alpha`` from ``pivot`` ``(1, n_latent, D)``
    toward truncated (psi 0.5) random w's of ``G``'s mapping (PTI's locality regularizer)."""
    z = torch.randn(n, G.style_dim, generator=generator, dtype=pivot.dtype).to(pivot.device)
    w = w_avg + LOCALITY_TRUNCATION * (G.mapping(z) - w_avg)
    direction = w[:, None, :].expand(n, G.n_latent, G.style_dim) - pivot
    norm = direction.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    return pivot + alpha * direction / norm


def _pivot_code(G: Generator, pivot: Union[torch.Tensor, Inversion], device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    if isinstance(pivot, Inversion):
        if pivot.generator is not None:
            raise ValueError("the pivot comes from a tuned generator (PTI); give a pivot of the shared generator")
    return _start_code(G, pivot, "w+", device, dtype, name="pivot")


def resolve_pti_recipe(preset: str = "balanced", recipe: Optional[PTIRecipe] = None, **overrides: Any) -> PTIRecipe:
    """The recipe a call runs: ``recipe`` (or the preset's), with the non-None ``overrides`` (``pivot_steps``,
    ``pivot_lr``, ``w_avg_samples`` go to the pivot recipe; ``tune_steps``, ``tune_lr``, ``lpips_threshold``,
    ``l2_weight``, ``lpips_weight`` to the tuning)."""
    if recipe is None:
        if preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {preset!r}; expected one of {PRESET_NAMES}")
        recipe = PRESETS[preset]
    pivot_keys = {"pivot_steps": "steps", "pivot_lr": "lr", "w_avg_samples": "w_avg_samples"}
    pr = recipe.pivot_recipe.with_(**{pivot_keys[k]: v for k, v in overrides.items()
                                      if k in pivot_keys and v is not None})
    return recipe.with_(pivot_recipe=pr, **{k: v for k, v in overrides.items()
                                           if k not in pivot_keys and v is not None})


def pivot_stage_recipe(recipe: PTIRecipe, lpips: Optional[LPIPS]):
    """Stage 1's W optimization recipe (MSE instead of LPIPS when no LPIPS network is given)."""
    pr = recipe.pivot_recipe
    return pr.with_(mse_weight=pr.mse_weight if lpips else 1.0)


def batch_pivots(G: Generator, targets: torch.Tensor, *, lpips: Optional[LPIPS], recipe: PTIRecipe, seed: int = 0,
                 callback: Optional[ProgressCallback] = None, cancel: Optional[threading.Event] = None,
                 autocast: bool = False, fuse: bool = False) -> list[Inversion]:
    """Stage 1 for several photos ``(B, 3, S, S)`` at once (:func:`inversion.batch.optimize_batch`; each photo's
    pivot equals its single run's within the batch tolerance); give each to :func:`pivotal_tuning` as ``pivot_run``."""
    from inversion.batch import optimize_batch

    return optimize_batch(G, targets, lpips=lpips, recipe=pivot_stage_recipe(recipe, lpips), seed=seed,
                          callback=callback, cancel=cancel, autocast=autocast, fuse=fuse)


def pivotal_tuning(
    G: Generator,
    target: torch.Tensor,
    *,
    lpips: Optional[LPIPS],
    pivot: Union[None, torch.Tensor, Inversion] = None,
    preset: str = "balanced",
    recipe: Optional[PTIRecipe] = None,
    pivot_steps: Optional[int] = None,
    tune_steps: Optional[int] = None,
    pivot_lr: Optional[float] = None,
    tune_lr: Optional[float] = None,
    lpips_threshold: Optional[float] = None,
    l2_weight: Optional[float] = None,
    lpips_weight: Optional[float] = None,
    locality: bool = False,
    locality_every: int = 1,
    locality_samples: int = 1,
    locality_alpha: float = 30.0,
    locality_weight: float = 0.1,
    w_avg_samples: Optional[int] = None,
    seed: int = 0,
    callback: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    autocast: bool = False,
    compile: Optional[bool] = None,
    check_every: int = 10,
    fuse: bool = False,
    pivot_run: Optional[Inversion] = None,
) -> Inversion:
    """PTI of ``target`` ``(1, 3, S, S)`` in [-1, 1]; see the module docstring for the two stages.

    ``lpips`` is a loaded :class:`LPIPS` on the target's device, or ``None`` (MSE only; the LPIPS
    threshold then never triggers; ``info["note"]`` says so). The recipe is ``recipe`` or the preset's;
    arguments left ``None`` come from it. ``lpips_threshold=0`` disables the early stop. ``cancel`` raises
    :class:`Cancelled` within ``check_every`` steps of either stage; nothing is kept then. ``locality``
    runs eagerly (its random codes are drawn on the host each step). ``fuse`` (graphed runs only; for batch jobs):
    the tuning step's synthesis through ``torch.compile`` with the upsampling FIR folded in (exact reformulations;
    compiled once per process, then shared by every photo's tuned copy; falls back to the plain step if compiling
    fails; ``info["fused"]`` says which ran). ``pivot_run``: stage 1 already run for this photo (one result of
    :func:`batch_pivots`): its codes are the pivot and its losses the stage-1 losses, as if it had run here.

    Returns ``Inversion(method="pti")`` with ``generator`` the tuned copy (eval mode, no gradients),
    ``w_plus`` the pivot ``(1, n_latent, D)``, ``image`` the tuned reconstruction, ``losses`` the stage-1
    totals followed by the stage-2 totals (``info["pivot_steps_run"]`` splits them) and ``info`` with
    the pivot's distortion with the shared generator (``pivot_mse``, ``pivot_lpips``; its image is
    ``G.synthesis(w_plus)``), the tuned one's (``mse``, ``lpips``) and ``recipe``.
    """
    if locality_every < 1 or locality_samples < 1:
        raise ValueError(f"locality_every and locality_samples must be >= 1, got {locality_every}, {locality_samples}")
    check_target(G, target)
    recipe = resolve_pti_recipe(preset, recipe, pivot_steps=pivot_steps, pivot_lr=pivot_lr,
                                w_avg_samples=w_avg_samples, tune_steps=tune_steps, tune_lr=tune_lr,
                                lpips_threshold=lpips_threshold, l2_weight=l2_weight, lpips_weight=lpips_weight)
    pr = recipe.pivot_recipe
    if pivot is not None and pivot_run is not None:
        raise ValueError("give either a pivot or a pivot run, not both")
    started = time.perf_counter()
    ref = G.input.input
    device, dtype = ref.device, torch.promote_types(ref.dtype, torch.float32)
    target = target.detach().to(device=device, dtype=dtype)
    total = (pr.steps if pivot is None else 0) + recipe.tune_steps
    graph = graph_default(device, compile) and not locality

    # ---- stage 1: the pivot
    pivot_losses: tuple[float, ...] = ()
    if pivot_run is not None:  # stage 1 ran elsewhere (batched over several photos): its codes and losses
        pivot_losses, code = tuple(pivot_run.losses), _pivot_code(G, pivot_run.w_plus, device, dtype)
    elif pivot is None:
        def stage1(step: int, _total: int, metrics: dict[str, float]) -> None:
            if callback is not None:
                callback(step, total, {**metrics, "stage": 1.0, "stage_step": float(step)})

        first = optimize_latent(G, target, lpips=lpips, recipe=pivot_stage_recipe(recipe, lpips),
                                seed=seed, callback=stage1, cancel=cancel, autocast=autocast, compile=compile,
                                check_every=check_every)
        pivot_losses, code = first.losses, first.w_plus
    else:
        code = _pivot_code(G, pivot, device, dtype)
    offset = total - recipe.tune_steps

    # ---- stage 2: tune a copy of G around the pivot
    criterion = ReconstructionLoss(target, lpips=lpips, mse_weight=recipe.l2_weight, lpips_weight=recipe.lpips_weight)
    with torch.no_grad():
        pivot_image = G.synthesis(code).to(dtype)
        _, pivot_terms = criterion(pivot_image)
    tuned = copy.deepcopy(G).eval()
    tuned.requires_grad_(False)
    params = [q for name, q in tuned.named_parameters() if not name.startswith("style.")]
    for q in params:
        q.requires_grad_(True)
    loc = None
    if locality:
        rng = torch.Generator().manual_seed(seed + 1)
        w_avg = w_statistics(G, pr.w_avg_samples, generator=rng)[0]
        loc = dict(rng=rng, w_avg=w_avg, every=locality_every, n=locality_samples, alpha=locality_alpha,
                   weight=locality_weight)
    tuner = _Tuner(G, tuned, params, code, criterion, recipe, lpips=lpips, autocast=autocast, locality=loc,
                   fuse=fuse and graph)
    losses = tuner.run(graph=graph, offset=offset, total=total, callback=callback, cancel=cancel,
                       every=max(1, int(check_every)) if graph else 1)  # eager: Stop within one step
    hit_threshold, tuner_fused = tuner.hit, tuner.fused

    # ---- release the optimizer state, gradients and the graph; freeze the copy
    del tuner
    tuned.zero_grad(set_to_none=True)
    tuned.requires_grad_(False)
    with torch.no_grad():
        image = _synthesize(tuned, code, autocast=autocast)
        _, terms = criterion(image)
    info = {
        "preset": preset if recipe.name.endswith(preset) else recipe.name, "seed": seed,
        "pivot_given": pivot is not None, "pivot_steps_run": len(pivot_losses), "tune_steps": recipe.tune_steps,
        "tune_steps_run": len(losses), "hit_lpips_threshold": hit_threshold,
        "lpips_threshold": recipe.lpips_threshold, "locality": locality, "recipe": recipe.to_dict(),
        "compiled": graph, "fused": tuner_fused,
        **{f"pivot_{k}": float(v) for k, v in pivot_terms.items()},
        **{k: float(v) for k, v in terms.items()},
    }
    if lpips is None:
        info["note"] = "no LPIPS network given: MSE only (the LPIPS threshold never stops the run)"
    return Inversion(method="pti", w_plus=code.detach(), image=image.detach(), generator=tuned,
                     seconds=time.perf_counter() - started, losses=pivot_losses + tuple(losses), info=info)


class _Tuner:
    """Stage 2's static tensors and step body (see :mod:`inversion.stepper`)."""

    def __init__(self, G: Generator, tuned: Generator, params: list[torch.Tensor], code: torch.Tensor,
                 criterion: ReconstructionLoss, recipe: PTIRecipe, *, lpips: Optional[LPIPS], autocast: bool,
                 locality: Optional[dict[str, Any]], fuse: bool = False) -> None:
        self.G, self.tuned, self.params, self.code, self.criterion = G, tuned, params, code, criterion
        self.fused = fuse
        self.forward = _fused_synthesis() if fuse else _synthesize
        self.recipe, self.lpips, self.autocast, self.locality = recipe, lpips, autocast, locality
        dev = code.device
        f32 = dict(device=dev, dtype=torch.float32)
        self.lr = torch.zeros((), **f32)
        self.gate = torch.ones((), **f32)
        self.optimizer = adam(params, self.lr)
        n = recipe.tune_steps
        self.i = torch.zeros(1, dtype=torch.long, device=dev)
        self.host_i = 0
        self.log = torch.zeros(max(n, 1), 4, **f32)  # total, mse, lpips, locality
        self.done = torch.zeros(1, **f32)
        self.stop_at = torch.full((1,), n, dtype=torch.long, device=dev)
        self.use_threshold = lpips is not None and recipe.lpips_threshold > 0
        self.hit = False

    def body(self) -> None:
        r, i = self.recipe, self.i
        with torch.autocast(self.code.device.type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False):
            loss, terms = self.criterion(self.forward(self.tuned, self.code, autocast=self.autocast))
        if self.use_threshold:  # PTI stops before the update once LPIPS <= threshold
            newly = (terms["lpips"].detach().float() <= r.lpips_threshold) & (self.done == 0)
            self.stop_at.copy_(torch.where(newly, i, self.stop_at))
            self.done.copy_(torch.maximum(self.done, newly.to(self.done.dtype)))
        self.lr.copy_((r.tune_lr * self.gate * (1.0 - self.done)).reshape(()))
        reg = loss.new_zeros(())
        loc = self.locality
        if loc is not None and self.host_i % loc["every"] == 0:
            ws = locality_codes(self.G, self.code, loc["w_avg"], n=loc["n"], alpha=loc["alpha"], generator=loc["rng"])
            reg = _locality_loss(self.G, self.tuned, ws, self.lpips, autocast=self.autocast)
            loss = loss + loc["weight"] * reg
        zero = loss.new_zeros(())
        row = torch.stack([loss, terms["mse"].to(loss.dtype), terms.get("lpips", zero).to(loss.dtype),
                           reg.to(loss.dtype)]).detach().float()
        self.log.index_copy_(0, i, row[None])
        grads = torch.autograd.grad(loss, self.params)
        for q, g in zip(self.params, grads):
            q.grad = g if g.stride() == q.stride() else g.contiguous()  # fused Adam wants equal layouts
        self.optimizer.step()
        self.i.add_(1)
        self.host_i += 1

    def _reset(self) -> None:
        with torch.no_grad():
            for q, v in zip(self.params, self.saved):
                q.copy_(v)
            for state in self.optimizer.state.values():
                for v in state.values():
                    v.zero_()
            self.i.zero_()
            self.log.zero_()
            self.done.zero_()
            self.stop_at.fill_(self.recipe.tune_steps)

    def run(self, *, graph: bool, offset: int, total: int, callback: Optional[ProgressCallback],
            cancel: Optional[threading.Event], every: int) -> list[float]:
        losses: list[float] = []
        n = self.recipe.tune_steps
        if n == 0:
            return losses
        self.saved = [q.detach().clone() for q in self.params] if graph else []
        try:
            step = CapturedStep(self.body, graph=graph, gate=self.gate, reset=self._reset, warmup=2)
        except Exception:  # noqa: BLE001 - a compiler failure must not cost the run: the same step, not fused
            if not self.fused:
                raise
            self.fused, self.forward = False, _synthesize
            torch.cuda.synchronize(self.code.device)
            self._reset()
            step = CapturedStep(self.body, graph=graph, gate=self.gate, reset=self._reset, warmup=2)
        self.saved = []

        def drain(a: int, b: int) -> bool:
            packed = torch.cat([self.log[a:b].flatten(), self.done, self.stop_at.to(torch.float32)]).tolist()
            done, stop_at = packed[-2] > 0, int(packed[-1])
            last = min(b, stop_at) if done else b
            for j in range(a, last):
                row = packed[4 * (j - a):4 * (j - a) + 4]
                losses.append(row[0])
                if callback is not None:
                    metrics = {"loss": row[0], "mse": row[1], "stage": 2.0, "stage_step": float(j + 1)}
                    if self.lpips is not None:
                        metrics["lpips"] = row[2]
                    if self.locality is not None:
                        metrics["locality"] = row[3]
                    callback(offset + j + 1, total, metrics)
                check_cancel(cancel)
            self.hit = done
            return done

        run_steps(step, n, every=every, drain=drain, cancel=cancel)
        step.release()
        del self.optimizer
        return losses


def _synthesize(gen: Generator, ws: torch.Tensor, *, autocast: bool, fold_blur: Optional[bool] = None
                ) -> torch.Tensor:
    """``gen.synthesis(ws)`` with the stored noise, optionally under bf16 autocast; returns ``ws``'s dtype."""
    with torch.autocast(ws.device.type, dtype=torch.bfloat16, enabled=autocast):
        return gen.synthesis(ws, fold_blur=fold_blur).to(ws.dtype)


def _synthesize_folded(gen: Generator, ws: torch.Tensor, *, autocast: bool) -> torch.Tensor:
    """:func:`_synthesize` with the upsampling FIR folded into four-phase convolutions (exact; the fused form)."""
    return _synthesize(gen, ws, autocast=autocast, fold_blur=True)


@functools.lru_cache(maxsize=None)
def _fused_synthesis():
    """``torch.compile`` of :func:`_synthesize_folded`, made once per process (a compile cache, like a JIT's):
    the tuned generators of later photos are arguments of the same compiled function."""
    return torch.compile(_synthesize_folded, dynamic=False)


def _locality_loss(G: Generator, tuned: Generator, ws: torch.Tensor, lpips: Optional[LPIPS], *,
                   autocast: bool) -> torch.Tensor:
    """Mean over codes ``ws`` of ``MSE + LPIPS`` (256 px) between the tuned and the original generator
    (PTI weighs both terms 0.1; the caller scales)."""
    with torch.no_grad():
        old = _synthesize(G, ws, autocast=autocast)
    new = _synthesize(tuned, ws, autocast=autocast)
    loss = (new - old).square().mean()
    if lpips is not None:
        with torch.autocast(ws.device.type, dtype=torch.bfloat16, enabled=autocast):
            d = lpips(downsample_256(new).to(lpips.shift.dtype), downsample_256(old).to(lpips.shift.dtype))
        loss = loss + d.mean().to(loss.dtype)
    return loss
