"""A generated corpus of bad (and odd-but-valid) inputs for the app, each with what a visitor should read.

Every :class:`Case` is one API request (``/align``, ``/invert``, ``/edit``, ``/paste_back``, ``/export``) made by a
fresh visitor after an optional set-up (``"aligned"``: the example photo aligned; ``"inverted"``: also inverted with
the tiny e4e). Upload cases write their file with a maker ``make(folder) -> Path``; all photos derive from
``examples/grace_hopper.jpg`` (public domain), so nothing binary is stored. ``expect`` holds fragments (matched
case-insensitively) of the error message, or, for requests that succeed, of the note shown to the visitor.

``python tests/bad_inputs.py OUT_DIR`` writes the upload files into ``OUT_DIR`` (to look at them).
"""
from __future__ import annotations

import io
import math
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"

Maker = Callable[[Path], Path]

FILE = object()
"""Placeholder in ``args`` for the uploaded file made by ``Case.make``."""


@dataclass(frozen=True)
class Case:
    """One request of the corpus and the visitor-facing outcome expected from it."""

    name: str
    endpoint: str
    args: tuple[Any, ...]
    ok: bool
    expect: tuple[str, ...]
    setup: str = "none"  # "none" | "aligned" | "inverted"
    make: Optional[Maker] = None
    heavy: bool = False  # large decoded pixels: rerun by the memory check when it runs alone


# ------------------------------------------------------------------------------------------------ pictures

def hopper() -> Image.Image:
    """The example face (512x600 RGB)."""
    with Image.open(HOPPER) as im:
        return im.convert("RGB")


def _save(image: Image.Image, folder: Path, name: str, **kw: Any) -> Path:
    path = folder / name
    image.save(path, **kw)
    return path


def _writer(name: str, build: Callable[[], Image.Image], **kw: Any) -> Maker:
    return lambda folder: _save(build(), folder, name, **kw)


def _bytes(name: str, build: Callable[[], bytes]) -> Maker:
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(build())
        return path
    return make


def blank_wall() -> Image.Image:
    return Image.new("RGB", (320, 240), (120, 130, 140))


def noise_texture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))


def drawn_shapes() -> Image.Image:
    """Circles and lines (a cartoon-ish pattern, not a face)."""
    im = Image.new("RGB", (400, 300), (230, 220, 200))
    d = ImageDraw.Draw(im)
    for i in range(6):
        d.ellipse((20 + 60 * i, 40, 70 + 60 * i, 90), outline=(40, 40, 40), width=3)
        d.line((0, 150 + 20 * i, 400, 120 + 25 * i), fill=(90, 60, 30), width=2)
    return im


def tiny_face() -> Image.Image:
    """Hopper shrunk so the face is ~20 px wide, on a 640x480 grey canvas."""
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    small = hopper().resize((51, 60), Image.Resampling.LANCZOS)
    canvas.paste(small, (300, 200))
    return canvas


def tiny_image() -> Image.Image:
    return hopper().resize((34, 40), Image.Resampling.LANCZOS)


def cut_right() -> Image.Image:
    """Hopper with the right quarter of the face (bbox x 180-366) cut away by the image border."""
    return hopper().crop((0, 0, 320, 600))


def cut_top() -> Image.Image:
    """Hopper with the forehead cut away by the top border (face bbox y 139-325)."""
    return hopper().crop((0, 170, 512, 600))


def cut_in_half() -> Image.Image:
    """Hopper cut through the middle of the face."""
    return hopper().crop((0, 0, 300, 600))


def chin_cut() -> Image.Image:
    """Hopper cut just below the eyes (only the top half of the face left)."""
    return hopper().crop((0, 0, 512, 260))


def upside_down() -> Image.Image:
    return hopper().rotate(180)


def sideways() -> Image.Image:
    return hopper().transpose(Image.Transpose.ROTATE_90)


