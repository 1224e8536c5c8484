"""Where a registry file is on this machine, without network access or hashing.

Environment, read when a function runs (never at import): ``STYLEGAN_EDIT_WEIGHTS_DIR``, ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME``, ``HF_HUB_ETAG_TIMEOUT``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional, Union

from inversion.checkpoints.registry import OVERRIDE_ENV, CheckpointSpec, Source, get_spec


def is_offline(offline: Optional[bool] = None) -> bool:
    """``offline`` if given, else ``HF_HUB_OFFLINE`` now (or huggingface_hub's import-time value)."""
    if offline is not None:
        return offline
    if os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir(cache_dir: Union[str, Path, None] = None) -> Path:
    """The HF cache folder: ``cache_dir``, else ``HF_HUB_CACHE``, ``HF_HOME/hub``, ``~/.cache/huggingface/hub``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def _endpoint(endpoint: Optional[str]) -> str:
    return (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _etag_timeout() -> float:
    try:
        return float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    except ValueError:
        return 10.0


def override_dir() -> Optional[Path]:
    """``$STYLEGAN_EDIT_WEIGHTS_DIR`` as a path, or ``None`` when unset."""
    value = os.environ.get(OVERRIDE_ENV, "").strip()
    return Path(value).expanduser() if value else None


def _override_file(spec: CheckpointSpec) -> Optional[Path]:
    folder = override_dir()
    if folder is None:
        return None
    for candidate in (spec.override_name, *spec.aliases):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def local_package_file(name: Union[str, CheckpointSpec]) -> Optional[Path]:
    """Path of the copy shipped by an installed package (e.g. ``face_recognition_models``), if any.

    The package is located without importing it (face_recognition_models imports ``pkg_resources`` on import).
    """
    spec = get_spec(name)
    if spec.package_file is None:
        return None
    package, relative = spec.package_file
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for folder in (found.submodule_search_locations or []) if found else []:
        path = Path(folder) / relative
        if path.is_file():
            return path
    return None


def _cached_pointer(source: Source, cache: Path) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        source.repo_id, source.filename, cache_dir=str(cache), revision=source.revision, repo_type=source.repo_type
    )
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def cached_file(name: Union[str, CheckpointSpec], *, cache_dir: Union[str, Path, None] = None) -> Optional[Path]:
    """The file in the Hugging Face cache (primary or a mirror), without network access or hashing."""
    cache = hub_cache_dir(cache_dir)
    for source in get_spec(name).sources:
        found = _cached_pointer(source, cache)
        if found is not None:
            return found
    return None


def find_local(name: Union[str, CheckpointSpec], *, cache_dir: Union[str, Path, None] = None) -> Optional[Path]:
    """Where :func:`fetch` would look first: override folder, package copy, HF cache. No network, no hashing."""
    spec = get_spec(name)
    return _override_file(spec) or local_package_file(spec) or cached_file(spec, cache_dir=cache_dir)
