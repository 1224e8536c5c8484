"""Paste a result back into the photo, and write the visitor's files (PNG, .npy, settings.json, zip)."""
from __future__ import annotations

import json
import re
import shutil
import time
import zipfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from inversion import align as alignment
from inversion.methods import METHODS
from inversion.session.running import _fmt
from inversion.session.state import IDENTITY_MODEL, SessionError, VisitorState


def paste_result(state: VisitorState, method: Optional[str] = None, *, feather: float = 0.1) -> VisitorState:
    """Warp ``method``'s edited face (its reconstruction when nothing was edited) back into the photo."""
    if state.photo is None or state.aligned is None:
        raise SessionError("Align a photo first (step 1).")
    if not state.results:
        raise SessionError("Invert the photo first (step 2).")
    method = method or next(iter(state.results))
    if method not in state.results:
        raise SessionError(f"{METHODS[method].label if method in METHODS else method} has no result yet; "
                           f"choose one of: {', '.join(r.label for r in state.results.values())}.")
    face = state.edit.strips[method].edited if state.edit is not None else state.results[method].reconstruction
    pasted = alignment.paste_back(state.photo.image, face, state.aligned, feather=feather)
    return replace(state, pasted=pasted, pasted_method=method)


# --------------------------------------------------------------------------------------------- export


def safe_name(method: str) -> str:
    """A file-name-safe form of a method key (``w+`` -> ``wplus``)."""
    return re.sub(r"[^a-z0-9_-]", "_", method.lower().replace("+", "plus"))


def export_files(state: VisitorState, folder: Path, *, app_name: str = "stylegan2-face-inversion") -> list[Path]:
    """Write the visitor's images (PNG), codes (.npy) and ``settings.json`` into ``folder`` plus a ``.zip`` of
    them all (the last path returned). File names are fixed by the app, never taken from uploads."""
    if state.aligned is None or not state.results:
        raise SessionError("Nothing to download yet: align and invert a photo first.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def png(name: str, image: Image.Image) -> None:
        path = folder / f"{name}.png"
        image.save(path, format="PNG")
        files.append(path)

    def npy(name: str, codes: torch.Tensor) -> None:
        path = folder / f"{name}.npy"
        np.save(path, codes.detach().cpu().float().numpy(), allow_pickle=False)
        files.append(path)

    png("aligned", state.aligned.image)
    methods: dict[str, Any] = {}
    for method, r in state.results.items():
        key = safe_name(method)
        png(f"{key}_reconstruction", r.reconstruction)
        npy(f"{key}_wplus", r.inversion.w_plus)
        entry: dict[str, Any] = {"label": r.label, "preset": r.preset,
                                 "metrics": {k: _fmt(v, 6) for k, v in r.metrics.items()},
                                 "wplus_file": f"{key}_wplus.npy", "wplus_shape": list(r.inversion.w_plus.shape),
                                 "recipe": r.inversion.info.get("recipe", {})}
        if r.inversion.info.get("warning"):
            entry["warning"] = r.inversion.info["warning"]
        if r.inversion.generator is not None or r.tuned is not None:
            entry["note"] = "these codes reproduce the photo only with the PTI-tuned generator (not exported)"
        if state.edit is not None and method in state.edit.strips:
            strip = state.edit.strips[method]
            png(f"{key}_edited", strip.edited)
            npy(f"{key}_edited_wplus", strip.edited_codes)
        methods[method] = entry
    if state.pasted is not None:
        png("pasted_back", state.pasted)
    first = next(iter(state.results.values()))
    settings = {
        "app": app_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_family": first.family,
        "generator_size": int(first.inversion.image.shape[-1]),
        "seed": state.seed,
        "face_index": state.face_index,
        "faces_found": len(state.photo.faces) if state.photo is not None else None,
        "aligned_size": state.aligned.output_size,
        "identity_model": IDENTITY_MODEL,
        "methods": methods,
        "edit": None if state.edit is None else {
            "name": state.edit.name, "offset": state.edit.offset, "component": state.edit.component,
            "strip_offsets": list(next(iter(state.edit.strips.values())).offsets) if state.edit.strips else []},
        "pasted_back_method": state.pasted_method,
    }
    path = folder / "settings.json"
    path.write_text(json.dumps(settings, indent=2, allow_nan=False))
    files.append(path)
    archive = folder / "inversion_results.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for f in files:
            z.write(f, arcname=f.name)
    files.append(archive)
    return files


def sweep_old(root: Path, *, max_age_s: float = 3600.0, now: Optional[float] = None) -> int:
    """Delete sub-folders of ``root`` older than ``max_age_s`` (old exports); returns how many were removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    now = time.time() if now is None else now
    removed = 0
    for child in root.iterdir():
        try:
            if child.is_dir() and now - child.stat().st_mtime > max_age_s:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
        except OSError:
            continue
    return removed