def profile_like() -> Image.Image:
    """A crude stand-in for a profile: the face squeezed to a third of its width (no real profile photo is
    shipped), which the frontal detector does not accept."""
    im = hopper()
    return im.resize((im.width // 3, im.height), Image.Resampling.LANCZOS)


def big_photo() -> Image.Image:
    """8000x8000 (64.0 megapixels, right at the limit) with the face in the middle."""
    canvas = Image.new("RGB", (8000, 8000), (150, 140, 130))
    face = hopper().resize((2048, 2400), Image.Resampling.BILINEAR)
    canvas.paste(face, (3000, 2800))
    return canvas


def strip() -> Image.Image:
    """A 20000x200 panorama strip with a small face in it."""
    canvas = Image.new("RGB", (20000, 200), (90, 100, 110))
    canvas.paste(hopper().resize((170, 200), Image.Resampling.LANCZOS), (9000, 0))
    return canvas


def grayscale() -> Image.Image:
    return hopper().convert("L")


def palette() -> Image.Image:
    return hopper().convert("P", palette=Image.Palette.ADAPTIVE, colors=64)


def rgba_transparent() -> Image.Image:
    """Hopper with a transparent background outside an ellipse around the face."""
    im = hopper().convert("RGBA")
    mask = Image.new("L", im.size, 0)
    ImageDraw.Draw(mask).ellipse((60, 40, 452, 560), fill=255)
    im.putalpha(mask)
    return im


def fully_transparent() -> Image.Image:
    """Hopper's pixels, but every alpha is 0: the visitor sees an empty (white) picture."""
    im = hopper().convert("RGBA")
    im.putalpha(0)
    return im


def cmyk() -> Image.Image:
    return hopper().convert("CMYK")


def gray16() -> Image.Image:
    arr = np.asarray(hopper().convert("L"), dtype=np.uint16) * 257
    return Image.fromarray(arr)  # mode I;16


def float_image() -> Image.Image:
    arr = np.asarray(hopper().convert("L"), dtype=np.float32) / 255.0
    return Image.fromarray(arr, "F")


def png_rgb16() -> bytes:
    """A 48-bit (16 bits per channel) RGB PNG, written by hand (Pillow cannot write one)."""
    arr = np.asarray(hopper(), dtype=np.uint16) * 257
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def exif_rotated(orientation: int) -> Maker:
    """A JPEG whose pixels are stored turned and whose EXIF Orientation turns them upright again."""
    stored = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}

    def make(folder: Path) -> Path:
        im = hopper().transpose(stored[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        return _save(im, folder, f"exif_orientation_{orientation}.jpg", quality=92, exif=exif)
    return make


def animated_gif(folder: Path) -> Path:
    first = hopper().convert("P", palette=Image.Palette.ADAPTIVE)
    second = Image.new("P", first.size, 0)
    path = folder / "animated.gif"
    first.save(path, save_all=True, append_images=[second], duration=200, loop=0)
    return path


def animated_webp(folder: Path) -> Path:
    path = folder / "animated.webp"
    hopper().save(path, save_all=True, append_images=[blank_wall().resize((512, 600))], duration=200)
    return path


def fake_heic() -> bytes:
    """The start of an HEIC file (ISO BMFF ``ftyp`` box, brand ``heic``) followed by filler."""
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    return struct.pack(">I", 8 + len(ftyp) - 4) + ftyp + b"\x00" * 2000


def svg() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><circle cx="50" cy="50" r="40"/></svg>'


def pdf() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def truncated_jpeg() -> bytes:
    data = HOPPER.read_bytes()
    return data[: len(data) * 6 // 10]


def truncated_png() -> bytes:
    buf = io.BytesIO()
    hopper().save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def header_only_jpeg() -> bytes:
    return HOPPER.read_bytes()[:300]


def random_bytes() -> bytes:
    return np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()


def text_as_jpg() -> bytes:
    return b"Dear visitor,\nthis is a text file with a .jpg name.\n" * 20


def bomb_png(width: int, height: int) -> Callable[[], bytes]:
    """A 1-bit all-black PNG of ``width``x``height``: a few kB on disk, huge once decoded."""
    def build() -> bytes:
        row = b"\x00" + b"\x00" * math.ceil(width / 8)
        comp = zlib.compressobj(9)
        body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

        ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    return build


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width``x``height`` pixels."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (100, 100, 100)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF whose screen and frame claim ``width``x``height`` pixels but hold one tiny block of data."""
    head = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return head + frame + b"\x3b"


def many_faces() -> Image.Image:
    """Three copies of the example face side by side."""
    face = hopper().resize((256, 300), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (800, 340), (200, 200, 200))
    for i in range(3):
        canvas.paste(face if i != 1 else face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (10 + 265 * i, 20))
    return canvas


# ------------------------------------------------------------------------------------------------ the corpus

NO_FACE = ("no face found", "frontal face")
UNREADABLE = ("not an image in a supported format",)
DAMAGED = ("could not be read", "damaged")
ALIGNED = ("face aligned",)
INVERT_FIRST = ("invert the photo first",)
STRENGTH = ("strength of 'sefa direction' must be between -15 and 15",)


def _up(name: str, make: Maker, *, ok: bool, expect: tuple[str, ...], face_index: Any = 0,
        heavy: bool = False) -> Case:
    return Case(name, "/align", (FILE, face_index), ok, expect, make=make, heavy=heavy)


def _edit(name: str, strength: Any, component: Any, steps: Any, expect: tuple[str, ...], *,
          edit: str = "sefa", ok: bool = False, setup: str = "inverted") -> Case:
    return Case(name, "/edit", (edit, strength, component, steps), ok, expect, setup=setup)


def _invert(name: str, family: Any, methods: Any, expect: tuple[str, ...], *, seed: Any = 0, preset: Any = "fast",
            ok: bool = False, setup: str = "aligned") -> Case:
    return Case(name, "/invert", (family, methods, preset, preset, preset, seed), ok, expect, setup=setup)


def corpus() -> list[Case]:
    """Every case, in a fixed order (ids are unique)."""
    cases = [
        # -- faces that cannot be used
        _up("no_face_blank_wall", _writer("wall.png", blank_wall), ok=False, expect=NO_FACE),
        _up("no_face_noise", _writer("noise.png", noise_texture), ok=False, expect=NO_FACE),
        _up("no_face_drawing", _writer("shapes.jpg", drawn_shapes), ok=False, expect=NO_FACE),
        _up("face_20px_in_photo", _writer("tiny_face.png", tiny_face), ok=False, expect=NO_FACE),
        _up("whole_image_40px", _writer("tiny.png", tiny_image), ok=False, expect=("no face found", "only 34x40")),
        _up("one_pixel", _writer("pixel.png", lambda: Image.new("RGB", (1, 1), (9, 9, 9))), ok=False,
            expect=("no face found", "only 1x1")),
        _up("upside_down", _writer("upside_down.jpg", upside_down), ok=False, expect=NO_FACE),
        _up("sideways_90", _writer("sideways.jpg", sideways), ok=False, expect=NO_FACE),
        _up("profile_stand_in", _writer("squeezed.jpg", profile_like), ok=False, expect=NO_FACE),
        _up("face_cut_by_right_border", _writer("cut_right.jpg", cut_right), ok=True, expect=ALIGNED),
        _up("face_cut_by_top_border", _writer("cut_top.jpg", cut_top), ok=True, expect=ALIGNED),
        _up("face_cut_in_half", _writer("cut_half.jpg", cut_in_half), ok=False, expect=NO_FACE),
        _up("face_cut_below_eyes", _writer("chin_cut.jpg", chin_cut), ok=False, expect=NO_FACE),
        # -- several faces
        _up("several_faces", _writer("three.jpg", many_faces), ok=True, expect=("3 faces were found", "face 1 is used")),
        _up("several_faces_pick_third", _writer("three.jpg", many_faces), ok=True, face_index=2,
            expect=("3 faces were found", "face 3 is used")),
        _up("face_index_too_high", _writer("hopper.jpg", hopper), ok=False, face_index=5,
            expect=("no face number 5", "has 1 face")),
        _up("face_index_negative", _writer("hopper.jpg", hopper), ok=False, face_index=-1,
            expect=("no face number -1", "has 1 face")),
        _up("face_index_nan", _writer("hopper.jpg", hopper), ok=False, face_index=float("nan"),
            expect=("face number must be a whole number",)),
        _up("face_index_fraction", _writer("hopper.jpg", hopper), ok=False, face_index=0.5,
            expect=("face number must be a whole number",)),
        _up("face_index_null", _writer("hopper.jpg", hopper), ok=True, face_index=None, expect=ALIGNED),
        # -- sizes
        _up("photo_8000x8000", _writer("big.jpg", big_photo, quality=80), ok=True, heavy=True,
            expect=("was reduced to 4096x4096",)),
        _up("strip_20000x200", _writer("strip.png", strip), ok=False, heavy=True, expect=("no face found", "20000x200", "crop it around the face")),
        _up("too_many_pixels_8001x8000", _bytes("big.png", bomb_png(8001, 8000)), ok=False, heavy=True,
            expect=("too large", "64 megapixels")),
        # -- colour modes and formats that must work
        _up("grayscale_jpeg", _writer("gray.jpg", grayscale), ok=True, expect=ALIGNED),
        _up("palette_png", _writer("palette.png", palette), ok=True, expect=ALIGNED),
        _up("rgba_transparent_background", _writer("rgba.png", rgba_transparent), ok=True, expect=ALIGNED),
        _up("rgba_fully_transparent", _writer("clear.png", fully_transparent), ok=False, expect=NO_FACE),
        _up("la_png", _writer("la.png", lambda: rgba_transparent().convert("LA")), ok=True, expect=ALIGNED),
        _up("cmyk_jpeg", _writer("cmyk.jpg", cmyk), ok=True, expect=ALIGNED),
        _up("gray_16bit_png", _writer("gray16.png", gray16), ok=True, expect=ALIGNED),
        _up("rgb_48bit_png", _bytes("rgb16.png", png_rgb16), ok=True, expect=ALIGNED),
        _up("float32_tiff", _writer("float.tiff", float_image), ok=True, expect=ALIGNED),
        _up("exif_rotated_6", exif_rotated(6), ok=True, expect=ALIGNED),
        _up("exif_rotated_8", exif_rotated(8), ok=True, expect=ALIGNED),
        _up("exif_rotated_3", exif_rotated(3), ok=True, expect=ALIGNED),
        _up("animated_gif", animated_gif, ok=True, expect=ALIGNED),
        _up("animated_webp", animated_webp, ok=True, expect=ALIGNED),
        _up("webp", _writer("face.webp", hopper, quality=90), ok=True, expect=ALIGNED),
        _up("bmp", _writer("face.bmp", hopper), ok=True, expect=ALIGNED),
        # -- formats that are not supported
        _up("heic", _bytes("IMG_0001.heic", fake_heic), ok=False, expect=("heic", "convert the photo to jpeg")),
        _up("svg", _bytes("drawing.svg", svg), ok=False, expect=UNREADABLE),
        _up("pdf_named_jpg", _bytes("scan.jpg", pdf), ok=False, expect=UNREADABLE),
        # -- broken files
        _up("truncated_jpeg", _bytes("cut.jpg", truncated_jpeg), ok=False, expect=DAMAGED + ("truncated",)),
        _up("truncated_png", _bytes("cut.png", truncated_png), ok=False, expect=DAMAGED),
        _up("jpeg_header_only", _bytes("head.jpg", header_only_jpeg), ok=False, expect=DAMAGED),
        _up("zero_bytes", _bytes("empty.jpg", lambda: b""), ok=False, expect=("empty (0 bytes)",)),
        _up("text_named_jpg", _bytes("letter.jpg", text_as_jpg), ok=False, expect=UNREADABLE),
        _up("random_bytes_png", _bytes("random.png", random_bytes), ok=False, expect=UNREADABLE),
        # -- decompression bombs
        _up("bomb_png_20000x20000", _bytes("bomb.png", bomb_png(20000, 20000)), ok=False,
            expect=("too large to open safely",)),
        _up("bomb_png_10000x10000", _bytes("bomb100.png", bomb_png(10000, 10000)), ok=False,
            expect=("too large", "100.0 megapixels")),
        _up("bomb_jpeg_header_60000", _bytes("bomb.jpg", lambda: jpeg_claiming(60000, 60000)), ok=False,
            expect=("too large to open safely",)),
        _up("bomb_gif_header_65535", _bytes("bomb.gif", lambda: gif_claiming(65535, 65535)), ok=False,
            expect=("too large to open safely",)),
        # -- no upload at all
        Case("align_without_photo", "/align", (None, 0), False, ("upload a photo first",)),
        # -- slider and number values sent through the API (NaN / infinity need a client that sends them: the test
        #    lets gradio_client's JSON encoder write them; a browser sends null for NaN)
        _edit("strength_nan", float("nan"), 0, 3, STRENGTH),
        _edit("strength_inf", float("inf"), 0, 3, STRENGTH),
        _edit("strength_minus_inf", float("-inf"), 0, 3, STRENGTH),
        _edit("strength_out_of_range", 1e6, 0, 3, STRENGTH),
        _edit("strength_null", None, 0, 3, ("strength must be a number",)),
        _edit("strength_text", "strong", 0, 3, ("strength must be a number",)),
        _edit("component_nan", 2.0, float("nan"), 3, ("component must be a whole number",)),
        _edit("component_negative", 2.0, -1, 3, ("component must be between 0 and 63",)),
        _edit("component_too_high", 2.0, 10**9, 3, ("component must be between 0 and 63",)),
        _edit("component_fraction", 2.0, 1.5, 3, ("component must be a whole number",)),
        _edit("steps_zero", 2.0, 0, 0, ("1 to 9 steps",)),
        _edit("steps_huge", 2.0, 0, 10**6, ("1 to 9 steps",)),
        _edit("steps_inf", 2.0, 0, float("inf"), ("images per strip must be a whole number",)),
        _edit("steps_null", 2.0, 0, None, ("images per strip must be a number",)),
        _edit("unknown_edit", 2.0, 0, 3, ("unknown edit 'make_me_younger'",), edit="make_me_younger"),
        _edit("ffhq_edit_on_tiny_generator", 2.0, 0, 3, ("made for the ffhq generator",), edit="age"),
        _invert("seed_nan", "tiny", ["e4e"], ("seed must be a whole number",), seed=float("nan")),
        _invert("seed_inf", "tiny", ["e4e"], ("seed must be a whole number",), seed=float("inf")),
        _invert("seed_negative", "tiny", ["e4e"], ("seed must be between 0 and 4294967295",), seed=-5),
        _invert("seed_huge", "tiny", ["e4e"], ("seed must be between 0 and 4294967295",), seed=1e30),
        _invert("unknown_method", "tiny", ["stylegan3"], ("unknown method", "stylegan3")),
        _invert("no_method", "tiny", [], ("tick at least one method",)),
        _invert("unknown_preset", "tiny", ["w"], ("no preset 'ultra'", "fast, balanced, quality"), preset="ultra"),
        _invert("unknown_family", "cars", ["e4e"], ("unknown model family 'cars'",)),
        # -- steps out of order
        _edit("edit_before_inversion", 2.0, 0, 3, INVERT_FIRST, setup="aligned"),
        _edit("edit_before_anything", 2.0, 0, 3, INVERT_FIRST, setup="none"),
        _invert("invert_before_align", "tiny", ["e4e"], ("align a photo first",), setup="none"),
        Case("paste_back_before_align", "/paste_back", ("e4e",), False, ("align a photo first",)),
        Case("paste_back_unknown_method", "/paste_back", ("w++",), False, ("no result yet",), setup="inverted"),
        Case("export_before_inversion", "/export", (), False, ("nothing to download yet",), setup="aligned"),
        # -- a method whose weights are missing
        _invert("method_weights_missing", "partial", ["e4e"],
                ("nothing ran", "e4e encoder needs e4e encoder weights (not downloaded yet)"), ok=True),
        _invert("one_method_missing_others_run", "partial", ["e4e", "psp"],
                ("done: psp encoder", "skipped: e4e encoder needs e4e encoder weights"), ok=True),
    ]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def write_uploads(folder: Path) -> dict[str, Path]:
    """Write every upload file of the corpus into ``folder``; returns case name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    return {c.name: c.make(folder) for c in corpus() if c.make is not None}


if __name__ == "__main__":  # pragma: no cover - a helper for looking at the files
    for name, path in write_uploads(Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs")).items():
        print(f"{name:32s} {path.stat().st_size:>10,d} B  {path}")
