"""A whole 1,000,000-row result downloaded in Chromium, and the server's memory meanwhile.

    python bench/download.py [--rows N]

Builds the ``bench/run.py`` source (default 1,000,000 rows), runs it into a store, starts
``streamlit run dashboard.py`` over it, opens the run's drill-down in headless Chromium,
types a name and clicks "Download CSV (all N rows)" (the streamed route). Reports whether
every row arrived (the file's rows against the run's) and the server process's resident
memory (VmRSS) before the click, its peak during the download (VmHWM, reset first) and the
growth. Target: every row, growth under 50 MB. A measurement, never a test.
"""

from __future__ import annotations

import argparse
import csv
import os
import pathlib
import re
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pageflip import CHROMIUM_ARGS, serve  # noqa: E402
from run import build_source, open_store, run_execute, setup_kpi  # noqa: E402


def memory_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields


class Sampler(threading.Thread):
    """The highest VmRSS seen while it runs (VmHWM cannot be reset without privileges)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, memory_mb(self.pid)["VmRSS"])
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=8796)
    args = parser.parse_args(argv)
    from playwright.sync_api import expect, sync_playwright

    with tempfile.TemporaryDirectory(prefix="kpi-download-") as folder:
        tmp = pathlib.Path(folder)
        source = tmp / "source.db"
        build_source(source, args.rows)
        url = f"sqlite:///{tmp / 'store.db'}"
        env = {**os.environ, "KPI_STORE_URL": url, "KPI_SOURCE_DIRS": str(tmp)}
        env |= {"KPI_SECRET_KEY_FILE": str(tmp / "secret.key"), "KPI_EMBEDDED_WORKER": "0"}
        env["KPI_ROW_CAP"] = str(max(args.rows, 1_000_000))
        os.environ.update(env)
        store = open_store(url, args.rows, tmp)
        run_id, count, _value, status = run_execute(store, setup_kpi(store, source, "dl"))
        store.close()
        assert status == "success" and count == args.rows
        server = serve(env, tmp, args.port)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
                )
                page = browser.new_page(accept_downloads=True)
                page.goto(f"http://127.0.0.1:{args.port}/drilldown?execution={run_id}")
                box = page.locator('[data-testid="stSidebar"]').get_by_label(
                    "Your name", exact=True
                )
                box.fill("Bench")
                box.press("Enter")
                link = page.get_by_role("link", name=re.compile(r"Download CSV \(all"))
                expect(link).to_be_visible(timeout=60_000)
                time.sleep(2)
                before = memory_mb(server.pid)["VmRSS"]
                sampler = Sampler(server.pid)
                sampler.start()
                started = time.perf_counter()
                with page.expect_download(timeout=300_000) as download:
                    link.click()
                path = download.value.path()
                elapsed = time.perf_counter() - started
                sampler.done.set()
                sampler.join()
                with open(path, encoding="utf-8-sig", newline="") as handle:
                    rows = sum(1 for _ in csv.reader(handle)) - 1
                browser.close()
        finally:
            server.terminate()
            server.wait(10)
    print(f"| rows in the file | {rows:,} of {count:,} ({'all' if rows == count else 'MISSING'}) |")
    print(f"| download time | {elapsed:.1f} s |")
    print(f"| server RSS before / peak during | {before:.0f} MB / {sampler.peak:.0f} MB |")
    print(f"| growth | {sampler.peak - before:.0f} MB (target < 50 MB) |")
    return 0 if rows == count else 1


if __name__ == "__main__":
    raise SystemExit(main())
