"""Sorting and filtering a million stored rows: how fast the drill-down answers.

    python bench/views.py [--rows N] [--store-url URL]

Builds the same N-row source as ``bench/run.py`` (default 1,000,000), runs it once into a
store, then measures, for a numeric sort, a text sort and a filter:

* **first page of a new view**: ``result_page(..., sort=…, filters=…)`` for a view never
  asked before (the store computes its order once; target ≤ 1 s);
* **first deep page**: the middle page, asked right after (it waits until the view's
  whole order is kept, computed in the background since the first page);
* **later pages of that view**: pages spread over the view (median), against an unsorted
  page measured in the same loop (target ≤ 2×);
* the two mechanisms it was chosen over, measured side by side on the same stored rows:
  - **top-N per page**: ``ORDER BY <value> LIMIT 50 OFFSET k`` on the stored rows for
    every page (no kept order: a deep page sorts again);
  - **sort in Python**: read (row number, value) of every row and ``sorted()`` them
    (memory grows with the rows);
* peak RSS of this process while views are made (rows never come into Python).

Prints a markdown table; the figures go to ``docs/PERFORMANCE.md``.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import sqlalchemy as sa  # noqa: E402
from run import build_source, open_store, run_execute, setup_kpi  # noqa: E402

from kpi_store import KPIStore  # noqa: E402

PAGE = 50
VIEWS: dict[str, dict[str, Any]] = {
    "sort by amount (number), desc": {"sort": [("amount", "desc")]},
    "sort by customer (text), asc": {"sort": [("customer", "asc")]},
    "filter status = paid and customer contains 'acme'": {
        "filters": [
            {"column": "status", "op": "equals", "value": "paid"},
            {"column": "customer", "op": "contains", "value": "acme"},
        ]
    },
    "filter amount 100-200, sort by order_date": {
        "filters": [{"column": "amount", "op": "between", "min": 100, "max": 200}],
        "sort": [("order_date", "asc")],
    },
}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def later_pages(store: KPIStore, run_id: int, view: dict[str, Any], pages: int) -> list[float]:
    spots = sorted({1 + (pages - 1) * k // 10 for k in range(11)})
    times = []
    for _ in range(5):
        for number in spots:
            elapsed, _page = timed(lambda n=number: store.result_page(run_id, n, PAGE, **view))
            times.append(elapsed)
    return times


def unsorted_pages(store: KPIStore, run_id: int, pages: int) -> list[float]:
    spots = sorted({1 + (pages - 1) * k // 10 for k in range(11)})
    return [
        timed(lambda n=number: store.result_page(run_id, n, PAGE))[0]
        for _ in range(5)
        for number in spots
    ]


def top_n_page(store: KPIStore, run_id: int, page: int) -> float:
    """The per-page alternative: sort the stored rows again for one deep page."""
    sql = (
        "SELECT row_data FROM kpi_execution_result_rows WHERE execution_id = :e "
        "ORDER BY json_extract(row_data, '$[3]') DESC, row_number LIMIT :n OFFSET :o"
    )
    with store.engine.connect() as connection:
        elapsed, _rows = timed(
            lambda: connection.execute(
                sa.text(sql), {"e": run_id, "n": PAGE, "o": (page - 1) * PAGE}
            ).all()
        )
    return elapsed


def python_sort(store: KPIStore, run_id: int) -> tuple[float, float]:
    before = rss_mb()
    sql = (
        "SELECT row_number, json_extract(row_data, '$[3]') FROM kpi_execution_result_rows "
        "WHERE execution_id = :e"
    )
    with store.engine.connect() as connection:
        elapsed, _order = timed(
            lambda: sorted(
                connection.execute(sa.text(sql), {"e": run_id}).all(), key=lambda r: r[1]
            )
        )
    return elapsed, rss_mb() - before


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--store-url", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kpi-views-bench-") as folder:
        tmp = pathlib.Path(folder)
        source = tmp / "source.db"
        build_source(source, args.rows)
        url = args.store_url or f"sqlite:///{tmp / 'store.db'}"
        store = open_store(url, args.rows, tmp)
        run_id, count, _value, status = run_execute(store, setup_kpi(store, source, "views"))
        assert status == "success" and count == args.rows, status
        pages = -(-count // PAGE)
        flat = statistics.median(unsorted_pages(store, run_id, pages))
        print(f"{count:,} rows stored; unsorted page median {flat * 1000:.2f} ms\n")
        print(
            "| view | rows in view | first page (new view) | first deep page "
            "| later pages (median) | × unsorted |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        start_rss = rss_mb()
        for label, view in VIEWS.items():
            first, page = timed(lambda v=view: store.result_page(run_id, 1, PAGE, **v))
            middle = max(1, page.total_pages // 2)
            deep, _ = timed(
                lambda v=view, m=middle: store.result_page(run_id, m, PAGE, **v)  # type: ignore[misc]
            )
            later = statistics.median(later_pages(store, run_id, view, page.total_pages))
            ratio = later / flat if flat else float("nan")
            print(
                f"| {label} | {page.total:,} | {first:.2f} s | {deep:.2f} s "
                f"| {later * 1000:.2f} ms | {ratio:.1f}× |"
            )
        grown = rss_mb() - start_rss
        if store.engine.dialect.name == "sqlite":
            deep = top_n_page(store, run_id, pages // 2)
            python_s, python_mb = python_sort(store, run_id)
            print("\nAlternatives on the same rows (sort by amount desc):")
            print(f"- top-N per page, page {pages // 2:,}: {deep:.2f} s for every such page")
            print(f"- sort in Python: {python_s:.2f} s, +{python_mb:.0f} MB RSS")
        print(f"\nPeak RSS grew {grown:.0f} MB while the views were made")
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
