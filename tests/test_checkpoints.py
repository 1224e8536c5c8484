"""Registry, download, verification and safe loading, against a local stand-in Hub (no network)."""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import re
import threading
import time
from pathlib import Path

import pytest
import torch

from inversion import checkpoints as ck
from inversion.checkpoints import CheckpointError, CheckpointMissingError, CheckpointSpec, Source
from tests.hub_stand_in import HubStandIn


# ------------------------------------------------------------------------------------------------ fixtures

@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    """Isolated HF cache (never the user's), no override folder, online; returns the cache folder."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HOME", ck.OVERRIDE_ENV):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # in case the outer environment had it at import
    return cache


@pytest.fixture
def hub(monkeypatch):
    with HubStandIn() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)  # set after huggingface_hub was imported, on purpose
        yield server


def tiny_rosinality_container() -> bytes:
    """``{"g_ema": state_dict, "latent_avg": (512,)}`` as convert_weight.py saves it (a few keys, tiny shapes)."""
    g = torch.Generator().manual_seed(0)
    sd = {
        "style.1.weight": torch.randn(8, 8, generator=g),
        "style.1.bias": torch.zeros(8),
        "input.input": torch.randn(1, 8, 4, 4, generator=g),
        "conv1.conv.weight": torch.randn(1, 8, 8, 3, 3, generator=g),
        "conv1.conv.modulation.weight": torch.randn(8, 8, generator=g),
        "conv1.conv.modulation.bias": torch.ones(8),
        "conv1.noise.weight": torch.zeros(1),
        "to_rgb1.bias": torch.zeros(1, 3, 1, 1),
        "noises.noise_0": torch.randn(1, 1, 4, 4, generator=g),
    }
    buf = io.BytesIO()
    torch.save({"g_ema": sd, "latent_avg": torch.randn(512, generator=g)}, buf)
    return buf.getvalue()


def spec_for(data: bytes, *, repo: str = "owner/weights", filename: str = "tiny.pt", pinned: bool = True,
             mirrors: tuple[Source, ...] = ()) -> CheckpointSpec:
    return CheckpointSpec(
        name="tiny", repo_id=repo, filename=filename, sha256=hashlib.sha256(data).hexdigest() if pinned else None,
        size=len(data), license="test", features=frozenset({"generator"}), description="test file", mirrors=mirrors)


def loadable_files(cache: Path) -> list[Path]:
    """Every regular file or link in the HF cache except huggingface_hub's locks/refs and our hash markers."""
    return [p for p in cache.rglob("*")
            if (p.is_file() or p.is_symlink()) and not {".locks", "refs", ck._MARKER_DIR} & set(p.parts)
            and p.name != "CACHEDIR.TAG"]


# ------------------------------------------------------------------------------------------------ download

def test_download_verifies_and_second_fetch_makes_no_request(hub, hf_env):
    data = tiny_rosinality_container()
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    seen: list[tuple[int, int | None]] = []

    path = ck.fetch(spec, progress=lambda done, total: seen.append((done, total)))

    assert path.read_bytes() == data and hf_env in path.parents
    assert seen[-1] == (len(data), len(data))
    assert len(hub.body_requests()) == 1
    assert ck.file_status(spec).message.endswith("(verified)")
    loaded = ck.load_torch_file(path)
    assert set(loaded) == {"g_ema", "latent_avg"} and loaded["latent_avg"].shape == (512,)

    before = len(hub.requests)
    assert ck.fetch(spec) == path
    assert len(hub.requests) == before  # cache hit: not even a HEAD


def test_hf_home_is_read_when_fetch_runs(hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    data = b"weights" * 10
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    assert (tmp_path / "home" / "hub") in ck.fetch(spec).parents


def test_offline_uses_cache_and_reports_missing_file_in_one_line(hub, monkeypatch):
    data = b"cached weights" * 100
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    path = ck.fetch(spec)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)

    assert ck.fetch(spec) == path

    other = spec_for(b"never downloaded", filename="other_weights.pt")
    with pytest.raises(CheckpointMissingError) as err:
        ck.fetch(other)
    message = str(err.value)
    assert "other_weights.pt" in message and other.repo_id in message and ck.OVERRIDE_ENV in message
    assert "\n" not in message
    assert len(hub.requests) == before


