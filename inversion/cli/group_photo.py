"""One group photo with ``--all-faces``: every face aligned, inverted (encoders batched), edited the same way and
pasted back into one photo (:mod:`inversion.group`); its files and ``metrics.json`` (written last)."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from editing import EditError
from inversion import align as alignment
from inversion import group as G
from inversion import session as S
from inversion.checkpoints import CheckpointError
from inversion.cli.args import EditArg
from inversion.cli.loading import FatalError, Loaded
from inversion.cli.photo import (METRIC_KEYS, PhotoSkipped, _check_cancel, _finite, _npy, _png, _write_json,
                                 record_header)
from inversion.models import ModelSet


def _summary(group: G.Group, method: str) -> dict[str, Any]:
    """One method over all faces (the batch CSV's row): metrics averaged over the faces, seconds summed."""
    results = [face.results[method] for face in group.faces if method in face.results]
    metrics: dict[str, Any] = {}
    for key in METRIC_KEYS:
        values = [_finite(r.metrics.get(key)) for r in results]
        values = [v for v in values if v is not None]
        metrics[key] = (sum(values) if key == "seconds" else sum(values) / len(values)) if values else None
    return {"label": results[0].label, "preset": results[0].preset, "metrics": metrics, "faces": len(results),
            "note": "metrics averaged over the faces (seconds: summed)"}


def invert_group_photo(models: ModelSet, path: Path, folder: Path, *, settings: Mapping[str, Any],
                       source_sha256: str, edits: Sequence[EditArg], ensure_models: Callable[[], Loaded],
                       on_stage: Callable[[str], None], cancel: threading.Event) -> dict[str, Any]:
    """Like :func:`inversion.cli.photo.invert_photo`, for every face: ``face<N>_aligned.png``,
    ``face<N>_<method>.png`` / ``_wplus.npy`` and per edit ``face<N>_<method>_<edit>.png`` / ``_wplus.npy``;
    with ``paste_back``, ``<method>_pasted.png`` and ``<method>_<edit>_pasted.png`` hold every face pasted back."""
    try:
        photo = S.open_photo(path)
        group = G.align_all(photo)
    except (alignment.AlignmentError, S.SessionError) as err:
        raise PhotoSkipped(str(err)) from None
    except alignment.PredictorNotFoundError as err:
        raise FatalError(str(err)) from None
    warnings = list(photo.notes)
    if len(photo.faces) > S.MAX_FACES:
        warnings.append(f"{len(photo.faces)} faces were found; the {S.MAX_FACES} most confident are used.")
    _check_cancel(cancel)
    loaded = ensure_models()
    n = len(group.faces)
    group, skipped_runs = G.invert_all(models, group, loaded.methods, presets=settings["presets"],
                                       seed=settings["seed"], file_present=S.file_present_from({}), cancel=cancel,
                                       on_face=lambda i, total: on_stage(f"face {i + 1}/{total}"))
    skipped = dict(loaded.dropped)
    skipped.update({s.method: s.reason for s in skipped_runs})
    if not group.faces[0].results:
        raise PhotoSkipped("no method could run (" + "; ".join(skipped.values()) + ")")
    _check_cancel(cancel)
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    faces: list[dict[str, Any]] = []
    for i, face in enumerate(group.faces):
        _png(folder, f"face{i}_aligned", face.aligned.image, files)
        entry: dict[str, Any] = {"bbox": list(face.aligned.face.bbox), "warnings": list(face.aligned.warnings),
                                 "methods": {}}
        for method, r in face.results.items():
            key = f"face{i}_{S.safe_name(method)}"
            _png(folder, key, r.reconstruction, files)
            _npy(folder, f"{key}_wplus", r.inversion.w_plus, files)
            entry["methods"][method] = {"metrics": {k: _finite(r.metrics.get(k)) for k in METRIC_KEYS}}
        faces.append(entry)
    methods = list(group.faces[0].results)
    summary = {method: _summary(group, method) for method in methods}
    if settings["paste_back"]:
        for method in methods:
            _png(folder, f"{S.safe_name(method)}_pasted", G.paste_all(group, method).pasted, files)
    for edit, wanted in zip(edits, settings["edits"]):
        _check_cancel(cancel)
        on_stage(f"edit {wanted['key']} on {n} faces")
        try:
            edited = G.edit_all(models, group, wanted["name"], wanted["offset"], component=edit.component)
        except (EditError, S.SessionError, CheckpointError) as err:
            warnings.append(f"edit {wanted['key']}: {err}")
            continue
        for i, face in enumerate(edited.faces):
            for method, strip in face.edit.strips.items():
                name = f"face{i}_{S.safe_name(method)}_{wanted['key']}"
                _png(folder, name, strip.edited, files)
                _npy(folder, f"{name}_wplus", strip.edited_codes, files)
        if settings["paste_back"]:
            for method in methods:
                _png(folder, f"{S.safe_name(method)}_{wanted['key']}_pasted", G.paste_all(edited, method).pasted, files)
    record = {
        **record_header(path, settings=settings, source_sha256=source_sha256),
        "photo": {"size": list(photo.image.size), "faces_found": len(photo.faces), "faces_used": n},
        "model": {"family": models.family.name, "label": models.family.label,
                  "generator_size": models.family.size, "device": str(models.device)},
        "methods": summary, "faces": faces, "skipped_methods": skipped, "warnings": warnings, "files": sorted(files.values()),
    }
    _write_json(folder / "metrics.json", record)
    return record
