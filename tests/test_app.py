"""The app through gradio_client on 127.0.0.1, with the tiny in-memory model family (offline, CPU)."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from inversion.models import Family  # noqa: E402
from tiny_models import N_LATENT, SIZE, STYLE_DIM, TinyModelSet, tiny_model_set  # noqa: E402
from app_server import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOPPER = ROOT / "examples" / "grace_hopper.jpg"
ASTRONAUT = ROOT / "examples" / "astronaut.png"


class BrokenModelSet(TinyModelSet):
    """Claims every piece is loaded, then fails inside the generator: an unexpected server error."""

    def __init__(self) -> None:
        super().__init__()
        self.family = Family("broken", "Broken test model", SIZE, (), {"psp": "x", "e4e": "y"}, "tiny")

    def loaded(self) -> list[str]:
        return ["encoder:e4e", "encoder:psp", "generator", "lpips"]

    def generator(self):
        raise RuntimeError("secret internal detail /srv/weights")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on a free port with the tiny family; direction caches go to a temp folder."""
    cache = tmp_path_factory.mktemp("xdg")
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    import app

    demo = app.build_demo({"tiny": tiny_model_set(), "broken": BrokenModelSet()})
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                max_file_size=app.MAX_FILE_SIZE)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def client(url: str) -> Client:
    return Client(url, verbose=False, download_files=True)


def _gallery_paths(value) -> list[str]:
    return [item["image"] if isinstance(item, dict) and "image" in item else item[0] for item in value]


def _image(value) -> Image.Image:
    path = value["path"] if isinstance(value, dict) else value
    return Image.open(path).convert("RGB")


def test_api_names(server):
    names = set(client(server).view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/align", "/invert", "/edit", "/paste_back", "/export", "/status"} <= names


def test_full_flow(server, tmp_path):
    c = client(server)
    out = c.predict(handle_file(str(HOPPER)), 0, api_name="/align")
    aligned = _image(out[0])
    assert aligned.size == (1024, 1024)
    assert np.asarray(aligned).std() > 20  # a real photo crop, not a blank image

    out = c.predict("tiny", ["e4e", "w"], "fast", "fast", "fast", 0, api_name="/invert")
    gallery, table, message = out[0], out[1], out[3]
    paths = _gallery_paths(gallery)
    assert len(paths) == 3  # aligned input + two reconstructions
    assert all(Image.open(p).size == (SIZE, SIZE) for p in paths)
    headers, rows = table["headers"], table["data"]
    assert [r[0] for r in rows] == ["e4e encoder", "W optimization"]
    for column in ("MSE", "PSNR (dB)", "LPIPS", "code spread", "seconds"):
        values = [float(r[headers.index(column)]) for r in rows]
        assert all(np.isfinite(values)), (column, values)
    spread = {r[0]: float(r[headers.index("code spread")]) for r in rows}
    assert spread["W optimization"] < 1e-4 < spread["e4e encoder"]  # W codes are equal across layers
    assert "Done" in message

    strip = _gallery_paths(c.predict("sefa", 5.0, 0, 3, api_name="/edit"))
    assert len(strip) == 2 * 3  # two methods x three strengths
    images = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in strip]
    assert np.abs(images[0] - images[2]).mean() > 1.0  # -5 and +5 differ

    pasted = _image(c.predict("w", api_name="/paste_back"))
    assert pasted.size == Image.open(HOPPER).size

    files, archive = c.predict(api_name="/export")
    by_name = {Path(f).name: Path(f) for f in files}
    assert {"aligned.png", "e4e_reconstruction.png", "w_reconstruction.png", "e4e_wplus.npy", "w_wplus.npy",
            "e4e_edited.png", "pasted_back.png", "settings.json"} <= set(by_name)
    codes = np.load(by_name["w_wplus.npy"])
    assert codes.shape == (1, N_LATENT, STYLE_DIM) and np.isfinite(codes).all()
    settings = json.loads(by_name["settings.json"].read_text())
    assert settings["model_family"] == "tiny" and settings["edit"]["name"] == "sefa"
    assert np.isfinite(settings["methods"]["w"]["metrics"]["mse"])
    assert Path(archive).stat().st_size > 0


