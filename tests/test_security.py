"""Security basics of the app, against it on 127.0.0.1 (tiny in-memory models), through its HTTP API.

- No path from a visitor reaches the file system outside the app's temp space: uploaded file names are not trusted,
  paths that were not uploaded are refused, free-text inputs (edit, family, method names) are only looked up.
- The upload size limit is configured (``app.MAX_FILE_SIZE``, passed by ``main()``) and enforced.
- Temp files are cleaned: gradio's ``delete_cache`` is set; exports go to a fresh folder per request, and old ones are
  swept away.
- No secret is logged: with ``HF_TOKEN`` set, nothing the app logs, prints or shows contains it, even when downloads
  fail.
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from inversion import checkpoints as ck  # noqa: E402
from inversion.checkpoints import BackgroundDownloader  # noqa: E402
from tests.hub_stand_in import HubStandIn  # noqa: E402
from tiny_models import tiny_model_set  # noqa: E402
from app_server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
FIXED_EXPORT_NAMES = {"aligned.png", "e4e_reconstruction.png", "e4e_wplus.npy", "settings.json",
                      "inversion_results.zip"}


def inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app with its own gradio temp folder (uploads, caches, exports) and editing cache."""
    temp = tmp_path_factory.mktemp("gradio-temp")
    saved = {k: os.environ.get(k) for k in ("GRADIO_TEMP_DIR", "XDG_CACHE_HOME")}
    os.environ["GRADIO_TEMP_DIR"] = str(temp)
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg"))
    import app

    demo = app.build_demo({"tiny": tiny_model_set()})
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size=app.MAX_FILE_SIZE)
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", demo=demo, temp=temp)
    finally:
        demo.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def upload(url: str, name: str, data: bytes) -> httpx.Response:
    """POST /gradio_api/upload with a file name chosen by the (hostile) visitor."""
    return httpx.post(url + "gradio_api/upload", files={"files": (name, data, "image/jpeg")}, timeout=60)


def call(url: str, api: str, data: list[Any]) -> tuple[str, Any]:
    """The REST API (``/gradio_api/call/<api>``), with hand-made payloads: ``(event, data)``."""
    event_id = httpx.post(url + f"gradio_api/call/{api}", json={"data": data}, timeout=30).json()["event_id"]
    text = httpx.get(url + f"gradio_api/call/{api}/{event_id}", timeout=120).text
    event = payload = None
    for line in text.splitlines():
        if line.startswith("event: "):
            event = line[len("event: "):]
        elif line.startswith("data: ") and event in ("complete", "error"):
            payload = json.loads(line[len("data: "):])
    return event, payload


def file_data(path: str) -> dict:
    return {"path": path, "meta": {"_type": "gradio.FileData"}}


@pytest.mark.parametrize("name", ["../../../../../tmp/pwned-{u}.jpg", "..\\..\\..\\pwned-{u}.jpg",
                                  "/etc/pwned-{u}.jpg", "a/../../../pwned-{u}.jpg", "~/pwned-{u}.jpg"])
def test_uploaded_file_names_are_not_trusted(server, name, tmp_path):
    name = name.format(u=uuid.uuid4().hex[:8])
    reply = upload(server.url, name, HOPPER.read_bytes())
    assert reply.status_code == 200
    (stored,) = reply.json()
    assert inside(stored, server.temp)  # kept inside the app's temp space, whatever the name said
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for root in (Path("/tmp"), Path("/etc"), Path.home(), ROOT, server.temp.parent):
        assert not (root / base).exists()
    event, out = call(server.url, "align", [file_data(stored), 0])  # the stored copy is what the app reads
    assert event == "complete" and "Face aligned" in out[-1]  # outputs: state (null here), aligned, faces, note
    assert inside(out[1]["path"], server.temp)


@pytest.mark.parametrize("path", [str(HOPPER), "/etc/passwd", "{temp}/../../../etc/passwd", "{temp}/../x.jpg"])
def test_paths_that_were_not_uploaded_are_refused(server, path):
    event, out = call(server.url, "align", [file_data(path.format(temp=server.temp)), 0])
    assert event == "error"
    assert out in (None, {"error": None})  # gradio refuses before the app runs; nothing is echoed back


def test_free_text_inputs_are_only_looked_up(server):
    c = Client(server.url, verbose=False)
    c.predict(handle_file(str(HOPPER)), 0, api_name="/align")
    c.predict("tiny", ["e4e"], "fast", "fast", "fast", 0, api_name="/invert")
    for endpoint, args, fragment in [
        ("/edit", ("../../../../etc/passwd", 1.0, 0, 3), "unknown edit '../../../../etc/passwd'"),
        ("/invert", ("../../etc", ["e4e"], "fast", "fast", "fast", 0), "Unknown model family '../../etc'"),
        ("/invert", ("tiny", ["../../etc/passwd"], "fast", "fast", "fast", 0), "Unknown method(s) '../../etc/passwd'"),
        ("/paste_back", ("../../../etc/passwd",), "../../../etc/passwd has no result yet"),
    ]:
        with pytest.raises(AppError) as err:
            c.predict(*args, api_name=endpoint)
        assert fragment in str(err.value) and "Traceback" not in str(err.value)


