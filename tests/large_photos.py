"""Large test photos made from the shipped examples: rotated, upscaled and placed off-centre on a big canvas.

Shared by ``tests/test_align_large.py`` and ``bench/align_large.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from inversion.align import load_image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# name: (example, rotation in degrees, upscale, canvas (w, h), position of the pasted photo (x, y))
CASES: dict[str, tuple[str, float, float, tuple[int, int], tuple[int, int]]] = {
    "hopper_rot-7_x3.1_2400x2600": ("grace_hopper.jpg", -7, 3.1, (2400, 2600), (300, 600)),
    "astronaut_rot5_x3_2600x2000": ("astronaut.png", 5, 3.0, (2600, 2000), (800, 200)),
    "hopper_rot12_x2_8000x1400": ("grace_hopper.jpg", 12, 2.0, (8000, 1400), (6300, 50)),
    "hopper_rot10_x5_4000x3000": ("grace_hopper.jpg", 10, 5.0, (4000, 3000), (700, 150)),
    "astronaut_rot-12_x4.4_3000x3000": ("astronaut.png", -12, 4.4, (3000, 3000), (100, 50)),
    "hopper_rot-25_x6.5_4200x4800": ("grace_hopper.jpg", -25, 6.5, (4200, 4800), (200, 100)),
    "astronaut_x2_1900x2150": ("astronaut.png", 0, 2.0, (1900, 2150), (600, 900)),
    "hopper_rot3_x7_8000x6000": ("grace_hopper.jpg", 3, 7.0, (8000, 6000), (3900, 1500)),
}


def background(size: tuple[int, int]) -> Image.Image:
    """A smooth colour ramp with mild deterministic noise (not a flat colour: the detector sees texture)."""
    w, h = size
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    rng = np.random.default_rng(0)
    noise = rng.integers(-6, 7, size=(h // 8 + 1, w // 8 + 1), dtype=np.int16)
    noise = np.repeat(np.repeat(noise, 8, axis=0), 8, axis=1)[:h, :w].astype(np.float32)
    base = np.stack([90 + 60 * x + 0 * y, 110 + 40 * y + 0 * x, 130 - 30 * x + 20 * y], axis=-1) + noise[..., None]
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")


def make_photo(name: str) -> Image.Image:
    """The large photo ``name`` of :data:`CASES`."""
    example, angle, scale, canvas, position = CASES[name]
    source = load_image(EXAMPLES / example)
    rotated = source.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(128, 128, 128))
    size = (round(rotated.width * scale), round(rotated.height * scale))
    photo = background(canvas)
    photo.paste(rotated.resize(size, Image.Resampling.BICUBIC), position)
    return photo
