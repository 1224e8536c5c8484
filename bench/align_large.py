"""Large-photo alignment: the bounded path (locate on a downscaled copy, box found again on pyramid-aligned
patches at full resolution) against a whole-image full-resolution detection (``max_side=None``), and the
previous bounded path (box scaled back from the downscaled copy), on the photos of ``tests/large_photos.py``.

``python -m bench.align_large [--cases NAME ...] [--out bench/results/align_large]`` writes ``<out>.json`` and
``<out>.md``. Full-resolution detections are cached in ``<out>_fullres.json`` (they take minutes on big photos).
Times are wall-clock on this machine; the load average is recorded (a shared machine makes them upper bounds).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
from PIL import Image

from inversion import align
from tests.large_photos import CASES, make_photo


def _previous_path(photo: Image.Image, max_side: int = align.DEFAULT_DETECT_MAX_SIDE) -> list[np.ndarray]:
    """Landmarks of the previous bounded path: box from the downscaled copy scaled back, landmarks at full res."""
    import dlib

    scale = max(photo.size) / max_side
    size = (max(1, round(photo.width / scale)), max(1, round(photo.height / scale)))
    small = photo.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    sx, sy = photo.width / size[0], photo.height / size[1]
    detector, _ = align._detector()
    predictor, _ = align._predictor(str(align.predictor_file()))
    rects, scores, _ = detector.run(np.asarray(small), 1, 0.0)
    order = np.argsort(-np.asarray(scores))
    out = []
    for i in order:
        r = rects[int(i)]
        box = (round(r.left() * sx), round(r.top() * sy), round((r.right() + 1) * sx) - 1, round((r.bottom() + 1) * sy) - 1)
        out.append(align._predict(predictor, dlib, photo, box))
    return out


def _mad(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).mean())


def run_case(name: str, cache: dict, repeats: int = 3) -> dict:
    photo = make_photo(name)
    row: dict = {"case": name, "size": list(photo.size), "megapixels": round(photo.width * photo.height / 1e6, 1)}
    if name not in cache:
        t = time.perf_counter()
        full = align.detect_faces(photo, max_side=None)
        cache[name] = {"seconds": time.perf_counter() - t,
                       "faces": [{"bbox": f.bbox, "score": f.score, "sub": f.subdetector,
                                  "landmarks": f.landmarks.tolist()} for f in full]}
    full = cache[name]["faces"]
    row["fullres_detect_s"] = round(cache[name]["seconds"], 2)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ours = align.align_face(photo, 1024)
        times.append(time.perf_counter() - t)
    row["align_s_median"], row["align_s_min"] = round(statistics.median(times), 3), round(min(times), 3)
    tracemalloc.start()
    faces = align.detect_faces(photo)
    row["detect_traced_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
    tracemalloc.stop()
    row["faces_fullres"], row["faces_ours"] = len(full), len(faces)
    row["boxes_equal"] = [list(f.bbox) for f in faces] == [list(g["bbox"]) for g in full[:len(faces)]]
    if full and faces:
        ref_lm = np.array(full[0]["landmarks"])
        ref = align.align_face(photo, 1024, landmarks=ref_lm)
        row["landmark_max_px"] = float(np.abs(faces[0].landmarks - ref_lm).max())
        row["aligned_mad_255"] = round(_mad(ours.image, ref.image), 4)
        previous = _previous_path(photo)
        if previous:
            prev = align.align_face(photo, 1024, landmarks=previous[0])
            row["previous_landmark_max_px"] = float(np.abs(previous[0] - ref_lm).max())
            row["previous_aligned_mad_255"] = round(_mad(prev.image, ref.image), 3)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="*", default=list(CASES))
    p.add_argument("--out", type=Path, default=Path("bench/results/align_large"))
    args = p.parse_args(argv)
    cache_path = args.out.with_name(args.out.name + "_fullres.json")
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    align._detector(), align._single_level_detector(), align._predictor(str(align.predictor_file()))
    rows = []
    load_before = os.getloadavg()
    for name in args.cases:
        rows.append(run_case(name, cache))
        cache_path.write_text(json.dumps(cache))
        print(json.dumps(rows[-1]), flush=True)
    result = {"cpu_count": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    cols = ["case", "megapixels", "align_s_median", "fullres_detect_s", "boxes_equal", "landmark_max_px",
            "aligned_mad_255", "previous_landmark_max_px", "previous_aligned_mad_255", "detect_traced_peak_mb"]
    lines = [f"Load average before/after: {load_before[0]:.1f} / {result['load_after'][0]:.1f} on {os.cpu_count()} cores "
             "(shared machine: times are upper bounds).", "", "| " + " | ".join(cols) + " |",
             "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
