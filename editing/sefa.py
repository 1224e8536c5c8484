"""SeFa (closed-form factorization): directions from the generator's style-modulation weights.

Which weights read W+ index ``i`` (rosinality layout, ``n_latent = 2 log2(size) - 2``):

- index 0: ``conv1`` (the 4x4 conv);
- index ``i`` in ``1 .. n_latent-2``: ``convs.{i-1}`` (``convs[2k]`` reads ``2k+1``, ``convs[2k+1]`` reads ``2k+2``);
- with ``include_torgb``, also ``to_rgb1`` for index 1 and ``to_rgbs.{(i-3)//2}`` for odd ``i >= 3``.

So a direction computed for W+ layers ``[start, end)`` uses exactly the modulations that read those layers,
and the edit is applied to those same layers. (e4e's version reads the right weights but then adds the
edit to the shifted conv indices, i.e. one W+ layer lower than chosen; we do not.) The last index ``n_latent-1`` is read only by the last ToRGB; it
contributes weights only with ``include_torgb``.

Recipe: each modulation weight (C_in, dim) is transposed to (dim, C_in); the chosen ones are
concatenated to (dim, sum C_in); columns are normalised to unit length; the eigenvectors of W Wᵀ sorted
by eigenvalue, descending, are the directions (sign: largest-magnitude entry positive).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import torch

from editing.cache import default_cache_dir, load_cached, save_cached, tensors_hash
from editing.layers import EditError, LayerRange, resolve_layers


@dataclass(frozen=True)
class SefaDirections:
    """``vectors`` (K, dim) orthonormal rows, ``eigenvalues`` (K,) descending, for W+ ``layers`` [start, end)."""

    vectors: torch.Tensor
    eigenvalues: torch.Tensor
    layers: LayerRange


def n_latent_of(state_dict: Mapping[str, torch.Tensor]) -> int:
    """``n_latent`` of a rosinality-layout state dict (number of ``convs`` + 2)."""
    n_convs = sum(1 for k in state_dict if k.startswith("convs.") and k.endswith(".conv.modulation.weight"))
    if "conv1.conv.modulation.weight" not in state_dict:
        raise EditError("not a StyleGAN2 generator state dict (no 'conv1.conv.modulation.weight')")
    return n_convs + 2


def modulation_keys(layer: int, *, n_latent: int, include_torgb: bool = False) -> list[str]:
    """State-dict keys of the modulation weights that read W+ index ``layer`` (see the module doc)."""
    if not 0 <= layer < n_latent:
        raise EditError(f"W+ layer must be in 0..{n_latent - 1}, got {layer}")
    keys = []
    if layer == 0:
        keys.append("conv1.conv.modulation.weight")
    elif layer <= n_latent - 2:
        keys.append(f"convs.{layer - 1}.conv.modulation.weight")
    if include_torgb:
        if layer == 1:
            keys.append("to_rgb1.conv.modulation.weight")
        elif layer >= 3 and layer % 2 == 1:
            keys.append(f"to_rgbs.{(layer - 3) // 2}.conv.modulation.weight")
    return keys


def _keys_for(state_dict: Mapping[str, torch.Tensor], layers: Optional[LayerRange],
              include_torgb: bool) -> tuple[LayerRange, list[str]]:
    n_latent = n_latent_of(state_dict)
    start, end = resolve_layers(layers, n_latent)
    keys = [k for i in range(start, end) for k in modulation_keys(i, n_latent=n_latent, include_torgb=include_torgb)]
    if not keys:
        raise EditError(f"no modulation weight reads W+ layers [{start}, {end}) without ToRGB; "
                        "choose lower layers or include_torgb=True")
    return (start, end), keys


def sefa_directions(state_dict: Mapping[str, torch.Tensor], *, layers: Optional[LayerRange] = None,
                    include_torgb: bool = False) -> SefaDirections:
    """All ``dim`` SeFa directions for W+ ``layers`` (half-open, None = all) of a generator state dict."""
    span, keys = _keys_for(state_dict, layers, include_torgb)
    weight = torch.cat([state_dict[k].detach().to("cpu", torch.float64).T for k in keys], dim=1)
    weight = weight / weight.norm(dim=0, keepdim=True)
    evals, evecs = torch.linalg.eigh(weight @ weight.T)
    order = torch.argsort(evals, descending=True)
    vectors = evecs[:, order].T
    idx = vectors.abs().argmax(dim=1, keepdim=True)
    vectors = vectors * torch.where(vectors.gather(1, idx) < 0, -1.0, 1.0).to(vectors.dtype)
    return SefaDirections(vectors=vectors.float(), eigenvalues=evals[order].float(), layers=span)


def cached_sefa_directions(state_dict: Mapping[str, torch.Tensor], *, layers: Optional[LayerRange] = None,
                           include_torgb: bool = False, cache_dir: Optional[Path] = None) -> SefaDirections:
    """:func:`sefa_directions`, cached as ``sefa-<hash>.safetensors`` (hash of the weights it reads + options)."""
    span, keys = _keys_for(state_dict, layers, include_torgb)
    key = tensors_hash(state_dict, keys, extra=f"sefa|layers={span}|torgb={include_torgb}")
    path = Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"sefa-{key}.safetensors"
    cached = load_cached(path)
    if cached is not None and {"vectors", "eigenvalues"} <= cached.keys():
        return SefaDirections(vectors=cached["vectors"], eigenvalues=cached["eigenvalues"], layers=span)
    result = sefa_directions(state_dict, layers=span, include_torgb=include_torgb)
    save_cached(path, {"vectors": result.vectors, "eigenvalues": result.eigenvalues}, metadata={"kind": "sefa"})
    return result
