"""Command line: invert one photo or whole folders with the app's own functions (:mod:`inversion.session`).

``python -m inversion.cli photos/ --out results/ --methods e4e,w+ --preset fast --edit smile=2 --paste-back``

Per photo, ``OUT/<safe name>/`` receives ``aligned.png``, ``<method>.png`` and ``<method>_wplus.npy`` (codes
``(1, n_latent, 512)``), ``<method>_<edit>.png`` / ``_wplus.npy`` per edit, ``<method>[_<edit>]_pasted.png`` with
``--paste-back``, and ``metrics.json`` (settings, metrics per method, warnings), written last: a folder with a
``metrics.json`` is complete. ``OUT/metrics.csv`` (one row per photo and method) and ``OUT/summary.json`` cover the
batch. A rerun skips photos already done with the same settings and source file.

Exit status: 0 when at least one photo is done (now or by an earlier run), 1 when none, 2 for bad arguments,
130 when stopped with Ctrl-C (what was finished is kept). ``main(argv, model_sets=...)`` lets tests inject models.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, TextIO

import numpy as np
import torch

from editing import EDITS, EditError, get_edit
from inversion import align as alignment
from inversion import checkpoints
from inversion import session as S
from inversion.checkpoints import CheckpointError
from inversion.device import default_device
from inversion.methods import METHODS, PRESETS
from inversion.models import FAMILIES, ModelSet
from inversion.result import Cancelled

PROG = "python -m inversion.cli"
FORMAT = 1
"""Version of the output layout; part of the settings a rerun compares."""
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"})
DEFAULT_METHODS = "e4e,psp"
METRIC_KEYS = ("mse", "psnr", "lpips", "identity", "code_spread", "seconds")
CSV_COLUMNS = ("photo", "source", "family", "method", "label", "preset", *METRIC_KEYS)
PARTIAL = ".partial"
STATUSES = ("done", "already done", "skipped", "failed", "not reached")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}

Locator = Callable[[str], Path]
ModelSetFactory = Callable[[torch.device, Locator], Mapping[str, ModelSet]]
"""``factory(device, locate) -> {family: ModelSet}`` (first = preferred for ``--family auto``)."""


class UsageError(ValueError):
    """A bad command-line argument found after parsing (exit status 2)."""


class FatalError(RuntimeError):
    """Something that stops the whole batch (missing generator weights, no landmark model)."""


def default_model_sets(device: torch.device, locate: Locator) -> dict[str, ModelSet]:
    """Every family of :data:`inversion.models.FAMILIES` (FFHQ first), lazily loaded on ``device``."""
    return {name: ModelSet(name, device=device, locate=locate) for name in FAMILIES}


# ------------------------------------------------------------------------------------------ arguments

@dataclass(frozen=True)
class EditArg:
    """One ``--edit NAME[:COMPONENT][=OFFSET]``; ``offset`` None = the edit's default."""

    name: str
    component: Optional[int] = None
    offset: Optional[float] = None

    def key(self, offset: float) -> str:
        """File-name part, e.g. ``age+3``, ``sefa0-5``."""
        return f"{self.name}{'' if self.component is None else self.component}{offset:+g}"


def _edit_arg(text: str) -> EditArg:
    head, eq, value = text.partition("=")
    name, colon, comp = head.strip().partition(":")
    try:
        spec = get_edit(name)
    except EditError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    component = None
    if colon:
        if not spec.is_explorer:
            raise argparse.ArgumentTypeError(f"the edit {name!r} has no component to choose")
        if not comp.isdigit():
            raise argparse.ArgumentTypeError(f"component must be a whole number >= 0, got {comp!r}")
        component = int(comp)
    elif spec.is_explorer:
        component = 0
    offset = None
    if eq:
        try:
            offset = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"the strength in {text!r} is not a number") from None
        if not math.isfinite(offset):
            raise argparse.ArgumentTypeError(f"the strength in {text!r} is not a finite number")
    return EditArg(name, component, offset)


