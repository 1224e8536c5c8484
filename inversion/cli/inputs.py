"""Which files to try, and a distinct, safe output folder name for each."""
from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif",
                            ".avif"})
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")
_BMP_HEADERS = (12, 40, 52, 56, 64, 108, 124)
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"avif", b"avis")
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}


def _display(path: Any) -> str:
    """A one-line, printable form of a path (control characters and undecodable bytes escaped)."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder)
        return True
    except ValueError:
        return False


def looks_like_image(path: Path) -> bool:
    """Whether the file starts like a JPEG, PNG, GIF, WebP, TIFF, BMP, HEIC/HEIF or AVIF (its first bytes, whatever its name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
    except OSError:
        return False
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        return True
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:  # HEIC/HEIF/AVIF (ISO base media file)
        return True
    return head[:2] == b"BM" and len(head) >= 18 and int.from_bytes(head[14:18], "little") in _BMP_HEADERS


def collect_inputs(inputs: Sequence[str], *, recursive: bool, exclude: Path) -> tuple[list[Path], list[str]]:
    """Files to try (sorted, unique) and one-line reasons for inputs that do not exist.

    Named files are tried whatever they hold. In folders every file is checked by content: images are found
    whatever their extension (:func:`looks_like_image`: a JPEG named ``.dat`` is read), and files with an image
    extension (:data:`IMAGE_SUFFIXES`) are tried too, so a broken ``.jpg`` gets its "not an image" line; other
    files, hidden files and anything under ``exclude`` (the output folder) are left out.
    """
    files: list[Path] = []
    problems: list[str] = []
    exclude = exclude.resolve()
    for text in inputs:
        path = Path(text)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = path.rglob("*") if recursive else path.iterdir()
            for f in found:
                rel = f.relative_to(path).parts
                if (not any(part.startswith(".") for part in rel) and f.is_file() and not _within(f, exclude)
                        and (f.suffix.lower() in IMAGE_SUFFIXES or looks_like_image(f))):
                    files.append(f)
        else:
            problems.append(f"skip {_display(text)}: no such file or folder")
    unique: dict[Path, Path] = {}
    for f in sorted(files, key=lambda p: str(p)):
        unique.setdefault(f.resolve(), f)
    return list(unique.values()), problems


def safe_stem(name: str, *, max_len: int = 64) -> str:
    """A folder name from a file stem: ASCII letters, digits, ``_`` and ``-`` only, never empty or special."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_-")[:max_len].strip("_-")
    if not text:
        return "photo"
    return text + "_" if text.lower() in _RESERVED else text


def folder_names(files: Sequence[Path]) -> list[str]:
    """One distinct :func:`safe_stem` per file; repeats get a short hash of their path."""
    names, seen = [], set()
    for f in files:
        name = safe_stem(f.stem)
        if name.lower() in seen:
            digest = hashlib.sha1(str(f).encode("utf-8", "surrogateescape")).hexdigest()
            name = f"{name[:55]}-{digest[:8]}"
        seen.add(name.lower())
        names.append(name)
    return names


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
