"""Stop flags that reach a run in this process and in another one (Hugging Face ZeroGPU runs ``spaces.GPU``
functions in a separate worker process, so a ``threading.Event`` made there cannot be set from the Stop button).

A :class:`StopToken` is a file path in a folder owned by one app (:class:`StopBoard`): setting it creates the file,
:meth:`StopToken.is_set` looks for it. It pickles as its path, so the run id stored in the visitor's state and the
token the worker process polls between steps name the same flag. It has ``is_set()`` like ``threading.Event``, so
the methods' ``cancel=`` argument (:func:`inversion.result.check_cancel`) takes either.

Cost: one ``stat`` per optimization step (microseconds, against a step of 10 ms on a GPU to seconds on a CPU).
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

RUN_ID = re.compile(r"^[0-9a-f]{16}$")
"""Run ids are 16 hex digits from :func:`secrets.token_hex`; anything else is never turned into a path."""


@dataclass(frozen=True)
class StopToken:
    """The stop flag of one run: a file path; set = the file exists."""

    path: str

    def is_set(self) -> bool:
        """Whether Stop was pressed for this run."""
        return os.path.exists(self.path)

    def set(self) -> None:
        """Ask the run to stop at its next step (works from any process that sees the folder)."""
        try:
            Path(self.path).touch()
        except OSError:  # the board was closed: the run is gone too
            pass

    def discard(self) -> None:
        """Forget the flag once the run is over."""
        try:
            os.unlink(self.path)
        except OSError:
            pass


class StopBoard:
    """The stop flags of one app: a private temporary folder (``folder`` to choose it), one file per stopped run."""

    def __init__(self, folder: Optional[Path] = None) -> None:
        if folder is None:
            folder = Path(tempfile.mkdtemp(prefix="stylegan2-stop-"))
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def new_run(self) -> tuple[str, StopToken]:
        """A fresh run id and its (unset) token."""
        run_id = secrets.token_hex(8)
        return run_id, self.token(run_id)

    def token(self, run_id: str) -> StopToken:
        """The token of ``run_id``; ValueError for anything that is not a run id."""
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        return StopToken(str(self.folder / f"{run_id}.stop"))

    def stop(self, run_id: Optional[str]) -> bool:
        """Set the flag of ``run_id`` (a visitor's last run); False when there is no such id."""
        if not run_id:
            return False
        try:
            token = self.token(run_id)
        except ValueError:
            return False
        token.set()
        return True

    def sweep(self, *, max_age_s: float = 24 * 3600, now: Optional[float] = None) -> int:
        """Remove flags older than ``max_age_s`` (runs stopped long ago); returns how many were removed."""
        now = time.time() if now is None else now
        removed = 0
        for path in self.folder.glob("*.stop"):
            try:
                if now - path.stat().st_mtime > max_age_s:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
        return removed

    def close(self) -> None:
        """Delete the folder (when the app shuts down)."""
        shutil.rmtree(self.folder, ignore_errors=True)


__all__ = ["RUN_ID", "StopBoard", "StopToken"]
