"""GANSpace: principal components of W, and edits along one component on a range of W+ layers.

Two strength semantics (``mode``):

- ``"target"`` — e4e/GANSpace's published one: ``c = <codes[:, 0] - mean, comp_i> / std_i`` is the current
  coordinate (read from W+ layer 0, in std units) and ``(strength - c) * std_i * comp_i`` is added to the
  chosen layers, so ``strength`` is the target coordinate. ``strength == c`` changes nothing; 0 does change
  the image (it moves the coordinate to the mean). The named FFHQ edits use this mode, as published.
- ``"offset"`` — ``strength * std_i * comp_i`` is added: a step of ``strength`` standard deviations, 0 is
  exactly the identity. The app's component explorer uses this mode because its slider is centred at 0 and
  must leave the photo untouched there, independent of the photo's own coordinate.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Optional

import torch

from editing.cache import default_cache_dir, load_cached, save_cached, tensors_hash
from editing.layers import EditError, LayerRange, Strength, check_codes, layer_mask, strength_column

Mode = Literal["target", "offset"]
MODES: tuple[str, ...] = ("target", "offset")


@dataclass(frozen=True)
class PCA:
    """Principal components of W: ``mean`` (1, dim), ``comp`` (K, dim) orthonormal rows ordered by
    decreasing variance, ``std`` (K,) the standard deviation of the samples along each row."""

    mean: torch.Tensor
    comp: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> "PCA":
        """From ``{"mean", "comp", "std"}``; ``comp`` may be (K, 1, dim) as in e4e's ``ffhq_pca.pt``."""
        try:
            mean, comp, std = tensors["mean"], tensors["comp"], tensors["std"]
        except KeyError as err:
            raise EditError(f"a PCA needs 'mean', 'comp' and 'std' tensors (missing {err})") from None
        comp = comp.reshape(comp.shape[0], -1).float()
        mean = mean.reshape(1, -1).float()
        std = std.reshape(-1).float()
        if mean.shape[1] != comp.shape[1] or std.shape[0] != comp.shape[0]:
            raise EditError(f"inconsistent PCA shapes: mean {tuple(mean.shape)}, comp {tuple(comp.shape)}, "
                            f"std {tuple(std.shape)}")
        return cls(mean=mean, comp=comp, std=std)

    @property
    def n_components(self) -> int:
        return self.comp.shape[0]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "comp": self.comp, "std": self.std}


class _Moments:
    """Running sums for a mean and covariance in float64 (samples arrive in chunks)."""

    def __init__(self, dim: int) -> None:
        self.n = 0
        self.s1 = torch.zeros(dim, dtype=torch.float64)
        self.s2 = torch.zeros(dim, dim, dtype=torch.float64)

    def add(self, w: torch.Tensor) -> None:
        x = w.detach().to("cpu", torch.float64)
        self.n += x.shape[0]
        self.s1 += x.sum(0)
        self.s2 += x.T @ x

    def pca(self, n_components: int) -> PCA:
        if self.n < 2:
            raise EditError("PCA needs at least 2 samples")
        mean = self.s1 / self.n
        cov = (self.s2 - self.n * torch.outer(mean, mean)) / (self.n - 1)
        evals, evecs = torch.linalg.eigh((cov + cov.T) / 2)
        order = torch.argsort(evals, descending=True)[:n_components]
        comp = evecs[:, order].T  # (K, dim), unit rows
        comp = comp * _sign_fix(comp)
        std = evals[order].clamp_min(0).sqrt()
        return PCA(mean=mean.reshape(1, -1).float(), comp=comp.float(), std=std.float())


def _sign_fix(rows: torch.Tensor) -> torch.Tensor:
    """(K, 1) of +-1 making each row's largest-magnitude entry positive (eigenvectors have no sign)."""
    idx = rows.abs().argmax(dim=1, keepdim=True)
    return torch.where(rows.gather(1, idx) < 0, -1.0, 1.0).to(rows.dtype)


