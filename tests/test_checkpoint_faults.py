"""Checkpoint faults at the app level: the real app (FFHQ + built-in families, its BackgroundDownloader) against the
stand-in Hub (tests/hub_stand_in.py), driven through gradio_client.

Faults: the Hub down at start, the Hub dying mid-download, a corrupt file in the cache, a wrong sha256 (the Hub
holding another file, or lying about it), checkpoints with a missing key or a wrong shape, a pickle that runs code,
the disk filling up while caching. Each time the app starts, its /status says which files are missing and why, a
visitor's request says which method cannot run and why, and nothing half-written or unverified is ever loaded.
The library-level behaviour (retries, mirrors, offline) is tested in tests/test_checkpoints.py.

The registry's files keep their Hub repo and file name; their pinned sha256 and size are replaced by those of the
small stand-in contents served here.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
from pathlib import Path
from typing import Any, Optional

import pytest
from app_server import free_port  # noqa: E402
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402

from inversion import checkpoints as ck  # noqa: E402
from inversion.checkpoints import BackgroundDownloader, CheckpointSpec  # noqa: E402
from inversion.stylegan2 import Generator  # noqa: E402
from tests.hub_stand_in import HubStandIn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
NAMES = ("stylegan2_ffhq", "e4e_ffhq", "psp_ffhq", "vgg16", "irse50")


@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    """Isolated HF cache and editing cache, online, short timeouts."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    for name in ("HF_ENDPOINT", "HF_HUB_OFFLINE", "HF_HOME", ck.OVERRIDE_ENV):
        monkeypatch.delenv(name, raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return tmp_path / "hf-cache"


# ------------------------------------------------------------------------------------------------ contents

def _torch_bytes(obj: Any) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def generator_container(*, wrong_shape: bool = False, size: int = 16) -> bytes:
    """A small rosinality container ``{"g_ema", "latent_avg"}`` (8 channels); ``wrong_shape``: one conv weight is
    1x1, not 3x3. ``size=1024`` loads as an FFHQ-sized generator (11 MB, mostly noise buffers)."""
    g = Generator(size, style_dim=8, n_mlp=1, channel_multiplier=1, max_channels=8)
    sd = {k: v.clone() for k, v in g.state_dict().items()}
    if wrong_shape:
        sd["conv1.conv.weight"] = torch.zeros(1, 8, 8, 1, 1)
    return _torch_bytes({"g_ema": sd, "latent_avg": torch.zeros(8)})


def encoder_missing_decoder() -> bytes:
    """An e4e checkpoint with its encoder but none of the ``decoder.*`` keys."""
    return _torch_bytes({"state_dict": {"encoder.input_layer.0.weight": torch.zeros(64, 3, 3, 3)},
                         "opts": {"encoder_type": "Encoder4Editing", "output_size": 1024},
                         "latent_avg": torch.zeros(18, 512)})


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def pickle_with_code(marker: Path) -> bytes:
    """A "checkpoint" whose unpickling would run ``touch marker`` (os.system)."""
    return _torch_bytes({"state_dict": _RunsCode(marker), "opts": {}})


def spec_for(name: str, content: bytes) -> CheckpointSpec:
    """The registry entry ``name`` pinned to ``content`` (same Hub repo and file name, no mirrors)."""
    return dataclasses.replace(ck.REGISTRY[name], sha256=hashlib.sha256(content).hexdigest(), size=len(content),
                               mirrors=(), package_file=None)


# ------------------------------------------------------------------------------------------------ the app

class App:
    """The app built as in production (default model sets, its own downloader), launched on 127.0.0.1."""

    def __init__(self, specs: list[CheckpointSpec], endpoint: str, cache: Path) -> None:
        import app

        self.downloader = BackgroundDownloader(specs, cache_dir=cache, endpoint=endpoint)
        self.demo = app.build_demo(downloader=self.downloader)
        self.port = free_port()

    def __enter__(self) -> "App":
        self.demo.launch(server_name="127.0.0.1", server_port=self.port, prevent_thread_lock=True, quiet=True)
        self.downloader.start()  # as main() does
        assert self.downloader.wait(60)
        self.client = Client(f"http://127.0.0.1:{self.port}/", verbose=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.downloader.stop()
        self.demo.close()

    def status(self) -> dict:
        return self.client.predict("ffhq", api_name="/status")

    def run(self, methods: list[str]) -> str:
        """A visitor aligns the example photo and runs ``methods`` (confirming a run the CPU estimate puts past
        5 minutes, as the page asks); returns the run message."""
        self.client.predict(handle_file(str(HOPPER)), 0, api_name="/align")
        return self.client.predict("ffhq", methods, "fast", "fast", "fast", 0, True, api_name="/invert")[3]


def loadable(cache: Path) -> list[Path]:
    """Files that a cache lookup could hand out: everything but locks, refs, markers and partial downloads."""
    return [p for p in cache.rglob("*") if (p.is_file() or p.is_symlink())
            and not {".locks", "refs", ".stylegan_edit_verified"} & set(p.parts)
            and not p.name.endswith(".incomplete") and p.name != "CACHEDIR.TAG"]


def assert_nothing_half_written(specs: list[CheckpointSpec], app: App, cache: Path) -> None:
    for spec in specs:
        assert app.downloader.path(spec.name) is None
        assert ck.find_local(spec, cache_dir=cache) is None
    assert loadable(cache) == []


# ------------------------------------------------------------------------------------------------ tests

def test_hub_down_at_start(hf_env):
    specs = [spec_for(n, generator_container()) for n in NAMES]
    with App(specs, f"http://127.0.0.1:{free_port()}", hf_env) as app:  # nothing listens there
        info = app.status()
        for name in NAMES:
            f = info["files"][name]
            assert f["state"] == "failed", (name, f)
            assert "could not download it" in f["message"] and "Download it by hand from https://huggingface.co/" \
                in f["message"]
        assert "download failed" in info["banner"]
        assert not any(m["ready"] for m in info["methods"].values())
        assert "**failed**" in info["text"]
        message = app.run(["e4e", "w"])
        assert "Nothing ran" in message
        assert "e4e encoder needs generator and e4e encoder weights" in message
        assert "W optimization needs generator weights" in message
        assert_nothing_half_written(specs, app, hf_env)


def test_hub_dies_mid_download(hf_env):
    data = {n: generator_container() + n.encode() * 4000 for n in NAMES}
    specs = [spec_for(n, data[n]) for n in NAMES]
    with HubStandIn() as hub:
        for spec in specs:
            hub.add_file(spec.repo_id, spec.filename, data[spec.name])
        hub.cut_after, hub.cut_times, hub.after_cut = 5000, 1, "503"  # first body cut, then the server is gone
        with App(specs, hub.url, hf_env) as app:
            info = app.status()
            first = info["files"][NAMES[0]]
            assert first["state"] == "failed" and "download failed" in first["message"], first
            assert all(info["files"][n]["state"] == "failed" for n in NAMES)
            assert "Nothing ran" in app.run(["w"])
            assert_nothing_half_written(specs, app, hf_env)
            assert any(r.range is None and r.role == "cdn" for r in hub.requests)  # a body was started


def test_verification_faults_and_a_wrong_shape(hf_env):
    """One app, a different fault per file: the generator has a wrong shape; the Hub holds another VGG16 file; the
    Hub lies about IR-SE50 (corrupt bytes under the right hash); a corrupt copy of the landmarks file is already in
    the cache and gets replaced."""
    good_irse = generator_container() + b"irse50" * 1000
    good_dlib = b"dlib landmarks " * 2000
    served = {
        "stylegan2_ffhq": generator_container(wrong_shape=True),
        "vgg16": b"an older VGG16 file" * 100,
        "irse50": bytes(b ^ 0x5A for b in good_irse),
        "dlib_landmarks": good_dlib,
    }
    pinned = {**served, "vgg16": b"the VGG16 file we expect" * 100, "irse50": good_irse}
    specs = [spec_for(n, pinned[n]) for n in served]
    with HubStandIn() as hub:
        for spec in specs:
            advertised = spec.sha256 if spec.name == "irse50" else None  # the Hub claims the right hash
            hub.add_file(spec.repo_id, spec.filename, served[spec.name], advertised_sha256=advertised)
        dlib = next(s for s in specs if s.name == "dlib_landmarks")
        ck.fetch(dlib, cache_dir=hf_env, endpoint=hub.url).resolve().write_bytes(b"x" * len(good_dlib))
        before = len(hub.body_requests())

        with App(specs, hub.url, hf_env) as app:
            files = app.status()["files"]
            assert files["dlib_landmarks"]["state"] == "present"  # re-downloaded, verified
            assert app.downloader.path("dlib_landmarks").read_bytes() == good_dlib
            assert len(hub.body_requests()) > before
            vgg = files["vgg16"]
            assert vgg["state"] == "failed"
            assert "failed verification" in vgg["message"] and "holds a different file" in vgg["message"]
            assert "Nothing was kept" in vgg["message"]
            assert files["irse50"]["state"] == "failed" and "downloaded twice with sha256" in files["irse50"]["message"]
            assert files["stylegan2_ffhq"]["state"] == "present"  # its bytes are the pinned ones
            for name in ("vgg16", "irse50"):  # nothing unverified is left to load
                spec = next(s for s in specs if s.name == name)
                assert app.downloader.path(name) is None and ck.find_local(spec, cache_dir=hf_env) is None

            message = app.run(["w", "pti"])
            assert "Nothing ran" in message
            assert "W optimization cannot run: the generator weights could not be loaded (Error(s) in loading " \
                   "state_dict for Generator: size mismatch for conv1.conv.weight" in message
            assert "PTI (pivotal tuning) cannot run: the generator weights could not be loaded" in message
            assert app.status()["files"]["stylegan2_ffhq"]["state"] == "present"  # the app keeps serving


def test_missing_keys_and_a_pickle_that_runs_code(hf_env, tmp_path):
    """A good (FFHQ-sized, 8-channel) generator; the e4e checkpoint lacks its decoder keys; the pSp "checkpoint" is a
    pickle that would run ``touch`` when loaded without ``weights_only=True``."""
    marker = tmp_path / "code-ran"
    served = {"stylegan2_ffhq": generator_container(size=1024), "e4e_ffhq": encoder_missing_decoder(),
              "psp_ffhq": pickle_with_code(marker)}
    specs = [spec_for(n, served[n]) for n in served]
    with HubStandIn() as hub:
        for spec in specs:
            hub.add_file(spec.repo_id, spec.filename, served[spec.name])
        with App(specs, hub.url, hf_env) as app:
            info = app.status()
            assert all(info["files"][n]["state"] == "present" for n in served)  # verified bytes
            assert info["methods"]["e4e"]["ready"] and info["methods"]["psp"]["ready"]
            message = app.run(["e4e", "psp"])
            assert "Nothing ran" in message
            assert "e4e encoder cannot run: state_dict must hold both 'encoder.*' and 'decoder.*' weights" in message
            assert "pSp encoder cannot run: refused to load psp_ffhq_encode.pt: it contains code/objects that are " \
                   "not plain tensors (posix.system)" in message
            assert not marker.exists()  # the pickle's code never ran
            assert "Traceback" not in message


def test_disk_full_while_caching(hf_env, monkeypatch):
    from huggingface_hub import file_download

    real = file_download.http_get

    class FullDisk:
        """The download's temp file: the disk is full after 2000 bytes."""

        def __init__(self, f: Any) -> None:
            self._f, self._n = f, 0

        def write(self, chunk: bytes) -> Optional[int]:
            if self._n + len(chunk) > 2000:
                self._f.write(chunk[:2000 - self._n])
                self._n = 2000
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self._n += len(chunk)
            return self._f.write(chunk)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._f, name)

    monkeypatch.setattr(file_download, "http_get", lambda url, temp_file, **kw: real(url, FullDisk(temp_file), **kw))
    data = {n: generator_container() + n.encode() * 3000 for n in NAMES}
    specs = [spec_for(n, data[n]) for n in NAMES]
    with HubStandIn() as hub:
        for spec in specs:
            hub.add_file(spec.repo_id, spec.filename, data[spec.name])
        with App(specs, hub.url, hf_env) as app:
            info = app.status()
            for name in NAMES:
                f = info["files"][name]
                assert f["state"] == "failed" and "No space left on device" in f["message"], (name, f)
            assert "W optimization needs generator weights" in app.run(["w"])
            assert_nothing_half_written(specs, app, hf_env)
            assert not [p for p in hf_env.rglob("*.incomplete")]  # no partial file left taking space
