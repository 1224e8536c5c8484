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

import hashlib
import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Mapping, Optional, Sequence, Union

import torch

from inversion.result import Cancelled

OVERRIDE_ENV = "STYLEGAN_EDIT_WEIGHTS_DIR"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
FEATURES = frozenset({"generator", "optimization", "pti", "psp", "e4e", "identity", "lpips", "align", "editing"})

DownloadProgress = Callable[[int, Optional[int]], None]
"""``progress(bytes_done, bytes_total)``; ``bytes_total`` is ``None`` when the server does not say."""

FileState = Literal["present", "missing", "downloading", "failed"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 8 * 1024 * 1024
_MARKER_DIR = ".stylegan_edit_verified"
_NVIDIA_NC = "NVIDIA Source Code License-NC (non-commercial use only)"


class CheckpointError(RuntimeError):
    """A weight file is wrong: bad hash, bad layout, or unsafe content."""


class CheckpointMissingError(CheckpointError):
    """A weight file is not on disk and could not be downloaded."""


@dataclass(frozen=True)
class Source:
    """One place on the Hub that holds a file."""

    repo_id: str
    filename: str
    repo_type: str = "model"
    revision: str = "main"

    @property
    def page_url(self) -> str:
        """Human-facing page of the file on huggingface.co."""
        prefix = {"model": "", "dataset": "datasets/", "space": "spaces/"}[self.repo_type]
        return f"https://huggingface.co/{prefix}{self.repo_id}/blob/{self.revision}/{self.filename}"


@dataclass(frozen=True)
class CheckpointSpec:
    """A downloadable file. ``mirrors`` must hold byte-identical copies (same sha256)."""

    name: str
    repo_id: str
    filename: str
    sha256: Optional[str]
    size: Optional[int]
    license: str
    features: frozenset[str]
    description: str
    repo_type: str = "model"
    revision: str = "main"
    mirrors: tuple[Source, ...] = ()
    local_name: Optional[str] = None  # name in $STYLEGAN_EDIT_WEIGHTS_DIR; default: basename of ``filename``
    aliases: tuple[str, ...] = ()  # other names accepted in that folder
    package_file: Optional[tuple[str, str]] = None  # (installed package, path inside it) of a shipped copy

    @property
    def sources(self) -> tuple[Source, ...]:
        """The primary location followed by the mirrors, in the order they are tried."""
        return (Source(self.repo_id, self.filename, self.repo_type, self.revision), *self.mirrors)

    @property
    def override_name(self) -> str:
        """File name looked for in ``$STYLEGAN_EDIT_WEIGHTS_DIR``."""
        return self.local_name or self.filename.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class BundledFile:
    """Small files shipped inside the repository (paths relative to the project root)."""

    name: str
    paths: tuple[str, ...]
    license: str
    license_file: str
    source: str
    features: frozenset[str]
    description: str

    def files(self) -> list[Path]:
        """Absolute paths of the files."""
        return [PROJECT_ROOT / p for p in self.paths]


_E4E_MIT = "MIT (e4e release, omertov)"

REGISTRY: dict[str, CheckpointSpec] = {
    s.name: s
    for s in (
        CheckpointSpec(
            name="stylegan2_ffhq",
            repo_id="aaronb/StyleGAN2",
            filename="stylegan2-ffhq-config-f.pt",
            sha256="646c7e7c5e3fc4cf8e83dcfe5dce505cc74b61d8982c09563932aa15c4baf18c",
            size=132_717_355,
            license=f"{_NVIDIA_NC}; NVIDIA's FFHQ StyleGAN2 (config-f) converted to rosinality format",
            features=frozenset({"generator", "optimization", "pti"}),
            description="StyleGAN2 FFHQ 1024 generator, container {'g_ema': state_dict, 'latent_avg': (512,)}",
            mirrors=(
                Source("akhaliq/jojogan-stylegan2-ffhq-config-f", "stylegan2-ffhq-config-f.pt"),
                Source("AIRI-Institute/HairFastGAN", "pretrained_models/StyleGAN/ffhq.pt"),
            ),
        ),
        CheckpointSpec(
            name="e4e_ffhq",
            repo_id="public-data/e4e",
            filename="e4e_ffhq_encode.pt",
            sha256="2ace1d9a8c05c10a399bcd500b8dda118f759ff1aac89dbdab7435f2136a0999",
            size=1_201_649_680,
            license=f"{_E4E_MIT}; contains NVIDIA's FFHQ StyleGAN2 generator: {_NVIDIA_NC}",
            features=frozenset({"e4e"}),
            description="e4e FFHQ encoder + 1024 decoder: {'state_dict', 'latent_avg' (18,512), 'opts' dict}",
            mirrors=(Source("zhengchong/e4e", "e4e_ffhq_encode.pt"), Source("wmpscc/StyleGene", "e4e_ffhq_encode.pt")),
        ),
        CheckpointSpec(
            name="psp_ffhq",
            repo_id="trysem/pixel2style2pixel",
            filename="psp_ffhq_encode.pt",
            sha256="f786ac5cf18fcdbc5c57c9f3f12cbedca69381fbdf5694dd132294e3133749d7",
            size=None,
            license=f"MIT (pSp release, eladrich); contains NVIDIA's FFHQ StyleGAN2 generator: {_NVIDIA_NC}",
            features=frozenset({"psp"}),
            description="pSp FFHQ encoder + 1024 decoder: {'state_dict', 'latent_avg' (18,512), 'opts' dict}",
            mirrors=(Source("AIRI-Institute/HairFastGAN", "pretrained_models/FeatureStyleEncoder/psp_ffhq_encode.pt"),),
        ),
        CheckpointSpec(
            name="dlib_landmarks",
            repo_id="public-data/dlib_face_landmark_model",
            filename="shape_predictor_68_face_landmarks.dat",
            sha256="fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f",
            size=99_693_937,
            license="dlib-models: trained on iBUG 300-W, whose terms exclude commercial use",
            features=frozenset({"align"}),
            description="dlib 68-point face landmark predictor (FFHQ alignment)",
            package_file=("face_recognition_models", "models/shape_predictor_68_face_landmarks.dat"),
        ),
        CheckpointSpec(
            name="irse50",
            repo_id="lithiumice/ArcFace_PyTorch",
            filename="InsightFace_Pytorch+model_ir_se50.pth",
            sha256="a035c768259b98ab1ce0e646312f48b9e1e218197a0f80ac6765e88f8b6ddf28",
            size=175_367_323,
            license="MIT (TreB1eN/InsightFace_Pytorch); trained on MS-Celeb-1M data (research use)",
            features=frozenset({"identity"}),
            description="IR-SE50 ArcFace backbone, bare state_dict (layout of model_ir_se50.pth)",
            aliases=("model_ir_se50.pth",),
        ),
        CheckpointSpec(
            name="vgg16",
            repo_id="timm/vgg16.tv_in1k",
            filename="model.safetensors",
            sha256=None,  # not known here: verified against the Hub's LFS sha256
            size=None,
            license="BSD-3-Clause (torchvision weights, via timm); trained on ImageNet-1k",
            features=frozenset({"lpips"}),
            description="VGG16 ImageNet weights (torchvision names); only features.* are loaded (LPIPS trunk)",
            local_name="vgg16.tv_in1k.safetensors",
        ),
    )
}

BUNDLED: dict[str, BundledFile] = {
    b.name: b
    for b in (
        BundledFile(
            name="lpips_heads",
            paths=("inversion/data/lpips_v0.1_vgg.safetensors", "inversion/data/lpips_v0.1_alex.safetensors"),
            license="BSD-2-Clause (Zhang et al., LPIPS)",
            license_file="inversion/data/LICENSE-lpips.txt",
            source="PyPI lpips 0.1.4 wheel, weights/v0.1/{vgg,alex}.pth",
            features=frozenset({"lpips"}),
            description="LPIPS v0.1 linear heads",
        ),
        BundledFile(
            name="interfacegan_directions",
            paths=("editing/data/age.safetensors", "editing/data/smile.safetensors", "editing/data/pose.safetensors"),
            license=_E4E_MIT,
            license_file="editing/data/LICENSE-e4e-directions",
            source="encoder4editing release, editings/interfacegan_directions",
            features=frozenset({"editing"}),
            description="InterFaceGAN directions (age, smile, pose) in W",
        ),
        BundledFile(
            name="ganspace_ffhq_pca",
            paths=("editing/data/ffhq_pca.safetensors",),
            license=_E4E_MIT,
            license_file="editing/data/LICENSE-e4e-directions",
            source="encoder4editing release, editings/ganspace_pca/ffhq_pca.pt",
            features=frozenset({"editing"}),
            description="GANSpace PCA of FFHQ W (mean, 80 components, std)",
        ),
        BundledFile(
            name="builtin_models",
            paths=("inversion/data/builtin_g128.safetensors", "inversion/data/builtin_g128.json",
                   "inversion/data/builtin_psp128.safetensors", "inversion/data/builtin_psp128.json",
                   "inversion/data/builtin_e4e128.safetensors", "inversion/data/builtin_e4e128.json"),
            license="MIT (this project; trained on procedural faces)",
            license_file="inversion/data/LICENSE-builtin.txt",
            source="training/train_gan.py, training/train_encoders.py (see training/README.md)",
            features=frozenset({"generator", "psp", "e4e"}),
            description="Built-in offline model set: 128 px StyleGAN2, pSp and e4e encoders",
        ),
        BundledFile(
            name="attribute_regressor",
            paths=("inversion/data/attributes_128.safetensors", "inversion/data/attributes_128.json"),
            license="MIT (this project; trained on procedural faces)",
            license_file="inversion/data/LICENSE-builtin.txt",
            source="training/train_attributes.py",
            features=frozenset({"editing"}),
            description="Attribute regressor for the built-in faces (edit faithfulness, feature distance)",
        ),
    )
}


# ----------------------------------------------------------------------------------------------- lookups and env

def get_spec(name: Union[str, CheckpointSpec]) -> CheckpointSpec:
    """The registry entry for ``name`` (a spec passes through unchanged)."""
    if isinstance(name, CheckpointSpec):
        return name
    try:
        return REGISTRY[name]
    except KeyError:
        raise CheckpointError(f"unknown weight file '{name}'; known: {', '.join(REGISTRY)}") from None


def names_for(feature: str) -> list[str]:
    """Registry names needed by ``feature`` (e.g. ``"pti"``)."""
    return [s.name for s in REGISTRY.values() if feature in s.features]


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


# ----------------------------------------------------------------------------------------------- verification

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


# ----------------------------------------------------------------------------------------------- download

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


# ----------------------------------------------------------------------------------------------- status, downloader

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


# ----------------------------------------------------------------------------------------------- safe loading

def load_torch_file(path: Union[str, Path]) -> dict:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with plain-word errors; top level must be a dict.

    Nothing is allow-listed: the registry's pickles (rosinality ``{'g_ema', 'latent_avg'}``, pSp/e4e with a plain
    ``opts`` dict, the bare IR-SE50 state_dict) hold only tensors, dicts and plain values. rosinality *training*
    checkpoints (``args`` = ``argparse.Namespace``) are refused with a hint to re-save only ``g_ema``: no file the app
    needs contains one, and refusing keeps a single rule (plain data only) for hand-placed files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"weight file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - every failure becomes one plain message
        text = str(e)
        if "Weights only load failed" in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            what = f" ({found.group(1)})" if found else ""
            hint = ""
            if "argparse.Namespace" in text:
                hint = ("; this looks like a rosinality training checkpoint: re-save just "
                        "{'g_ema': ckpt['g_ema']} to use it")
            raise CheckpointError(f"refused to load {path.name}: it contains code/objects that are not plain "
                                  f"tensors{what}{hint}") from None
        raise CheckpointError(f"could not read {path.name}: truncated, corrupt or not a PyTorch file "
                              f"({_short(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path.name} holds a {type(obj).__name__}, expected a dict of tensors")
    return obj


