"""The panel in a real browser: JupyterLab + headless Chromium, driven by Playwright.

Opens ``notebooks/panel.ipynb`` and runs it (the notebook generates once from code, and its
thumbnails must show in the page), types a prompt, clicks Generate and waits for the grid's new
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

# The notebook's kernel is idle, every queued cell having run.
KERNEL_IDLE_JS = """() => {
  const panel = window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === "idle" && !panel.content.widgets.some(c => c.promptNode && c.promptNode.textContent.includes("*"));
}"""

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

            # the notebook's own generate() + wait() cell: its image reaches the page
            expect(page.locator(".flux-nb-status")).to_contain_text("Done #1")
            page.locator(".flux-nb-grid img.widget-image").first.wait_for(state="visible")
            expect(page.locator(".flux-nb-history img")).to_have_count(1)
            page.wait_for_function(KERNEL_IDLE_JS)  # every cell has run: the controls are ours now

            prompt = page.locator(".flux-nb-prompt textarea")
            prompt.fill("a red fox in snow, watercolour")
            page.locator(".flux-nb-generate").click()
            expect(page.locator(".flux-nb-status")).to_contain_text("Done #2")
            page.locator(".flux-nb-grid img.widget-image").first.wait_for(state="visible")
            expect(page.locator(".flux-nb-history img")).to_have_count(2)

            shot = REPO / "docs" / "img" / "panel.png" if os.environ.get("FLUX_NB_UPDATE_SCREENSHOT") == "1" else tmp_path / "panel.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".flux-nb-panel").screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

            # the server takes 3 s per image: cancel while it works (a new prompt: the notebook fixed
            # the seed, so the same settings would come from the cache at once)
            prompt.fill("a heron in a misty lake")
            page.locator(".flux-nb-generate").click()
            expect(page.locator(".flux-nb-status")).to_contain_text("Generating")
            page.locator(".flux-nb-cancel").click()
            expect(page.locator(".flux-nb-status")).to_contain_text("Cancelled")
            expect(page.locator(".flux-nb-history img")).to_have_count(2)
        finally:
            context.close()
    jobs = httpx.get(f"{lab.server.url}/stats").json()["jobs"]
    assert jobs["completed"] == 2 and jobs["cancelled"] == 1
