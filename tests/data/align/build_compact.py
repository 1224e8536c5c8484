"""Rebuild the compact alignment golden data in this folder from ../shared/reference/align.

Run from the project root: ``python tests/data/align/build_compact.py``.  Keeps the numbers tests need
(detections, landmarks, quads, branch values), a sha256 of every reference output's raw RGB pixels, the
256 px outputs as PNG and 256x256 crops of each 1024 px output as PNG (the centre; for the padding
case also the top-left corner, where the padded and blurred border lies).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
REF = HERE.parents[3] / "shared" / "reference"
CASES = {"astronaut": "astronaut.png", "grace_hopper": "grace_hopper.jpg",
         "hopper_edge": "hopper_edge.png", "hopper_x4": "hopper_x4.png"}
STEP_KEYS = ("shrink", "shrink_applied", "border", "crop_box", "pad_final", "transform_data")
CENTRE = (384, 384, 640, 640)
CORNER = (0, 0, 256, 256)


def pixel_sha(image: Image.Image) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(image.convert("RGB"))).tobytes()).hexdigest()


def main() -> None:
    out: dict = {"source": "shared/reference/align (see its README.md)", "cases": {}}
    for name, filename in CASES.items():
        ref = json.loads((REF / "align" / f"{name}.json").read_text())
        with Image.open(REF / "images" / filename) as im:
            input_sha = pixel_sha(im)
        case = {
            "input": filename, "input_pixel_sha256": input_sha, "image_hw": ref["image_hw"],
            "detections": ref["detections"], "landmarks_used": ref["landmarks_used"],
            "landmarks_used_is_detection_index": ref["landmarks_used_is_detection_index"],
            "dlib_vs_pil_decode_identical": ref["dlib_vs_pil_decode_identical"],
            "landmarks_if_decoded_with_PIL": ref["landmarks_if_decoded_with_PIL"],
            "quad_initial": ref["quad_initial"], "qsize_initial": ref["qsize_initial"], "variants": {},
        }
        variants = {"": (ref["landmarks_used"], ref)}
        for det in ref["per_detection"]:
            variants[f"_det{det['index']}"] = (ref["detections"][det["index"]]["landmarks"], det)
        for suffix, (landmarks, steps) in variants.items():
            crops = [CENTRE, CORNER] if name == "hopper_edge" else [CENTRE]
            entry = {"landmarks": landmarks, "quad_initial": steps["quad_initial"], "crops_1024": {}}
            for size in (256, 1024):
                png = REF / "align" / f"{name}{suffix}_aligned{size}.png"
                with Image.open(png) as im:
                    entry[f"sha256_{size}"] = pixel_sha(im)
                    if size == 256:
                        im.convert("RGB").save(HERE / f"{name}{suffix}_aligned256.png", optimize=True)
                    else:
                        for box in crops:
                            crop_name = f"{name}{suffix}_aligned1024_{box[0]}_{box[1]}.png"
                            im.convert("RGB").crop(box).save(HERE / crop_name, optimize=True)
                            entry["crops_1024"][crop_name] = box
                entry[f"steps_{size}"] = {k: steps[f"steps_{size}"][k] for k in STEP_KEYS}
            case["variants"][suffix] = entry
        out["cases"][name] = case
    (HERE / "golden.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