def _methods_arg(text: str) -> list[str]:
    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    try:
        methods = S.order_methods(names)
    except S.SessionError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    if not methods:
        raise argparse.ArgumentTypeError("name at least one method")
    return methods


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``--help`` shows the method, preset and edit names)."""
    edits = ", ".join(e.name for e in EDITS)
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Invert face photos into StyleGAN2 codes with the app's methods; optionally edit and paste back.",
        epilog=f"methods: {', '.join(S.METHOD_ORDER)}; presets (w, w+, pti): {', '.join(PRESETS)}\n"
               f"edits: {edits}\n\n"
               f"example: {PROG} photos/ --out results/ --methods e4e,w+ --preset fast --edit smile=2 --paste-back\n"
               "exit status: 0 = at least one photo done, 1 = none, 2 = bad arguments, 130 = stopped (Ctrl-C)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="photo files and/or folders of photos")
    p.add_argument("-o", "--out", required=True, type=Path, metavar="DIR", help="output folder (created)")
    p.add_argument("-r", "--recursive", action="store_true", help="also look in sub-folders of INPUT folders")
    p.add_argument("--methods", type=_methods_arg, default=_methods_arg(DEFAULT_METHODS), metavar="LIST",
                   help=f"comma-separated methods (default {DEFAULT_METHODS}); run fast ones first")
    p.add_argument("--preset", action="append", default=[], metavar="[METHOD=]PRESET",
                   help="preset for w, w+ and pti, or for one method (repeatable); default fast on CPU, "
                        "balanced on GPU")
    p.add_argument("--family", default="auto", metavar="NAME",
                   help=f"model family: auto (default: FFHQ when its weights are here, else the built-in "
                        f"model), {', '.join(FAMILIES)}")
    p.add_argument("--edit", action="append", default=[], type=_edit_arg, metavar="NAME[:COMPONENT][=OFFSET]",
                   help="apply an edit to every result (repeatable; each edit gives its own images)")
    p.add_argument("--paste-back", action="store_true", help="warp each result (and each edit) back into the photo")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0, help="seed of the optimization methods (default 0)")
    p.add_argument("--face", type=int, default=0, metavar="INDEX",
                   help="which detected face to use, 0 = the most confident (default)")
    p.add_argument("--no-resume", action="store_true", help="redo photos that an earlier run finished")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output (skips and errors still show)")
    return p


def _presets(args_presets: Sequence[str], methods: Sequence[str], default: str) -> dict[str, str]:
    """Resolved preset per method: per-method ``METHOD=PRESET`` over a plain ``PRESET`` over ``default``."""
    common, per_method = None, {}
    for text in args_presets:
        method, eq, preset = text.rpartition("=")
        preset = preset.strip().lower()
        if preset not in PRESETS:
            raise UsageError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        if eq:
            method = method.strip().lower()
            if method not in METHODS or preset not in METHODS[method].presets:
                raise UsageError(f"--preset {text}: only w, w+ and pti have presets")
            per_method[method] = preset
        else:
            common = preset
    out = {}
    for m in methods:
        choices = METHODS[m].presets
        out[m] = per_method.get(m) or (common if common in choices else None) or (
            default if default in choices else choices[0])
    return out


# ------------------------------------------------------------------------------------------ inputs and names

def _display(path: Any) -> str:
    """A one-line, printable form of a path (control characters and undecodable bytes escaped)."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def collect_inputs(inputs: Sequence[str], *, recursive: bool, exclude: Path) -> tuple[list[Path], list[str]]:
    """Files to try (sorted, unique) and one-line reasons for inputs that do not exist.

    Named files are tried whatever their extension; in folders, files with an image extension
    (:data:`IMAGE_SUFFIXES`), hidden files and anything under ``exclude`` (the output folder) are left out.
    """
    files: list[Path] = []
    problems: list[str] = []
    exclude = exclude.resolve()
    for text in inputs:
        path = Path(text)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            for f in found:
                rel = f.relative_to(path).parts
                if (f.suffix.lower() in IMAGE_SUFFIXES and not any(part.startswith(".") for part in rel)
                        and f.is_file() and not _within(f, exclude)):
                    files.append(f)
        else:
            problems.append(f"skip {_display(text)}: no such file or folder")
    unique: dict[Path, Path] = {}
    for f in sorted(files, key=lambda p: str(p)):
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), problems