def test_corrupt_or_truncated_cache_file_is_replaced(hub, hf_env):
    data = os.urandom(50_000)
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    path = ck.fetch(spec)
    blob = path.resolve()

    flipped = bytearray(data)
    flipped[1234] ^= 0xFF
    tmp = blob.with_name("tmp")
    tmp.write_bytes(bytes(flipped))
    os.replace(tmp, blob)  # same size, new inode: the remembered hash no longer applies
    assert ck.fetch(spec).read_bytes() == data
    assert len(hub.body_requests()) == 2

    with open(ck.fetch(spec).resolve(), "r+b") as f:
        f.truncate(1000)
    assert ck.fetch(spec).read_bytes() == data
    assert len(hub.body_requests()) == 3


def test_wrong_bytes_from_server_raise_and_leave_nothing(hub, hf_env):
    data = os.urandom(20_000)
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    hub.corrupt = True

    with pytest.raises(CheckpointError) as err:
        ck.fetch(spec)

    assert not isinstance(err.value, CheckpointMissingError)
    actual = hashlib.sha256(bytes(b ^ 0x5A for b in data)).hexdigest()
    message = str(err.value)
    assert spec.filename in message and spec.repo_id in message and spec.sha256 in message and actual in message
    assert len(hub.body_requests()) == 2  # fetched again once
    assert loadable_files(hf_env) == []


def test_server_advertising_another_file_is_refused_without_downloading(hub, hf_env):
    data = b"the pinned file" * 10
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data, advertised_sha256="ab" * 32)

    with pytest.raises(CheckpointError, match="holds a different file"):
        ck.fetch(spec)

    assert hub.body_requests() == [] and loadable_files(hf_env) == []


def test_server_dying_mid_download_then_later_fetch_completes(hub, hf_env):
    data = os.urandom(200_000)
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    hub.cut_after, hub.cut_times, hub.after_cut = 70_000, 1, "503"

    with pytest.raises(CheckpointMissingError, match=re.escape(spec.filename)):
        ck.fetch(spec)
    assert loadable_files(hf_env) == []  # no partial file, no .incomplete

    hub.mode = "ok"
    assert ck.fetch(spec).read_bytes() == data


def test_interrupted_body_is_resumed_with_a_range_request(hub):
    # huggingface_hub writes the body in 10 MiB chunks and resumes from the last whole chunk it wrote
    chunk = 10 * 1024 * 1024
    data = os.urandom(chunk + 60_000)
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    hub.cut_after, hub.cut_times = chunk + 30_000, 1

    assert ck.fetch(spec).read_bytes() == data
    assert [r.range for r in hub.body_requests()] == [None, f"bytes={chunk}-"]


def test_server_down_at_start_fails_fast(monkeypatch):
    with HubStandIn() as server:
        url = server.url
    monkeypatch.setenv("HF_ENDPOINT", url)  # nothing listens there any more
    spec = spec_for(b"x" * 10, mirrors=(Source("other/repo", "tiny.pt"),))

    start = time.monotonic()
    with pytest.raises(CheckpointMissingError) as err:
        ck.fetch(spec)
    assert time.monotonic() - start < 5.0
    assert "tiny.pt" in str(err.value) and "owner/weights" in str(err.value)


def test_hub_answering_503_fails_fast(hub):
    spec = spec_for(b"x" * 10)
    hub.add_file(spec.repo_id, spec.filename, b"x" * 10)
    hub.mode = "503"
    start = time.monotonic()
    with pytest.raises(CheckpointMissingError, match="503"):
        ck.fetch(spec)
    assert time.monotonic() - start < 5.0


def test_fallback_mirrors_are_tried_in_order(hub, hf_env):
    data = os.urandom(10_000)
    mirrors = (Source("empty/repo", "tiny.pt"), Source("good/mirror", "sub/folder/copy.pt"))
    spec = spec_for(data, repo="gone/repo", mirrors=mirrors)
    hub.add_repo("empty/repo")  # repo exists, file does not (404 EntryNotFound); gone/repo is 401 RepoNotFound
    hub.add_file("good/mirror", "sub/folder/copy.pt", data)

    path = ck.fetch(spec)

    assert path.read_bytes() == data and "models--good--mirror" in str(path)
    assert ck.cached_file(spec) == path


