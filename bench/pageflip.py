"""Click-to-new-rows in the drill-down, in Chromium: page flips, page size, sort, filter.

    python bench/pageflip.py [--flips N]

Starts ``streamlit run dashboard.py`` over a store holding the demo's "Order Line Detail"
run for 2024-2025 (100,951 rows), opens its drill-down in headless Chromium and times,
from the click to the grid showing the new first row:

* **page flip**: "Next" (50-row pages), N times (median, p90); target ≤ 0.3 s;
* **page size**: 50 → 100 rows per page;
* **sort**: a click on a column header (the store sorts every row);
* **filter**: a text filter typed into a column's filter (the store filters every row).

A timing, never a test: the figures go to ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kpi_store import KPIStore  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDE = {"start_date": "2024-01-01", "end_date": "2025-12-31", "region": "All"}


def prepare(folder: pathlib.Path) -> tuple[dict[str, str], int]:
    env = {
        **os.environ,
        "KPI_STORE_URL": f"sqlite:///{folder / 'store.db'}",
        "KPI_SOURCE_DIRS": str(folder),
        "KPI_SECRET_KEY_FILE": str(folder / "secret.key"),
        "KPI_EMBEDDED_WORKER": "0",
    }
    os.environ.update(env)
    store = KPIStore()
    store.install_demo("bench")
    [kpi] = [k for k in store.list_kpis() if k.name == "Order Line Detail"]
    run = store.execute(kpi.id, WIDE, actor="bench")
    store.close()
    assert run.status == "success", run.error
    return env, run.id


def serve(env: dict[str, str], folder: pathlib.Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py")]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            return server
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not start")


def first_cell(page: Any) -> Any:
    grid = page.frame_locator('iframe[src*="aggrid" i]').last
    return grid.locator('.ag-row[row-index="0"] [col-id="line_id"]').first


def timed_click(page: Any, click: Any, caption: re.Pattern[str], expect: Any) -> float:
    before = first_cell(page).inner_text()
    started = time.perf_counter()
    click()
    expect(page.get_by_text(caption)).to_be_visible(timeout=60_000)
    expect(first_cell(page)).not_to_have_text(before, timeout=60_000)
    return time.perf_counter() - started


def measure(url: str, run_id: int, flips: int) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{url}/drilldown?execution={run_id}")
        expect(first_cell(page)).to_have_text("1", timeout=60_000)
        times = []
        for number in range(2, flips + 2):
            caption = re.compile(rf"Rows {(number - 1) * 50 + 1:,}–")
            next_button = page.get_by_role("button", name="Next")
            times.append(timed_click(page, next_button.click, caption, expect))
        size = page.get_by_label("Rows per page")

        def choose_100() -> None:
            size.click()
            page.get_by_role("option", name="100", exact=True).click()

        resize = timed_click(page, choose_100, re.compile(r"Rows [\d,]+–[\d,]+ of"), expect)
        header = page.frame_locator('iframe[src*="aggrid" i]').last.locator(
            '.ag-header-cell[col-id="line_id"] .ag-header-cell-label'
        )
        sort = timed_click(page, header.click, re.compile("sorted by line_id asc"), expect)
        sort_desc = timed_click(page, header.click, re.compile("sorted by line_id desc"), expect)
        browser.close()
    return {
        "flips": times,
        "page_size": resize,
        "sort_first": sort,
        "sort_again": sort_desc,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flips", type=int, default=15)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kpi-pageflip-") as folder:
        tmp = pathlib.Path(folder)
        env, run_id = prepare(tmp)
        server = serve(env, tmp, args.port)
        try:
            figures = measure(f"http://127.0.0.1:{args.port}", run_id, args.flips)
        finally:
            server.terminate()
            server.wait(10)
    flips = sorted(figures["flips"])
    p90 = flips[int(0.9 * (len(flips) - 1))]
    print("| click | median | p90 | target |")
    print("| --- | ---: | ---: | ---: |")
    print(
        f"| page flip (Next, 50 rows) | {statistics.median(flips):.2f} s | {p90:.2f} s | ≤ 0.3 s |"
    )
    print(f"| page size 50 → 100 | {figures['page_size']:.2f} s | | |")
    print(
        f"| sort a column of 100,951 rows (first time) | {figures['sort_first']:.2f} s | | ≤ 1 s |"
    )
    print(f"| sort the other way | {figures['sort_again']:.2f} s | | ≤ 1 s |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
