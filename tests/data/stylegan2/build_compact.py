"""Build tests/data/stylegan2/compact.npz from ../shared/reference/stylegan2 (run from the project root).

Keeps only what the tests cannot regenerate: outputs, as crops plus whole-image sums. Inputs are
regenerated from the seeds recorded in the reference json files (tests check that recipe against
the full files when they are present).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from golden import shared_reference  # noqa: E402

CROPS = {"center": (slice(112, 144), slice(112, 144)), "corner": (slice(0, 16), slice(0, 16))}


def image_summary(prefix: str, image: np.ndarray, out: dict) -> None:
    for name, (ys, xs) in CROPS.items():
        out[f"{prefix}__{name}"] = image[:, :, ys, xs]
    out[f"{prefix}__sum"] = image.sum(axis=(1, 2, 3))
    out[f"{prefix}__abssum"] = np.abs(image).sum(axis=(1, 2, 3))


def main() -> None:
    ref = shared_reference() / "stylegan2"
    out: dict[str, np.ndarray] = {}
    for fname, tag in (("cases_256.npz", "c256"), ("cases_256_mapping_x100.npz", "x100")):
        data = np.load(ref / fname)
        for key in data.files:
            arr = data[key]
            if key.endswith("__image"):
                image_summary(f"{tag}:{key}", arr, out)
            elif key.startswith("mapping__") or key.endswith("__latent_out"):
                out[f"{tag}:{key}"] = arr
    data = np.load(ref / "cases_1024.npz")
    for key in ("mapping__w", "mapping__intermediates", "mapping__layer_outputs", "w_plus__image_crop64_f64"):
        out[f"c1024:{key}"] = data[key]
    out["c1024:w_plus__image_center_f32"] = data["w_plus__image"][:, :, 496:528, 496:528]
    np.savez_compressed(Path(__file__).with_name("compact.npz"), **out)
    seeds = {tag: json.loads((ref / f"{name}.json").read_text())["cases"]
             for tag, name in (("c256", "cases_256"), ("x100", "cases_256_mapping_x100"), ("c1024", "cases_1024"))}
    Path(__file__).with_name("seeds.json").write_text(json.dumps(seeds, indent=1))


if __name__ == "__main__":
    main()
