"""What the all-faces mode costs for 8 faces on this machine, with the built-in 128 px model set (CPU):
open + detect, align all, invert (e4e + pSp, encoders batched vs one face at a time), one edit for all,
paste all back. ``python -m bench.group_cost [--out bench/results/group_cost]`` writes ``<out>.json``/``.md``.

Wall and CPU seconds are both recorded (torch may use both cores; the machine is shared, so wall times are
upper bounds). FFHQ 1024 figures are not measured here (no weights offline): see the estimate in the .md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import torch
from PIL import Image

from inversion import group as G
from inversion import session as S
from inversion.align import load_image
from inversion.models import ModelSet

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def eight_faces() -> Image.Image:
    """Two rows of four faces from the examples (mirrored, scaled, slightly rotated), 2400 x 1400."""
    hopper = load_image(EXAMPLES / "grace_hopper.jpg")
    astronaut = load_image(EXAMPLES / "astronaut.png").crop((120, 0, 420, 300))
    canvas = Image.new("RGB", (2400, 1400), (96, 112, 128))
    pieces = [hopper.resize((400, 469)), astronaut.resize((380, 380)),
              hopper.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((420, 492)),
              hopper.rotate(5, fillcolor=(96, 112, 128)).resize((440, 516))]
    for row in range(2):
        for col, piece in enumerate(pieces if row == 0 else pieces[::-1]):
            canvas.paste(piece, (40 + col * 590, 40 + row * 690))
    return canvas


def timed(fn, *args, **kwargs):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    return out, round(time.perf_counter() - w, 3), round(time.process_time() - c, 3)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("bench/results/group_cost"))
    args = p.parse_args(argv)
    torch.manual_seed(0)
    models = ModelSet("builtin", device=torch.device("cpu"))
    models.generator(), models.encoder("e4e"), models.encoder("psp")
    present = S.file_present_from({})
    photo_image = eight_faces()
    rows = {}
    photo, rows["open_detect_s"], rows["open_detect_cpu_s"] = timed(S.open_photo, photo_image)
    group, rows["align_all_s"], rows["align_all_cpu_s"] = timed(G.align_all, photo)
    rows["faces"] = len(group.faces)
    (inverted, _), rows["invert_batched_s"], rows["invert_batched_cpu_s"] = timed(
        G.invert_all, models, group, ["e4e", "psp"], file_present=present)

    def one_at_a_time():
        for face in group.faces:
            image = S.model_input(face, models.family.size)
            list(S.run_inversions(models, image, ["e4e", "psp"], file_present=present))
    _, rows["invert_one_by_one_s"], rows["invert_one_by_one_cpu_s"] = timed(one_at_a_time)
    edited, rows["edit_all_s"], rows["edit_all_cpu_s"] = timed(G.edit_all, models, inverted, "sefa", 3.0)
    _, rows["paste_all_s"], rows["paste_all_cpu_s"] = timed(G.paste_all, edited, "e4e")
    rows["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result = {"photo": list(photo_image.size), "torch_threads": torch.get_num_threads(),
              "load_avg": os.getloadavg(), **rows}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"8-face group photo {photo_image.size[0]}x{photo_image.size[1]}, built-in 128 px set, CPU "
             f"({torch.get_num_threads()} torch threads; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
             "cores: shared machine, upper bounds).", "", "| step | wall s | CPU s |", "|---|---|---|"]
    for key in ("open_detect", "align_all", "invert_batched", "invert_one_by_one", "edit_all", "paste_all"):
        lines.append(f"| {key} | {rows[key + '_s']} | {rows[key + '_cpu_s']} |")
    lines.append(f"\nPeak RSS {rows['peak_rss_mb']} MB; faces found {rows['faces']}.")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
