"""``--all-faces`` on the command line: a group photo saved as HEIC goes through align -> invert (batched
encoders) -> edit -> paste back, one photo out with every face edited (tiny in-memory family)."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from inversion import align, cli
from test_group import group_photo
from tiny_models import tiny_model_set


def test_all_faces_from_a_heic_group_photo(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    image, _ = group_photo()
    assert align.register_heif()
    source = tmp_path / "in" / "group.heic"
    source.parent.mkdir()
    image.save(source, "HEIF", quality=95)
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main([str(source.parent), "--out", str(tmp_path / "out"), "--methods", "e4e,psp", "--edit", "sefa=3",
                   "--all-faces", "--paste-back"], model_sets=lambda d, l: {"tiny": tiny_model_set()},
                  stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    folder = tmp_path / "out" / "group"
    record = json.loads((folder / "metrics.json").read_text())
    assert record["photo"]["faces_used"] == 4 and record["settings"]["all_faces"] is True
    assert {f"face{i}_aligned.png" for i in range(4)} <= set(record["files"])
    assert {"e4e_pasted.png", "psp_pasted.png", "e4e_sefa0+3_pasted.png", "face3_psp_sefa0+3_wplus.npy"} <= \
        set(record["files"])
    photo = np.asarray(align.load_image(source))  # the decoded HEIC
    pasted = np.asarray(Image.open(folder / "e4e_sefa0+3_pasted.png"))
    assert pasted.shape == photo.shape
    changed = np.abs(pasted.astype(int) - photo).max(axis=2) > 0
    for face in record["faces"]:
        l, t, r, b = (int(v) for v in face["bbox"])
        assert changed[t:b, l:r].mean() > 0.5  # every face was edited and pasted back
    assert not changed[:, :30].any() and not changed[-30:].any()  # away from the faces: the input's own pixels
