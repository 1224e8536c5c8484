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
from app_server import free_port  # noqa: E402

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
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    import app

    demo = app.build_demo({"tiny": tiny_model_set()})
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


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
