"""All-faces mode: a group photo made of the example faces; align all (reading order), batched encoders,
one edit for all, paste all back with seams that do not show and every other pixel untouched."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inversion import group as G
from inversion import session as S
from inversion.align import load_image
from tiny_models import SIZE, tiny_model_set

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTHING = S.file_present_from({})


@functools.lru_cache(maxsize=None)
def group_photo() -> tuple[Image.Image, list[tuple[int, int]]]:
    """Four faces on one canvas, two rows; returns the photo and where each face's source was placed."""
    hopper = load_image(EXAMPLES / "grace_hopper.jpg")
    astronaut = load_image(EXAMPLES / "astronaut.png").crop((120, 0, 420, 300))  # the face, not the patch
    canvas = Image.new("RGB", (1300, 1250), (96, 112, 128))
    pieces = [
        (hopper, (40, 20)),                                                                 # row 1, left
        (astronaut.resize((420, 420), Image.Resampling.BICUBIC), (760, 60)),                # row 1, right
        (hopper.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((430, 504)), (100, 680)),  # row 2, left
        (hopper.rotate(6, resample=Image.Resampling.BICUBIC, fillcolor=(96, 112, 128)), (690, 640)),  # row 2, right
    ]
    for piece, at in pieces:
        canvas.paste(piece, at)
    return canvas, [at for _, at in pieces]


@functools.lru_cache(maxsize=None)
def aligned_group() -> G.Group:
    image, _ = group_photo()
    return G.align_all(S.open_photo(image))


def seam_step(result: np.ndarray, original: np.ndarray, mask: np.ndarray) -> float:
    """How sharply the change (result - input) steps up across the mask's edge: the 99th percentile over the
    edge band (0.02 < mask < 0.98) of its gradient, in grey levels per pixel. The change is smoothed first
    (sigma 2 px) so the resampling noise of the warp back does not count. A hard-edged paste of a +35 colour
    shift scores about 6.5; a step spread over the feather far less."""
    from scipy.ndimage import gaussian_filter

    change = gaussian_filter(result.astype(np.float32).mean(axis=2) - original.astype(np.float32).mean(axis=2), 2.0)
    gy, gx = np.gradient(change)
    band = (mask > 0.02) & (mask < 0.98)
    return float(np.percentile(np.hypot(gx, gy)[band], 99))


def test_align_all_in_reading_order():
    group = aligned_group()
    _, placed = group_photo()
    assert len(group.faces) == 4
    centres = [f.aligned.quad.mean(axis=0) for f in group.faces]
    # Reading order = the order the faces were placed in: row 1 left, right; row 2 left, right.
    nearest = [int(np.argmin([np.hypot(c[0] - (x + 250), c[1] - (y + 250)) for x, y in placed])) for c in centres]
    assert nearest == [0, 1, 2, 3]
    assert all(f.aligned.image.size == (S.ALIGN_SIZE, S.ALIGN_SIZE) for f in group.faces)


def test_paste_all_untouched_outside_masks_and_no_seam():
    group = aligned_group()
    photo = np.asarray(group.photo.image)
    # An "edit" that also shifts the colour (as inversions do): +35 on every channel of every face.
    shifted = [Image.fromarray(np.clip(np.asarray(f.aligned.image, np.int16) + 35, 0, 255).astype(np.uint8))
               for f in group.faces]
    pasted = np.asarray(G.paste_faces(group.photo.image, [(f.aligned, e) for f, e in zip(group.faces, shifted)]))
    any_mask = np.zeros(photo.shape[:2], bool)
    steps = []
    for k, face in enumerate(group.faces):
        box, mask = G.face_mask(face.aligned, group.photo.image.size)
        full = np.zeros(photo.shape[:2], np.float32)
        full[box[1]:box[3], box[0]:box[2]] = mask
        any_mask |= full > 0
        steps.append(seam_step(pasted, photo, full))
        inner = np.rint(face.aligned.landmarks[27:68]).astype(int)  # nose, eyes, mouth
        assert full[inner[:, 1], inner[:, 0]].min() > 0.99  # the mask covers the face fully
        # A hard-edged paste of the same faces shows the step: the metric sees it.
        hard = photo.copy()
        warped = np.asarray(G.alignment.warp_to_photo(shifted[k], face.aligned.quad, box))
        inside = mask > 0.5
        hard[box[1]:box[3], box[0]:box[2]][inside] = warped[inside]
        assert seam_step(hard, photo, full) > 5.5  # measured 6.5
    assert np.array_equal(pasted[~any_mask], photo[~any_mask])  # bit-identical away from the faces
    assert np.abs(pasted[any_mask].astype(int) - photo[any_mask]).max() > 30  # the faces did change
    assert max(steps) < 3.5  # measured 1.8-2.8: the +35 shift fades in over the feather, no visible step


def test_invert_edit_paste_all_with_batched_encoders(tmp_path, monkeypatch):
    models = tiny_model_set()
    group = aligned_group()
    calls = []
    real = models.encoder

    def counting(kind):
        bundle = real(kind)

        class Counted:
            opts = bundle.opts

            def encode(self, x):
                calls.append((kind, x.shape[0]))
                return bundle.encode(x)
        return Counted()
    monkeypatch.setattr(models, "encoder", counting)
    inverted, skipped = G.invert_all(models, group, ["e4e", "psp"], file_present=NOTHING)
    assert skipped == [] and sorted(calls) == [("e4e", 4), ("psp", 4)]  # one pass per encoder for all faces
    monkeypatch.setattr(models, "encoder", real)
    for face in inverted.faces:  # the batched codes are each face's own
        image = S.model_input(face, SIZE)
        with torch.no_grad():
            bundle = real("e4e")
            alone = bundle.encode(G.encoder_input(image.to(models.device), int(bundle.opts.get("input_size", 256))))
        assert torch.allclose(face.results["e4e"].inversion.w_plus, alone.cpu(), atol=1e-4)
    edited = G.edit_all(models, inverted, "sefa", 3.0, cache_dir=tmp_path)
    assert all(f.edit is not None and set(f.edit.strips) == {"e4e", "psp"} for f in edited.faces)
    done = G.paste_all(edited, "e4e")
    assert done.pasted.size == group.photo.image.size and done.pasted_method == "e4e"
    photo, pasted = np.asarray(group.photo.image), np.asarray(done.pasted)
    changed = np.abs(pasted.astype(int) - photo).max(axis=2) > 0
    for face in group.faces:  # every face got its edit
        l, t, r, b = (int(v) for v in face.aligned.face.bbox)
        assert changed[t:b, l:r].mean() > 0.5
    assert not changed[:5].any() and not changed[:, :5].any()  # the canvas border is untouched
    with pytest.raises(S.SessionError):
        G.paste_all(edited, "pti")
