"""One short scenario in a real headless Chromium: example photo -> Align -> Run -> results and scores shown.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python package
(requirements-test.txt); Playwright drives the system browser, it downloads none of its own.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from playwright.sync_api import sync_playwright  # noqa: E402

from tiny_models import tiny_model_set  # noqa: E402
from app_server import launched  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("the browser test needs Chromium: apt-get install -y chromium")


@pytest.fixture
def app_url(tmp_path):
    import app

    with launched(lambda: app.build_demo({"tiny": tiny_model_set()}), str(tmp_path / "xdg")) as (url, demo):
        yield url


def test_example_align_run_in_chromium(app_url, tmp_path):
    shot = tmp_path / "shots" / "results.png"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1800})
        try:
            page = browser.new_page()
            page.set_default_timeout(40_000)
            page.goto(app_url)
            page.locator("img[src*='grace_hopper']").first.click()  # the example thumbnail
            page.wait_for_selector("#photo img")
            page.click("#align-btn")
            page.wait_for_selector("#aligned img")
            page.click("#run-btn")  # default methods: e4e and pSp
            page.wait_for_selector("#run-info :text('Done:')")  # the last update of the streamed run
            page.wait_for_function("document.querySelectorAll('#results img').length >= 3")
            page.wait_for_selector("#metrics :text('pSp encoder')")
            table = page.locator("#metrics").inner_text()
            info = page.locator("#run-info").inner_text()
            shot.parent.mkdir(parents=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert "e4e encoder" in table and "LPIPS" in table and "code spread" in table
    assert "Done: e4e encoder, pSp encoder." in info
    assert shot.is_file() and shot.stat().st_size > 50_000
    assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_twelve_megapixel_photo_to_paste_back_in_chromium(app_url, tmp_path):
    """A 12 MP phone-style JPEG uploaded in the page: align -> invert (e4e) -> edit -> paste back, with the
    before/after sliders filled and the pasted photo at the photo's full size."""
    from PIL import Image

    from large_photos import make_photo

    photo = tmp_path / "IMG_4000x3000.jpg"
    make_photo("hopper_rot10_x5_4000x3000").save(photo, quality=88)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 2400})
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(app_url)
            page.set_input_files("#photo input[type=file]", str(photo))
            page.wait_for_selector("#photo img")
            page.click("#align-btn")
            page.wait_for_selector("#aligned img")
            page.locator("#methods label", has_text="pSp encoder").click()  # untick pSp: e4e only
            page.click("#run-btn")
            page.wait_for_selector("#run-info :text('Done:')")
            page.wait_for_selector("#compare-inversion img")
            page.click("#edit-btn")
            page.wait_for_function("document.querySelectorAll('#strips img').length >= 1")
            page.wait_for_selector("#compare-edit img")
            page.click("#paste-btn")
            page.wait_for_selector("#pasted img")
            src = page.locator("#pasted img").first.get_attribute("src")
            info = page.locator("#run-info").inner_text()
            with page.expect_download() as download:
                page.locator("#pasted button[aria-label*='ownload'], #pasted a[download]").first.click()
            pasted = tmp_path / "pasted.png"
            download.value.save_as(pasted)
        finally:
            browser.close()
    assert "Done: e4e encoder." in info and src
    with Image.open(pasted) as image:
        assert image.size == (4000, 3000)


def test_heic_group_photo_all_faces_in_chromium(app_url, tmp_path):
    """A HEIC group photo uploaded in the page: align, then the all-faces mode inverts (e4e, pSp), edits and pastes
    back every face into one photo."""
    import numpy as np
    from PIL import Image

    from inversion.align import load_image, register_heif
    from test_group import group_photo

    assert register_heif()
    photo = tmp_path / "IMG_0002.HEIC"
    group_photo()[0].save(photo, "HEIF", quality=95)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 2400})
        try:
            page = browser.new_page()
            page.set_default_timeout(120_000)
            page.goto(app_url)
            page.set_input_files("#photo-file input[type=file]", str(photo))  # shown in #photo as a PNG
            page.wait_for_selector("#photo img")
            page.click("#align-btn")
            page.wait_for_selector("#aligned img")
            page.wait_for_function("document.querySelectorAll('#faces img').length >= 4")  # the face picker
            page.locator("#all-faces-mode input[type=checkbox]").check()
            page.click("#all-faces-btn")
            page.wait_for_selector("#pasted img")
            with page.expect_download() as download:
                page.locator("#pasted button[aria-label*='ownload'], #pasted a[download]").first.click()
            pasted = tmp_path / "pasted.png"
            download.value.save_as(pasted)
        finally:
            browser.close()
    original = np.asarray(load_image(photo))
    with Image.open(pasted) as image:
        result = np.asarray(image.convert("RGB"))
    assert result.shape == original.shape
    changed = np.abs(result.astype(int) - original).max(axis=2) > 0
    assert changed.mean() > 0.05 and not changed[:, :30].any()  # faces changed, the rest untouched
