"""On-disk cache for directions computed from a generator (GANSpace PCA, SeFa), keyed by a weight hash."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Mapping, Optional

import torch
from safetensors.torch import load_file, save_file

CACHE_SUBDIR = ("stylegan2-inversion", "editing")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/stylegan2-inversion/editing``; read when called, not at import."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root).joinpath(*CACHE_SUBDIR)


def tensors_hash(state_dict: Mapping[str, torch.Tensor], keys: Iterable[str], *, extra: str = "") -> str:
    """sha256 (first 16 hex digits) over the names, shapes, dtypes and bytes of ``keys`` of ``state_dict``.

    Only the tensors a computation reads are hashed, so e.g. a PTI-tuned synthesis network keeps the
    mapping hash of its base generator. ``extra`` folds the computation's own parameters into the key.
    """
    h = hashlib.sha256(extra.encode())
    for key in keys:
        t = state_dict[key].detach().to("cpu")
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def load_cached(path: Path) -> Optional[dict[str, torch.Tensor]]:
    """Tensors stored at ``path``, or None when absent or unreadable (a broken entry is recomputed)."""
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception:  # noqa: BLE001 - a corrupt cache entry is just a miss
        return None


def save_cached(path: Path, tensors: Mapping[str, torch.Tensor], *, metadata: Optional[dict[str, str]] = None) -> None:
    """Write ``tensors`` atomically (temp file + rename) as safetensors; parents are created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
