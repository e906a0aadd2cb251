"""End to end in a real headless browser: a tracked run, ``complexity-tracker ui``, a per-layer chart.

Debian's chromium (/usr/bin/chromium) is driven by Playwright over the DevTools protocol.  Without
chromium or Playwright the test is skipped locally and fails under CI=true.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from complexity_tracker.config import RunConfig
from complexity_tracker.experiment import run_experiment
from servers import free_port, stop_process, wait_for_http

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
LAYER_KEY = "H/net.2"


def require_browser():
    """The Playwright module; skip (locally) or fail (CI=true) when it or chromium is missing."""
    problem = None
    try:
        from playwright import sync_api
    except ImportError:
        problem, sync_api = "the playwright package is not installed (pip install -e '.[test]')", None
    if problem is None and not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install chromium)"
    if problem is None:
        return sync_api
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test cannot run under CI: {problem}")
    pytest.skip(problem)


@pytest.fixture
def ui_with_a_run(in_tmp_cwd: Path):
    """A tracked run in the default store of a fresh folder and ``complexity-tracker ui`` serving it."""
    config = RunConfig(model="mlp", depth=2, width=32, n_train=300, n_test=100, epochs=2, probe_per_class=10)
    result = run_experiment(config, run_name="browser-run", log_model=False)
    experiment_id = MlflowClient(f"sqlite:///{in_tmp_cwd}/mlflow.db").get_run(result.run_id).info.experiment_id
    port = free_port()
    log_path = in_tmp_cwd / "ui.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "complexity_tracker.cli.main", "ui", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process, 90, log_path)
        yield f"http://127.0.0.1:{port}", experiment_id, result.run_id
    finally:
        stop_process(process, grace_s=30)  # the wrapper waits for its server to stop


def test_mlflow_ui_shows_a_per_layer_complexity_chart(ui_with_a_run, test_output_dir):
    sync_api = require_browser()
    url, experiment_id, run_id = ui_with_a_run
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{url}/#/experiments/{experiment_id}/runs")
            page.get_by_role("link", name="browser-run").first.click()
            page.wait_for_url(f"**/runs/{run_id}**")
            page.get_by_text("Model metrics", exact=True).first.click()
            card = page.locator('[data-testid="experiment-view-compare-runs-card"]').filter(
                has=page.locator(f'h4[title="{LAYER_KEY}"]')
            )
            card.wait_for()
            page.screenshot(path=str(test_output_dir / "mlflow-ui-model-metrics.png"))
            card.locator('[data-component-id="fullscreen_button_chartcard"]').click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text(LAYER_KEY).first.wait_for()
            legend = dialog.get_by_text(f"browser-run ({LAYER_KEY})")
            legend.first.wait_for()
            dialog.locator(".js-plotly-plot").first.wait_for()
            page.screenshot(path=str(test_output_dir / "mlflow-ui-layer-chart.png"))
        finally:
            browser.close()
    assert (test_output_dir / "mlflow-ui-layer-chart.png").stat().st_size > 10_000
