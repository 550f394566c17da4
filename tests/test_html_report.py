"""``schedsearch report NAME -o report.html``: one self-contained page, opened in a real headless Chromium."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.storage import TrialStore

SCRIPT = Path(sys.executable).with_name("schedsearch")
CONFIG = {
    "name": "page", "model": "builtin:gmm-8d", "nfe": [3, 4], "budget": 24, "seed": 0,
    "strategy": {"name": "evolution", "batch_size": 4},
    "baselines": {"solvers": ["dpmpp_2m", "unipc_bh2"], "grids": ["uniform_lambda"]},
    "fidelity": {"samples": [300]},
    "validation": {"top_k": 1, "baselines": 1, "samples": 600, "seed": 1},
    "metrics": {"cache_dir": None, "reference_steps": 30},
}
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no chromium on PATH (bash .ci/browser installs Debian's package as root)"
        if os.environ.get("CI") and os.geteuid() == 0:  # .ci/test could have installed it: a real failure
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'runs.db'}"
    config = parse_config(CONFIG)
    store = TrialStore.open(url)
    try:
        SearchRun(config, store, LocalEngine(config.evaluation_spec())).run()
    finally:
        store.close()
    return url


def test_report_is_one_self_contained_page_with_plots_and_tables(searched, tmp_path):
    page = tmp_path / "report.html"
    out = subprocess.run([str(SCRIPT), "report", "page", "--db", searched, "-o", str(page)], capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    assert f"to {page}" in out.stdout
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing to fetch
    assert list(tmp_path.iterdir()) == [page]  # one file, the plots inside it

    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=BROWSER_FLAGS)
        try:
            view = browser.new_page()
            view.on("request", lambda r: requests.append(r.url))
            view.goto(page.as_uri())
            view.wait_for_load_state("load")
            images = view.evaluate("[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])")
            headings = view.locator("h2").all_inner_texts()
            tables = view.evaluate("[...document.querySelectorAll('table')].map(t => t.rows.length)")
            winners = view.locator("tr.winner").count()
            verdicts = view.locator(".verdict").all_inner_texts()
            header = view.locator("table tr th").all_inner_texts()
        finally:
            browser.close()
    assert [r for r in requests if not r.startswith(("file:", "data:"))] == []
    alts = [a for a, *_ in images]
    assert "progress: objective by trial" in alts and "quality vs NFE" in alts
    assert {"NFE 3: the winning schedule", "NFE 4: the winning schedule"} <= set(alts)
    assert all(complete and w > 300 and h > 200 for _, complete, w, h in images), images  # every PNG decoded
    assert headings == ["Progress", "Quality vs NFE", "NFE 3", "NFE 4"]
    assert len(tables) == 2 and all(n >= 4 for n in tables)  # header, winner, baseline, floor at least
    assert winners == 2 and all("vs best baseline" in v for v in verdicts)
    assert header[:3] == ["", "search", "held-out"]


def test_report_to_a_missing_folder_is_one_line(searched, tmp_path):
    out = subprocess.run([str(SCRIPT), "report", "page", "--db", searched, "-o", str(tmp_path / "no" / "r.html")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode != 0 and out.stderr.count("\n") == 1 and "does not exist" in out.stderr
