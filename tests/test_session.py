"""inversion.session on the tiny in-memory family: photo -> align -> invert -> edit -> paste back -> export.

Pure Python (no gradio server). Face detection runs for real on the example photos (dlib).
"""
from __future__ import annotations

import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from editing import EditRequest, edit_codes, load_pca
from editing.directions import data_file
from inversion import session as S
from inversion.align import FaceTooSmallError, InvalidImageError, NoFaceError
from inversion.checkpoints import CheckpointMissingError, FileStatus
from inversion.models import ModelSet
from inversion.result import Cancelled
from tiny_models import N_LATENT, SIZE, STYLE_DIM, TinyModelSet, tiny_model_set

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"
NOTHING = S.file_present_from({})


class _NoGenerator(TinyModelSet):
    """A tiny set whose generator weights are "not downloaded yet"."""

    def generator(self):
        raise CheckpointMissingError("not downloaded yet")


@pytest.fixture(scope="module")
def models() -> TinyModelSet:
    return tiny_model_set()


@pytest.fixture(scope="module")
def hopper() -> S.Photo:
    return S.open_photo(HOPPER)


@pytest.fixture(scope="module")
def inverted(models, hopper) -> S.VisitorState:
    state = S.align_photo(S.new_state(), hopper, 0)
    image = S.model_input(state, SIZE)
    for item in S.run_inversions(models, image, ["psp", "e4e"], file_present=NOTHING):
        state = S.add_result(state, item)
    return state


def test_tensor_image_round_trip():
    arr = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    t = S.to_tensor(Image.fromarray(arr))
    assert t.shape == (1, 3, SIZE, SIZE) and -1 <= float(t.min()) and float(t.max()) <= 1
    assert np.array_equal(np.asarray(S.to_pil(t)), arr)


def test_photo_faces_and_alignment(hopper):
    assert len(hopper.faces) == 1 and hopper.notes == ()
    state = S.align_photo(S.new_state(), hopper, 0)
    assert state.aligned.image.size == (S.ALIGN_SIZE, S.ALIGN_SIZE)
    assert S.model_input(state, SIZE).shape == (1, 3, SIZE, SIZE)
    with pytest.raises(S.SessionError, match="has 1 face"):
        S.align_photo(S.new_state(), hopper, 1)


def test_several_faces_can_be_picked():
    photo = S.open_photo(ASTRONAUT)
    assert len(photo.faces) >= 2
    thumbs = S.face_thumbnails(photo, size=48)
    assert len(thumbs) == len(photo.faces) and all(t.size == (48, 48) for t in thumbs)
    first = S.align_photo(S.new_state(), photo, 0)
    second = S.align_photo(first, photo, 1)
    assert second.face_index == 1 and "faces were found" in " ".join(S.photo_notes(second))
    diff = np.abs(np.asarray(first.aligned.image, np.float32) - np.asarray(second.aligned.image, np.float32))
    assert diff.mean() > 10


def test_exif_rotation_and_downscale(tmp_path):
    upright = Image.open(HOPPER).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera stores; EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)
    photo = S.open_photo(path)
    assert photo.image.size == upright.size and len(photo.faces) == 1
    small = S.open_photo(HOPPER, max_side=400)
    assert max(small.image.size) == 400 and "reduced" in small.notes[0] and len(small.faces) == 1


def test_photo_errors(tmp_path):
    with pytest.raises(NoFaceError, match="No face"):
        S.open_photo(Image.new("RGB", (300, 200), (90, 100, 110)))
    with pytest.raises(FaceTooSmallError):
        S.open_photo(Image.new("RGB", (60, 40), (90, 100, 110)))
    with pytest.raises(InvalidImageError):
        S.open_photo(b"definitely not an image")
    with pytest.raises(S.SessionError, match="Align a photo first"):
        S.model_input(S.new_state(), SIZE)


