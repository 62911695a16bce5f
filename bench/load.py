"""Many people at once: N Chromium users on one server, and what an idle tab costs.

    python bench/load.py [--users 1,4,8]

Starts ``streamlit run dashboard.py`` over the demo store with its 100,951-row "Order Line
Detail" run, then for each N runs N users at once, each in its own browser context, through
the scenario: Overview → type a name → Drill-down of the big run → 5 page flips → History
→ Audit. Reported per N: each action's p50 / p95 (click to what it waits for) and the
server process's CPU seconds per scenario (from /proc, user + system). Then one tab left
open on the Overview for 20 s: the server's CPU share it costs.

A timing, never a test: the figures go to ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from pageflip import CHROMIUM_ARGS, first_cell, prepare, serve  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its threads so far."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def scenario(browser: Any, url: str, run_id: int, who: int, times: dict[str, list[float]]) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()

    def step(name: str, action: Any, done: Any) -> None:
        started = time.perf_counter()
        action()
        expect(done).to_be_visible(timeout=120_000)
        times[name].append(time.perf_counter() - started)

    step("overview", lambda: page.goto(url), page.get_by_text("Not run yet").first)
    box = page.locator('[data-testid="stSidebar"]').get_by_label("Your name", exact=True)
    step("type a name", lambda: (box.fill(f"User {who}"), box.press("Enter")), box)
    step(
        "open drill-down",
        lambda: page.goto(f"{url}/drilldown?execution={run_id}"),
        first_cell(page),
    )
    for number in range(2, 7):
        caption = page.get_by_text(re.compile(rf"Rows {(number - 1) * 50 + 1:,}–"))
        step("page flip", page.get_by_role("button", name="Next").click, caption)
    step("history", lambda: page.goto(f"{url}/history"), page.get_by_text("Versions"))
    step(
        "audit",
        lambda: page.goto(f"{url}/audit"),
        page.get_by_text(re.compile(r"^[\d,]+ entries$")),
    )
    context.close()


def run_users(browser_factory: Any, url: str, run_id: int, users: int, pid: int) -> dict[str, Any]:
    times: dict[str, list[float]] = defaultdict(list)
    errors: list[BaseException] = []

    def user(who: int) -> None:
        try:
            with browser_factory() as browser:
                scenario(browser, url, run_id, who, times)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    before = cpu_seconds(pid)
    threads = [threading.Thread(target=user, args=(n,)) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {"times": times, "cpu_per_scenario": (cpu_seconds(pid) - before) / users}


def idle_share(browser_factory: Any, url: str, pid: int, seconds: float = 20.0) -> float:
    from playwright.sync_api import expect

    with browser_factory() as browser:
        page = browser.new_page()
        page.goto(url)
        expect(page.get_by_text("Not run yet").first).to_be_visible(timeout=60_000)
        time.sleep(5)  # let the server settle after the sessions before
        before = cpu_seconds(pid)
        time.sleep(seconds)
        return (cpu_seconds(pid) - before) / seconds


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,4,8")
    parser.add_argument("--port", type=int, default=8798)
    args = parser.parse_args(argv)
    from contextlib import contextmanager

    from playwright.sync_api import sync_playwright

    @contextmanager
    def chromium() -> Any:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            try:
                yield browser
            finally:
                browser.close()

    with tempfile.TemporaryDirectory(prefix="kpi-load-") as folder:
        tmp = pathlib.Path(folder)
        env, run_id = prepare(tmp)
        server = serve(env, tmp, args.port)
        url = f"http://127.0.0.1:{args.port}"
        try:
            run_users(chromium, url, run_id, 1, server.pid)  # warm up: imports, caches
            print("| users | server CPU per scenario | action | p50 | p95 |")
            print("| ---: | ---: | --- | ---: | ---: |")
            for users in [int(n) for n in args.users.split(",")]:
                result = run_users(chromium, url, run_id, users, server.pid)
                for action, values in result["times"].items():
                    print(
                        f"| {users} | {result['cpu_per_scenario']:.2f} s | {action} "
                        f"| {statistics.median(values):.2f} s | {percentile(values, 0.95):.2f} s |"
                    )
            share = idle_share(chromium, url, server.pid)
            print(f"\nOne idle Overview tab: {share:.1%} of a core (server process)")
        finally:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
