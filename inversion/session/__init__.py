"""What one visitor of the app does, as plain functions: photo -> aligned face -> inversions -> edits ->
paste-back -> export.

No gradio here: the app keeps one :class:`VisitorState` per visitor (in ``gr.State``) and calls these
functions; they take and return PIL images, numpy arrays, torch tensors and plain dicts. Errors the visitor
should read are raised as :class:`SessionError` (or the domain errors of :mod:`inversion.align`,
:mod:`inversion.checkpoints` and :mod:`editing`), all with plain messages.

States are frozen: every step returns a new :class:`VisitorState` (``dataclasses.replace``), so two
events of one visitor never see a half-updated state. Stored inversions live on the CPU; a PTI-tuned
generator is the visitor's own copy and goes away with the state.

Modules: :mod:`.state` (states, results, images), :mod:`.photo` (open, align), :mod:`.availability` (which
methods can run), :mod:`.running` (inversions, metrics tables), :mod:`.edits`, :mod:`.export` (paste-back,
files), :mod:`.status_text` (status panel, banner).
"""
from __future__ import annotations

from inversion.session.availability import (
    METHOD_ORDER, default_family, download_order, file_present_from, method_order, method_status, order_methods,
    piece_present,
)
from inversion.session.edits import EditControl, edit_choices, edit_control, edit_results, edit_strengths, strip_offsets
from inversion.session.export import export_files, paste_result, safe_name, sweep_old
from inversion.session.photo import align_photo, face_thumbnails, model_input, open_photo, photo_notes
from inversion.session.running import (
    METRIC_COLUMNS, add_result, metrics_rows, result_notes, run_inversions, tradeoff_points,
)
from inversion.session.state import (
    ALIGN_SIZE, IDENTITY_MODEL, MAX_FACES, STRIP_STEPS, WORK_MAX_SIDE, EditOutcome, EditStrip, FilePresent, MethodResult, Photo,
    ProgressFn, SessionError, Skipped, TunedCache, TunedGenerator, VisitorState, new_state, to_pil, to_tensor,
)
from inversion.session.runtimes import load_runtimes, methods_help_markdown
from inversion.session.status_text import family_banner, status_markdown
from inversion.session.views import (
    as_number, as_seed, as_whole, invert_summary, method_choices, padded_range, result_gallery, result_label,
    status_report, strip_gallery,
)

__all__ = [
    "ALIGN_SIZE", "MAX_FACES", "EditControl", "EditOutcome", "EditStrip", "FilePresent", "IDENTITY_MODEL", "METHOD_ORDER",
    "METRIC_COLUMNS", "MethodResult", "Photo", "ProgressFn", "STRIP_STEPS", "SessionError", "Skipped", "TunedCache",
    "TunedGenerator", "VisitorState", "WORK_MAX_SIDE", "add_result", "align_photo", "as_number", "as_seed",
    "as_whole", "default_family", "download_order", "edit_choices", "edit_control", "edit_results",
    "edit_strengths", "export_files", "face_thumbnails", "family_banner", "file_present_from", "invert_summary",
    "load_runtimes", "method_choices", "method_order", "method_status", "methods_help_markdown", "metrics_rows",
    "model_input", "new_state", "open_photo", "order_methods", "padded_range", "paste_result", "photo_notes",
    "piece_present", "result_gallery", "result_label", "result_notes", "run_inversions", "safe_name",
    "status_markdown", "status_report", "strip_gallery", "strip_offsets", "sweep_old", "to_pil", "to_tensor",
    "tradeoff_points",
]