def test_inversions_fast_first_on_cpu_with_metrics(inverted):
    assert list(inverted.results) == ["e4e", "psp"]
    for r in inverted.results.values():
        inv = r.inversion
        assert inv.w_plus.shape == (1, N_LATENT, STYLE_DIM) and inv.w_plus.device.type == "cpu"
        assert r.reconstruction.size == (SIZE, SIZE) and r.family == "tiny"
        assert all(np.isfinite(r.metrics[k]) for k in ("mse", "psnr", "lpips", "code_spread", "seconds"))
        assert r.metrics["identity"] is None  # identity similarity is measured for FFHQ only
    rows = S.metrics_rows(inverted.results)
    assert [row[0] for row in rows] == ["e4e encoder", "pSp encoder"] and len(rows[0]) == len(S.METRIC_COLUMNS)
    name, points = S.tradeoff_points(inverted.results)
    assert name == "LPIPS" and [p["method"] for p in points] == ["e4e encoder", "pSp encoder"]


def test_missing_pieces_are_skipped_and_cancel_stops(hopper):
    cold = TinyModelSet()  # nothing loaded, no files: every method lacks its generator
    image = S.model_input(S.align_photo(S.new_state(), hopper, 0), SIZE)
    items = list(S.run_inversions(cold, image, ["e4e", "w"], file_present=NOTHING))
    assert [type(i) for i in items] == [S.Skipped, S.Skipped]
    assert "needs generator" in items[0].reason
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        list(S.run_inversions(tiny_model_set(), image, ["w"], cancel=cancel))
    with pytest.raises(S.SessionError, match="Unknown method"):
        S.order_methods(["e4e", "styleclip"])


def test_add_result_replaces_method_and_drops_other_family(inverted):
    e4e = inverted.results["e4e"]
    again = S.add_result(inverted, e4e)
    assert list(again.results) == ["e4e", "psp"]
    other = S.add_result(inverted, S.MethodResult("w", "builtin", "fast", e4e.inversion, e4e.metrics))
    assert list(other.results) == ["w"] and other.family == "builtin"


def test_edit_strips_for_every_result(models, inverted, tmp_path):
    state = S.edit_results(models, inverted, "sefa", 6.0, component=0, steps=3, cache_dir=tmp_path)
    assert set(state.edit.strips) == {"e4e", "psp"}
    for method, strip in state.edit.strips.items():
        assert strip.offsets == (-6.0, 0.0, 6.0) and len(strip.images) == 3
        recon = np.asarray(inverted.results[method].reconstruction)
        assert np.array_equal(np.asarray(strip.images[1]), recon)  # offset 0 is the reconstruction
        assert np.array_equal(np.asarray(strip.edited), np.asarray(strip.images[2]))
        assert np.abs(np.asarray(strip.images[0], np.float32) - np.asarray(strip.images[2], np.float32)).mean() > 1
        moved = (strip.edited_codes - inverted.results[method].inversion.w_plus).norm()
        assert abs(float(moved) - 6.0 * N_LATENT ** 0.5) < 1e-3  # unit SeFa direction, every layer, strength 6
    explorer = S.edit_results(models, inverted, "ganspace", 2.0, component=1, steps=1, cache_dir=tmp_path)
    assert all(s.offsets == (2.0,) for s in explorer.edit.strips.values())
    with pytest.raises(S.SessionError, match="FFHQ"):
        S.edit_results(models, inverted, "age", 1.0, cache_dir=tmp_path)
    with pytest.raises(S.SessionError, match="between"):
        S.edit_results(models, inverted, "sefa", 99.0, cache_dir=tmp_path)


def test_edit_controls(models):
    assert [name for _, name in S.edit_choices(models)] == ["ganspace", "sefa"]
    sefa = S.edit_control("sefa", models)
    assert (sefa.minimum, sefa.maximum, sefa.component_max) == (-15.0, 15.0, STYLE_DIM - 1)
    assert S.edit_control("sefa", _NoGenerator()).component_max == 511  # weights not there yet
    assert S.edit_control("eye_openness", models).component_max is None
    assert S.strip_offsets(3.0, 5) == (-3.0, -1.5, 0.0, 1.5, 3.0)
    assert S.strip_offsets(0.0, 5) == (0.0,)
    with pytest.raises(S.SessionError):
        S.strip_offsets(1.0, 0)


