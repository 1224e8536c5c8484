"""Per-image optimization inversion in W or W+ (Image2StyleGAN / the StyleGAN2 projector).

A code (``space="w"``: one 512-vector broadcast to every layer; ``space="w+"``: one per layer,
``(1, n_latent, 512)``) and optionally the per-layer noise maps are fitted with Adam so that
``G.synthesis(code, noise)`` reproduces an aligned photo ``(1, 3, S, S)`` in [-1, 1], ``S = G.size``.

Loss per step: ``mse_weight * MSE(x, y)`` on the full-size images (Image2StyleGAN, PTI) plus
``lpips_weight * LPIPS(x256, y256)`` after area-downsampling both to 256 px (the StyleGAN2 projector
and PTI practice), plus, with ``optimize_noise``, ``noise_weight * R(noise)``: the projector's
multi-scale autocorrelation penalty (for each map: squared mean of the map times itself shifted by
one pixel, horizontally and vertically, then 2x2-average-pooled and repeated down to 8x8), with every
map renormalised to zero mean / unit std after each step.

Schedule (StyleGAN2 projector): ``lr(t) = lr * ramp(t)`` with ``t = step / steps``,
``ramp = min(1, t / 0.05) * (0.5 - 0.5 cos(pi * min(1, (1 - t) / 0.25)))`` (linear warm-up over the
first 5 %, cosine ramp-down over the last 25 %; the very first step has lr 0). Adam, betas (0.9, 0.999).
Optional latent noise (the projector's ``0.05 * w_std * max(0, 1 - t / 0.75)^2`` Gaussian added to the
code in the forward pass) is off by default (Image2StyleGAN has none; PTI's pivot stage turns it on);
it is drawn from the seeded generator, so runs are deterministic either way.

Presets are the named recipes of :mod:`inversion.recipes` (the same ones the app runs: ``preset="fast"`` with
``space="w+"`` is ``RECIPES[("w+", "fast")]``); ``recipe=`` takes any :class:`OptimizeRecipe` and the keyword
arguments override single fields. ``info["recipe"]`` records the recipe that ran.

How a step runs (:mod:`inversion.stepper`): the whole step (synthesis, losses, backward, fused Adam update,
noise renormalisation, the per-step bookkeeping) works in place on static tensors, so on CUDA it is recorded
once as a CUDA graph and replayed (``compile=None``: on CUDA; ``compile=False``: eager everywhere). The
learning rate and latent-noise schedules live on the device; per-step losses go into a device log that is
read back every ``check_every`` steps (default 10): callbacks for those steps run then (each step still gets
its call, with its own numbers), and a ``cancel`` event ends the run within ``check_every`` steps (graphed
runs; eager CPU runs read back every step, so there it ends within one). The early stop is decided on the
device at the step it fires (it freezes the state from the next step on), so the result does not depend on ``check_every``. Latent noise is drawn on the device from a generator seeded with
``seed``.

Coarse-to-fine (recipe ``coarse_steps``): the first steps fit the generator's ``coarse_size`` px skip output
(only the layers up to that size run) against the area-downsampled target; the learning-rate schedule runs
over all steps; early stop and the best-state choice look at the full-resolution steps only.

The start is the mean w (``G.mean_latent`` recipe, ``w_avg_samples`` draws from a seeded
``torch.Generator``) or ``init``: a w ``(1, 512)``, a W+ code ``(1, n_latent, 512)`` or an
:class:`Inversion` (e.g. an encoder's output, a much faster start). A W+ start for ``space="w"`` is
averaged over layers. Early stop: after the warm-up, the run ends when the best loss so far improved
by at most ``stall_eps`` (relative, 1e-3) plus ``stall_abs`` (1e-5, an MSE of 1e-5 is ~56 dB PSNR) over
the last ``stall_window`` steps (default ``max(10, steps // 10)``). The returned code (and noise) is the
state after the last update, unless an earlier state had a lower loss (Adam at a high rate oscillates
near the optimum; ``info["returned_step"]`` counts the updates behind the returned state, ``steps_run``
for the last one). With latent noise on, the per-step losses are those of the perturbed codes; only steps
without latent noise can be chosen as the best state (a noisy code's loss is not comparable with the clean
loss of the final state), so the returned state is compared like with like.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Optional, Union

import torch
import torch.nn.functional as F

from inversion.lpips import LPIPS, downsample_256
from inversion.recipes import PRESET_NAMES, RECIPES, OptimizeRecipe
from inversion.result import Inversion, ProgressCallback, check_cancel
from inversion.stepper import CapturedStep, adam, graph_default, run_steps
from inversion.stylegan2 import Generator

__all__ = [
    "PRESETS",
    "OptimizeRecipe",
    "ReconstructionLoss",
    "StallDetector",
    "lr_ramp",
    "noise_regularization",
    "normalize_noise_",
    "optimize_latent",
    "w_statistics",
]

LR_RAMPUP = 0.05
LR_RAMPDOWN = 0.25
LATENT_NOISE_RAMP = 0.75
SPACES = ("w", "w+")


PRESETS: dict[str, OptimizeRecipe] = {name: RECIPES[("w+", name)] for name in PRESET_NAMES}
"""The W+ recipes by preset name (``RECIPES[("w", name)]`` for W); kept for callers of the old table."""


def lr_ramp(t: float, *, rampup: float = LR_RAMPUP, rampdown: float = LR_RAMPDOWN) -> float:
    """The projector's learning-rate multiplier at progress ``t`` in [0, 1)."""
    down = min(1.0, (1.0 - t) / rampdown)
    return (0.5 - 0.5 * math.cos(down * math.pi)) * min(1.0, t / rampup)


