"""Progress and messages on the terminal."""
from __future__ import annotations

import shutil
import time
from typing import Optional, TextIO


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
