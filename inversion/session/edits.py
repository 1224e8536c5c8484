"""Edit every inversion of a visitor the same way: slider settings, strips of offsets, edited codes."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from editing import EditRequest, apply_edits, coordinate, get_edit, list_edits, load_pca, render_codes
from editing.directions import data_file
from inversion.checkpoints import CheckpointError
from inversion.models import ModelSet
from inversion.session.running import _inversion_to, _LoadErrorsAsCheckpointErrors
from inversion.session.state import (
    STRIP_STEPS, EditOutcome, EditStrip, SessionError, VisitorState, to_pil,
)


@dataclass(frozen=True)
class EditControl:
    """How the UI presents one edit: slider range and default (offset units), whether it needs a component."""

    name: str
    label: str
    minimum: float
    maximum: float
    default: float
    component_max: Optional[int]  # None: no component to choose
    help: str


def edit_choices(models: ModelSet) -> list[tuple[str, str]]:
    """``(label, name)`` of the edits valid for the family's generator."""
    return [(e.label, e.name) for e in list_edits(models.family.edit_kind)]


def edit_control(name: str, models: ModelSet) -> EditControl:
    """Slider settings for edit ``name``. Every slider is an offset: 0 leaves the face unchanged.

    The named GANSpace edits are published as *target* coordinates; here their slider is the change from
    the inversion's own coordinate (target = own coordinate + offset), so 0 is the identity for them too.
    """
    spec = get_edit(name)
    lo, hi = spec.strength_range
    comp_max = None
    if spec.is_explorer:
        comp_max = (_style_dim(models) if spec.kind == "sefa" else _ganspace_components(models)) - 1
    if spec.kind == "interfacegan":
        help_text = "InterFaceGAN direction (linear boundary in W); positive = more."
    elif spec.kind == "sefa":
        help_text = "SeFa: closed-form direction from the generator's weights; component 0 changes the most."
    elif spec.is_explorer:
        help_text = "GANSpace: principal component of W, step in standard deviations; component 0 varies most."
    else:
        help_text = "GANSpace named edit; the slider is the change from this face's own value along that component."
    return EditControl(name=name, label=spec.label, minimum=lo, maximum=hi, default=spec.default_strength,
                       component_max=comp_max, help=help_text)


def _style_dim(models: ModelSet) -> int:
    """The generator's style size; 512 (the StyleGAN2 default) while its weights are not there yet."""
    try:
        return int(models.generator().style_dim)
    except CheckpointError:
        return 512


def _ganspace_components(models: ModelSet) -> int:
    return 80 if models.family.edit_kind == "ffhq" else min(80, _style_dim(models))


def strip_offsets(offset: float, steps: int) -> tuple[float, ...]:
    """``steps`` values from ``-offset`` to ``offset`` (one value: just ``offset``), without duplicates."""
    if not STRIP_STEPS[0] <= steps <= STRIP_STEPS[1]:
        raise SessionError(f"The strip needs {STRIP_STEPS[0]} to {STRIP_STEPS[1]} steps, got {steps}.")
    values = [offset] if steps == 1 or offset == 0 else np.linspace(-offset, offset, steps).tolist()
    out: list[float] = []
    for v in values:
        v = float(f"{v:.6g}")
        if v not in out:
            out.append(v)
    return tuple(out)


def edit_strengths(name: str, codes: torch.Tensor, offsets: Sequence[float]) -> list[float]:
    """Registry strengths for slider offsets: the offsets themselves, except for target-mode GANSpace edits,
    where strength = the codes' own coordinate (W+ layer 0 of ``codes`` (1, n_latent, dim)) + offset, clipped."""
    spec = get_edit(name)
    if spec.kind == "ganspace" and spec.mode == "target":
        own = float(coordinate(codes.float(), load_pca(data_file(spec.file)), int(spec.component))[0])
        lo, hi = spec.strength_range
        return [min(hi, max(lo, own + o)) for o in offsets]
    return [float(o) for o in offsets]


def edit_results(models: ModelSet, state: VisitorState, name: str, offset: float, *, component: Optional[int] = None,
                 steps: int = 5, batch_size: int = 8, cache_dir: Optional[Path] = None) -> VisitorState:
    """Apply edit ``name`` to EVERY inversion of the state: a strip of ``steps`` offsets per method plus the
    image and codes at ``offset``. Offset 0 reuses the reconstruction (it is the identity). A PTI result whose
    tuned generator was released (:class:`TunedCache`) is dropped from the returned state (the caller can tell
    the visitor); when it is the only result, :class:`SessionError` says to run PTI again."""
    if not state.results:
        raise SessionError("Invert the photo first (step 2).")
    freed = [m for m, r in state.results.items() if r.tuned is not None and r.tuned.generator is None]
    if freed:
        if len(freed) == len(state.results):
            state.results[freed[0]].full_inversion()  # raises the plain message
        state = replace(state, results={m: r for m, r in state.results.items() if m not in freed})
    spec = get_edit(name)
    if spec.generators is not None and models.family.edit_kind not in spec.generators:
        raise SessionError(f"The edit {spec.label!r} is made for the FFHQ generator; choose another edit.")
    lo, hi = spec.strength_range
    if not (math.isfinite(offset) and lo <= offset <= hi):
        raise SessionError(f"The strength of {spec.label!r} must be between {lo:g} and {hi:g}.")
    if spec.is_explorer and component is None:
        component = 0
    request = EditRequest(name, component=int(component) if spec.is_explorer else None)
    offsets = strip_offsets(offset, steps)
    wanted = offsets if offset in offsets else (*offsets, offset)
    base = _LoadErrorsAsCheckpointErrors(models).generator()
    device = models.device
    strips = {}
    for method, result in state.results.items():
        inv = _inversion_to(result.full_inversion(), device, copy_generator=True)  # tuned G: already there
        strengths = edit_strengths(name, inv.w_plus, wanted)
        todo = [s for o, s in zip(wanted, strengths) if o != 0]
        images: dict[float, Image.Image] = {}
        codes: dict[float, torch.Tensor] = {}
        if todo:
            with torch.no_grad():  # one code tensor: rendered, and kept as the edited codes
                edited_codes = apply_edits(inv, [request], generator=base, generator_kind=models.family.edit_kind,
                                           strengths=todo, cache_dir=cache_dir)
                rendered = render_codes(inv, edited_codes, base_generator=base, batch_size=batch_size)
            nonzero = [o for o in wanted if o != 0]
            for i, o in enumerate(nonzero):
                images[o] = to_pil(rendered[i:i + 1])
                codes[o] = edited_codes[i:i + 1].detach().cpu()
        if 0 in wanted:
            images[0.0] = result.reconstruction
            codes[0.0] = result.inversion.w_plus.detach().cpu()
        strips[method] = EditStrip(method=method, offsets=offsets, images=tuple(images[o] for o in offsets),
                                   edited=images[offset], edited_codes=codes[offset])
    outcome = EditOutcome(name=name, offset=float(offset), component=request.component, strips=strips)
    return replace(state, edit=outcome, pasted=None, pasted_method=None)
