"""What the app shows and accepts, as plain values: checked numbers from the page or an API client, gallery
items with captions, plot ranges, method choices, run summaries and the ``/status`` report. No gradio here."""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from PIL import Image

from inversion.checkpoints import FileStatus
from inversion.methods import METHODS, MethodRegistry
from inversion.models import ModelSet
from inversion.session.availability import default_family, method_status
from inversion.session.photo import model_input
from inversion.session.state import FilePresent, SessionError, VisitorState, to_pil
from inversion.session.status_text import family_banner, status_markdown

Caption = tuple[Image.Image, str]


def as_number(value: Any, what: str) -> float:
    """A number as the page or an API client sent it (handlers run without preprocessing, so NaN, infinity,
    null or text arrive as sent); :class:`SessionError` in plain words otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SessionError(f"The {what} must be a number, got {value!r}.")
    return float(value)


def as_whole(value: Any, what: str, *, default: Optional[int] = None) -> int:
    """A finite whole number (``default`` when the value is missing and a default exists)."""
    if value is None and default is not None:
        return default
    number = as_number(value, what)
    if not math.isfinite(number) or number != int(number):
        raise SessionError(f"The {what} must be a whole number, got {value!r}.")
    return int(number)


def as_seed(value: Any) -> int:
    """A seed in [0, 2**32) (0 when missing)."""
    seed = as_whole(value, "seed", default=0)
    if not 0 <= seed < 2**32:
        raise SessionError(f"The seed must be between 0 and {2**32 - 1}, got {seed}.")
    return seed


def result_label(state: VisitorState, method: str) -> str:
    """The label of ``method``'s result (the key itself when there is none)."""
    return state.results[method].label if method in state.results else method


def result_gallery(state: VisitorState) -> list[Caption]:
    """The aligned input (at the models' size) and each reconstruction, captioned with its score."""
    if state.aligned is None or not state.results:
        return []
    size = next(iter(state.results.values())).inversion.image.shape[-1]
    items = [(to_pil(model_input(state, size)), f"aligned input ({size} px)")]
    for r in state.results.values():
        lp = r.metrics.get("lpips")
        score = f"LPIPS {lp:.3f}" if lp is not None else f"MSE {r.metrics['mse']:.3f}"
        items.append((r.reconstruction, f"{r.label} · {score}"))
    return items


def strip_gallery(state: VisitorState) -> list[Caption]:
    """Every image of the last edit's strips, captioned with method and offset."""
    if state.edit is None:
        return []
    return [(image, f"{result_label(state, method)} · {offset:+g}")
            for method, strip in state.edit.strips.items() for offset, image in zip(strip.offsets, strip.images)]


def padded_range(values: Sequence[float], *, floor: Optional[float] = None) -> Optional[list[float]]:
    """Axis limits around ``values`` with some room (points at the very edge are hard to see)."""
    if not values:
        return None
    lo, hi = min(values), max(values)
    pad = max(0.15 * (hi - lo), 0.05 * max(abs(lo), abs(hi)), 1e-4)
    return [max(lo - pad, floor) if floor is not None else lo - pad, hi + pad]


def method_choices(models: ModelSet, file_present: FilePresent,
                   methods: MethodRegistry = METHODS) -> list[tuple[str, str]]:
    """``(label, key)`` per method in run order; labels say "(not ready)" while weights are missing."""
    status = method_status(models, file_present, methods)
    return [(methods[m].label + ("" if status[m][0] else " (not ready)"), m) for m in methods.order]


def invert_summary(ran: Sequence[str], skipped: Sequence[str], notes: Sequence[str]) -> str:
    """The line shown after a run: what ran, what was skipped and why, and notes (e.g. MSE alone)."""
    message = f"Done: {', '.join(ran)}." if ran else "Nothing ran."
    if skipped:
        message += " Skipped: " + " ".join(skipped)
    if notes:
        message += " Note: " + " ".join(notes)
    return message


def status_report(model_sets: Mapping[str, ModelSet], family: str, file_present: FilePresent,
                  statuses: Optional[Mapping[str, FileStatus]], methods: MethodRegistry = METHODS) -> dict:
    """The ``/status`` answer: methods that can run now, why the others cannot, and each weight file's state."""
    models = model_sets[family]
    files = {name: {"state": st.state, "message": st.message, "bytes_done": st.bytes_done,
                    "bytes_total": st.bytes_total} for name, st in (statuses or {}).items()}
    ready = method_status(models, file_present, methods)
    return {"family": family, "families": list(model_sets),
            "default_family": default_family(model_sets, file_present),
            "methods": {m: {"ready": ok, "reason": why} for m, (ok, why) in ready.items()},
            "files": files, "text": status_markdown(models, file_present, statuses, methods),
            "banner": family_banner(model_sets, family, file_present, statuses)}
