"""``fetch(name)``: a verified local path of a registry file, downloading it from the Hub when needed.

Order: the hand-placed folder ``$STYLEGAN_EDIT_WEIGHTS_DIR``, a copy shipped by an installed package (dlib
landmarks), the Hugging Face cache, then the Hub (primary repo, then mirrors). Every file is checked against its
sha256 (:mod:`inversion.checkpoints.verify`). ``HF_HUB_DOWNLOAD_TIMEOUT`` is read by huggingface_hub itself
when it is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Union

from inversion.checkpoints.locate import (
    _cached_pointer, _endpoint, _etag_timeout, _override_file, hub_cache_dir, is_offline, local_package_file,
    override_dir,
)
from inversion.checkpoints.registry import (
    OVERRIDE_ENV, CheckpointError, CheckpointMissingError, CheckpointSpec, Source, get_spec,
)
from inversion.checkpoints.verify import _SHA256, _blob_sha256, _mismatch, _remove_cached
from inversion.result import Cancelled

DownloadProgress = Callable[[int, Optional[int]], None]
"""``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` when the server does not say."""


def _missing_message(spec: CheckpointSpec, reason: str) -> str:
    where = override_dir()
    place = f"into {where}" if where else f"into a folder and set {OVERRIDE_ENV} to that folder"
    return (
        f"weight file '{spec.filename}' ({spec.name}, Hub repo {spec.repo_id}) is missing: {reason}. "
        f"Download it by hand from {spec.sources[0].page_url} and put it as '{spec.override_name}' {place}."
    )


def _progress_sink(progress: Optional[DownloadProgress]) -> type:
    """A tqdm stand-in for ``hf_hub_download(tqdm_class=...)`` that forwards byte counts (and prints nothing)."""

    class _Sink:
        def __init__(self, *args: object, total: Optional[int] = None, initial: int = 0, **kwargs: object) -> None:
            self.n, self.total = initial, total
            self._emit()

        def _emit(self) -> None:
            if progress is not None:
                progress(self.n, self.total)

        def update(self, n: int = 1) -> None:
            self.n += n
            self._emit()

        def close(self) -> None:
            pass

        def __enter__(self) -> "_Sink":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    return _Sink


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:200]


def _hub_metadata(source: Source, endpoint: str, timeout: float):
    """One HEAD request, no retries (fast failure when the Hub is down)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(source.repo_id, source.filename, repo_type=source.repo_type, revision=source.revision,
                     endpoint=endpoint)
    return get_hf_file_metadata(url, timeout=timeout, endpoint=endpoint, retry_on_errors=False)


def _download(spec: CheckpointSpec, cache: Path, endpoint: str, progress: Optional[DownloadProgress]) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        DisabledRepoError, RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    not_found = (RepositoryNotFoundError, RevisionNotFoundError, RemoteEntryNotFoundError, DisabledRepoError)
    timeout = _etag_timeout()
    problems: list[str] = []
    integrity: list[str] = []
    for source in spec.sources:
        where = f"{source.repo_id}/{source.filename}"
        try:
            meta = _hub_metadata(source, endpoint, timeout)
        except Cancelled:
            raise
        except not_found:
            problems.append(f"{where}: not found")
            continue
        except Exception as e:  # network down, 5xx, proxy, odd server
            problems.append(f"{where}: {_short(e)}")
            continue
        remote_sha = meta.etag if meta.etag and _SHA256.fullmatch(meta.etag) else None
        if spec.sha256 and remote_sha and remote_sha != spec.sha256:
            integrity.append(f"{where} holds a different file (sha256 {remote_sha}, expected {spec.sha256})")
            continue
        if spec.size and meta.size and meta.size != spec.size:
            integrity.append(f"{where} holds a different file ({meta.size:,} B, expected {spec.size:,} B)")
            continue
        expected = spec.sha256 or remote_sha
        for attempt in (1, 2):  # one re-download when the bytes do not match
            try:
                path = Path(hf_hub_download(
                    source.repo_id, source.filename, repo_type=source.repo_type, revision=source.revision,
                    cache_dir=str(cache), endpoint=endpoint, etag_timeout=timeout,
                    tqdm_class=_progress_sink(progress),
                ))
            except Cancelled:
                raise
            except Exception as e:
                problems.append(f"{where}: download failed ({_short(e)})")
                break
            wrong = _mismatch(path, expected, spec.size, cache)
            if wrong is None:
                return path
            _remove_cached(path, cache)
            if attempt == 2:
                integrity.append(f"{where} downloaded twice with {wrong}")
    if integrity:
        raise CheckpointError(
            f"weight file '{spec.filename}' ({spec.name}, Hub repo {spec.repo_id}) failed verification: "
            + "; ".join(integrity + problems) + ". Nothing was kept."
        )
    raise CheckpointMissingError(_missing_message(spec, "could not download it (" + "; ".join(problems) + ")"))


def fetch(
    name: Union[str, CheckpointSpec],
    *,
    progress: Optional[DownloadProgress] = None,
    offline: Optional[bool] = None,
    cache_dir: Union[str, Path, None] = None,
    endpoint: Optional[str] = None,
) -> Path:
    """Local path of a verified weight file, downloading it if needed.

    Order: ``$STYLEGAN_EDIT_WEIGHTS_DIR`` (checked by sha256/size where the registry knows them; a mismatch
    raises), an installed package's copy, the HF cache (no network at all on a verified hit; a corrupt or truncated
    file is deleted and fetched again), then the Hub: primary repo, then mirrors (each download is re-tried once
    when its sha256 is wrong). ``offline`` defaults to ``HF_HUB_OFFLINE``; ``endpoint`` to ``HF_ENDPOINT``;
    ``cache_dir`` to the HF cache. ``progress(bytes_done, bytes_total)`` is called while downloading.

    Raises :class:`CheckpointMissingError` when the file is absent and cannot be downloaded (offline, Hub down,
    not found), :class:`CheckpointError` when it exists but does not verify.
    """
    spec = get_spec(name)
    cache = hub_cache_dir(cache_dir)
    override = _override_file(spec)
    if override is not None:
        wrong = _mismatch(override, spec.sha256, spec.size, cache)
        if wrong is not None:
            raise CheckpointError(f"hand-placed weight file {override} ({spec.name}, from Hub repo {spec.repo_id}) "
                                  f"is not the expected file: {wrong}")
        return override
    packaged = local_package_file(spec)
    if packaged is not None and spec.sha256 and _mismatch(packaged, spec.sha256, spec.size, cache) is None:
        return packaged
    for source in spec.sources:
        pointer = _cached_pointer(source, cache)
        if pointer is None:
            continue
        if _mismatch(pointer, spec.sha256 or _blob_sha256(pointer), spec.size, cache) is None:
            return pointer
        _remove_cached(pointer, cache)  # corrupt or truncated: fetched again below
    if is_offline(offline):
        raise CheckpointMissingError(_missing_message(spec, "offline mode is on (HF_HUB_OFFLINE) and it is not cached"))
    return _download(spec, cache, _endpoint(endpoint), progress)
