"""One photo: open, align, invert, edit, paste back; its files and ``metrics.json`` (written last)."""
from __future__ import annotations

import json
import math
import os
import shutil
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch

from editing import EditError
from inversion import align as alignment
from inversion import session as S
from inversion.checkpoints import CheckpointError
from inversion.cli.args import EditArg
from inversion.cli.inputs import _display
from inversion.cli.loading import FatalError, Loaded
from inversion.methods import METHODS, MethodRegistry
from inversion.models import ModelSet
from inversion.result import Cancelled


FORMAT = 1
"""Version of the output layout; part of the settings a rerun compares."""
METRIC_KEYS = ("mse", "psnr", "lpips", "identity", "code_spread", "seconds")


class PhotoSkipped(Exception):
    """This photo cannot be done; the message is the plain reason."""


def _png(folder: Path, name: str, image, files: dict[str, str]) -> None:
    image.save(folder / f"{name}.png", format="PNG")
    files[name] = f"{name}.png"


def _npy(folder: Path, name: str, codes: torch.Tensor, files: dict[str, str]) -> None:
    np.save(folder / f"{name}.npy", codes.detach().cpu().float().numpy(), allow_pickle=False)
    files[name] = f"{name}.npy"


def _finite(value: Optional[float]) -> Optional[float]:
    return float(value) if value is not None and math.isfinite(value) else None


def _check_cancel(cancel: threading.Event) -> None:
    if cancel.is_set():
        raise Cancelled("stopped")


def optimized_on(info: Mapping[str, Any]) -> str:
    """What a method's loss was made of: "MSE + LPIPS", "MSE only" (LPIPS missing), or "" (no optimization)."""
    if "lpips_used" not in info:
        return ""
    return "MSE + LPIPS" if info["lpips_used"] else "MSE only"


def record_header(path: Path, *, settings: Mapping[str, Any], source_sha256: str) -> dict[str, Any]:
    """The first entries of a photo's ``metrics.json``: tool, format, time, settings and the source file."""
    return {"tool": "inversion.cli", "format": FORMAT,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "settings": dict(settings),
            "source": {"path": _display(path), "name": _display(path.name), "sha256": source_sha256}}


@dataclass
class PreparedPhoto:
    """A photo opened and aligned, ready for the methods: its session state and the notes so far."""

    path: Path
    photo: Any  # inversion.session.OpenedPhoto
    state: S.VisitorState
    warnings: list[str]


def prepare_photo(path: Path, *, settings: Mapping[str, Any]) -> PreparedPhoto:
    """Open ``path`` and align the face ``settings["face"]``; raises :class:`PhotoSkipped` (plain reason) or
    :class:`FatalError` (the landmark model is missing)."""
    face = settings["face"]
    try:
        photo = S.open_photo(path)
        if face >= len(photo.faces):
            raise PhotoSkipped(f"--face {face} was asked for, but {len(photo.faces)} face(s) were found "
                               "(--face counts from 0)")
        state = S.align_photo(S.new_state(), photo, face)
    except (alignment.AlignmentError, S.SessionError) as err:
        raise PhotoSkipped(str(err)) from None
    except alignment.PredictorNotFoundError as err:
        raise FatalError(str(err)) from None
    state = replace(state, seed=settings["seed"])
    warnings = list(photo.notes)
    if len(photo.faces) > 1:
        warnings.append(f"{len(photo.faces)} faces were found; --face {face} is used (0 = the most confident).")
    warnings.extend(state.aligned.warnings)
    return PreparedPhoto(path, photo, state, warnings)


def invert_photo(models: ModelSet, path: Path, folder: Path, *, settings: Mapping[str, Any], source_sha256: str,
                 edits: Sequence[EditArg], ensure_models: Callable[[], Loaded], on_progress: S.ProgressFn,
                 on_stage: Callable[[str], None], cancel: threading.Event,
                 registry: MethodRegistry = METHODS, fuse: bool = False) -> dict[str, Any]:
    """Open, align, invert, edit and paste back one photo with :mod:`inversion.session`; write its files into
    ``folder`` (metrics.json last) and return the metrics.json record.

    ``ensure_models()`` loads the models on the first photo that gets past alignment (and says which methods can
    run); ``on_stage(text)`` reports steps without a step count (edits). Methods that cannot run are listed under
    ``skipped_methods``; the settings recorded are the ones asked for, so a rerun does not redo the photo.
    Raises :class:`PhotoSkipped` (plain reason), :class:`FatalError`, or ``Cancelled``.
    """
    if settings.get("all_faces"):
        from inversion.cli.group_photo import invert_group_photo

        return invert_group_photo(models, path, folder, settings=settings, source_sha256=source_sha256, edits=edits,
                                  ensure_models=ensure_models, on_stage=on_stage, cancel=cancel)
    prepared = prepare_photo(path, settings=settings)
    _check_cancel(cancel)
    return finish_photo(models, prepared, folder, settings=settings, source_sha256=source_sha256, edits=edits,
                        loaded=ensure_models(), on_progress=on_progress, on_stage=on_stage, cancel=cancel,
                        registry=registry, fuse=fuse)