def safe_stem(name: str, *, max_len: int = 64) -> str:
    """A folder name from a file stem: ASCII letters, digits, ``_`` and ``-`` only, never empty or special."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")[:max_len].strip("_-")
    if not text:
        return "photo"
    return text + "_" if text.lower() in _RESERVED else text


def folder_names(files: Sequence[Path]) -> list[str]:
    """One distinct :func:`safe_stem` per file; repeats get a short hash of their path."""
    names, seen = [], set()
    for f in files:
        name = safe_stem(f.stem)
        if name.lower() in seen:
            digest = hashlib.sha1(str(f).encode("utf-8", "surrogateescape")).hexdigest()
            name = f"{name[:55]}-{digest[:8]}"
        seen.add(name.lower())
        names.append(name)
    return names


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ progress

class Reporter:
    """Progress and messages on ``err`` (one bar line redrawn on a TTY, plain lines otherwise), results on ``out``."""

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool = False, every_s: float = 10.0) -> None:
        self.out, self.err, self.quiet, self.every_s = out, err, quiet, every_s
        self.tty = bool(getattr(err, "isatty", lambda: False)())
        self._bar = False
        self._last_line = 0.0
        self._last_key: Optional[str] = None
        self.total = 0
        self.index = 0
        self.label = ""
        self.started = time.monotonic()

    def _clear(self) -> None:
        if self._bar:
            self.err.write("\r\033[K")
            self._bar = False

    def line(self, text: str, *, stream: Optional[TextIO] = None) -> None:
        """A message on its own line (skips, warnings, errors); shown even when quiet."""
        self._clear()
        stream = stream or self.err
        try:
            print(text, file=stream, flush=True)
        except UnicodeEncodeError:  # a console that cannot show some file name
            print(text.encode("ascii", "backslashreplace").decode("ascii"), file=stream, flush=True)

    def info(self, text: str, *, stream: Optional[TextIO] = None) -> None:
        if not self.quiet:
            self.line(text, stream=stream)

    def photo(self, index: int, total: int, label: str) -> None:
        self.index, self.total, self.label, self._last_key = index, total, label, None
        self.progress(0.0, "")

    def progress(self, fraction: float, what: str, *, key: Optional[str] = None) -> None:
        """Bar at photo ``index`` + ``fraction`` of ``total``; ``what`` = the current step. Without a TTY, a
        plain line when the activity ``key`` changes, else at most one per ``every_s`` seconds."""
        if self.quiet:
            return
        if not self.tty:
            now = time.monotonic()
            key = what if key is None else key
            if what and (key != self._last_key or now - self._last_line >= self.every_s):
                self._last_line, self._last_key = now, key
                self.line(f"[{self.index + 1}/{self.total}] {self.label}: {what}")
            return
        share = (self.index + min(max(fraction, 0.0), 1.0)) / max(self.total, 1)
        width = 20
        filled = int(round(share * width))
        elapsed = int(time.monotonic() - self.started)
        text = (f"[{'#' * filled}{'-' * (width - filled)}] {self.index + 1}/{self.total} {self.label}"
                f"{' | ' + what if what else ''} | {elapsed // 60}:{elapsed % 60:02d}")
        columns = shutil.get_terminal_size((100, 20)).columns
        text = text[:max(columns - 1, 10)]
        encoding = getattr(self.err, "encoding", None) or "utf-8"
        self.err.write("\r\033[K" + text.encode(encoding, "replace").decode(encoding))
        self.err.flush()
        self._bar = True

    def close(self) -> None:
        self._clear()


# ------------------------------------------------------------------------------------------ models

@dataclass
class Loaded:
    """Model pieces loaded once for the batch, and which methods can run."""

    methods: list[str]
    dropped: dict[str, str] = field(default_factory=dict)  # method -> why it cannot run
    notes: list[str] = field(default_factory=list)


def load_models(models: ModelSet, methods: Sequence[str]) -> Loaded:
    """Load the generator and every piece ``methods`` use, once (downloads happen here).

    A missing generator raises :class:`FatalError`; a missing encoder drops its method (with a note); missing
    metric models leave that metric empty.
    """
    try:
        alignment.predictor_file()
        models.generator()
        models.latent_avg()
    except (CheckpointError, alignment.PredictorNotFoundError) as err:
        raise FatalError(str(err)) from None
    usable, dropped, notes = [], {}, []
    wants_e4e = any(m in ("w", "w+", "pti") for m in methods)
    for method in methods:
        if method in ("e4e", "psp"):
            try:
                models.encoder(method)
            except CheckpointError as err:
                dropped[method] = f"{METHODS[method].label} cannot run: {err}"
                notes.append(dropped[method])
                continue
        usable.append(method)
    if wants_e4e and "e4e" not in methods:
        try:
            models.encoder("e4e")
        except CheckpointError:
            notes.append("the e4e encoder is missing: optimization starts from the average code")
    optional = [(models.lpips, "LPIPS")]
    if models.family.name == "ffhq":
        optional.append((models.identity, "identity similarity"))
    for load, what in optional:
        try:
            load()
        except (CheckpointError, OSError) as err:
            notes.append(f"{what} is left empty: {err}")
    return Loaded(usable, dropped, notes)


def _locate_with_progress(reporter: Reporter) -> Locator:
    def locate(name: str) -> Path:
        def progress(done: int, total: Optional[int]) -> None:
            share = done / total if total else 0.0
            reporter.progress(share, f"downloading {name} {done / 1e6:,.0f} MB", key=name)
        return checkpoints.fetch(name, progress=progress)
    return locate


def _present_locally(model_sets: Mapping[str, ModelSet]) -> S.FilePresent:
    names = [n for m in model_sets.values() for n in m.family.generator_files if n in checkpoints.REGISTRY]
    return S.file_present_from(checkpoints.status(list(dict.fromkeys(names))) if names else {})


# ------------------------------------------------------------------------------------------ one photo

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


def invert_photo(models: ModelSet, path: Path, folder: Path, *, settings: Mapping[str, Any], source_sha256: str,
                 edits: Sequence[EditArg], ensure_models: Callable[[], Loaded], on_progress: S.ProgressFn,
                 on_stage: Callable[[str], None], cancel: threading.Event) -> dict[str, Any]:
    """Open, align, invert, edit and paste back one photo with :mod:`inversion.session`; write its files into
    ``folder`` (metrics.json last) and return the metrics.json record.

    ``ensure_models()`` loads the models on the first photo that gets past alignment (and says which methods can
    run); ``on_stage(text)`` reports steps without a step count (edits). Methods that cannot run are listed under
    ``skipped_methods``; the settings recorded are the ones asked for, so a rerun does not redo the photo.
    Raises :class:`PhotoSkipped` (plain reason), :class:`FatalError`, or ``Cancelled``.
    """
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
    _check_cancel(cancel)
    loaded = ensure_models()
    image = S.model_input(state, models.family.size)
    skipped = dict(loaded.dropped)
    for item in S.run_inversions(models, image, loaded.methods, presets=settings["presets"], seed=settings["seed"],
                                 on_progress=on_progress, cancel=cancel, file_present=S.file_present_from({})):
        if isinstance(item, S.Skipped):
            skipped[item.method] = item.reason
        else:
            state = S.add_result(state, item)
    if not state.results:
        raise PhotoSkipped("no method could run (" + "; ".join(skipped.values()) + ")")
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
                           "wplus_shape": list(r.inversion.w_plus.shape), "start": r.inversion.info.get("start")}
        if r.inversion.generator is not None:
            results[method]["note"] = "its codes reproduce the photo only with the PTI-tuned generator (not saved)"
    if settings["paste_back"]:
        for method in state.results:
            _png(folder, f"{S.safe_name(method)}_pasted", S.paste_result(state, method).pasted, files)
    for edit, wanted in zip(edits, settings["edits"]):
        _check_cancel(cancel)
        on_stage(f"edit {wanted['key']}")
        try:
            edited = S.edit_results(models, state, edit.name, wanted["offset"], component=edit.component, steps=1)
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
        "tool": "inversion.cli", "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": dict(settings),
        "source": {"path": _display(path), "name": _display(path.name), "sha256": source_sha256},
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


# ------------------------------------------------------------------------------------------ batch outputs

def _csv_rows(name: str, record: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for method, entry in record.get("methods", {}).items():
        m = entry.get("metrics", {})
        rows.append([name, record.get("source", {}).get("path", ""), record.get("model", {}).get("family", ""),
                     method, entry.get("label", ""), entry.get("preset", ""),
                     *("" if m.get(k) is None else repr(float(m[k])) for k in METRIC_KEYS)])
    return rows


def write_batch_files(out: Path, entries: Sequence[Mapping[str, Any]], records: Mapping[str, Mapping[str, Any]],
                      summary: Mapping[str, Any]) -> None:
    """``metrics.csv`` (one row per finished photo and method) and ``summary.json``, replaced atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        if entry["folder"] in records:
            writer.writerows(_csv_rows(entry["folder"], records[entry["folder"]]))
    tmp = out / "metrics.csv.tmp"
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    os.replace(tmp, out / "metrics.csv")
    _write_json(out / "summary.json", {**summary, "photos": list(entries)})


