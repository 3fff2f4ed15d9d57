"""report.html in a real headless browser: Debian's Chromium (make browser) driven by playwright.

The report comes from the real `meltrca report` command on a hand-made results lake. The page is
loaded from file://, screenshotted, checked for its key elements, and every request it makes is
recorded: only the document itself and data: URIs may appear, and no CSP violation may be logged.
Two controls prove the recorder and the console check can fail.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from matplotlib.image import imread

from conftest import run_cli
from meltrca.stages import report as report_stage
from test_report import BANK_CRIT, SHOP_HIGH, SHOP_LOW, build_results_lake, stage_ctx, tables_only

CHROMIUM = Path("/usr/bin/chromium")
ROOT_OF = {BANK_CRIT: "ledger", SHOP_HIGH: "db", SHOP_LOW: "auth"}


@pytest.fixture(scope="module")
def report_file(spark, tmp_path_factory) -> Path:
    """report.html written by the `meltrca report` CLI (a real subprocess)."""
    root = tmp_path_factory.mktemp("results")
    build_results_lake(spark, root)
    res = run_cli("report", "--results", str(root), "--master", "local[1]")
    assert res.returncode == 0, res.stderr
    path = root / "report.html"
    assert res.stdout.strip().splitlines()[-1] == f"report: {path.resolve()}"
    assert "[meltrca] report" in res.stderr  # the progress line
    return path


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Chromium missing: run `make browser` (installs the Debian package)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class Visit:
    """One page load with every request and console message recorded."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.requests: list[str] = []
        self.console: list[str] = []
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.url = path.resolve().as_uri()
        self.page.goto(self.url, wait_until="load")
        self.page.wait_for_load_state("networkidle")

    def outside_requests(self) -> list[str]:
        return [u for u in self.requests if u != self.url and not u.startswith("data:")]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visit(browser, report_file):
    v = Visit(browser, report_file)
    yield v
    v.close()


def test_page_renders_incidents_plots_and_graphs_without_any_request(visit, tmp_path):
    page = visit.page
    assert page.title() == "meltrca report — 3 incident(s)"
    sections = page.locator("section.incident")
    assert [sections.nth(i).get_attribute("data-incident") for i in range(sections.count())] == [
        BANK_CRIT, SHOP_HIGH, SHOP_LOW
    ]
    for i in range(sections.count()):
        s = sections.nth(i)
        root = ROOT_OF[s.get_attribute("data-incident")]
        title = s.locator("h3.incident-title")
        assert title.is_visible()
        assert " ".join(title.inner_text().split()).split(" — ")[0].endswith(f"Root cause: {root}")
        plots = s.locator("img.timeline")
        assert plots.count() == 1
        assert plots.first.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")[:2] == [True, 960]
        assert plots.first.bounding_box()["width"] > 600  # decoded and laid out, not a broken icon
        node = s.locator('svg.service-graph g[data-role="root-cause"]')
        assert node.count() == 1 and node.get_attribute("data-service") == root
        assert node.locator("rect").evaluate("r => getComputedStyle(r).fill") == "rgb(214, 39, 40)"
        assert node.bounding_box()["width"] >= 90
    shop_nodes = sections.nth(1).locator("svg.service-graph g.node")
    assert sorted(shop_nodes.nth(i).get_attribute("data-service") for i in range(shop_nodes.count())) == [
        "api", "auth", "cache", "db", "front"
    ]
    ev = page.locator("#evaluation-detection")
    assert ev.is_visible()
    assert ev.locator("tbody tr").first.locator("td").all_inner_texts()[:4] == ["event level", "0.667", "0.667", "0.667"]
    assert page.locator("#evaluation-root-cause tbody tr").count() == 3  # all, detected, case level

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    img = imread(io.BytesIO(shot.read_bytes()))[:, :, :3]
    h, w = img.shape[:2]
    assert w == 1280 and h > 2500, (w, h)  # three incidents with a plot and a graph each
    colours = np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 500  # text, plots and graphs, not a blank or error page
    red = (img[:, :, 0] > 0.75) & (img[:, :, 1] < 0.25) & (img[:, :, 2] < 0.25)
    assert red.sum() > 5000  # root-cause nodes and severity badges are drawn

    assert visit.outside_requests() == []
    assert [m for m in visit.console if "Content Security Policy" in m or m.startswith("error")] == []


def test_page_without_evaluation_has_no_evaluation_table(browser, report_file, spark, settings, tmp_path):
    root = tables_only(report_file.parent, tmp_path / "no-eval")
    path = report_stage.process(stage_ctx(spark, settings, root, systems=["shop"]))
    v = Visit(browser, path)
    try:
        assert v.page.locator("#evaluation").count() == 0
        assert v.page.locator("section.incident").count() == 2
        assert v.outside_requests() == []
    finally:
        v.close()


class _Pixel(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Pixel.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/gif")
        self.end_headers()
        self.wfile.write(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def pixel_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Pixel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Pixel.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_control_the_recorder_sees_a_fetch_and_the_policy_blocks_it(browser, report_file, pixel_server, tmp_path):
    html = report_file.read_text(encoding="utf-8")
    leak = f'<img src="{pixel_server}/leak.gif">'
    # Without the page's Content-Security-Policy the fetch happens and is recorded.
    no_csp = tmp_path / "no-csp.html"
    no_csp.write_text(html.split('<meta http-equiv="Content-Security-Policy"')[0] + "</head><body>" + leak + "</body></html>")
    v = Visit(browser, no_csp)
    try:
        assert v.outside_requests() == [f"{pixel_server}/leak.gif"]
        assert _Pixel.hits == ["/leak.gif"]
    finally:
        v.close()
    # With it (the real page plus a stray external image) the browser refuses and says so.
    tampered = tmp_path / "tampered.html"
    tampered.write_text(html.replace("</main>", leak + "</main>"), encoding="utf-8")
    v = Visit(browser, tampered)
    try:
        assert _Pixel.hits == ["/leak.gif"]  # no second hit
        assert any("Content Security Policy" in m for m in v.console), v.console
    finally:
        v.close()