def finish_photo(models: ModelSet, prepared: PreparedPhoto, folder: Path, *, settings: Mapping[str, Any],
                 source_sha256: str, edits: Sequence[EditArg], loaded: Loaded, on_progress: S.ProgressFn,
                 on_stage: Callable[[str], None], cancel: threading.Event, registry: MethodRegistry = METHODS,
                 precomputed: Optional[Mapping[str, Any]] = None, starts: Optional[Any] = None,
                 fuse: bool = False) -> dict[str, Any]:
    """Invert (methods in ``precomputed``, made by a batched run, are taken from there), edit and paste back a
    prepared photo; write its files into ``folder`` (metrics.json last) and return the record. ``starts``: the
    photo's encoder codes from the batch (:class:`~inversion.methods.StartCache`); ``fuse``: compile the methods'
    steps (long jobs)."""
    path, photo, state, warnings = prepared.path, prepared.photo, prepared.state, list(prepared.warnings)
    image = S.model_input(state, models.family.size)
    skipped = dict(loaded.dropped)
    for item in S.run_inversions(models, image, loaded.methods, presets=settings["presets"], seed=settings["seed"],
                                 on_progress=on_progress, cancel=cancel, file_present=S.file_present_from({}),
                                 registry=registry, precomputed=precomputed, starts=starts, fuse=fuse):
        if isinstance(item, S.Skipped):
            skipped[item.method] = item.reason
        else:
            state = S.add_result(state, item, registry)
    if not state.results:
        raise PhotoSkipped("no method could run (" + "; ".join(skipped.values()) + ")")
    warnings.extend(S.result_notes(state.results))
    _check_cancel(cancel)

    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    _png(folder, "aligned", state.aligned.image, files)
    results: dict[str, Any] = {}
    for method, r in state.results.items():
        key = S.safe_name(method)
        _png(folder, key, r.reconstruction, files)
        _npy(folder, f"{key}_wplus", r.inversion.w_plus, files)
        results[method] = {"label": r.label, "preset": r.preset,
                           "metrics": {k: _finite(r.metrics.get(k)) for k in METRIC_KEYS},
                           "wplus_shape": list(r.inversion.w_plus.shape), "start": r.inversion.info.get("start"),
                           "optimized_on": optimized_on(r.inversion.info),
                           "recipe": r.inversion.info.get("recipe", {}),
                           "batch": int(r.inversion.info.get("batch", 1))}
        if r.inversion.info.get("warning"):
            results[method]["warning"] = r.inversion.info["warning"]
        if r.inversion.generator is not None:
            results[method]["note"] = "its codes reproduce the photo only with the PTI-tuned generator (not saved)"
    if settings["paste_back"]:
        for method in state.results:
            _png(folder, f"{S.safe_name(method)}_pasted", S.paste_result(state, method).pasted, files)
    for edit, wanted in zip(edits, settings["edits"]):
        _check_cancel(cancel)
        on_stage(f"edit {wanted['key']}")
        try:
            edited = S.edit_results(models, state, wanted["name"], wanted["offset"], component=edit.component, steps=1)
        except (EditError, S.SessionError, CheckpointError) as err:
            warnings.append(f"edit {wanted['key']}: {err}")
            continue
        for method, strip in edited.edit.strips.items():
            name = f"{S.safe_name(method)}_{wanted['key']}"
            _png(folder, name, strip.edited, files)
            _npy(folder, f"{name}_wplus", strip.edited_codes, files)
            if settings["paste_back"]:
                _png(folder, f"{name}_pasted", S.paste_result(edited, method).pasted, files)
    record = {
        **record_header(path, settings=settings, source_sha256=source_sha256),
        "photo": {"size": list(photo.image.size), "faces_found": len(photo.faces), "face_index": state.face_index,
                  "aligned_size": state.aligned.output_size},
        "model": {"family": models.family.name, "label": models.family.label,
                  "generator_size": models.family.size, "device": str(models.device)},
        "methods": results, "skipped_methods": skipped, "warnings": warnings, "files": sorted(files.values()),
    }
    _write_json(folder / "metrics.json", record)
    return record


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, allow_nan=False, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _read_record(folder: Path) -> Optional[dict[str, Any]]:
    try:
        data = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "inversion.cli" else None


def _publish(staging: Path, final: Path) -> None:
    """Move a finished photo folder into place, replacing an earlier one of ours."""
    if final.exists():
        if final.is_dir() and (_read_record(final) is not None or not any(final.iterdir())):
            shutil.rmtree(final)
        else:
            raise OSError(f"{final} exists and was not written by this tool; it was left as it is")
    os.replace(staging, final)
