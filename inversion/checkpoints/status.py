"""Present / missing / downloading / failed, per registry file, and the app's background downloader."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence, Union

from inversion.checkpoints.download import _short, fetch
from inversion.checkpoints.locate import find_local, hub_cache_dir
from inversion.checkpoints.registry import REGISTRY, CheckpointError, CheckpointSpec, get_spec
from inversion.checkpoints.verify import _remembered_sha256
from inversion.result import Cancelled

FileState = Literal["present", "missing", "downloading", "failed"]


@dataclass(frozen=True)
class FileStatus:
    """State of one file for the UI."""

    name: str
    state: FileState
    message: str = ""
    path: Optional[Path] = None
    bytes_done: int = 0
    bytes_total: Optional[int] = None


def _size_text(size: Optional[int]) -> str:
    return f"{size / 1e6:,.0f} MB" if size else "size unknown"


def file_status(name: Union[str, CheckpointSpec], *, cache_dir: Union[str, Path, None] = None) -> FileStatus:
    """Present or missing, from local files only (no network, no hashing)."""
    spec = get_spec(name)
    cache = hub_cache_dir(cache_dir)
    path = find_local(spec, cache_dir=cache)
    if path is None:
        return FileStatus(spec.name, "missing", f"not downloaded yet ({_size_text(spec.size)} from {spec.repo_id})",
                          bytes_total=spec.size)
    size = path.stat().st_size
    verified = _remembered_sha256(path, cache) is not None
    return FileStatus(spec.name, "present", f"{path} ({'verified' if verified else 'not verified yet'})", path,
                      size, size)


def status(names: Optional[Sequence[Union[str, CheckpointSpec]]] = None, *,
           cache_dir: Union[str, Path, None] = None) -> dict[str, FileStatus]:
    """:func:`file_status` for ``names`` (default: the whole registry)."""
    specs = [get_spec(n) for n in (names if names is not None else list(REGISTRY))]
    return {s.name: file_status(s, cache_dir=cache_dir) for s in specs}


class BackgroundDownloader:
    """Fetches a list of files one after another in a daemon thread; the app owns the object and polls ``status()``.

    >>> downloader = BackgroundDownloader(["e4e_ffhq", "vgg16"]).start()
    >>> downloader.status()["e4e_ffhq"].state   # "present" / "missing" / "downloading" / "failed"
    """

    def __init__(self, names: Optional[Sequence[Union[str, CheckpointSpec]]] = None, *,
                 cache_dir: Union[str, Path, None] = None, offline: Optional[bool] = None,
                 endpoint: Optional[str] = None) -> None:
        self._specs = [get_spec(n) for n in (names if names is not None else list(REGISTRY))]
        self._cache_dir, self._offline, self._endpoint = cache_dir, offline, endpoint
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._states = status(self._specs, cache_dir=cache_dir)
        self._errors: dict[str, CheckpointError] = {}

    def start(self) -> "BackgroundDownloader":
        """Start the thread (once); returns ``self``."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="weights-download", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the thread to stop; a running download is abandoned at its next chunk (nothing partial is kept)."""
        self._stop.set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait for the thread; ``True`` when it has finished."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return thread is not None and not thread.is_alive()

    def status(self) -> dict[str, FileStatus]:
        """A snapshot of every file's state."""
        with self._lock:
            return dict(self._states)

    def path(self, name: str) -> Optional[Path]:
        """Local path once the file is present."""
        with self._lock:
            st = self._states.get(name)
        return st.path if st is not None and st.state == "present" else None

    def error(self, name: str) -> Optional[CheckpointError]:
        """The error that made ``name`` fail, if any."""
        with self._lock:
            return self._errors.get(name)

    def _set(self, value: FileStatus) -> None:
        with self._lock:
            self._states[value.name] = value

    def _run(self) -> None:
        for spec in self._specs:
            if self._stop.is_set():
                return

            def on_bytes(done: int, total: Optional[int], spec: CheckpointSpec = spec) -> None:
                if self._stop.is_set():
                    raise Cancelled("weight download stopped")
                total = total or spec.size
                self._set(FileStatus(spec.name, "downloading", f"downloading from {spec.repo_id}", None, done, total))

            self._set(FileStatus(spec.name, "downloading", "checking", None, 0, spec.size))
            try:
                path = fetch(spec, progress=on_bytes, offline=self._offline, cache_dir=self._cache_dir,
                             endpoint=self._endpoint)
            except Cancelled:
                self._set(FileStatus(spec.name, "missing", "download stopped", bytes_total=spec.size))
                return
            except CheckpointError as e:
                with self._lock:
                    self._errors[spec.name] = e
                self._set(FileStatus(spec.name, "failed", str(e), bytes_total=spec.size))
                continue
            except Exception as e:  # keep the thread alive for the next files; the UI shows the reason
                self._set(FileStatus(spec.name, "failed", f"unexpected error: {_short(e)}", bytes_total=spec.size))
                continue
            size = path.stat().st_size
            self._set(FileStatus(spec.name, "present", f"{path} (verified)", path, size, size))