def test_upload_size_limit(server, monkeypatch):
    import app

    assert app.MAX_FILE_SIZE == "25mb"
    assert server.demo.max_file_size == 25 * 2**20
    launched: dict = {}
    stub = SimpleNamespace(weights_downloader=None, launch=lambda **kw: launched.update(kw))
    monkeypatch.setattr(app, "demo", stub)
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: None)
    app.main()  # what `python app.py` (and the Space) runs
    assert launched["max_file_size"] == app.MAX_FILE_SIZE
    too_big = upload(server.url, "big.jpg", b"\xff" * (25 * 2**20 + 1))
    assert too_big.status_code == 413 and "maximum allowed size" in too_big.text
    assert upload(server.url, "fine.jpg", HOPPER.read_bytes()).status_code == 200


def test_temp_files_are_cleaned(server):
    assert server.demo.delete_cache == (3600, 3600)  # gradio deletes cached files older than an hour, hourly
    c = Client(server.url, verbose=False, download_files=False)  # server-side paths of the outputs
    c.predict(handle_file(str(HOPPER)), 0, api_name="/align")
    c.predict("tiny", ["e4e"], "fast", "fast", "fast", 0, api_name="/invert")
    exports = server.temp / "stylegan2-exports"
    old = exports / "export-from-two-hours-ago"
    old.mkdir(parents=True)
    (old / "aligned.png").write_bytes(b"old")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    first, _ = c.predict(api_name="/export")
    second, _ = c.predict(api_name="/export")
    folders = {Path(f["path"]).parent for f in first} | {Path(f["path"]).parent for f in second}
    assert len(folders) == 2  # one fresh folder per request
    for folder in folders:
        assert folder.parent == exports and folder.name.startswith("export-")
        assert {p.name for p in folder.iterdir()} == FIXED_EXPORT_NAMES  # names fixed by the app
    assert not old.exists()  # swept by the next export


def test_no_secret_is_logged(tmp_path, monkeypatch, caplog, capfd):
    """HF_TOKEN set; downloads are cut and resumed, or fail (file not found, repo not found); a visitor is told
    why methods are skipped and gets an error. The token shows up nowhere (logs at DEBUG, stdout, stderr, status,
    messages)."""
    token = "hf_" + uuid.uuid4().hex + "SECRET"
    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", token)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "3")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    caplog.set_level(logging.DEBUG)
    import app
    from tests import hub_stand_in

    authorizations: list[str] = []  # what the Hub was sent: the token is in use, so a leak would show
    handle = hub_stand_in._Handler._handle

    def recording(self: Any, *, head: bool) -> None:
        authorizations.append(self.headers.get("Authorization") or "")
        handle(self, head=head)

    monkeypatch.setattr(hub_stand_in._Handler, "_handle", recording)

    with HubStandIn() as hub:
        data = b"weights" * 500
        present = ck.REGISTRY["vgg16"]  # unpinned: verified against the Hub's hash
        hub.add_file(present.repo_id, present.filename, data)
        hub.add_repo(ck.REGISTRY["irse50"].repo_id)  # repo exists, file does not (404)
        hub.cut_after, hub.cut_times = 1000, 1  # the first body is cut (the downloader retries / resumes)
        names = ["vgg16", "irse50", "e4e_ffhq"]  # e4e_ffhq: unknown repo (401)
        downloader = BackgroundDownloader(names, cache_dir=tmp_path / "hf-cache", endpoint=hub.url)
        demo = app.build_demo(downloader=downloader)
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            downloader.start()
            assert downloader.wait(60)
            c = Client(f"http://127.0.0.1:{port}/", verbose=False)
            info = c.predict("ffhq", api_name="/status")
            c.predict(handle_file(str(HOPPER)), 0, api_name="/align")
            message = c.predict("ffhq", ["e4e", "w"], "fast", "fast", "fast", 0, api_name="/invert")[3]
            with pytest.raises(AppError) as err:
                c.predict("sefa", float(1), 0, 3, api_name="/edit")
        finally:
            downloader.stop()
            demo.close()
    states = {n: info["files"][n]["state"] for n in names}
    assert states == {"vgg16": "present", "irse50": "failed", "e4e_ffhq": "failed"}  # every path was taken
    out, errors = capfd.readouterr()
    seen = "\n".join([json.dumps(info), message, str(err.value), caplog.text, out, errors])
    assert "e4e_ffhq" in seen and len(caplog.records) > 0
    assert f"Bearer {token}" in authorizations
    assert token not in seen and token[3:] not in seen