def load_safetensors_subset(path: Union[str, Path], prefix: str, *,
                            strip_prefix: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file whose names start with ``prefix`` (e.g. ``"features."``), on CPU."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointMissingError(f"weight file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = list(f.keys())
            chosen = [k for k in keys if k.startswith(prefix)]
            if not chosen:
                raise CheckpointError(f"{path.name} has no tensors named '{prefix}*' (it has e.g. {keys[:3]})")
            return {(k[len(prefix):] if strip_prefix else k): f.get_tensor(k) for k in chosen}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"could not read {path.name} as safetensors ({_short(e)})") from None


def check_state_dict(sd: Mapping[str, torch.Tensor], expected: Mapping[str, Sequence[int]], what: str, *,
                     limit: int = 5) -> None:
    """Raise :class:`CheckpointError` unless ``sd`` has exactly the keys of ``expected`` with those shapes."""
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    wrong = [f"{k} {tuple(sd[k].shape)} != {tuple(expected[k])}" for k in expected
             if k in sd and tuple(sd[k].shape) != tuple(expected[k])]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
        if items:
            more = f", ... ({len(items)} in all)" if len(items) > limit else ""
            parts.append(f"{label}: {', '.join(items[:limit])}{more}")
    if parts:
        raise CheckpointError(f"{what} does not have the expected layout: " + "; ".join(parts))


