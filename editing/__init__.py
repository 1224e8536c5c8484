"""Latent-space editing: InterFaceGAN, GANSpace, SeFa directions applied to inversions.

Public API: the registry (:data:`EDITS`, :func:`list_edits`, :class:`EditRequest`), :func:`apply_edits`
(pure on codes) and :func:`render_edits` (synthesis with the inversion's own generator).
"""
from editing.apply import apply_edits, edit_codes, edit_delta, render_codes, render_edits
from editing.directions import (EDITS, FFHQ, EditRequest, EditSpec, get_edit, list_edits, load_direction,
                                load_pca)
from editing.ganspace import PCA, coordinate, generator_pca, pca_from_samples
from editing.layers import EditError
from editing.sefa import modulation_keys, sefa_directions

__all__ = [
    "EDITS", "FFHQ", "PCA", "EditError", "EditRequest", "EditSpec", "apply_edits", "coordinate", "edit_codes",
    "edit_delta", "generator_pca", "get_edit", "list_edits", "load_direction", "load_pca", "modulation_keys",
    "pca_from_samples", "render_codes", "render_edits", "sefa_directions",
]
