"""The registry of named edits, the edit request type, and the loaders for direction files.

Direction files (``load_direction``): a (1, dim) vector used on every edited layer, or (1, n_latent, dim)
with one row per layer — e4e's published ``age.pt``/``smile.pt`` (1, 512) and ``pose.pt`` (1, 18, 512).
Accepted containers: ``.safetensors`` / ``.npz`` (tensor ``direction``, or the only tensor) and torch
files holding a bare tensor or ``{"direction": tensor}`` (loaded with ``weights_only=True``).
PCA files (``load_pca``): ``mean`` (1, dim), ``comp`` (K, dim) or (K, 1, dim), ``std`` (K,), same containers.

Layer ranges are half-open ``(start, end)`` W+ indices (``codes[:, start:end]``), None = all layers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Mapping, Optional, Union

import numpy as np
import torch
from safetensors.torch import load_file

from editing.ganspace import PCA
from editing.layers import EditError, LayerRange

EditKind = Literal["interfacegan", "ganspace", "sefa"]

FFHQ = "ffhq"
"""Generator kind of the official FFHQ 1024 config-f weights (and e4e/pSp decoders, which are the same)."""

DATA_DIR = Path(__file__).resolve().parent / "data"
FFHQ_PCA_FILE = "ffhq_pca.safetensors"

_E4E_LICENSE = "MIT, Copyright (c) 2021 omertov (editing/data/LICENSE-e4e-directions)"
_DERIVED = "computed from the loaded generator's weights; same terms as those weights"


@dataclass(frozen=True)
class EditSpec:
    """One entry of the registry.

    ``kind``: ``interfacegan`` (``file`` holds the direction), ``ganspace`` (``component`` of a PCA; None
    = explorer, the request names the component) or ``sefa`` (explorer). ``layers``: default W+ range,
    half-open, None = all. ``mode``: GANSpace strength semantics (see :mod:`editing.ganspace`).
    ``generators``: generator kinds it is valid for, None = any generator.
    """

    name: str
    label: str
    kind: EditKind
    layers: Optional[LayerRange]
    default_strength: float
    strength_range: tuple[float, float]
    source: str
    license: str
    generators: Optional[tuple[str, ...]] = None
    file: Optional[str] = None
    component: Optional[int] = None
    mode: str = "offset"

    @property
    def is_explorer(self) -> bool:
        """True when the request must name the component (GANSpace/SeFa exploration)."""
        return self.kind == "sefa" or (self.kind == "ganspace" and self.component is None)


@dataclass(frozen=True)
class EditRequest:
    """Apply the registry edit ``name`` at ``strength`` (None = its default).

    ``component``: for the ``ganspace``/``sefa`` explorers, which component/direction (0 = largest).
    ``layers``: half-open W+ range overriding the edit's default (for SeFa it also chooses which
    modulation weights define the directions).
    """

    name: str
    strength: Optional[float] = None
    component: Optional[int] = None
    layers: Optional[LayerRange] = None


def _interfacegan(name: str, label: str, file: str) -> EditSpec:
    return EditSpec(name=name, label=label, kind="interfacegan", layers=None, default_strength=3.0,
                    strength_range=(-5.0, 5.0), generators=(FFHQ,), file=file,
                    source="InterFaceGAN direction for FFHQ W, from the e4e release (editings/interfacegan_directions)",
                    license=_E4E_LICENSE)


def _ganspace_named(name: str, label: str, component: int, start: int, end: int, strength: float) -> EditSpec:
    return EditSpec(name=name, label=label, kind="ganspace", layers=(start, end), default_strength=strength,
                    strength_range=(-30.0, 30.0), generators=(FFHQ,), file=FFHQ_PCA_FILE, component=component,
                    mode="target",
                    source=f"GANSpace (Härkönen et al. 2020) named FFHQ edit ({component}, {start}, {end}, {strength:g}) "
                           "as used by e4e; PCA from the e4e release (editings/ganspace_pca/ffhq_pca.pt)",
                    license=_E4E_LICENSE)


# ----------------------------------------------------------------------------- built-in 128 px generator
# InterFaceGAN directions of the small built-in generator (model family "builtin"), written by
# ``python -m training.fit_directions`` to editing/data/builtin_<attribute>.safetensors, with the fit and
# faithfulness numbers in editing/data/builtin_directions.json. Strengths are distances in W along the unit
# direction; fit_directions prints suggested values (about 2 and 4 projection standard deviations).

BUILTIN = "builtin"
"""Generator kind of the built-in 128 px generator (``inversion.models.FAMILIES["builtin"].edit_kind``)."""


def _builtin(attribute: str, label: str, default: float, limit: float) -> EditSpec:
    return EditSpec(name=f"builtin_{attribute}", label=label, kind="interfacegan", layers=None,
                    default_strength=default, strength_range=(-limit, limit), generators=(BUILTIN,),
                    file=f"builtin_{attribute}.safetensors",
                    source=f"InterFaceGAN-style direction for '{attribute}' in the built-in generator's W, fitted by "
                           "training/fit_directions.py on samples labelled by the bundled attribute regressor",
                    license="made by this project (training/fit_directions.py); same terms as the project")


BUILTIN_EDITS: tuple[EditSpec, ...] = (  # strengths as fit_directions suggested (2 and 4 projection std)
    _builtin("smile", "Smile", 1.32, 2.64),
    _builtin("age", "Age", 2.04, 4.08),
    _builtin("yaw", "Head turn", 1.12, 2.24),
    _builtin("glasses", "Glasses", 1.22, 2.45),
    _builtin("hair_color", "Hair colour", 2.52, 5.03),
    _builtin("hair_length", "Hair length", 1.47, 2.93),
    _builtin("eye_open", "Eye openness", 1.18, 2.36),
    _builtin("light", "Light direction", 3.39, 6.77),
)

# ----------------------------------------------------------------------------- the registry

EDITS: tuple[EditSpec, ...] = (
    _interfacegan("age", "Age", "age.safetensors"),
    _interfacegan("smile", "Smile", "smile.safetensors"),
    _interfacegan("pose", "Head pose", "pose.safetensors"),
    _ganspace_named("eye_openness", "Eye openness", 54, 7, 8, 20.0),
    _ganspace_named("ganspace_smile", "Smile (GANSpace)", 46, 4, 5, -20.0),
    _ganspace_named("trimmed_beard", "Trimmed beard", 58, 7, 9, 20.0),
    _ganspace_named("white_hair", "White hair", 57, 7, 10, -24.0),
    _ganspace_named("lipstick", "Lipstick", 34, 10, 11, 20.0),
    EditSpec(name="ganspace", label="GANSpace component", kind="ganspace", layers=None, default_strength=3.0,
             strength_range=(-25.0, 25.0), mode="offset",
             source="GANSpace PCA of W: the e4e release's ffhq_pca for FFHQ, computed from the generator otherwise",
             license=f"FFHQ: {_E4E_LICENSE}; other generators: {_DERIVED}"),
    EditSpec(name="sefa", label="SeFa direction", kind="sefa", layers=None, default_strength=5.0,
             strength_range=(-15.0, 15.0),
             source="SeFa (Shen & Zhou 2021) closed-form factorization of the style-modulation weights",
             license=_DERIVED),
    *BUILTIN_EDITS,
)

EDITS_BY_NAME: Mapping[str, EditSpec] = MappingProxyType({e.name: e for e in EDITS})


def get_edit(name: str) -> EditSpec:
    """The registry entry ``name``; :class:`EditError` listing the known names otherwise."""
    try:
        return EDITS_BY_NAME[name]
    except KeyError:
        raise EditError(f"unknown edit {name!r}; known edits: {', '.join(EDITS_BY_NAME)}") from None


def list_edits(generator_kind: Optional[str] = None) -> tuple[EditSpec, ...]:
    """Edits valid for ``generator_kind`` (e.g. :data:`FFHQ`): the ones made for it plus the generic
    explorers; ``None`` lists only the generic ones."""
    return tuple(e for e in EDITS if e.generators is None or generator_kind in e.generators)


# ----------------------------------------------------------------------------- file loading

PathLike = Union[str, Path]


def _read_tensors(file: PathLike) -> dict[str, torch.Tensor]:
    path = Path(file)
    if not path.is_file():
        raise EditError(f"direction file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            return load_file(str(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: torch.from_numpy(z[k].copy()) for k in z.files}
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except EditError:
        raise
    except Exception as err:  # noqa: BLE001 - report any unreadable file the same way
        raise EditError(f"cannot read {path.name}: {err}") from err
    if isinstance(obj, torch.Tensor):
        return {"direction": obj}
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj)
    raise EditError(f"{path.name} holds {type(obj).__name__}, expected a tensor or a dict of tensors")


def load_direction(file: PathLike) -> torch.Tensor:
    """A direction from ``file`` as float32, shaped (1, dim) or (1, n_latent, dim) (a bare (dim,) becomes (1, dim))."""
    tensors = _read_tensors(file)
    if "direction" in tensors:
        d = tensors["direction"]
    elif len(tensors) == 1:
        d = next(iter(tensors.values()))
    else:
        raise EditError(f"{Path(file).name} has tensors {sorted(tensors)}, expected one named 'direction'")
    if d.dim() == 1:
        d = d.reshape(1, -1)
    if not (d.is_floating_point() and d.shape[0] == 1 and d.dim() in (2, 3)):
        raise EditError(f"{Path(file).name}: a direction must be float (1, dim) or (1, n_latent, dim), "
                        f"got {tuple(d.shape)} {d.dtype}")
    if not torch.isfinite(d).all():
        raise EditError(f"{Path(file).name}: the direction has non-finite values")
    return d.float().contiguous()


def load_pca(file: PathLike) -> PCA:
    """A GANSpace PCA (``mean``, ``comp``, ``std``) from ``file``."""
    return PCA.from_tensors(_read_tensors(file))


def data_file(name: str) -> Path:
    """Path of a bundled file under ``editing/data``."""
    return DATA_DIR / name