# ----------------------------------------------------------------------------------------------- licences

def license_table_markdown() -> str:
    """Markdown table of every third-party weight file (downloaded and bundled) and its licence."""
    rows = ["| File | Used for | Where from | License / terms |", "|---|---|---|---|"]
    for s in REGISTRY.values():
        extra = " (also from the installed face_recognition_models package)" if s.package_file else ""
        rows.append(f"| `{s.filename}` | {', '.join(sorted(s.features))} | "
                    f"[{s.repo_id}](https://huggingface.co/{s.repo_id}){extra} | {s.license} |")
    for b in BUNDLED.values():
        files = ", ".join(f"`{Path(p).name}`" for p in b.paths)
        rows.append(f"| {files} (bundled) | {', '.join(sorted(b.features))} | {b.source} | "
                    f"{b.license}, see `{b.license_file}` |")
    return "\n".join(rows) + "\n"


__all__ = [
    "BUNDLED", "BackgroundDownloader", "BundledFile", "CheckpointError", "CheckpointMissingError", "CheckpointSpec",
    "DownloadProgress", "FEATURES", "FileState", "FileStatus", "OVERRIDE_ENV", "REGISTRY", "Source", "cached_file",
    "check_state_dict", "fetch", "file_sha256", "file_status", "find_local", "get_spec", "hub_cache_dir",
    "is_offline", "license_table_markdown", "load_safetensors_subset", "load_torch_file", "local_package_file",
    "names_for", "override_dir", "sha256_file", "status",
]