def lr_schedule(recipe: OptimizeRecipe) -> list[float]:
    """The learning rate of every step of ``recipe`` (peak ``lr`` times :func:`lr_ramp`)."""
    steps = recipe.steps
    return [recipe.lr * lr_ramp(i / steps, rampup=recipe.rampup, rampdown=recipe.rampdown) for i in range(steps)]


def latent_noise_schedule(recipe: OptimizeRecipe, w_std: float) -> list[float]:
    """The latent-noise scale of every step: ``w_std * latent_noise * max(0, 1 - t / 0.75)^2`` (0 without it)."""
    steps = recipe.steps
    return [w_std * recipe.latent_noise * max(0.0, 1.0 - (i / steps) / LATENT_NOISE_RAMP) ** 2 for i in range(steps)]


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Multi-scale autocorrelation penalty of noise maps ``(1, 1, R, R)`` (StyleGAN2 projector)."""
    total = noises[0].new_zeros(())
    for noise in noises:
        while True:
            total = total + (noise * torch.roll(noise, shifts=1, dims=3)).mean().square()
            total = total + (noise * torch.roll(noise, shifts=1, dims=2)).mean().square()
            if noise.shape[-1] <= 8:
                break
            noise = F.avg_pool2d(noise, kernel_size=2)
    return total


@torch.no_grad()
def normalize_noise_(noises: list[torch.Tensor]) -> None:
    """In place: every map to zero mean and unit (population) std."""
    for noise in noises:
        noise.sub_(noise.mean())
        noise.mul_(noise.square().mean().rsqrt())


@torch.no_grad()
def w_statistics(G: Generator, n: int = 10000, *, generator: Optional[torch.Generator] = None
                 ) -> tuple[torch.Tensor, float]:
    """Mean w ``(1, D)`` (same draws as ``G.mean_latent(n, generator=...)``) and the projector's
    ``w_std = sqrt(sum ||w - mean||^2 / n)``."""
    ref = G.input.input
    device = generator.device if generator is not None else ref.device
    z = torch.randn(n, G.style_dim, generator=generator, device=device, dtype=ref.dtype).to(ref.device)
    w = G.mapping(z)
    mean = w.mean(dim=0, keepdim=True)
    return mean, float(((w - mean).square().sum() / n).sqrt())


class ReconstructionLoss:
    """``mse_weight * MSE`` (full size) + ``lpips_weight * LPIPS`` (both area-downsampled to 256 px)
    against one fixed target ``(1, 3, S, S)``; ``lpips=None`` means MSE only."""

    def __init__(self, target: torch.Tensor, *, lpips: Optional[LPIPS], mse_weight: float = 1.0,
                 lpips_weight: float = 1.0) -> None:
        self.target = target
        self.lpips = lpips if lpips_weight > 0 else None
        self.mse_weight = mse_weight
        self.lpips_weight = lpips_weight
        self.features = None
        if self.lpips is not None:
            if self.lpips.shift.device != target.device:
                raise ValueError(f"the LPIPS module is on {self.lpips.shift.device}, the target on {target.device}")
            self.features = self.lpips.target_features(self._for_lpips(target))

    def _for_lpips(self, x: torch.Tensor) -> torch.Tensor:
        return downsample_256(x).to(self.lpips.shift.dtype)

    def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (scalar) and its unweighted terms ``{"mse", "lpips"}`` for ``image`` ``(1, 3, S, S)``."""
        terms = {"mse": (image.to(self.target.dtype) - self.target).square().mean()}
        total = self.mse_weight * terms["mse"]
        if self.lpips is not None:
            terms["lpips"] = self.lpips.distance_to_features(self._for_lpips(image), self.features).mean()
            total = total + self.lpips_weight * terms["lpips"].to(total.dtype)
        return total, terms


