"""sha256 verification of weight files; the result is remembered in ``<hub cache>/.stylegan_edit_verified/``
keyed by inode, size and mtime, so large files are hashed once."""
from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Optional, Union

from inversion.checkpoints.locate import hub_cache_dir

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 8 * 1024 * 1024
_MARKER_DIR = ".stylegan_edit_verified"


def sha256_file(path: Union[str, Path]) -> str:
    """sha256 hex digest of a file, read in 8 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(path: Path, cache: Path) -> tuple[Path, str]:
    real = path.resolve()
    st = real.stat()
    key = f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    name = hashlib.sha256(str(real).encode()).hexdigest()[:32] + ".sha256ok"
    return cache / _MARKER_DIR / name, key


def _remembered_sha256(path: Path, cache: Path) -> Optional[str]:
    marker, key = _marker(path, cache)
    try:
        stored_key, digest = marker.read_text().split()
    except (OSError, ValueError):
        return None
    return digest if stored_key == key else None


def file_sha256(path: Union[str, Path], *, cache_dir: Union[str, Path, None] = None) -> str:
    """sha256 of ``path``, reusing the remembered value while inode, size and mtime are unchanged."""
    path, cache = Path(path), hub_cache_dir(cache_dir)
    known = _remembered_sha256(path, cache)
    if known is not None:
        return known
    marker, key = _marker(path, cache)
    digest = sha256_file(path)
    try:  # a read-only cache only costs a re-hash next time
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f"{marker.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(f"{key} {digest}\n")
        os.replace(tmp, marker)
    except OSError:
        pass
    return digest


def _blob_sha256(pointer: Path) -> Optional[str]:
    """For files in the HF cache the blob's name is the ETag, i.e. the sha256 for LFS files."""
    name = pointer.resolve().name
    return name if _SHA256.fullmatch(name) else None


def _mismatch(path: Path, expected_sha: Optional[str], size: Optional[int], cache: Path) -> Optional[str]:
    """``None`` when ``path`` matches, else a description of the difference."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        return f"size {actual_size:,} B instead of {size:,} B"
    if expected_sha is None:
        return None
    actual = file_sha256(path, cache_dir=cache)
    return None if actual == expected_sha else f"sha256 {actual} instead of {expected_sha}"


def _remove_cached(pointer: Path, cache: Path) -> None:
    """Delete a cached file (snapshot link, blob and remembered hash) so that nothing loadable is left."""
    blob = pointer.resolve()
    marker, _ = _marker(blob, cache)
    for p in (pointer, blob, marker):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