def test_named_ganspace_edit_slider_is_an_offset():
    """Target-mode edits: offset 0 -> the codes' own coordinate -> no change; offset o -> o std along the component."""
    pca = load_pca(data_file("ffhq_pca.safetensors"))
    gen = torch.Generator().manual_seed(0)
    codes = (pca.mean + 0.5 * torch.randn(1, 512, generator=gen)).reshape(1, 1, 512).repeat(1, 18, 1)
    strengths = S.edit_strengths("eye_openness", codes, [0.0, 4.0])
    out = edit_codes(codes, [EditRequest("eye_openness")], generator=torch.nn.Module(), generator_kind="ffhq",
                     strengths=strengths)
    assert torch.allclose(out[0], codes[0], atol=1e-5)
    step = (out[1] - codes[0])
    expected = 4.0 * pca.std[54] * pca.comp[54]
    assert torch.allclose(step[7], expected, atol=1e-4) and float(step[:7].abs().max()) == 0.0
    assert S.edit_strengths("sefa", codes, [0.0, 4.0]) == [0.0, 4.0]


def test_paste_back_keeps_photo_size(models, inverted, hopper):
    with pytest.raises(S.SessionError):
        S.paste_result(S.new_state())
    state = S.paste_result(inverted, "psp")
    assert state.pasted.size == hopper.image.size and state.pasted_method == "psp"
    before, after = np.asarray(hopper.image, np.int16), np.asarray(state.pasted, np.int16)
    changed = np.argwhere(np.abs(after - before).max(axis=2) > 0)
    assert len(changed) > 1000
    quad = state.aligned.quad
    assert changed[:, 1].min() >= quad[:, 0].min() - 2 and changed[:, 1].max() <= quad[:, 0].max() + 2


def test_export_files(models, inverted, tmp_path):
    with pytest.raises(S.SessionError):
        S.export_files(S.new_state(), tmp_path / "none")
    state = S.paste_result(S.edit_results(models, inverted, "sefa", 3.0, steps=3, cache_dir=tmp_path), "e4e")
    files = S.export_files(state, tmp_path / "out")
    names = [f.name for f in files]
    assert names[-1] == "inversion_results.zip" and all(f.is_file() for f in files)
    assert {"aligned.png", "e4e_reconstruction.png", "psp_wplus.npy", "e4e_edited.png", "e4e_edited_wplus.npy",
            "pasted_back.png", "settings.json"} <= set(names)
    assert np.load(tmp_path / "out" / "psp_wplus.npy").shape == (1, N_LATENT, STYLE_DIM)
    settings = json.loads((tmp_path / "out" / "settings.json").read_text())
    mse = inverted.results["psp"].metrics["mse"]
    assert settings["methods"]["psp"]["metrics"]["mse"] == pytest.approx(mse, rel=1e-5)
    assert settings["edit"]["name"] == "sefa" and settings["pasted_back_method"] == "e4e"
    with zipfile.ZipFile(files[-1]) as z:
        assert sorted(z.namelist()) == sorted(names[:-1])
    assert S.safe_name("w+") == "wplus" and S.safe_name("../x") == "___x"


def test_sweep_old(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    (old / "a.png").write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old, (past, past))
    assert S.sweep_old(tmp_path, max_age_s=3600) == 1
    assert not old.exists() and new.exists()


