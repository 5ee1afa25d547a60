"""The MLflow UI in a real browser: headless Chromium (Debian's `chromium`, installed by .ci/run)
driven by Playwright against `mlflow ui` on the shared smoke sweep and its report."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers.commands import run_report, run_script
from helpers.mlflow_queries import runs
from helpers.servers import free_port
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser():
    """Playwright's sync API, or skip with the reason (never a silent pass)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright's Python package is not installed (requirements.txt pins it; run make install)")
    if CHROMIUM is None:
        pytest.skip("no chromium executable: .ci/run installs Debian's package `chromium` (apt-get install chromium)")
    return sync_playwright


def _serve(uri: str, port: int) -> subprocess.Popen:
    ui = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},  # as `make ui` runs it
    )
    for _ in range(240):
        assert ui.poll() is None, "mlflow ui exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return ui
        except OSError:
            time.sleep(0.5)
    raise AssertionError("mlflow ui did not answer in 120 s")


@pytest.mark.xdist_group("smoke")
def test_runs_descriptions_report_and_cell_figures_in_a_real_browser(smoke_store, tmp_path):
    sync_playwright = _browser()
    store, _ = smoke_store
    uri = f"sqlite:///{store}/mlflow.db"
    report = run_report(["--tracking-uri", uri, "--out", str(tmp_path / "report")], store)  # logged on the parent
    assert report.returncode == 0, report.stderr[-3000:]
    n_figures = (tmp_path / "report" / "REPORT.md").read_text().count("](figures/")
    client = MlflowClient(tracking_uri=uri)
    all_runs = runs(client)
    (parent,) = [r for r in all_runs if r.data.tags.get("role") == "sweep"]
    cells = [r for r in all_runs if r.data.tags.get("role") == "cell"]
    port = free_port()
    linked = run_script("ui_link.py", ["--tracking-uri", uri, "--port", port], tmp_path)
    assert linked.returncode == 0, linked.stderr
    link = linked.stdout
    runs_url = re.search(r"http://\S+", link).group(0)
    base, exp_id = runs_url.split("#")[0], parent.info.experiment_id
    ui = _serve(uri, port)
    shots, times = tmp_path / "screenshots", {}
    shots.mkdir()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)

            # 1. the printed link opens the runs table (not the GenAI overview), under the study's description
            t = time.time()
            page.goto(runs_url)
            page.get_by_text(parent.info.run_name).first.wait_for()
            times["runs"] = time.time() - t
            page.get_by_text("when do CNN gradients vanish or explode?").first.wait_for()
            page.locator('[col-id="attributes.`Run Name`"] button').first.click()  # expand the sweep's cells
            for r in cells:
                page.get_by_text(r.info.run_name, exact=True).first.wait_for()
            page.screenshot(path=shots / "runs.png")

            # 2. the parent run's page shows its description
            t = time.time()
            page.goto(f"{base}#/experiments/{exp_id}/runs/{parent.info.run_id}?workflowType=machine_learning")
            page.get_by_text("Sweep of preset").first.wait_for()
            times["parent"] = time.time() - t
            page.get_by_text("report/report.html").first.wait_for()
            page.screenshot(path=shots / "parent.png", full_page=True)

            # 3. the self-contained report renders inside the artifact viewer, every figure loaded
            t = time.time()
            page.goto(f"{base}#/experiments/{exp_id}/runs/{parent.info.run_id}/artifacts/report/report.html")
            report_frame = page.frame_locator("iframe").first  # MLflow shows HTML artifacts in a sandboxed iframe
            report_frame.locator("h1").first.wait_for()
            widths: list[int] = []
            for _ in range(120):
                widths = report_frame.locator("img").evaluate_all(
                    "all => all.map(i => i.complete ? i.naturalWidth : 0)"
                )
                if len(widths) == n_figures and min(widths) > 0:
                    break
                time.sleep(0.5)
            times["report"] = time.time() - t
            assert len(widths) == n_figures and min(widths) > 500, widths  # every figure embedded and decoded
            assert report_frame.locator("table").count() >= 2
            assert "Report of sweep" in report_frame.locator("h1").first.inner_text()
            page.screenshot(path=shots / "report.png")

            # 4. a cell's own figure opens from its run, decoded at its real size
            cell = cells[0]
            png = Path(client.download_artifacts(cell.info.run_id, "figures/curves.png", str(tmp_path)))
            width = int.from_bytes(png.read_bytes()[16:20], "big")  # the PNG header's IHDR width
            t = time.time()
            page.goto(f"{base}#/experiments/{exp_id}/runs/{cell.info.run_id}/artifacts/figures/curves.png")
            img = page.locator("img[alt='figures/curves.png']").first
            img.wait_for()
            page.wait_for_function(
                "([img, w]) => img.complete && img.naturalWidth === w", arg=[img.element_handle(), width]
            )
            times["cell figure"] = time.time() - t
            page.screenshot(path=shots / "cell.png")
            browser.close()
    finally:
        os.killpg(ui.pid, signal.SIGTERM)  # mlflow ui and its server workers
        try:
            ui.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(ui.pid, signal.SIGKILL)
    print("page load times (s):", {k: round(v, 2) for k, v in times.items()}, "screenshots:", shots)
