"""Apply registry edits to an inversion's W+ codes, and render them with that inversion's generator.

Edits compose additively: every edit's change is computed from the inversion's own codes and the
changes are summed. Offset-style edits (InterFaceGAN, SeFa, GANSpace ``offset``) at strength 0 return the
codes unchanged, bit for bit; the named GANSpace edits keep e4e's ``target`` semantics (their strength is
the coordinate to reach; the identity is leaving the edit out, or ``strength = coordinate(...)``).
"""
from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from editing.directions import FFHQ, FFHQ_PCA_FILE, EditRequest, EditSpec, data_file, get_edit, load_direction, load_pca
from editing.ganspace import PCA, component_delta, generator_pca
from editing.interfacegan import direction_delta
from editing.layers import EditError, Strength, check_codes
from editing.sefa import cached_sefa_directions
from inversion.result import Inversion


def _check_strength(spec: EditSpec, strength: Strength) -> None:
    lo, hi = spec.strength_range
    values = torch.as_tensor(strength, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(values).all() or bool(((values < lo) | (values > hi)).any()):
        raise EditError(f"strength for {spec.name!r} must be within [{lo:g}, {hi:g}], got {values.tolist()}")


def _component(spec: EditSpec, request: EditRequest) -> int:
    if not spec.is_explorer:
        if request.component is not None and request.component != spec.component:
            raise EditError(f"{spec.name!r} is fixed to component {spec.component}; use 'ganspace' to explore others")
        return int(spec.component)  # type: ignore[arg-type]
    if request.component is None:
        raise EditError(f"{spec.name!r} needs a component index")
    return int(request.component)


class _PerGenerator:
    """Directions computed from a generator's weights (SeFa, GANSpace PCA), remembered per generator object while
    its parameters are unchanged (same storage, no in-place update since), so the weights are hashed once and
    not on every edit. Entries go with their generator (weak keys)."""

    def __init__(self) -> None:
        self._memo: "weakref.WeakKeyDictionary[torch.nn.Module, dict[Any, tuple[tuple, Any]]]" = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @staticmethod
    def _version(generator: torch.nn.Module) -> tuple:
        return tuple((p.data_ptr(), p._version) for p in generator.parameters())

    def get(self, generator: torch.nn.Module, key: Any, compute: Callable[[], Any]) -> Any:
        version = self._version(generator)
        with self._lock:
            found = self._memo.get(generator, {}).get(key)
        if found is not None and found[0] == version:
            return found[1]
        value = compute()
        with self._lock:
            self._memo.setdefault(generator, {})[key] = (version, value)
        return value


_DIRECTIONS = _PerGenerator()


def _pca_for(spec: EditSpec, generator: torch.nn.Module, generator_kind: Optional[str],
             cache_dir: Optional[Path]) -> PCA:
    if spec.file is not None:
        return load_pca(data_file(spec.file))
    if generator_kind == FFHQ:
        return load_pca(data_file(FFHQ_PCA_FILE))
    return _DIRECTIONS.get(generator, ("pca", str(cache_dir)),
                           lambda: generator_pca(generator, cache_dir=cache_dir))


def edit_delta(codes: torch.Tensor, request: EditRequest, *, generator: torch.nn.Module,
               generator_kind: Optional[str] = None, strength: Optional[Strength] = None,
               cache_dir: Optional[Path] = None) -> torch.Tensor:
    """The change one request makes to ``codes`` (N, n_latent, dim), at ``strength`` if given (a number or
    (S,) values), else the request's, else the registry default. ``generator`` supplies GANSpace/SeFa
    directions (the base generator: a PTI-tuned copy shares its directions)."""
    spec = get_edit(request.name)
    if spec.generators is not None and generator_kind not in spec.generators:
        raise EditError(f"{spec.name!r} is made for generator kind(s) {', '.join(spec.generators)}, "
                        f"not {generator_kind!r}")
    if strength is None:
        strength = spec.default_strength if request.strength is None else request.strength
    _check_strength(spec, strength)
    layers = request.layers if request.layers is not None else spec.layers
    if spec.kind == "interfacegan":
        return direction_delta(codes, load_direction(data_file(spec.file)), strength, layers=layers)
    component = _component(spec, request)
    if spec.kind == "ganspace":
        pca = _pca_for(spec, generator, generator_kind, cache_dir)
        return component_delta(codes, pca, component, strength, layers=layers, mode=spec.mode)  # type: ignore[arg-type]
    dirs = _DIRECTIONS.get(generator, ("sefa", layers, str(cache_dir)),
                           lambda: cached_sefa_directions(generator.state_dict(), layers=layers, cache_dir=cache_dir))
    if not 0 <= component < dirs.vectors.shape[0]:
        raise EditError(f"SeFa component must be in 0..{dirs.vectors.shape[0] - 1}, got {component}")
    return direction_delta(codes, dirs.vectors[component], strength, layers=dirs.layers)


def edit_codes(codes: torch.Tensor, edits: Sequence[EditRequest], *, generator: torch.nn.Module,
               generator_kind: Optional[str] = None, strengths: Optional[Sequence[float]] = None,
               cache_dir: Optional[Path] = None) -> torch.Tensor:
    """``codes`` (N, n_latent, dim) with every edit added. With ``strengths`` (S values; needs N == 1 or
    N == S), the LAST edit takes each value in turn and the result is (S, n_latent, dim)."""
    check_codes(codes)
    expected = (getattr(generator, "n_latent", codes.shape[1]), getattr(generator, "style_dim", codes.shape[2]))
    if tuple(codes.shape[1:]) != expected:
        raise EditError(f"codes are {tuple(codes.shape)} but the generator expects (N, {expected[0]}, {expected[1]})")
    edits = list(edits)
    if strengths is not None and not edits:
        raise EditError("a strength strip needs at least one edit")
    out = codes
    for i, request in enumerate(edits):
        strip = strengths is not None and i == len(edits) - 1
        strength = torch.as_tensor(list(strengths), dtype=codes.dtype) if strip else None
        out = out + edit_delta(codes, request, generator=generator, generator_kind=generator_kind,
                               strength=strength, cache_dir=cache_dir)
    return out.clone() if out is codes else out


def apply_edits(inversion: Inversion, edits: Sequence[EditRequest], *, generator: torch.nn.Module,
                generator_kind: Optional[str] = None, strengths: Optional[Sequence[float]] = None,
                cache_dir: Optional[Path] = None) -> torch.Tensor:
    """Edited W+ codes of ``inversion``: (1, n_latent, dim), or (S, n_latent, dim) with ``strengths``.

    ``generator`` is the base generator (it defines GANSpace/SeFa directions and the expected shapes);
    ``generator_kind`` (e.g. ``"ffhq"``) unlocks that kind's named edits and, for FFHQ, makes the GANSpace
    explorer use the published PCA. ``cache_dir``: where computed PCA/SeFa directions are cached.
    """
    return edit_codes(inversion.w_plus, edits, generator=generator, generator_kind=generator_kind,
                      strengths=strengths, cache_dir=cache_dir)


@torch.no_grad()
def render_codes(inversion: Inversion, codes: torch.Tensor, *, base_generator: torch.nn.Module,
                 batch_size: int = 8) -> torch.Tensor:
    """Images (S, 3, H, W) of ``codes`` (S, n_latent, dim), not clamped (nominally [-1, 1]).

    Synthesis uses ``inversion.generator`` when the method tuned one (PTI), else ``base_generator``, and the
    inversion's optimized ``noise`` when it has some (else the generator's stored noise buffers), in batches of
    ``batch_size`` codes. Codes and noise move to the generator's device.
    """
    if batch_size < 1:
        raise EditError(f"batch_size must be >= 1, got {batch_size}")
    synth = inversion.generator if inversion.generator is not None else base_generator
    ref = next(iter(synth.parameters()))
    codes = codes.to(device=ref.device, dtype=ref.dtype)
    noise = None
    if inversion.noise is not None:
        noise = [n.to(device=ref.device, dtype=ref.dtype) for n in inversion.noise]
    return torch.cat([synth.synthesis(chunk, noise=noise) for chunk in codes.split(batch_size)])


@torch.no_grad()
def render_edits(inversion: Inversion, edits: Sequence[EditRequest], strengths: Optional[Sequence[float]] = None,
                 *, base_generator: torch.nn.Module, batch_size: int = 8, generator_kind: Optional[str] = None,
                 cache_dir: Optional[Path] = None) -> torch.Tensor:
    """Images (S, 3, H, W) of the edited codes (S = len(strengths), or 1): :func:`apply_edits` then
    :func:`render_codes` (use those two to keep the codes as well)."""
    if batch_size < 1:
        raise EditError(f"batch_size must be >= 1, got {batch_size}")
    codes = apply_edits(inversion, edits, generator=base_generator, generator_kind=generator_kind,
                        strengths=strengths, cache_dir=cache_dir)
    return render_codes(inversion, codes, base_generator=base_generator, batch_size=batch_size)