# ------------------------------------------------------------------------------------------ main

def _device(choice: str) -> torch.device:
    if choice == "auto":
        return default_device()
    if choice == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for, but PyTorch sees no CUDA GPU here")
    return torch.device(choice)


def _resolve_edits(edits: Sequence[EditArg], models: ModelSet) -> list[dict[str, Any]]:
    """Edits checked against the family and the registry's ranges (without loading any model)."""
    out = []
    for e in edits:
        spec = get_edit(e.name)
        if spec.generators is not None and models.family.edit_kind not in spec.generators:
            raise UsageError(f"the edit {e.name!r} is not made for the {models.family.label} model; for it use "
                             + ", ".join(name for _, name in S.edit_choices(models)))
        lo, hi = spec.strength_range
        offset = spec.default_strength if e.offset is None else e.offset
        if not lo <= offset <= hi:
            raise UsageError(f"the strength of {e.name!r} must be between {lo:g} and {hi:g}")
        out.append({"name": e.name, "component": e.component, "offset": float(offset), "key": e.key(offset)})
    keys = [r["key"] for r in out]
    if len(set(keys)) != len(keys):
        raise UsageError("the same edit is asked for twice")
    return out


def main(argv: Optional[Sequence[str]] = None, *, model_sets: Optional[ModelSetFactory] = None,
         cancel: Optional[threading.Event] = None, stdout: Optional[TextIO] = None,
         stderr: Optional[TextIO] = None) -> int:
    """Run the command line; returns the exit status. ``model_sets`` (tests) replaces :func:`default_model_sets`;
    ``cancel`` stops the batch cleanly when set (Ctrl-C sets it; a second Ctrl-C stops at once)."""
    out_stream, err_stream = stdout or sys.stdout, stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out_stream), contextlib.redirect_stderr(err_stream):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return int(exc.code or 0)
    cancel = cancel or threading.Event()
    reporter = Reporter(out_stream, err_stream, quiet=args.quiet)
    handled, previous = False, None
    if threading.current_thread() is threading.main_thread():
        def on_sigint(signum, frame):  # noqa: ARG001 - signal handler signature
            if cancel.is_set():
                raise KeyboardInterrupt
            cancel.set()
            reporter.line("stopping after the current step (Ctrl-C again to stop at once) ...")
        previous, handled = signal.signal(signal.SIGINT, on_sigint), True
    try:
        return _run(args, model_sets or default_model_sets, cancel, reporter)
    except UsageError as err:
        reporter.close()
        parser.print_usage(err_stream)
        print(f"{PROG}: error: {err}", file=err_stream)
        return 2
    finally:
        reporter.close()
        if handled:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _run(args: argparse.Namespace, factory: ModelSetFactory, cancel: threading.Event, reporter: Reporter) -> int:
    if args.face < 0:
        raise UsageError("--face must be 0 or more")
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {_display(out)} is a file, not a folder")
    device = _device(args.device)
    sets = dict(factory(device, _locate_with_progress(reporter)))
    family = args.family
    if family == "auto":
        family = S.default_family(sets, _present_locally(sets))
    if family not in sets:
        raise UsageError(f"unknown model family {family!r}; choose auto or one of {', '.join(sets)}")
    models = sets[family]
    presets = _presets(args.preset, args.methods, "balanced" if device.type == "cuda" else "fast")
    edits = _resolve_edits(args.edit, models)
    settings = {"format": FORMAT, "family": models.family.name, "methods": list(args.methods), "presets": presets,
                "seed": int(args.seed), "face": int(args.face), "edits": edits, "paste_back": bool(args.paste_back)}

    files, problems = collect_inputs(args.inputs, recursive=args.recursive, exclude=out)
    for line in problems:
        reporter.line(line)
    if not files:
        reporter.line("nothing to do: no image files found in " + ", ".join(_display(i) for i in args.inputs))
        return 1
    out.mkdir(parents=True, exist_ok=True)
    entries = [{"source": _display(f), "folder": n, "status": "not reached", "reason": ""}
               for f, n in zip(files, folder_names(files))]
    records: dict[str, dict[str, Any]] = {}
    started = time.monotonic()
    summary = {"tool": "inversion.cli", "format": FORMAT, "settings": settings, "device": str(device),
               "model": models.family.label, "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    outcome: dict[str, Any] = {"interrupted": False, "error": None}
    loaded: list[Loaded] = []

    def counts() -> dict[str, int]:
        return {s: sum(e["status"] == s for e in entries) for s in STATUSES}

    def flush() -> None:
        write_batch_files(out, entries, records, {**summary, **outcome, "counts": {**counts(), "missing": len(problems)},
                                                  "seconds": round(time.monotonic() - started, 3)})

    def ensure_models() -> Loaded:
        if not loaded:
            reporter.progress(0.0, "loading models")
            ready = load_models(models, settings["methods"])
            for note in ready.notes:
                reporter.line(f"note: {_display(note)}")
            if not ready.methods:
                raise FatalError("none of the chosen methods can run")
            for e in args.edit:  # component ranges depend on the loaded generator
                top = S.edit_control(e.name, models).component_max
                if e.component is not None and top is not None and e.component > top:
                    raise UsageError(f"the component of {e.name!r} must be 0..{top} for this model")
            loaded.append(ready)
        return loaded[0]

    def on_progress(method: str, step: int, total: int, metrics: Mapping[str, float]) -> None:
        methods = loaded[0].methods if loaded else settings["methods"]
        done = methods.index(method) if method in methods else 0
        loss = metrics.get("loss") if metrics else None
        extra = f" loss {loss:.4f}" if isinstance(loss, (int, float)) and math.isfinite(loss) else ""
        reporter.progress((done + (step / total if total else 0.0)) / len(methods),
                          f"{METHODS[method].label} {step}/{total}{extra}", key=method)

    reporter.info(f"{len(files)} file(s); {models.family.label}; methods "
                  + ", ".join(m if METHODS[m].presets == ("default",) else f"{m} ({p})" for m, p in presets.items())
                  + f"; device {device}; output {_display(out)}")
    try:
        for i, (path, entry) in enumerate(zip(files, entries)):
            _check_cancel(cancel)
            reporter.photo(i, len(files), _display(path.name))
            final = out / entry["folder"]
            try:
                sha = _sha256(path)
            except OSError as err:
                entry.update(status="skipped", reason=f"cannot read the file ({err.strerror or err})")
                reporter.line(f"skip {_display(path)}: {entry['reason']}")
                continue
            record = None if args.no_resume else _read_record(final)
            if record is not None and record.get("settings") == settings and \
                    record.get("source", {}).get("sha256") == sha:
                entry.update(status="already done")
                records[entry["folder"]] = record
                reporter.info(f"skip {_display(path)}: already done")
                continue
            staging = out / PARTIAL / entry["folder"]
            shutil.rmtree(staging, ignore_errors=True)
            try:
                record = invert_photo(models, path, staging, settings=settings, source_sha256=sha, edits=args.edit,
                                      ensure_models=ensure_models, on_progress=on_progress,
                                      on_stage=lambda text: reporter.progress(1.0, text), cancel=cancel)
                _publish(staging, final)
            except PhotoSkipped as err:
                entry.update(status="skipped", reason=str(err))
                reporter.line(f"skip {_display(path)}: {_display(err)}")
                continue
            except (Cancelled, KeyboardInterrupt, FatalError, UsageError):
                raise
            except Exception as err:  # noqa: BLE001 - one bad photo must not end the batch
                entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
                reporter.line(f"skip {_display(path)}: unexpected error ({type(err).__name__}: {_display(err)})")
                continue
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            entry.update(status="done")
            records[entry["folder"]] = record
            for note in record["warnings"]:
                reporter.line(f"note {_display(path)}: {_display(note)}")
            took = sum(float(m["metrics"]["seconds"] or 0) for m in record["methods"].values())
            reporter.info(f"done {_display(path)} -> {_display(final)} ({took:.1f} s)", stream=reporter.out)
            flush()
    except (Cancelled, KeyboardInterrupt):
        outcome["interrupted"] = True
        reporter.line("stopped: finished photos are kept; run the same command again to go on")
    except FatalError as err:
        outcome["error"] = str(err)
        reporter.line(f"error: {_display(err)}")
    finally:
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
    flush()
    tally = {**counts(), "missing": len(problems)}
    reporter.line(", ".join(f"{n} {s}" for s, n in tally.items() if n) + f" -> {_display(out)}", stream=reporter.out)
    if outcome["interrupted"]:
        return 130
    return 0 if records else 1


if __name__ == "__main__":  # pragma: no cover - exercised through main() in the tests
    sys.exit(main())
