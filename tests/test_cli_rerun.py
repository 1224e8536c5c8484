"""The command line keeps earlier results and does what the README says: a rerun with other settings into the same
``--out`` replaces nothing without ``--overwrite`` (one line, exit 2); folders are scanned by content (a JPEG named
``.dat`` is found); the README's example (``--edit smile=2``) works on the offline built-in set, with the file names
the README lists."""
from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inversion import cli
from inversion import methods as M
from inversion.cli.command import edit_for_family
from inversion.cli.inputs import looks_like_image
from inversion.models import ModelSet
from tiny_models import tiny_model_set

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"


def run(argv, factory=lambda device, locate: {"tiny": tiny_model_set()}):
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main([str(a) for a in argv], model_sets=factory, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture
def short_presets():
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(M.APP_PRESETS, ("w+", "fast"), {"steps": 3, "start": "e4e"})
        yield


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_with_other_settings_keeps_earlier_results(tmp_path, short_presets):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(HOPPER, photos / "hopper.jpg")
    out = tmp_path / "out"
    rc, _, stderr = run([photos, "--out", out, "--methods", "e4e,w+", "--paste-back", "-q"])
    assert rc == 0, stderr
    before = _snapshot(out)
    assert {"hopper/wplus.png", "hopper/wplus_wplus.npy", "hopper/wplus_pasted.png"} <= set(before)

    rc, stdout, stderr = run([photos, "--out", out, "--methods", "e4e", "-q"])  # other settings, same --out
    assert rc == 2 and stdout == ""
    assert stderr.count("\n") == 1  # one line says what happened
    assert "already holds results of 1 of these photos made with other settings (methods e4e,w+, now e4e" in stderr
    assert "nothing was run or replaced" in stderr and "--overwrite" in stderr
    assert _snapshot(out) == before  # every earlier file is still there, unchanged

    shutil.copy(ASTRONAUT, photos / "hopper.jpg")  # same name, another photo: also kept
    rc, _, stderr = run([photos, "--out", out, "--methods", "e4e,w+", "--paste-back", "-q"])
    assert rc == 2 and "from another file of the same name" in stderr and _snapshot(out) == before

    rc, stdout, stderr = run([photos, "--out", out, "--methods", "e4e", "--overwrite", "-q"])
    assert rc == 0, stderr
    assert "replacing the earlier results of 1 photo(s)" in stderr and "as --overwrite asks" in stderr
    assert not (out / "hopper" / "wplus.png").exists() and (out / "hopper" / "e4e.png").exists()


def test_folders_are_scanned_by_content(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(HOPPER, photos / "scan_0001.dat")  # a JPEG without an image extension
    (photos / "notes.dat").write_text("plain text, not an image\n")
    (photos / "BM_notes.txt").write_text("BM starts like a bitmap but is text\n")
    assert looks_like_image(photos / "scan_0001.dat") and not looks_like_image(photos / "notes.dat")
    assert not looks_like_image(photos / "BM_notes.txt")
    files, problems = cli.collect_inputs([str(photos)], recursive=False, exclude=tmp_path / "out")
    assert [f.name for f in files] == ["scan_0001.dat"] and problems == []
    rc, _, stderr = run([photos, "--out", tmp_path / "out", "--methods", "e4e", "-q"])
    assert rc == 0, stderr
    assert (tmp_path / "out" / "scan_0001" / "e4e.png").is_file()


def test_edit_names_follow_the_model():
    builtin = ModelSet("builtin", device=torch.device("cpu"), locate=lambda name: Path("/nonexistent"))
    ffhq = ModelSet("ffhq", device=torch.device("cpu"), locate=lambda name: Path("/nonexistent"))
    assert edit_for_family("smile", builtin) == "builtin_smile"
    assert edit_for_family("builtin_smile", ffhq) == "smile"
    assert edit_for_family("smile", ffhq) == "smile" and edit_for_family("sefa", builtin) == "sefa"
    assert edit_for_family("glasses", builtin) == "builtin_glasses"  # only the built-in model has this one
    with pytest.raises(cli.UsageError, match="not made for the .* model; for it use .*builtin_age"):
        edit_for_family("lipstick", builtin)
    with pytest.raises(cli.UsageError, match="not made for the .*FFHQ"):
        edit_for_family("glasses", ffhq)
    args = cli.build_parser().parse_args(["x.jpg", "--out", "o", "--edit", "glasses=1", "--edit", "smile"])
    assert [e.name for e in args.edit] == ["glasses", "smile"]


def test_readme_example_runs_on_the_builtin_set(tmp_path):
    """The README's command, as written there, on the shipped built-in set (methods cut to e4e to stay quick):
    the edit is found and every file the README names is written."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = re.search(r"^python -m inversion\.cli (.+)$", readme, re.M).group(1).split()
    assert command[:3] == ["photos/", "--out", "results/"] and "--edit" in command
    command[command.index("--methods") + 1] = "e4e"
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(HOPPER, photos / "hopper.jpg")
    argv = [str(photos), "--out", str(tmp_path / "results"), *command[3:], "--family", "builtin", "--device", "cpu"]
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, stdout=out, stderr=err)
    assert rc == 0, err.getvalue()
    assert "--edit smile means builtin_smile" in err.getvalue()
    folder = tmp_path / "results" / "hopper"
    names = {p.name for p in folder.iterdir()}
    assert {"aligned.png", "e4e.png", "e4e_wplus.npy", "e4e_pasted.png", "e4e_smile+2.png",
            "e4e_smile+2_wplus.npy", "e4e_smile+2_pasted.png", "metrics.json"} == names
    moved = np.load(folder / "e4e_smile+2_wplus.npy") - np.load(folder / "e4e_wplus.npy")
    assert np.abs(moved).max() > 0.1  # the edit moved the codes
