"""The photo loop of one process: this process's photos in groups, each photo skipped, resumed or done.

A group (``batch`` photos, 1 on the CPU) is opened and aligned photo by photo, goes through the methods that batch
(:func:`inversion.cli.batched.batched_results`), and then each photo is finished on its own
(:func:`inversion.cli.photo.finish_photo`) into a staging folder that is moved into place when complete. With
``batch == 1`` each photo takes the one-photo path (:func:`inversion.cli.photo.invert_photo`, which also serves the
all-faces mode). A photo-level failure marks only that photo (skipped / failed, one line); stopping, a missing
landmark model and bad arguments end the loop.
"""
from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from inversion import session as S
from inversion.cli.args import UsageError
from inversion.cli.batched import batched_results
from inversion.cli.inputs import _display, _sha256
from inversion.cli.loading import FatalError, Loaded
from inversion.cli.photo import (
    PhotoSkipped, _check_cancel, _publish, _read_record, finish_photo, invert_photo, prepare_photo,
)
from inversion.cli.report import Reporter
from inversion.methods import MethodRegistry
from inversion.models import ModelSet
from inversion.result import Cancelled


@dataclass
class PhotoLoop:
    """Everything the loop reads and the tables it fills (``entries`` statuses, ``records`` by folder)."""

    out: Path
    files: list[Path]
    entries: list[dict[str, Any]]
    records: dict[str, dict[str, Any]]
    shas: dict[Path, str]
    mine: list[int]  # indexes into files/entries of this process's photos
    settings: Mapping[str, Any]
    models: ModelSet
    registry: MethodRegistry
    reporter: Reporter
    cancel: threading.Event
    staging: Callable[[], Path]
    ensure_models: Callable[[], Loaded]
    flush: Callable[[], None]
    on_progress: S.ProgressFn
    edits: list[Any]
    batch: int = 1
    fuse: bool = False
    resume: bool = True

    def run(self) -> None:
        """Every photo of ``mine``, ``batch`` at a time."""
        for first in range(0, len(self.mine), self.batch):
            group = self._open_group(range(first, min(first + self.batch, len(self.mine))))
            extras: list[tuple[dict[str, Any], Any]] = [({}, None)] * len(group)
            if len(group) > 1:
                extras = self._batched(group)
            for (k, path, entry, sha, prepared), (done_before, cache) in zip(group, extras):
                _check_cancel(self.cancel)
                self.reporter.photo(k, len(self.mine), _display(path.name))
                self._write(path, entry, self._maker(path, sha, prepared, done_before, cache))

    # -- one group -------------------------------------------------------------------------------------------------
    def _open_group(self, ks: range) -> list[tuple[int, Path, dict[str, Any], str, Any]]:
        """``(index in mine, path, entry, sha256, prepared photo or None = the one-photo path)`` of the photos to do."""
        group = []
        for k in ks:
            path, entry = self.files[self.mine[k]], self.entries[self.mine[k]]
            _check_cancel(self.cancel)
            sha = self._pending(path, entry)
            if sha is None:
                continue
            prepared = None
            if self.batch > 1:
                prepared = self._attempt(path, entry, lambda path=path: prepare_photo(path, settings=self.settings))
                if prepared is None:
                    continue
            group.append((k, path, entry, sha, prepared))
        return group

    def _batched(self, group: list[tuple[int, Path, dict[str, Any], str, Any]]) -> list[tuple[dict[str, Any], Any]]:
        """The group's results of the methods that batch, and each photo's start cache."""
        loaded = self.ensure_models()
        self.reporter.photo(group[0][0], len(self.mine),
                            f"{len(group)} photos together ({group[0][0] + 1}-{group[-1][0] + 1})")
        size = self.models.family.size
        results, caches = batched_results(
            self.models, loaded.methods, [S.model_input(g[4].state, size) for g in group],
            presets=self.settings["presets"], seed=self.settings["seed"], cancel=self.cancel,
            on_progress=self.on_progress, registry=self.registry,
            on_note=lambda text: self.reporter.line(f"note: {_display(text)}"), fuse=self.fuse)
        return list(zip(results, caches))

    def _maker(self, path: Path, sha: str, prepared: Any, done_before: Mapping[str, Any],
               cache: Any) -> Callable[[Path], dict[str, Any]]:
        """The function that writes the photo's files into a staging folder and returns its record."""
        common = dict(settings=self.settings, edits=self.edits, on_progress=self.on_progress, registry=self.registry,
                      cancel=self.cancel, on_stage=lambda text: self.reporter.progress(1.0, text), fuse=self.fuse)
        if prepared is None:
            return lambda staging: invert_photo(self.models, path, staging, source_sha256=sha,
                                                ensure_models=self.ensure_models, **common)
        return lambda staging: finish_photo(self.models, prepared, staging, source_sha256=sha,
                                            loaded=self.ensure_models(), precomputed=done_before, starts=cache,
                                            **common)

    # -- one photo -------------------------------------------------------------------------------------------------
    def _attempt(self, path: Path, entry: dict[str, Any], work: Callable[[], Any]) -> Any:
        """``work()`` for one photo; a photo-level failure marks its entry (skipped/failed) and gives None."""
        try:
            return work()
        except PhotoSkipped as err:
            entry.update(status="skipped", reason=str(err))
            self.reporter.line(f"skip {_display(path)}: {_display(err)}")
        except (Cancelled, KeyboardInterrupt, FatalError, UsageError):
            raise
        except Exception as err:  # noqa: BLE001 - one bad photo must not end the batch
            entry.update(status="failed", reason=f"{type(err).__name__}: {err}")
            self.reporter.line(f"skip {_display(path)}: unexpected error ({type(err).__name__}: {_display(err)})")
        return None

    def _pending(self, path: Path, entry: dict[str, Any]) -> Optional[str]:
        """The photo's sha256 when it is still to do; None when it was done before or cannot be read."""
        try:
            sha = self.shas.get(path) or _sha256(path)
        except OSError as err:
            entry.update(status="skipped", reason=f"cannot read the file ({err.strerror or err})")
            self.reporter.line(f"skip {_display(path)}: {entry['reason']}")
            return None
        record = _read_record(self.out / entry["folder"]) if self.resume else None
        if record is not None and record.get("settings") == self.settings and \
                record.get("source", {}).get("sha256") == sha:
            entry.update(status="already done")
            self.records[entry["folder"]] = record
            self.reporter.info(f"skip {_display(path)}: already done")
            return None
        return sha

    def _write(self, path: Path, entry: dict[str, Any], make: Callable[[Path], dict[str, Any]]) -> None:
        """Make the photo's files in staging, move them into place, and record it as done."""
        final, staging = self.out / entry["folder"], self.staging() / entry["folder"]
        shutil.rmtree(staging, ignore_errors=True)

        def work() -> dict[str, Any]:
            made = make(staging)
            _publish(staging, final)
            return made
        try:
            record = self._attempt(path, entry, work)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if record is None:
            return
        entry.update(status="done")
        self.records[entry["folder"]] = record
        for note in record["warnings"]:
            self.reporter.line(f"note {_display(path)}: {_display(note)}")
        took = sum(float(m["metrics"]["seconds"] or 0) for m in record["methods"].values())
        self.reporter.info(f"done {_display(path)} -> {_display(final)} ({took:.1f} s)", stream=self.reporter.out)
        self.flush()
