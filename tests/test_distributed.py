"""The batch CLI over two processes (torch.distributed, gloo on the CPU) on the tiny test models.

Each rank is a separate process started with the environment torchrun gives its workers (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT); it calls ``cli.main`` with the tiny model set. The merged outputs
(metrics.csv, summary.json, every photo's files) are compared with a single-process run of the same command.
Optimization presets are shortened (as in test_cli) so the file stays quick on a small CPU.
"""
from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inversion import cli
from inversion import distributed as D
from inversion import methods as M
from tiny_models import OnSecondEncode, tiny_model_set
from app_server import free_port

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"
SHORT = {("w+", "fast"): {"steps": 3, "start": "e4e"}}
RTOL, ATOL = 1e-4, 1e-5
"""Numbers of the two runs must agree this closely (same seeds; only the process differs)."""
WAIT_S = 150


# ------------------------------------------------------------------------------------------ pure parts

def test_launch_from_the_environment():
    assert D.detect_launch({}) == D.Launch() and not D.detect_launch({}).distributed
    assert D.detect_launch({"WORLD_SIZE": "1", "RANK": "0"}) == D.Launch()
    launch = D.detect_launch({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (launch.rank, launch.world_size, launch.local_rank, launch.is_main) == (3, 4, 1, False)
    for env in ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"}, {"WORLD_SIZE": "2", "RANK": "0"},
                {"WORLD_SIZE": "two"}):
        with pytest.raises(D.LaunchError):
            D.detect_launch(env)
    assert D.rank_device(launch, torch.device("cpu")) == torch.device("cpu")


def test_shards_cover_the_inputs_once():
    for count in (0, 1, 5, 12):
        for world in (1, 2, 3):
            shards = [D.shard(count, D.Launch(r, world, r)) for r in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(count))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
            assert all(D.owner(i, world) == r for r, s in enumerate(shards) for i in s)


def test_parts_merge_in_input_order_and_ignore_other_runs(tmp_path):
    columns = ("photo", "value")
    ranks = [D.Ranks(D.Launch(r, 2, r), torch.device("cpu"), "run-a") for r in range(2)]
    D.write_part(tmp_path, ranks[1], columns=columns, rows=[(1, ["b", "2"]), (3, ["d", "4"]), (3, ["d", "5"])],
                 entries=[(1, {"status": "done"}), (3, {"status": "done"})], info={"error": None})
    D.write_part(tmp_path, ranks[0], columns=columns, rows=[(0, ["a", "1"]), (2, ["c", "3"])],
                 entries=[(0, {"status": "done"}), (2, {"status": "skipped"})], info={"interrupted": True})
    merged = D.read_parts(tmp_path, ranks[0], columns)
    assert merged.rows == [["a", "1"], ["b", "2"], ["c", "3"], ["d", "4"], ["d", "5"]]
    assert [merged.entries[i]["status"] for i in range(4)] == ["done", "done", "skipped", "done"]
    assert merged.missing == [] and merged.infos[0] == {"interrupted": True}
    other_run = D.Ranks(D.Launch(0, 3, 0), torch.device("cpu"), "run-b")
    assert D.read_parts(tmp_path, other_run, columns).missing == [0, 1, 2]  # stale token, and no rank 2 at all
    D.remove_parts(tmp_path)
    assert not (tmp_path / D.RANKS_DIR).exists()


# ------------------------------------------------------------------------------------------ two processes

class _DiesOnSecondPhoto(OnSecondEncode):
    """Tiny set whose e4e encoder ends the whole process (no cleanup, like a crash) on its second photo."""

    def on_second(self) -> None:
        os._exit(17)


def _rank_process(rank: int, world: int, port: int, argv: list[str], result: str, crash_rank: int) -> None:
    """One rank, as torchrun would start it: its environment, then ``cli.main``; rc and output into ``result``."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    M.APP_PRESETS.update(SHORT)
    models = _DiesOnSecondPhoto() if rank == crash_rank else tiny_model_set()
    out, err = io.StringIO(), io.StringIO()
    rc = cli.main(argv, model_sets=lambda device, locate: {"tiny": models}, stdout=out, stderr=err)
    Path(result).write_text(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}))


def run_ranks(argv: list, tmp: Path, *, world: int = 2, crash_rank: int = -1) -> list[dict]:
    """``cli.main(argv)`` in ``world`` processes (spawned, gloo on loopback); each rank's rc/stdout/stderr
    (None for a rank that died)."""
    ctx = multiprocessing.get_context("spawn")
    port = free_port()
    results = [tmp / f"rank{r}.json" for r in range(world)]
    procs = [ctx.Process(target=_rank_process, args=(r, world, port, [str(a) for a in argv], str(results[r]),
                                                      crash_rank)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(WAIT_S)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank did not finish in time"
    return [json.loads(r.read_text()) if r.exists() else None for r in results]


def run_single(argv: list) -> dict:
    """``cli.main(argv)`` in this process, one thread like each rank (two threads on a busy 2-core machine are
    many times slower than one)."""
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in SHORT.items():
                mp.setitem(M.APP_PRESETS, key, value)
            rc = cli.main([str(a) for a in argv], model_sets=lambda d, l: {"tiny": tiny_model_set()}, stdout=out,
                          stderr=err)
    finally:
        torch.set_num_threads(threads)
    return {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _close(a: object, b: object) -> bool:
    if a in (None, "") or b in (None, ""):
        return a == b
    return bool(np.isclose(float(a), float(b), rtol=RTOL, atol=ATOL))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    shutil.copy(HOPPER, folder / "grace_hopper.jpg")
    shutil.copy(ASTRONAUT, folder / "astronaut.png")
    (folder / "notes.jpg").write_text("this is a text file, not a photo\n")
    Image.new("RGB", (200, 160), (128, 128, 128)).save(folder / "gray.png")
    return folder


def test_two_processes_equal_one(photos, tmp_path):
    common = ["--methods", "e4e,w+", "--preset", "fast", "--edit", "sefa=3", "--paste-back"]
    single = run_single([photos, "--out", tmp_path / "single", *common])
    ranks = run_ranks([photos, "--out", tmp_path / "ranks", *common], tmp_path)
    assert single["rc"] == 0, single["stderr"]
    assert [r["rc"] for r in ranks] == [0, 0], [r["stderr"] for r in ranks]
    a, b = tmp_path / "single", tmp_path / "ranks"
    assert _files(a) == _files(b)  # same photo folders and files; no part files or staging left behind
    assert {p.name for p in b.iterdir()} == {"astronaut", "grace_hopper", "metrics.csv", "summary.json"}

    rows_a, rows_b = _csv(a / "metrics.csv"), _csv(b / "metrics.csv")
    assert [(r["photo"], r["method"]) for r in rows_a] == [(r["photo"], r["method"]) for r in rows_b] == [
        (p, m) for p in ("astronaut", "grace_hopper") for m in ("e4e", "w+")]
    for ra, rb in zip(rows_a, rows_b):
        for key in ("mse", "psnr", "lpips", "identity", "code_spread"):
            assert _close(ra[key], rb[key]), (ra["photo"], ra["method"], key, ra[key], rb[key])
        assert {k: v for k, v in ra.items() if k not in cli.METRIC_KEYS} == \
               {k: v for k, v in rb.items() if k not in cli.METRIC_KEYS}

    sa, sb = json.loads((a / "summary.json").read_text()), json.loads((b / "summary.json").read_text())
    assert sa["counts"] == sb["counts"] == {"done": 2, "already done": 0, "skipped": 2, "failed": 0,
                                            "not reached": 0, "missing": 0}
    assert sa["photos"] == sb["photos"] and sa["settings"] == sb["settings"]
    assert (sb["interrupted"], sb["error"], sb["processes"], sb["processes_missing"]) == (False, None, 2, [])

    for name in ("astronaut", "grace_hopper"):
        for f in sorted((a / name).iterdir()):
            g = b / name / f.name
            if f.suffix == ".npy":
                np.testing.assert_allclose(np.load(g), np.load(f), rtol=RTOL, atol=ATOL)
            elif f.suffix == ".png":
                diff = np.abs(np.asarray(Image.open(g), np.int16) - np.asarray(Image.open(f), np.int16))
                assert diff.max() <= 1, (name, f.name, int(diff.max()))
        ma, mb = (json.loads((d / name / "metrics.json").read_text()) for d in (a, b))
        assert ma["settings"] == mb["settings"] and ma["files"] == mb["files"] and ma["source"] == mb["source"]

    # each rank reported its own photos, one line each, as a single process does
    skips = [line for r in ranks for line in r["stderr"].splitlines() if line.startswith("skip ")]
    assert sorted(skips) == sorted(l for l in single["stderr"].splitlines() if l.startswith("skip "))
    assert ranks[0]["stdout"].splitlines()[-1] == single["stdout"].splitlines()[-1].replace(
        str(a), str(b))  # rank 0 prints the whole batch's tally


def test_a_dead_rank_loses_nothing_and_a_rerun_completes(tmp_path):
    (tmp_path / "in").mkdir()
    for name, src in (("a_astronaut.png", ASTRONAUT), ("b_hopper.jpg", HOPPER), ("c_astronaut.png", ASTRONAUT),
                      ("d_hopper.jpg", HOPPER)):
        shutil.copy(src, tmp_path / "in" / name)
    out = tmp_path / "out"
    argv = [tmp_path / "in", "--out", out, "--methods", "e4e"]
    ranks = run_ranks(argv, tmp_path, crash_rank=1)  # rank 1 does b, d and dies while encoding d
    assert ranks[1] is None and ranks[0]["rc"] == 130, ranks[0]
    assert "run the same command again" in ranks[0]["stderr"]
    assert {p.name for p in out.iterdir()} == {"a_astronaut", "b_hopper", "c_astronaut", "metrics.csv",
                                              "summary.json"}
    assert [r["photo"] for r in _csv(out / "metrics.csv")] == ["a_astronaut", "b_hopper", "c_astronaut"]
    summary = json.loads((out / "summary.json").read_text())
    assert [p["status"] for p in summary["photos"]] == ["done", "done", "done", "not reached"]
    assert summary["interrupted"]
    rerun = run_single(argv)
    assert rerun["rc"] == 0 and rerun["stderr"].count(": already done") == 3, rerun["stderr"]
    assert [r["photo"] for r in _csv(out / "metrics.csv")] == ["a_astronaut", "b_hopper", "c_astronaut",
                                                               "d_hopper"]
    assert not (out / D.RANKS_DIR).exists() and not (out / cli.PARTIAL).exists()