def test_override_folder_is_used_and_verified(tmp_path, monkeypatch):
    data = b"hand placed" * 50
    spec = spec_for(data, filename="folder/tiny.pt")
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "tiny.pt").write_bytes(data)
    monkeypatch.setenv(ck.OVERRIDE_ENV, str(folder))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # would fail if the Hub were asked

    assert ck.fetch(spec) == folder / "tiny.pt"
    assert ck.file_status(spec).state == "present"

    (folder / "tiny.pt").write_bytes(data[:-1] + b"?")
    with pytest.raises(CheckpointError) as err:
        ck.fetch(spec)
    assert str(folder / "tiny.pt") in str(err.value) and spec.sha256 in str(err.value)
    assert (folder / "tiny.pt").exists()  # a user's file is never deleted


def test_registry_entry_without_sha_is_checked_against_lfs_sha256(hub):
    from safetensors.torch import save

    tensors = {"features.0.weight": torch.randn(4, 3, 3, 3), "features.0.bias": torch.zeros(4),
               "pre_logits.fc1.weight": torch.zeros(2, 2)}
    data = save(tensors)
    vgg = ck.REGISTRY["vgg16"]
    assert vgg.sha256 is None
    hub.add_file(vgg.repo_id, vgg.filename, data)

    path = ck.fetch("vgg16")
    subset = ck.load_safetensors_subset(path, "features.")
    assert sorted(subset) == ["features.0.bias", "features.0.weight"]
    assert torch.equal(subset["features.0.weight"], tensors["features.0.weight"])
    assert sorted(ck.load_safetensors_subset(path, "features.", strip_prefix=True)) == ["0.bias", "0.weight"]

    path.resolve().unlink()
    path.unlink()
    hub.corrupt = True
    with pytest.raises(CheckpointError, match=hashlib.sha256(data).hexdigest()):
        ck.fetch("vgg16")


def test_background_downloader_reports_each_file(hub, hf_env):
    good, absent = os.urandom(30_000), b"not on the hub"
    ok_spec = spec_for(good)
    missing_spec = CheckpointSpec("absent", "owner/weights", "absent.pt", hashlib.sha256(absent).hexdigest(),
                                  len(absent), "test", frozenset({"psp"}), "missing file")
    hub.add_file(ok_spec.repo_id, ok_spec.filename, good)
    assert {n: s.state for n, s in ck.status([ok_spec, missing_spec]).items()} == {
        "tiny": "missing", "absent": "missing"}

    downloader = ck.BackgroundDownloader([ok_spec, missing_spec]).start()
    assert downloader.wait(timeout=30)

    states = downloader.status()
    assert states["tiny"].state == "present" and states["tiny"].bytes_done == len(good)
    assert downloader.path("tiny").read_bytes() == good
    assert states["absent"].state == "failed" and "absent.pt" in states["absent"].message
    assert isinstance(downloader.error("absent"), CheckpointMissingError)
    assert ck.status([ok_spec])["tiny"].state == "present"


def test_background_downloader_stop_mid_download_keeps_no_partial_file(hub, hf_env):
    data = os.urandom(100_000)
    spec = spec_for(data)
    hub.add_file(spec.repo_id, spec.filename, data)
    hub.hold = threading.Event()  # the body stalls after its headers
    downloader = ck.BackgroundDownloader([spec]).start()
    deadline = time.monotonic() + 10
    while not downloader.status()["tiny"].message.startswith("downloading from") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert downloader.status()["tiny"].state == "downloading"

    downloader.stop()
    hub.hold.set()
    assert downloader.wait(timeout=30)

    final = downloader.status()["tiny"]
    assert (final.state, final.message) == ("missing", "download stopped")
    assert loadable_files(hf_env) == []


# ------------------------------------------------------------------------------------------------ safe loading

class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("as_zip", [True, False])
def test_load_torch_file_refuses_pickled_code(tmp_path, as_zip):
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pt"
    payload = {"g_ema": {"w": torch.zeros(2)}, "x": _RunsCode(marker)}
    if as_zip:
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))

    with pytest.raises(CheckpointError, match="refused to load evil.pt: it contains code/objects"):
        ck.load_torch_file(path)
    assert not marker.exists()