def test_family_choice_status_and_banner(models):
    ffhq = ModelSet("ffhq")
    sets = {"ffhq": ffhq, "tiny": models}
    assert S.default_family(sets, NOTHING) == "tiny"
    downloading = {"stylegan2_ffhq": FileStatus("stylegan2_ffhq", "downloading", "", None, 50, 100)}
    present = S.file_present_from(downloading)
    assert S.default_family(sets, present) == "tiny"
    banner = S.family_banner(sets, "tiny", present, downloading)
    assert "downloading" in banner and "Tiny test model" in banner
    failed = {"stylegan2_ffhq": FileStatus("stylegan2_ffhq", "failed", "offline mode is on")}
    assert "download failed" in S.family_banner({"ffhq": ffhq}, "ffhq", NOTHING, failed)
    assert "offline mode is on" in S.status_markdown(ffhq, NOTHING, failed)
    text = S.status_markdown(ffhq, present, downloading)
    assert "methods ready: none yet" in text and "downloading 50%" in text
    ready = {"stylegan2_ffhq": FileStatus("stylegan2_ffhq", "present", "", Path("x"), 1, 1)}
    assert S.default_family(sets, S.file_present_from(ready)) == "ffhq"
    assert S.family_banner(sets, "ffhq", S.file_present_from(ready), ready) == ""
    ok = S.method_status(ffhq, S.file_present_from(ready))
    assert ok["w"][0] and ok["pti"][0] and not ok["e4e"][0] and "e4e encoder" in ok["e4e"][1]
    # the built-in 128 px set is preferred over a missing FFHQ generator once its files exist
    builtin = ModelSet("builtin")
    assert S.default_family({"ffhq": ffhq, "builtin": builtin}, lambda name: name == "builtin_g128") == "builtin"


def test_builtin_family_loads_from_bundled_files(tmp_path, monkeypatch, hopper):
    """Built-in files present, FFHQ missing: the built-in set is the default and inverts (tiny stand-in files)."""
    import inversion.models as model_files
    from safetensors.torch import save_file

    from inversion.encoders import E4EEncoder, EncoderBundle, PSPEncoder, bundled_encoder_files
    from inversion.stylegan2 import Generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        g = Generator(128, style_dim=32, n_mlp=2, channel_multiplier=1, max_channels=16)
        avg = g.mean_latent(500, generator=torch.Generator().manual_seed(0))
        save_file({**g.state_dict(), "latent_avg": avg.reshape(-1)}, str(tmp_path / "builtin_g128.safetensors"))
        for kind, cls in (("psp", PSPEncoder), ("e4e", E4EEncoder)):
            enc = cls(n_styles=g.n_latent, input_size=64, widths=(8, 8, 8, 8), units=(1, 1, 1, 1), style_dim=32)
            bundle = EncoderBundle(kind, enc, {}, avg.expand(g.n_latent, 32).clone(), {"output_size": 128})
            tensors, config = bundled_encoder_files(bundle)
            save_file(tensors, str(tmp_path / f"builtin_{kind}128.safetensors"))
            (tmp_path / f"builtin_{kind}128.json").write_text(json.dumps(config))
    monkeypatch.setattr(model_files, "DATA", tmp_path)

    def nothing(name: str):
        raise CheckpointMissingError(f"{name} is not here")

    sets = {"ffhq": ModelSet("ffhq", locate=nothing), "builtin": ModelSet("builtin", locate=nothing)}
    assert S.default_family(sets, NOTHING) == "builtin"
    assert "Built-in small faces 128" in S.family_banner(sets, "builtin", NOTHING, {})
    builtin = sets["builtin"]
    status = S.method_status(builtin, NOTHING)
    # every method is ready from the bundled files this test wrote; HyperStyle's file is not among them and says so
    assert {m for m, (ok, _) in status.items() if ok} == set(status) - {"hyperstyle"}
    assert "HyperStyle" in status["hyperstyle"][1]
    state = S.align_photo(S.new_state(), hopper, 0)
    items = list(S.run_inversions(builtin, S.model_input(state, builtin.family.size), ["e4e", "psp"],
                                  file_present=NOTHING))
    assert [type(i) for i in items] == [S.MethodResult, S.MethodResult]
    assert items[0].inversion.image.shape == (1, 3, 128, 128) and items[0].metrics["lpips"] is None
    assert {name for _, name in S.edit_choices(builtin)} >= {"ganspace", "sefa", "builtin_smile", "builtin_age"}