def test_no_face_is_a_plain_error(server, tmp_path):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (320, 240), (120, 130, 140)).save(blank)
    with pytest.raises(AppError) as err:
        client(server).predict(handle_file(str(blank)), 0, api_name="/align")
    text = str(err.value)
    assert "No face" in text and "Traceback" not in text


def test_wrong_file_and_early_steps_are_plain_errors(server, tmp_path):
    c = client(server)
    with pytest.raises(AppError) as err:
        c.predict("tiny", ["e4e"], "fast", "fast", "fast", 0, api_name="/invert")
    assert "Align a photo first" in str(err.value)
    junk = tmp_path / "notes.png"
    junk.write_bytes(b"this is not an image")
    with pytest.raises(AppError) as err:
        c.predict(handle_file(str(junk)), 0, api_name="/align")
    assert "not an image" in str(err.value) and "Traceback" not in str(err.value)


def test_unexpected_errors_are_generic(server):
    c = client(server)
    c.predict(handle_file(str(HOPPER)), 0, api_name="/align")
    with pytest.raises(AppError) as err:
        c.predict("broken", ["e4e"], "fast", "fast", "fast", 0, api_name="/invert")
    text = str(err.value)
    assert "Something went wrong" in text and "secret" not in text and "Traceback" not in text


def test_concurrent_clients_keep_their_own_results(server):
    import app  # noqa: F401  (same process: compare with the session logic directly)
    from inversion import session as S

    outputs: dict[str, tuple] = {}

    def visit(name: Path) -> None:
        c = client(server)
        aligned = _image(c.predict(handle_file(str(name)), 0, api_name="/align")[0])
        out = c.predict("tiny", ["psp"], "fast", "fast", "fast", 0, api_name="/invert")
        outputs[name.name] = (aligned, _gallery_paths(out[0]))

    threads = [threading.Thread(target=visit, args=(p,)) for p in (HOPPER, ASTRONAUT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(outputs) == {HOPPER.name, ASTRONAUT.name}
    for path in (HOPPER, ASTRONAUT):
        expected = S.align_photo(S.new_state(), S.open_photo(str(path)), 0).aligned.image
        aligned, gallery = outputs[path.name]
        diff = np.abs(np.asarray(aligned, np.float32) - np.asarray(expected, np.float32)).mean()
        assert diff < 1.0, (path.name, diff)
        shown = np.asarray(Image.open(gallery[0]).convert("RGB"), np.float32)
        own = np.asarray(expected.resize((SIZE, SIZE), Image.Resampling.LANCZOS), np.float32)
        assert np.abs(shown - own).mean() < 1.0
    a = np.asarray(Image.open(outputs[HOPPER.name][1][1]).convert("RGB"), np.float32)
    b = np.asarray(Image.open(outputs[ASTRONAUT.name][1][1]).convert("RGB"), np.float32)
    assert np.abs(a - b).mean() > 1.0  # different photos -> different reconstructions


def test_status_endpoint(server):
    info = client(server).predict("tiny", api_name="/status")
    assert info["family"] == info["default_family"] == "tiny" and info["families"] == ["tiny", "broken"]
    assert all(m["ready"] for m in info["methods"].values())
    assert "methods ready" in info["text"] and info["banner"] == ""


def test_all_faces_from_a_heic_group_photo(server, tmp_path):
    """All-faces mode through the API: a HEIC group photo -> /align -> /all_faces (invert, edit, paste back)."""
    from inversion.align import load_image, register_heif
    from test_group import group_photo

    image, _ = group_photo()
    assert register_heif()
    path = tmp_path / "group.heic"
    image.save(path, "HEIF", quality=95)
    c = client(server)
    c.predict(handle_file(str(path)), 0, api_name="/align")
    pasted = np.asarray(_image(c.predict("tiny", ["e4e", "psp"], "fast", "fast", "fast", 0, "sefa", 3.0, 0, "e4e",
                                         api_name="/all_faces")))
    photo = np.asarray(load_image(path))
    assert pasted.shape == photo.shape
    changed = np.abs(pasted.astype(int) - photo).max(axis=2) > 0
    from inversion import session as S

    faces = S.open_photo(path).faces
    assert len(faces) == 4
    for face in faces:  # every face was edited and pasted back
        l, t, r, b = (int(v) for v in face.bbox)
        assert changed[t:b, l:r].mean() > 0.5
    assert not changed[:, :30].any() and not changed[-30:].any()  # away from the faces: untouched