def pca_from_samples(w: torch.Tensor, *, n_components: int = 80) -> PCA:
    """PCA of samples ``w`` (n, dim): mean, top ``n_components`` unit components (sign: largest entry
    positive), std with the n-1 normalisation (as GANSpace/sklearn's ``explained_variance_``)."""
    if w.dim() != 2:
        raise EditError(f"samples must be (n, dim), got {tuple(w.shape)}")
    m = _Moments(w.shape[1])
    m.add(w)
    return m.pca(min(n_components, w.shape[1]))


def _mapping_keys(state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    keys = sorted(k for k in state_dict if k.startswith("style."))
    if not keys:
        raise EditError("the generator has no mapping network weights ('style.*')")
    return keys


@torch.no_grad()
def generator_pca(generator: torch.nn.Module, *, n_samples: int = 20_000, seed: int = 0, n_components: int = 80,
                  batch_size: int = 4096, cache_dir: Optional[Path] = None) -> PCA:
    """PCA of ``generator.mapping(z)`` for ``n_samples`` z ~ N(0, I) drawn on the CPU from ``seed``.

    Cached as ``ganspace-<hash>.safetensors`` in ``cache_dir`` (default :func:`default_cache_dir`), the hash
    covering the mapping weights and these arguments; a PTI-tuned copy shares its base's entry.
    """
    dim = generator.style_dim
    k = min(n_components, dim)
    sd = generator.state_dict()
    key = tensors_hash(sd, _mapping_keys(sd), extra=f"ganspace|n={n_samples}|seed={seed}|k={k}|dim={dim}")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"ganspace-{key}.safetensors"
    cached = load_cached(path)
    if cached is not None:
        return PCA.from_tensors(cached)
    ref = next(iter(generator.parameters()))
    rng = torch.Generator(device="cpu").manual_seed(seed)
    moments = _Moments(dim)
    done = 0
    while done < n_samples:
        b = min(batch_size, n_samples - done)
        z = torch.randn(b, dim, generator=rng)
        moments.add(generator.mapping(z.to(device=ref.device, dtype=ref.dtype)))
        done += b
    pca = moments.pca(k)
    save_cached(path, pca.tensors(), metadata={"kind": "ganspace", "n_samples": str(n_samples), "seed": str(seed)})
    return pca


def _check_component(pca: PCA, component: int, codes: torch.Tensor) -> None:
    if not 0 <= component < pca.n_components:
        raise EditError(f"component must be in 0..{pca.n_components - 1}, got {component}")
    if pca.comp.shape[1] != codes.shape[2]:
        raise EditError(f"the PCA has {pca.comp.shape[1]} dimensions but the codes have {codes.shape[2]}")


def coordinate(codes: torch.Tensor, pca: PCA, component: int) -> torch.Tensor:
    """(N,) coordinate of W+ layer 0 along ``component`` in std units (the ``c`` of the target mode)."""
    check_codes(codes)
    _check_component(pca, component, codes)
    comp = pca.comp[component].to(codes)
    centered = codes[:, 0] - pca.mean.to(codes)
    return (centered * comp).sum(-1) / pca.std[component].to(codes)


def component_delta(codes: torch.Tensor, pca: PCA, component: int, strength: Strength, *,
                    layers: Optional[LayerRange] = None, mode: Mode = "offset") -> torch.Tensor:
    """The change a GANSpace edit adds to ``codes`` (zeros outside ``layers``); see the module doc for ``mode``."""
    check_codes(codes)
    _check_component(pca, component, codes)
    s = strength_column(strength, codes)
    if mode == "target":
        s = s - coordinate(codes, pca, component).reshape(-1, 1, 1)
    elif mode != "offset":
        raise EditError(f"mode must be one of {MODES}, got {mode!r}")
    step = (pca.std[component] * pca.comp[component]).to(codes).reshape(1, 1, -1)
    return (s * step) * layer_mask(layers, codes.shape[1], like=codes)


def apply_component(codes: torch.Tensor, pca: PCA, component: int, strength: Strength, *,
                    layers: Optional[LayerRange] = None, mode: Mode = "offset") -> torch.Tensor:
    """``codes`` plus :func:`component_delta`; a new (N or S, n_latent, dim) tensor."""
    return codes + component_delta(codes, pca, component, strength, layers=layers, mode=mode)