class StallDetector:
    """True once the best loss so far improved by at most ``eps * before + abs_eps`` over the last
    ``window`` steps (``before`` = the best loss ``window`` steps ago), checked from step ``start`` on."""

    def __init__(self, *, window: int, eps: float, abs_eps: float = 0.0, start: int = 0) -> None:
        self.window, self.eps, self.abs_eps, self.start = window, eps, abs_eps, start
        self.best: list[float] = []

    def update(self, loss: float) -> bool:
        self.best.append(min(loss, self.best[-1]) if self.best else loss)
        if len(self.best) <= max(self.window, self.start):
            return False
        before, now = self.best[-1 - self.window], self.best[-1]
        return before - now <= self.eps * abs(before) + self.abs_eps


def check_target(G: Generator, target: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``target`` is ``(1, 3, G.size, G.size)``."""
    if target.dim() != 4 or tuple(target.shape[:2]) != (1, 3) or tuple(target.shape[2:]) != (G.size, G.size):
        raise ValueError(f"target must be one aligned image (1, 3, {G.size}, {G.size}) in [-1, 1], "
                         f"got {tuple(target.shape)}")


def _start_code(G: Generator, init: Union[torch.Tensor, Inversion], space: str,
                device: torch.device, dtype: torch.dtype, *, name: str = "init") -> torch.Tensor:
    """The starting code: ``(1, 1, D)`` for W, ``(1, n_latent, D)`` for W+ (``name``: the argument's name in the
    error message)."""
    code = init.w_plus if isinstance(init, Inversion) else init
    code = code.detach().to(device=device, dtype=dtype)
    if code.dim() == 2:
        code = code[:, None]
    if code.dim() != 3 or code.shape[0] != 1 or code.shape[2] != G.style_dim or code.shape[1] not in (1, G.n_latent):
        raise ValueError(f"{name} must be a w (1, {G.style_dim}) or a W+ code (1, {G.n_latent}, {G.style_dim}), "
                         f"got {tuple(code.shape)}")
    if space == "w":
        return code.mean(dim=1, keepdim=True).clone()
    return code.expand(1, G.n_latent, G.style_dim).clone()


_OVERRIDABLE = ("steps", "lr", "optimize_noise", "mse_weight", "lpips_weight", "noise_weight", "latent_noise",
                "w_avg_samples", "early_stop", "stall_window", "stall_eps", "stall_abs", "coarse_steps", "coarse_size")


def resolve_recipe(space: Optional[str], preset: str, recipe: Optional[OptimizeRecipe],
                   overrides: dict[str, Any]) -> OptimizeRecipe:
    """The recipe a call runs: ``recipe`` (or the preset's for ``space``), with non-None ``overrides``."""
    if space is not None and space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if recipe is None:
        if preset not in PRESET_NAMES:
            raise ValueError(f"unknown preset {preset!r}; expected one of {PRESET_NAMES}")
        recipe = RECIPES[(space or "w+", preset)]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if space is not None:
        changes["space"] = space
    if changes:
        recipe = recipe.with_(**changes)
    if recipe.space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {recipe.space!r}")
    if recipe.steps < 1:
        raise ValueError(f"steps must be >= 1, got {recipe.steps}")
    return recipe


def optimize_latent(
    G: Generator,
    target: torch.Tensor,
    *,
    lpips: Optional[LPIPS],
    space: Optional[str] = None,
    preset: str = "balanced",
    recipe: Optional[OptimizeRecipe] = None,
    init: Union[None, torch.Tensor, Inversion] = None,
    seed: int = 0,
    callback: Optional[ProgressCallback] = None,
    cancel: Optional[threading.Event] = None,
    autocast: bool = False,
    compile: Optional[bool] = None,
    check_every: int = 10,
    **overrides: Any,
) -> Inversion:
    """Invert ``target`` ``(1, 3, S, S)`` in [-1, 1] into W (``space="w"``) or W+ (``space="w+"``).

    ``lpips`` is a loaded :class:`LPIPS` on the target's device, or ``None`` for MSE only (then
    ``info["note"]`` says so). The recipe is ``recipe`` or the preset's (see the module docstring); keyword
    ``overrides`` (``steps``, ``lr``, ``optimize_noise``, ``latent_noise``, ``early_stop``, ...) change single
    fields. ``callback(step, total, metrics)`` gets every step (``step`` from 1; ``loss``, ``mse``, ``lpips``,
    ``noise_reg``, ``lr``), up to ``check_every`` steps late. ``cancel`` raises :class:`Cancelled` within
    ``check_every`` steps. ``autocast`` runs the generator and LPIPS forward in bfloat16; the codes, noise
    maps and Adam stay float32 (or the generator's float64). ``compile``: CUDA-graph the step (default on CUDA).

    Returns an :class:`Inversion` with method ``"w"``/``"w+"``, the code as W+ ``(1, n_latent, D)``,
    the final reconstruction, the optimized noise maps (or ``None``), per-step total losses and
    ``info`` (``steps_run``, ``stopped_early``, ``preset``, ``recipe``, final ``loss``/``mse``/``lpips``, ...).
    """
    unknown = set(overrides) - set(_OVERRIDABLE)
    if unknown:
        raise TypeError(f"optimize_latent() got unexpected keyword arguments {sorted(unknown)}")
    recipe = resolve_recipe(space, preset, recipe, overrides)
    check_target(G, target)
    started = time.perf_counter()
    run = _Run(G, target, lpips, recipe, init=init, seed=seed, autocast=autocast,
               graph=graph_default(G.input.input.device, compile))
    # eager (CPU) steps take long enough that reading back each one costs nothing: Stop then ends within one step
    losses = run.loop(callback=callback, cancel=cancel, every=max(1, int(check_every)) if run.graph else 1)
    image, final_code, final_noises, info = run.finish(len(losses))
    info.update({"preset": preset if recipe.name.endswith(preset) else recipe.name, "seed": seed,
                 "recipe": recipe.to_dict(), "start": "init" if init is not None else "mean",
                 "compiled": run.graph})
    if lpips is None:
        info["note"] = "no LPIPS network given: MSE only"
    return Inversion(method=recipe.space, w_plus=final_code.expand(1, G.n_latent, G.style_dim).clone(),
                     image=image, noise=final_noises, seconds=time.perf_counter() - started,
                     losses=tuple(losses), info=info)


class _Run:
    """The static tensors of one optimization run and its step bodies (one per resolution phase)."""

    def __init__(self, G: Generator, target: torch.Tensor, lpips: Optional[LPIPS], recipe: OptimizeRecipe, *,
                 init: Union[None, torch.Tensor, Inversion], seed: int, autocast: bool, graph: bool) -> None:
        self.G, self.recipe, self.autocast, self.graph = G, recipe, autocast, graph
        ref = G.input.input
        self.device, self.dtype = ref.device, torch.promote_types(ref.dtype, torch.float32)
        dev, dtype, steps = self.device, self.dtype, recipe.steps
        self.target = target.detach().to(device=dev, dtype=dtype)
        self.lpips = lpips
        rng = torch.Generator().manual_seed(seed)
        w_mean, w_std = None, 0.0
        if init is None or recipe.latent_noise > 0:
            w_mean, w_std = w_statistics(G, recipe.w_avg_samples, generator=rng)
        self.code = _start_code(G, init if init is not None else w_mean, recipe.space, dev, dtype).requires_grad_(True)
        self.noises = ([b.detach().to(dtype).clone().requires_grad_(True) for b in G.noises.as_list()]
                       if recipe.optimize_noise else None)
        self.params = [self.code] + (self.noises or [])
        self.initial = [p.detach().clone() for p in self.params]
        # schedules (host copies for the callbacks, device copies for the step)
        self.lr_host = lr_schedule(recipe)
        noise_host = latent_noise_schedule(recipe, w_std)
        self.noisy_steps = sum(1 for x in noise_host if x > 0)
        f32 = dict(device=dev, dtype=torch.float32)
        self.lr_sched = torch.tensor(self.lr_host, **f32)
        self.noise_sched = torch.tensor(noise_host, **f32).to(dtype)
        self.lr = torch.zeros((), **f32)
        self.optimizer = adam(self.params, self.lr)
        self.eps = torch.zeros_like(self.code)
        self.dev_rng = torch.Generator(device=dev).manual_seed(seed)
        # bookkeeping, all on the device
        self.gate = torch.ones((), **f32)
        self.i = torch.zeros(1, dtype=torch.long, device=dev)
        self.log = torch.zeros(steps, 4, **f32)  # total, mse, lpips, noise_reg per step (before its update)
        self.done = torch.zeros(1, **f32)
        self.stop_at = torch.full((1,), steps, dtype=torch.long, device=dev)
        self.best_loss = torch.full((1,), math.inf, device=dev, dtype=dtype)
        self.best_step = torch.full((1,), -1, dtype=torch.long, device=dev)
        self.best = [p.detach().clone() for p in self.params]
        self.run_best = torch.full((1,), math.inf, device=dev, dtype=dtype)
        self.best_hist = torch.zeros(steps, device=dev, dtype=dtype)
        coarse = recipe.coarse_steps if recipe.coarse_size < G.size else 0
        self.phases = [(recipe.coarse_size, min(coarse, steps)), (G.size, steps - min(coarse, steps))]
        self.full_criterion = ReconstructionLoss(self.target, lpips=lpips, mse_weight=recipe.mse_weight,
                                                 lpips_weight=recipe.lpips_weight)
        window = recipe.stall_window if recipe.stall_window is not None else max(10, steps // 10)
        self.window = window
        self.check_from = max(self.phases[0][1] + window, math.ceil(recipe.rampup * steps))

    # -- the step -------------------------------------------------------------
    def _synthesize(self, c: torch.Tensor, noises: Optional[list[torch.Tensor]], size: int) -> torch.Tensor:
        G = self.G
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False):
            return G.synthesis(c.expand(1, G.n_latent, G.style_dim), noises, size=size).to(self.dtype)

    def _body(self, size: int, criterion: "ReconstructionLoss", final_phase: bool):
        r, i = self.recipe, self.i

        def body() -> None:
            live = 1.0 - self.done
            self.lr.copy_((self.lr_sched.index_select(0, i) * self.gate * live).reshape(()))
            scale = self.noise_sched.index_select(0, i)
            c = self.code + scale * self.eps if r.latent_noise > 0 else self.code
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False):
                loss, terms = criterion(self._synthesize(c, self.noises, size))
            reg = noise_regularization(self.noises) if self.noises else loss.new_zeros(())
            total = loss + r.noise_weight * reg
            zero = total.new_zeros(())
            row = torch.stack([total, terms["mse"].to(total.dtype), terms.get("lpips", zero).to(total.dtype),
                               reg.to(total.dtype)]).detach().float()
            self.log.index_copy_(0, i, row[None])
            fire = None
            if final_phase:
                t = total.detach()
                better = (t < self.best_loss) & (scale == 0) & (live > 0)
                for b, p in zip(self.best, self.params):
                    b.copy_(torch.where(better, p.detach(), b))
                self.best_step.copy_(torch.where(better, i, self.best_step))
                self.best_loss.copy_(torch.where(better, t, self.best_loss))
                if r.early_stop:
                    rb = torch.minimum(self.run_best, t)
                    self.best_hist.index_copy_(0, i, rb)
                    self.run_best.copy_(rb)
                    before = self.best_hist.index_select(0, (i - self.window).clamp_min(0))
                    fire = (i >= self.check_from) & (before - rb <= r.stall_eps * before.abs() + r.stall_abs)
            grads = torch.autograd.grad(total, self.params)
            for p, g in zip(self.params, grads):
                p.grad = g if g.stride() == p.stride() else g.contiguous()  # fused Adam wants equal layouts
            self.optimizer.step()
            if self.noises:
                with torch.no_grad():
                    for n in self.noises:
                        m = n - n.mean()
                        n.copy_(torch.where(live > 0, m * m.square().mean().rsqrt(), n))
            if fire is not None:
                newly = fire & (live > 0)
                self.stop_at.copy_(torch.where(newly, i + 1, self.stop_at))
                self.done.copy_(torch.maximum(self.done, newly.to(self.done.dtype)))
            self.i.add_(1)

        return body

    def _reset(self, step: int) -> None:
        """Back to the state before the warm-up of the phase that starts at ``step``."""
        with torch.no_grad():
            for p, v in zip(self.params, self.saved):
                p.copy_(v)
            saved = dict(self.saved_opt)
            for state in self.optimizer.state.values():
                for v in state.values():
                    v.copy_(saved[id(v)][1]) if id(v) in saved else v.zero_()
            self.i.fill_(step)
            self.log[step:].zero_()
            self.done.zero_()
            self.stop_at.fill_(self.recipe.steps)
            self.best_loss.fill_(math.inf)
            self.best_step.fill_(-1)
            self.run_best.fill_(math.inf)
            self.best_hist.zero_()

    def loop(self, *, callback: Optional[ProgressCallback], cancel: Optional[threading.Event], every: int
             ) -> list[float]:
        losses: list[float] = []
        steps = self.recipe.steps
        first = 0
        for k, (size, n) in enumerate(self.phases):
            if n == 0:
                continue
            final = k == len(self.phases) - 1
            criterion = self.full_criterion if size == self.G.size else ReconstructionLoss(
                F.interpolate(self.target, size=(size, size), mode="area"), lpips=self.lpips,
                mse_weight=self.recipe.mse_weight, lpips_weight=self.recipe.lpips_weight)
            self.saved = [p.detach().clone() for p in self.params]
            # a later phase keeps Adam's moments across the phase change (restored after its warm-up)
            self.saved_opt = {id(v): (v, v.detach().clone()) for state in self.optimizer.state.values()
                              for v in state.values()}
            step = CapturedStep(self._body(size, criterion, final), graph=self.graph, gate=self.gate,
                                reset=lambda: self._reset(first), warmup=2)

            def before(j: int, offset: int = first) -> None:
                if self.recipe.latent_noise > 0 and offset + j < self.noisy_steps:
                    self.eps.normal_(generator=self.dev_rng)

            def drain(a: int, b: int, offset: int = first) -> bool:
                packed = torch.cat([self.log[offset + a:offset + b].flatten(), self.done,
                                    self.stop_at.to(torch.float32)]).tolist()
                done, stop_at = packed[-2] > 0, int(packed[-1])
                rows = packed[:-2]
                last = min(offset + b, stop_at) if done else offset + b
                for j in range(offset + a, last):
                    row = rows[4 * (j - offset - a):4 * (j - offset - a) + 4]
                    losses.append(row[0])
                    if callback is not None:
                        metrics = {"loss": row[0], "mse": row[1], "noise_reg": row[3], "lr": self.lr_host[j]}
                        if self.full_criterion.lpips is not None:
                            metrics["lpips"] = row[2]
                        callback(j + 1, steps, metrics)
                    check_cancel(cancel)
                return done

            ran = run_steps(step, n, every=every, drain=drain, before=before, cancel=cancel)
            step.release()
            first += n
            if ran < n:
                break
        self.stopped_early = len(losses) < steps
        return losses

    @torch.no_grad()
    def finish(self, steps_run: int):
        """The returned state (the last one, or the best clean one if lower) and its info."""
        del self.optimizer
        for p in self.params:
            p.grad = None
        G, r = self.G, self.recipe
        crit = self.full_criterion
        code, noises = self.code.detach(), [n.detach() for n in self.noises] if self.noises else None

        def evaluate(c, maps):
            img = self._synthesize(c, maps, G.size)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False):
                loss, _ = crit(img)
            reg = noise_regularization(maps) if maps else 0.0
            return img, float(loss + r.noise_weight * reg)

        image, final = evaluate(code, noises)
        best_step = int(self.best_step)
        returned = steps_run
        if best_step >= 0 and float(self.best_loss) < final:
            code = self.best[0]
            noises = [b for b in self.best[1:]] if self.noises else None
            image, _ = evaluate(code, noises)
            returned = best_step
        loss, terms = crit(image)
        info = {"space": r.space, "steps": r.steps, "steps_run": steps_run, "lr": r.lr,
                "stopped_early": self.stopped_early, "returned_step": returned, "optimize_noise": r.optimize_noise,
                "loss": float(loss), **{k: float(v) for k, v in terms.items()}}
        return image, code.clone(), [n.clone() for n in noises] if noises else None, info
