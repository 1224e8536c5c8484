"""The command line (inversion.cli) on the tiny in-memory family: batch outputs, skips, resume, exit codes.

Face detection runs for real on the example photos (dlib). The optimization presets are shortened to a few
steps (monkeypatched APP_PRESETS) so the whole file stays quick on a small CPU.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inversion import cli
from inversion import methods as M
from inversion.checkpoints import CheckpointMissingError
from tiny_models import N_LATENT, SIZE, STYLE_DIM, OnSecondEncode, TinyModelSet, tiny_model_set

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"
METHODS = ("e4e", "wplus", "pti")
EDITS = ("sefa0+3", "ganspace1+2")
SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def tiny_sets(device, locate):
    return {"tiny": tiny_model_set()}


class _NoWeights(TinyModelSet):
    """A tiny set whose weights are "not downloaded": any attempt to load the generator fails."""

    def _load_generator(self):
        raise CheckpointMissingError("weight file 'tiny_g.pt' is missing: download it by hand from example.org")


def no_weight_sets(device, locate):
    return {"tiny": _NoWeights()}


def run(argv, factory=tiny_sets, **kw):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main([str(a) for a in argv], model_sets=factory, stdout=out, stderr=err, **kw)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def short_presets():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(M.APP_PRESETS, ("w+", "fast"), {"steps": 3, "start": "e4e"})
        mp.setitem(M.APP_PRESETS, ("pti", "fast"), {"pivot": "e4e", "tune_steps": 3})
        yield


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(HOPPER, folder / "grace_hopper.jpg")
    shutil.copy(ASTRONAUT, folder / "astronaut.png")
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    Image.new("RGB", (200, 160), (128, 128, 128)).save(folder / "gray.png")
    (folder / "readme.txt").write_text("not an image extension: not even looked at\n")
    return folder


@pytest.fixture(scope="module")
def batch(photos, tmp_path_factory, short_presets):
    out = tmp_path_factory.mktemp("out")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        argv = [photos, "--out", out, "--methods", "pti,e4e,w+", "--preset", "fast", "--edit", "sefa=3",
                "--edit", "ganspace:1=2", "--paste-back"]
        start = time.perf_counter()
        rc, stdout, stderr = run(argv)
        seconds = time.perf_counter() - start
    return {"argv": argv, "out": out, "rc": rc, "stdout": stdout, "stderr": stderr, "seconds": seconds}


def test_batch_outputs(batch, photos):
    assert batch["rc"] == 0, batch["stderr"]
    out = batch["out"]
    assert sorted(p.name for p in out.iterdir()) == ["astronaut", "grace_hopper", "metrics.csv", "summary.json"]
    for name, source in (("astronaut", ASTRONAUT), ("grace_hopper", HOPPER)):
        folder = out / name
        assert Image.open(folder / "aligned.png").size == (1024, 1024)
        for method in METHODS:
            assert Image.open(folder / f"{method}.png").size == (SIZE, SIZE)
            assert np.load(folder / f"{method}_wplus.npy").shape == (1, N_LATENT, STYLE_DIM)
        record = json.loads((folder / "metrics.json").read_text())
        assert record["settings"]["methods"] == ["e4e", "w+", "pti"]  # run order: fast ones first
        assert record["settings"]["presets"] == {"e4e": "default", "w+": "fast", "pti": "fast"}
        assert list(record["methods"]) == ["e4e", "w+", "pti"] and record["skipped_methods"] == {}
        for entry in record["methods"].values():
            metrics = entry["metrics"]
            assert all(math.isfinite(metrics[k]) for k in ("mse", "psnr", "lpips", "code_spread", "seconds"))
            assert metrics["identity"] is None  # identity similarity is measured for FFHQ only
            assert entry["wplus_shape"] == [1, N_LATENT, STYLE_DIM]
        assert "note" in record["methods"]["pti"]  # its codes need the tuned generator
        assert record["source"]["name"] == source.name and len(record["source"]["sha256"]) == 64
        assert sorted(record["files"]) == sorted(p.name for p in folder.iterdir() if p.name != "metrics.json")
    assert any("faces were found" in w for w in json.loads((out / "astronaut" / "metrics.json").read_text())["warnings"])
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["photo"], r["method"]) for r in rows] == [(p, m) for p in ("astronaut", "grace_hopper")
                                                          for m in ("e4e", "w+", "pti")]
    assert all(math.isfinite(float(r["mse"])) and float(r["lpips"]) >= 0 and r["identity"] == "" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"done": 2, "already done": 0, "skipped": 2, "failed": 0, "not reached": 0,
                                 "missing": 0}
    assert not summary["interrupted"] and summary["error"] is None
    status = {Path(p["source"]).name: p["status"] for p in summary["photos"]}
    assert status == {"astronaut.png": "done", "grace_hopper.jpg": "done", "gray.png": "skipped",
                      "notes.jpg": "skipped"}


def test_bad_files_get_one_line_each(batch, photos):
    skips = [line for line in batch["stderr"].splitlines() if line.startswith("skip ")]
    assert len(skips) == 2, batch["stderr"]
    assert skips[0].startswith(f"skip {photos / 'gray.png'}: No face found")
    assert skips[1].startswith(f"skip {photos / 'notes.jpg'}: The file is not an image")
    assert "Traceback" not in batch["stderr"] and "readme.txt" not in batch["stderr"]
    done = [line for line in batch["stdout"].splitlines() if line.startswith("done ")]
    assert len(done) == 2 and batch["stdout"].splitlines()[-1].startswith("2 done, 2 skipped")


def test_progress_from_the_method_callbacks(batch):
    # not a TTY: plain lines, the first steps of the optimizations are shown (then at most one per 10 s)
    assert "W+ optimization 1/3" in batch["stderr"] and "PTI (pivotal tuning) 1/3" in batch["stderr"]
    assert "\r" not in batch["stderr"]


def test_edits_and_paste_back_files(batch):
    folder = batch["out"] / "grace_hopper"
    photo_size = Image.open(HOPPER).size
    for method in METHODS:
        recon = np.asarray(Image.open(folder / f"{method}.png"), np.float32)
        assert Image.open(folder / f"{method}_pasted.png").size == photo_size
        for edit in EDITS:
            edited = np.asarray(Image.open(folder / f"{method}_{edit}.png"), np.float32)
            assert np.abs(edited - recon).mean() > 1.0  # the edit changed the face
            codes = np.load(folder / f"{method}_{edit}_wplus.npy")
            assert codes.shape == (1, N_LATENT, STYLE_DIM)
            assert Image.open(folder / f"{method}_{edit}_pasted.png").size == photo_size
    moved = np.load(folder / f"e4e_{EDITS[0]}_wplus.npy") - np.load(folder / "e4e_wplus.npy")
    assert abs(float(np.linalg.norm(moved)) - 3.0 * N_LATENT ** 0.5) < 1e-3  # unit SeFa direction, strength 3
    edits = json.loads((folder / "metrics.json").read_text())["settings"]["edits"]
    assert [(e["name"], e["component"], e["offset"], e["key"]) for e in edits] == [
        ("sefa", 0, 3.0, "sefa0+3"), ("ganspace", 1, 2.0, "ganspace1+2")]


def test_rerun_skips_finished_photos_without_loading_models(batch, photos):
    out = batch["out"]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")}
    start = time.perf_counter()
    rc, stdout, stderr = run(batch["argv"], factory=no_weight_sets)  # any model loading would fail
    seconds = time.perf_counter() - start
    assert rc == 0, stderr
    assert stderr.count(": already done") == 2 and len([l for l in stderr.splitlines() if l.startswith("skip")]) == 4
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/metrics.json")} == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["already done"] == 2 and summary["counts"]["done"] == 0
    with open(out / "metrics.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 6  # finished photos stay in the batch table
    assert seconds < 0.5 * batch["seconds"], (seconds, batch["seconds"])


def test_only_bad_files_exit_1(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fake.jpg").write_bytes(b"\x00\x01 not a jpeg")
    Image.new("RGB", (60, 40), (90, 100, 110)).save(tmp_path / "in" / "tiny.png")
    rc, stdout, stderr = run([tmp_path / "in", "--out", tmp_path / "out"])
    assert rc == 1
    lines = [l for l in stderr.splitlines() if l.startswith("skip ")]
    assert len(lines) == 2 and "only 60x40 pixels" in stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["counts"]["skipped"] == 2
    (tmp_path / "empty").mkdir()
    rc, _, stderr = run([tmp_path / "empty", "--out", tmp_path / "out"])
    assert rc == 1 and "nothing to do" in stderr


def test_missing_input_is_a_bad_argument(tmp_path):
    """A mistyped file or folder: exit 2 (as documented for bad arguments), one error line, nothing run or written."""
    for missing in ("missing.jpg", "folder_that_is_not_there"):
        rc, stdout, stderr = run([HOPPER, tmp_path / missing, "--out", tmp_path / "out"])
        errors = [l for l in stderr.splitlines() if "error:" in l]
        assert rc == 2 and len(errors) == 1 and f"{missing}: no such file or folder" in errors[0]
        assert not (tmp_path / "out").exists()


def test_missing_weights_one_line_and_exit_1(tmp_path):
    rc, stdout, stderr = run([HOPPER, "--out", tmp_path], factory=no_weight_sets)
    assert rc == 1
    errors = [l for l in stderr.splitlines() if l.startswith("error: ")]
    assert errors == ["error: weight file 'tiny_g.pt' is missing: download it by hand from example.org"]
    assert not (tmp_path / "grace_hopper").exists()


@pytest.mark.parametrize("argv", [
    ["--methods", "e4e,styleclip"],
    ["--edit", "nonsense=1"],
    ["--edit", "age=1"],            # made for FFHQ, not the tiny family
    ["--edit", "sefa=99"],          # out of range
    ["--edit", "sefa=nan"],
    ["--edit", "smile:2=1"],        # not an explorer: no component
    ["--edit", f"sefa:{STYLE_DIM}=1"],  # the tiny generator has STYLE_DIM SeFa directions
    ["--preset", "fastest"],
    ["--preset", "e4e=fast"],
    ["--family", "nope"],
    ["--face", "-1"],
    ["--device", "tpu"],
    ["--seed", "x"],
])
def test_bad_arguments_exit_2(argv, tmp_path):
    rc, _, stderr = run([HOPPER, "--out", tmp_path / "out", *argv])
    assert rc == 2
    assert "usage: python -m inversion.cli" in stderr and "python -m inversion.cli: error: " in stderr
    out = tmp_path / "out"
    assert not out.exists() or not any(out.iterdir())  # checked before any work (the component: at model load)


def test_cancel_event_stops_before_the_next_photo(tmp_path):
    stop = threading.Event()
    stop.set()
    rc, _, stderr = run([HOPPER, "--out", tmp_path], cancel=stop)
    assert rc == 130 and not (tmp_path / "grace_hopper").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["counts"]["not reached"] == 1


def test_as_a_module_bad_arguments(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "inversion.cli", str(HOPPER)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "--out" in proc.stderr


class _CtrlCOnSecondPhoto(OnSecondEncode):
    """Tiny set whose e4e encoder sends the process a SIGINT (Ctrl-C) while it encodes the second photo."""

    def on_second(self) -> None:
        signal.raise_signal(signal.SIGINT)


def test_stop_keeps_finished_photos_and_resumes(tmp_path):
    for src in (HOPPER, ASTRONAUT):
        (tmp_path / "in").mkdir(exist_ok=True)
        shutil.copy(src, tmp_path / "in" / src.name)
    models = _CtrlCOnSecondPhoto()
    argv = [tmp_path / "in", "--out", tmp_path / "out", "--methods", "e4e"]
    before = signal.getsignal(signal.SIGINT)
    rc, stdout, stderr = run(argv, factory=lambda d, l: {"tiny": models})
    assert signal.getsignal(signal.SIGINT) is before  # the CLI's handler is removed again
    assert rc == 130 and "stopping after the current step" in stderr and "stopped: finished photos are kept" in stderr
    out = tmp_path / "out"
    assert (out / "astronaut" / "metrics.json").is_file()
    assert not (out / "grace_hopper").exists() and not (out / cli.PARTIAL).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["counts"]["done"] == 1 and summary["counts"]["not reached"] == 1
    rc, stdout, stderr = run(argv)
    assert rc == 0 and "astronaut.png: already done" in stderr and "done " in stdout
    assert (out / "grace_hopper" / "metrics.json").is_file()
    # other settings: the earlier results are kept (nothing runs) unless --overwrite says to replace them
    rc, _, stderr = run([*argv, "--seed", "1"])
    assert rc == 2 and "with other settings (seed 0, now 1)" in stderr
    assert json.loads((out / "astronaut" / "metrics.json").read_text())["settings"]["seed"] == 0
    rc, _, stderr = run([*argv, "--seed", "1", "--overwrite"])
    assert rc == 0 and "already done" not in stderr
    assert json.loads((out / "astronaut" / "metrics.json").read_text())["settings"]["seed"] == 1


def test_safe_folder_names():
    hostile = ["../x", "..", ".", "a/b", "写真", "画像", "Grâce Hopper", "CON", "-rf", "metrics.csv", "x" * 300,
               "line\nbreak", "tab\there", "\udcff\udcfe", "ok-name_1"]
    names = cli.folder_names([Path(f"/photos/{i}/{h}.jpg") for i, h in enumerate(hostile)])
    assert all(SAFE.match(n) and len(n) <= 64 for n in names)
    assert len({n.lower() for n in names}) == len(names)
    assert names[6] == "Grace_Hopper" and names[-1] == "ok-name_1" and names[7] == "CON_" and names[8] == "rf"
    assert names[0] == "x" and names[1] == "photo"  # path parts never reach the name; ".." -> "photo"
    assert all(names[i].startswith("photo-") for i in (2, 4, 5))  # "." and unicode-only names stay distinct
    assert cli._display("line\nbreak\udcff") == "line\\nbreak\\udcff"


def test_hostile_file_names_stay_inside_out(tmp_path):
    (tmp_path / "in").mkdir()
    names = ["..jpg", "Grâce ☃ 写真.jpg", "evil\nname.jpg"]
    for name in names:
        shutil.copy(HOPPER, tmp_path / "in" / name)
    out = tmp_path / "out"
    rc, stdout, stderr = run([*(tmp_path / "in" / n for n in names), "--out", out, "--methods", "e4e", "-q"])
    assert rc == 0, stderr
    folders = sorted(p for p in out.iterdir() if p.is_dir())
    assert [p.name for p in folders] == ["Grace", "evil_name", "photo"]
    assert all((p / "metrics.json").is_file() and (p / "e4e.png").is_file() for p in folders)
    assert sorted(os.listdir(tmp_path)) == ["in", "out"]
    assert stdout.count("\n") == 1 and stderr == ""  # -q: only the summary line; the names are escaped in it


def test_progress_bar_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    reporter = cli.Reporter(io.StringIO(), err)
    reporter.photo(1, 4, "b.jpg")
    reporter.progress(0.5, "W+ optimization 15/30")
    reporter.line("skip a.jpg: reason")
    text = err.getvalue()
    assert "\r" in text and "[########------------] 2/4 b.jpg | W+ optimization 15/30 | 0:00" in text
    assert text.endswith("\r\033[Kskip a.jpg: reason\n")  # the bar is cleared before a message


class _NoPSP(TinyModelSet):
    """A tiny set without pSp weights."""

    def _load_encoder(self, kind):
        if kind == "psp":
            raise CheckpointMissingError("weight file 'tiny_psp.pt' is missing: download it by hand from example.org")
        return super()._load_encoder(kind)


def test_recursive_missing_encoder_and_output_inside_input(tmp_path):
    (tmp_path / "in" / "sub").mkdir(parents=True)
    shutil.copy(HOPPER, tmp_path / "in" / "sub" / "hopper.jpg")
    out = tmp_path / "in" / "results"
    argv = [tmp_path / "in", "--out", out, "--methods", "e4e,psp"]
    rc, _, stderr = run(argv, factory=lambda d, l: {"tiny": _NoPSP()})
    assert rc == 1 and "nothing to do" in stderr  # without -r the sub-folder is not searched
    rc, _, stderr = run([*argv, "-r"], factory=lambda d, l: {"tiny": _NoPSP()})
    assert rc == 0, stderr
    assert stderr.count("note: pSp encoder cannot run: weight file 'tiny_psp.pt' is missing") == 1
    record = json.loads((out / "hopper" / "metrics.json").read_text())
    assert list(record["methods"]) == ["e4e"] and "tiny_psp.pt" in record["skipped_methods"]["psp"]
    assert not (out / "hopper" / "psp.png").exists()
    rc, _, stderr = run([*argv, "-r"])  # the results folder is not read as input; the photo is done
    assert rc == 0 and stderr.count("skip ") == 1 and "hopper.jpg: already done" in stderr
