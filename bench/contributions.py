""" "What changed?" on two million-row runs: how long ``what_changed`` takes.

    python bench/contributions.py [--rows N] [--repeat K] [--store-url URL]

Builds the N-row source of ``bench/run.py`` (default 1,000,000), runs ``SELECT * FROM big``
(a sum of ``amount``, breakdown column ``status``) into a store (run A), changes the source
as ``bench/diff.py`` does (5,000 rows changed to status ``changed`` with amount + 1, 2,000
deleted, 3,000 added) and runs it again (run B). Then, K times each, interleaved:

* ``what_changed(A, B)`` by ``status`` (5 values) and by ``customer`` (≈ 51,000 values):
  each run's rows grouped in SQL on the store, and summed again ungrouped;
* the **baseline**: reading both runs' rows into Python (every stored row fetched and
  decoded with orjson, nothing else done);
* for information, the same **grouped in Python** (decoded rows summed into a dict).

Reports medians and the ratio of ``what_changed`` to the baseline, and checks the split
against the Python grouping (the same parts, the total change equal to the cent).
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import orjson  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from diff import change_source  # noqa: E402
from run import ACTOR, build_source, open_store  # noqa: E402

from kpi_store import KPIStore, db  # noqa: E402
from kpi_store.contributions import Contributions  # noqa: E402

FETCH = 5_000
COLUMNS = {"customer": 1, "status": 4}  # positions in SELECT * FROM big
AMOUNT = 3


def stored_json(store: KPIStore, run_id: int) -> Any:
    """Every stored row of a run as its JSON text, a few thousand at a time."""
    query = "SELECT row_data FROM kpi_execution_result_rows WHERE execution_id = :run"
    with db.read_tx(store.engine) as connection:
        if connection.dialect.name == "sqlite":
            cursor = db.driver(connection).execute(query.replace(":run", "?"), (run_id,))
            while chunk := cursor.fetchmany(FETCH):
                yield [data for (data,) in chunk]
            return
        streamed = connection.execution_options(stream_results=True, yield_per=FETCH)
        for partition in streamed.execute(sa.text(query), {"run": run_id}).partitions():
            yield [data for (data,) in partition]


def read_rows(store: KPIStore, runs: tuple[int, int]) -> int:
    """The baseline: both runs' rows read and decoded, nothing more."""
    count = 0
    loads = orjson.loads
    for run_id in runs:
        for chunk in stored_json(store, run_id):
            for data in chunk:
                loads(data)
            count += len(chunk)
    return count


def group_in_python(store: KPIStore, runs: tuple[int, int], column: str) -> list[dict[Any, float]]:
    """Both runs' rows read, decoded and summed by ``column`` in a dict."""
    index, loads = COLUMNS[column], orjson.loads
    sums: list[dict[Any, float]] = []
    for run_id in runs:
        parts: dict[Any, list[float]] = {}
        for chunk in stored_json(store, run_id):
            for data in chunk:
                row = loads(data)
                parts.setdefault(row[index], []).append(row[AMOUNT])
        sums.append({key: math.fsum(values) for key, values in parts.items()})
    return sums


def agrees(result: Contributions, grouped: list[dict[Any, float]]) -> bool:
    """The split matches the Python grouping: same total change (to the cent), and the
    top parts' changes."""
    total = math.fsum(grouped[1].values()) - math.fsum(grouped[0].values())
    if round(result.total_change, 2) != round(total, 2) or not result.balanced:
        return False
    return all(
        math.isclose(p.change, grouped[1].get(p.value, 0.0) - grouped[0].get(p.value, 0.0))
        for p in [*result.up, *result.down]
    )


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def measure(store: KPIStore, runs: tuple[int, int], repeat: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {}
    checked: dict[str, bool] = {}
    a, b = runs
    for _ in range(repeat):
        times.setdefault("baseline", []).append(timed(read_rows, store, runs)[0])
        for column in COLUMNS:
            seconds, result = timed(store.what_changed, a, b, column=column, actor=ACTOR)
            times.setdefault(f"what_changed_{column}", []).append(seconds)
            seconds, grouped = timed(group_in_python, store, runs, column)
            times.setdefault(f"python_{column}", []).append(seconds)
            checked[column] = agrees(result, grouped) and result.exact
    figures: dict[str, Any] = {name: statistics.median(t) for name, t in times.items()}
    figures["checked"] = checked
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store-url", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kpi-contributions-bench-") as folder:
        tmp = pathlib.Path(folder)
        source = tmp / "source.db"
        build_source(source, args.rows)
        url = args.store_url or f"sqlite:///{tmp / 'store.db'}"
        store = open_store(url, args.rows + 3_000, tmp)
        try:
            store.add_data_source("bench_story", f"sqlite:///{source}", ACTOR)
            kpi = store.create_kpi(
                {
                    "name": "Bench: what changed",
                    "data_source": "bench_story",
                    "sql": "SELECT * FROM big",
                    "value_column": "amount",
                    "aggregation": "sum",
                    "breakdown_column": "status",
                    "timeout_s": 3600,
                    "max_retries": 0,
                },
                ACTOR,
            )
            first = store.execute(kpi.id, actor=ACTOR)
            change_source(source, args.rows, 5_000, 2_000, 3_000)
            second = store.execute(kpi.id, actor=ACTOR)
            assert first.status == second.status == "success", (first.error, second.error)
            rows = (first.row_count or 0) + (second.row_count or 0)
            figures = measure(store, (first.id, second.id), args.repeat)
        finally:
            store.close()
    base = figures["baseline"]
    print(f"store: {url.split(':')[0]}; runs of {args.rows:,} and {args.rows + 1_000:,} rows")
    print("\n| measure | seconds | ÷ baseline |\n| --- | --- | --- |")
    print(f"| baseline: read and decode both runs' {rows:,} rows in Python | {base:.2f} | 1.00 |")
    for column in COLUMNS:
        for name, label in (
            ("what_changed", f"`what_changed` by `{column}`"),
            ("python", f"for information: grouped by `{column}` in Python"),
        ):
            seconds = figures[f"{name}_{column}"]
            print(f"| {label} | {seconds:.2f} | {seconds / base:.2f} |")
    print(f"\nexact and matching the Python grouping: {figures['checked']}")
    return 0 if all(figures["checked"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