def test_load_torch_file_layouts(tmp_path):
    e4e_like = {"state_dict": {"encoder.styles.0.linear.weight": torch.zeros(4, 4)}, "latent_avg": torch.zeros(18, 4),
                "opts": {"encoder_type": "Encoder4Editing", "stylegan_size": 1024, "start_from_latent_avg": True,
                         "lr": 1e-4, "checkpoint_path": None, "exp_dir": "/x"},
                "discriminator_state_dict": {"mlp.0.weight": torch.zeros(2, 2)}}
    torch.save(e4e_like, tmp_path / "e4e.pt")
    loaded = ck.load_torch_file(tmp_path / "e4e.pt")
    assert loaded["opts"]["encoder_type"] == "Encoder4Editing" and loaded["latent_avg"].shape == (18, 4)

    torch.save({"g_ema": {}, "args": argparse.Namespace(size=1024)}, tmp_path / "train.pt")
    with pytest.raises(CheckpointError, match="rosinality training checkpoint"):
        ck.load_torch_file(tmp_path / "train.pt")

    (tmp_path / "cut.pt").write_bytes((tmp_path / "e4e.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="truncated"):
        ck.load_torch_file(tmp_path / "cut.pt")

    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="expected a dict"):
        ck.load_torch_file(tmp_path / "list.pt")
    with pytest.raises(CheckpointMissingError):
        ck.load_torch_file(tmp_path / "nope.pt")


def test_load_safetensors_subset_errors(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        ck.load_safetensors_subset(tmp_path / "junk.safetensors", "features.")
    from safetensors.torch import save_file

    save_file({"classifier.weight": torch.zeros(2)}, str(tmp_path / "c.safetensors"))
    with pytest.raises(CheckpointError, match="no tensors named 'features.\\*'"):
        ck.load_safetensors_subset(tmp_path / "c.safetensors", "features.")


def test_check_state_dict_lists_problems():
    expected = {"a": (2, 3), "b": (4,), "c": (1,)}
    ck.check_state_dict({"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1)}, expected, "toy")
    with pytest.raises(CheckpointError) as err:
        ck.check_state_dict({"a": torch.zeros(3, 2), "b": torch.zeros(4), "zz": torch.zeros(1)}, expected, "toy net")
    message = str(err.value)
    assert message.startswith("toy net does not have the expected layout")
    assert "missing keys: c" in message and "unexpected keys: zz" in message and "a (3, 2) != (2, 3)" in message
    many = {f"k{i}": (1,) for i in range(9)}
    with pytest.raises(CheckpointError, match=r"k4, \.\.\. \(9 in all\)"):
        ck.check_state_dict({}, many, "big")


# ------------------------------------------------------------------------------------------------ registry

def test_registry_entries_are_well_formed():
    for name, spec in ck.REGISTRY.items():
        assert spec.name == name and spec.features and spec.features <= ck.FEATURES
        assert spec.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert spec.revision == "main" and all(s.revision == "main" for s in spec.sources)
        assert spec.license and spec.description
    needed = {"generator", "optimization", "pti", "psp", "e4e", "identity", "lpips", "align"}
    assert needed <= {f for s in ck.REGISTRY.values() for f in s.features}
    assert ck.names_for("pti") == ["stylegan2_ffhq"]
    with pytest.raises(CheckpointError, match="unknown weight file 'nope'"):
        ck.get_spec("nope")


def test_dlib_landmarks_come_from_the_installed_package(monkeypatch):
    path = ck.local_package_file("dlib_landmarks")
    if path is None:
        pytest.skip("face_recognition_models is not installed")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert ck.fetch("dlib_landmarks", offline=True) == path  # hashed and matched the registry sha256


def test_bundled_files_exist_and_license_table_is_in_licenses_md():
    for bundled in ck.BUNDLED.values():
        for path in bundled.files():
            assert path.is_file(), path
        assert (ck.PROJECT_ROOT / bundled.license_file).is_file()
    table = ck.license_table_markdown()
    assert table.count("\n") == 2 + len(ck.REGISTRY) + len(ck.BUNDLED)
    assert table in (ck.PROJECT_ROOT / "LICENSES.md").read_text()
