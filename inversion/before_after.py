"""Before/after pairs for a comparison slider: the aligned input against a method's reconstruction, and the
reconstruction against its edit, both at one display size (no gradio here)."""
from __future__ import annotations

from typing import Optional

from PIL import Image

from inversion import session as S

COMPARE_SIZE = 512
"""Side of the compared images (px): large enough to judge the difference on screen; small models are enlarged."""

Pair = tuple[Image.Image, Image.Image]


def _shown(image: Image.Image, size: int) -> Image.Image:
    rgb = image.convert("RGB")
    return rgb if rgb.size == (size, size) else rgb.resize((size, size), Image.Resampling.LANCZOS)


def before_after(state: S.VisitorState, method: Optional[str] = None, *,
                 size: int = COMPARE_SIZE) -> tuple[Optional[Pair], Optional[Pair]]:
    """``(input vs reconstruction, reconstruction vs edit)`` for ``method`` (default: the first result).

    The input is the aligned face resized as the model sees it (its own size), then both are shown at ``size``.
    The second pair is None until that method's result was edited; both are None before any inversion.
    Raises :class:`~inversion.session.SessionError` for a method without a result.
    """
    if state.aligned is None or not state.results:
        return None, None
    method = method or next(iter(state.results))
    if method not in state.results:
        raise S.SessionError(f"{method!r} has no result yet; choose one of: "
                             f"{', '.join(r.label for r in state.results.values())}.")
    result = state.results[method]
    model_size = int(result.inversion.image.shape[-1])
    seen = S.to_pil(S.model_input(state, model_size))
    reconstruction = _shown(result.reconstruction, size)
    first = (_shown(seen, size), reconstruction)
    strip = state.edit.strips.get(method) if state.edit is not None else None
    second = (reconstruction, _shown(strip.edited, size)) if strip is not None else None
    return first, second
