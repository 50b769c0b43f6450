"""The panel in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Opens ``notebooks/panel.ipynb``, runs it, types a prompt, clicks Generate and waits for the grid's
image; then, against the same slow server, clicks Generate and Cancel and waits for the panel to
say so. ``FLUX_NB_UPDATE_SCREENSHOT=1`` refreshes ``docs/img/panel.png``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from browser_util import JupyterLab, launch_chromium, missing_requirements, open_and_run_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_MS = 120_000


@pytest.fixture
def lab(tmp_path, live_server):
    reason = missing_requirements()
    if reason:
        pytest.skip(reason)
    server = live_server(latency=3.0)
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(REPO / "notebooks" / "panel.ipynb", root / "panel.ipynb")
    env = {"FLUX_NB_DATA_DIR": str(tmp_path / "data"), "FLUX_NB_ENDPOINT": server.url}
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET", "FLUX_NB_TOKEN"):
        env[name] = ""
    with JupyterLab(tmp_path / "jupyter", root, env) as running:
        running.server = server
        yield running


def test_panel_generates_and_cancels_in_jupyterlab(lab, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        context = launch_chromium(pw, tmp_path / "profile")
        try:
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            open_and_run_notebook(page, lab, "panel.ipynb", TIMEOUT_MS)

            prompt = page.locator(".flux-nb-prompt textarea")
            prompt.wait_for()
            prompt.fill("a lighthouse on a cliff at dusk, oil painting")
            page.locator(".flux-nb-generate").click()
            image = page.locator(".flux-nb-grid img.widget-image").first
            image.wait_for(state="visible")
            expect(page.locator(".flux-nb-status")).to_contain_text("Done")
            expect(page.locator(".flux-nb-history img")).to_have_count(1)

            shot = REPO / "docs" / "img" / "panel.png" if os.environ.get("FLUX_NB_UPDATE_SCREENSHOT") == "1" else tmp_path / "panel.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".flux-nb-panel").screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            # the server takes 3 s per image: cancel while it works
            page.locator(".flux-nb-generate").click()
            expect(page.locator(".flux-nb-status")).to_contain_text("Generating")
            page.locator(".flux-nb-cancel").click()
            expect(page.locator(".flux-nb-status")).to_contain_text("Cancelled")
            expect(page.locator(".flux-nb-history img")).to_have_count(1)
        finally:
            context.close()
    jobs = httpx.get(f"{lab.server.url}/stats").json()["jobs"]
    assert jobs["completed"] == 1 and jobs["cancelled"] == 1
